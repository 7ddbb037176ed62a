"""voicecore: real-time voice agents whose audio never glitches.

The audio work that has a deadline (ring buffers, resampling, VAD features, the echo gate,
frame pacing) runs in a Rust core that never takes the GIL; Python orchestrates. This module
re-exports the public API; the implementation lives in private modules.
"""

from voicecore._core import EchoGate as EchoGate
from voicecore._core import EchoStats as EchoStats
from voicecore._core import EnergyVad as EnergyVad
from voicecore._core import FlushReport as FlushReport
from voicecore._core import FrameFeatures as FrameFeatures
from voicecore._core import FramePacer as FramePacer
from voicecore._core import PacerStats as PacerStats
from voicecore._core import PacerStream as PacerStream
from voicecore._core import ReleasedFrame as ReleasedFrame
from voicecore._core import Resampler as Resampler
from voicecore._core import RingStats as RingStats
from voicecore._core import SampleRing as SampleRing
from voicecore._core import SinkStats as SinkStats
from voicecore._core import SocketSink as SocketSink
from voicecore._core import SpeechEvent as SpeechEvent
from voicecore._core import StreamEvent as StreamEvent
from voicecore._core import StreamStats as StreamStats
from voicecore._core import VadFeatures as VadFeatures
from voicecore._core import VadFrames as VadFrames
from voicecore._core import __version__ as __version__
from voicecore._typing import AudioIn as AudioIn
from voicecore.diagnostics import CpuStat as CpuStat
from voicecore.diagnostics import CpuThrottleSampler as CpuThrottleSampler
from voicecore.diagnostics import Diagnostics as Diagnostics
from voicecore.diagnostics import GcMonitor as GcMonitor
from voicecore.diagnostics import GcPolicy as GcPolicy
from voicecore.diagnostics import GcStats as GcStats
from voicecore.diagnostics import LagStats as LagStats
from voicecore.diagnostics import LoopLagCanary as LoopLagCanary
from voicecore.diagnostics import Timeline as Timeline
from voicecore.diagnostics import read_cpu_stat as read_cpu_stat
from voicecore.engine.chunker import SentenceChunker as SentenceChunker
from voicecore.engine.history import ConversationHistory as ConversationHistory
from voicecore.engine.history import Message as Message
from voicecore.engine.history import SpokenReply as SpokenReply
from voicecore.engine.playout import PlayoutRouter as PlayoutRouter
from voicecore.engine.session import Session as Session
from voicecore.engine.session import SessionConfig as SessionConfig
from voicecore.engine.stages import AudioChunk as AudioChunk
from voicecore.engine.stages import AudioFrame as AudioFrame
from voicecore.engine.stages import Hypothesis as Hypothesis
from voicecore.engine.stages import TurnContext as TurnContext
from voicecore.exceptions import AudioFormatError as AudioFormatError
from voicecore.exceptions import AudioTypeError as AudioTypeError
from voicecore.exceptions import CalibrationError as CalibrationError
from voicecore.exceptions import ConfigError as ConfigError
from voicecore.exceptions import ConversationRecordError as ConversationRecordError
from voicecore.exceptions import InvalidValueError as InvalidValueError
from voicecore.exceptions import ModelFallbackWarning as ModelFallbackWarning
from voicecore.exceptions import ModelFetchError as ModelFetchError
from voicecore.exceptions import ModelNotFoundError as ModelNotFoundError
from voicecore.exceptions import PacerError as PacerError
from voicecore.exceptions import PacerStoppedError as PacerStoppedError
from voicecore.exceptions import ProtocolError as ProtocolError
from voicecore.exceptions import ProviderAuthError as ProviderAuthError
from voicecore.exceptions import ProviderConnectionError as ProviderConnectionError
from voicecore.exceptions import ProviderError as ProviderError
from voicecore.exceptions import ProviderHTTPError as ProviderHTTPError
from voicecore.exceptions import ProviderResponseError as ProviderResponseError
from voicecore.exceptions import ResourceError as ResourceError
from voicecore.exceptions import SendBufferFullError as SendBufferFullError
from voicecore.exceptions import StageTimeoutError as StageTimeoutError
from voicecore.exceptions import SupersededError as SupersededError
from voicecore.exceptions import SynthesisError as SynthesisError
from voicecore.exceptions import UnknownStreamError as UnknownStreamError
from voicecore.exceptions import UnsupportedSampleRateError as UnsupportedSampleRateError
from voicecore.exceptions import VadFallbackWarning as VadFallbackWarning
from voicecore.exceptions import VoicecoreError as VoicecoreError
from voicecore.metrics import SessionMetrics as SessionMetrics
from voicecore.metrics import TurnMetrics as TurnMetrics
from voicecore.metrics import prometheus_text as prometheus_text

__all__ = [
    "AudioChunk",
    "AudioFormatError",
    "AudioFrame",
    "AudioIn",
    "AudioTypeError",
    "CalibrationError",
    "ConfigError",
    "ConversationHistory",
    "ConversationRecordError",
    "CpuStat",
    "CpuThrottleSampler",
    "Diagnostics",
    "EchoGate",
    "EchoStats",
    "EnergyVad",
    "FlushReport",
    "FrameFeatures",
    "FramePacer",
    "GcMonitor",
    "GcPolicy",
    "GcStats",
    "Hypothesis",
    "InvalidValueError",
    "LagStats",
    "LoopLagCanary",
    "Message",
    "ModelFallbackWarning",
    "ModelFetchError",
    "ModelNotFoundError",
    "PacerError",
    "PacerStats",
    "PacerStoppedError",
    "PacerStream",
    "PlayoutRouter",
    "ProtocolError",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
    "ReleasedFrame",
    "Resampler",
    "ResourceError",
    "RingStats",
    "SampleRing",
    "SendBufferFullError",
    "SentenceChunker",
    "Session",
    "SessionConfig",
    "SessionMetrics",
    "SinkStats",
    "SocketSink",
    "SpeechEvent",
    "SpokenReply",
    "StageTimeoutError",
    "StreamEvent",
    "StreamStats",
    "SupersededError",
    "SynthesisError",
    "Timeline",
    "TurnContext",
    "TurnMetrics",
    "UnknownStreamError",
    "UnsupportedSampleRateError",
    "VadFallbackWarning",
    "VadFeatures",
    "VadFrames",
    "VoicecoreError",
    "__version__",
    "prometheus_text",
    "read_cpu_stat",
]
