"""voicecore: real-time voice agents whose audio never glitches.

The audio work that has a deadline (ring buffers, resampling, VAD features, frame pacing)
runs in a Rust core that never takes the GIL; Python orchestrates. This module re-exports
the public API; the implementation lives in private modules.
"""

from voicecore._core import Resampler as Resampler
from voicecore._core import RingStats as RingStats
from voicecore._core import SampleRing as SampleRing
from voicecore._core import __version__ as __version__
from voicecore.exceptions import AudioFormatError as AudioFormatError
from voicecore.exceptions import AudioTypeError as AudioTypeError
from voicecore.exceptions import ConfigError as ConfigError
from voicecore.exceptions import PacerError as PacerError
from voicecore.exceptions import PacerStoppedError as PacerStoppedError
from voicecore.exceptions import UnknownStreamError as UnknownStreamError
from voicecore.exceptions import UnsupportedSampleRateError as UnsupportedSampleRateError
from voicecore.exceptions import VoicecoreError as VoicecoreError

__all__ = [
    "AudioFormatError",
    "AudioTypeError",
    "ConfigError",
    "PacerError",
    "PacerStoppedError",
    "Resampler",
    "RingStats",
    "SampleRing",
    "UnknownStreamError",
    "UnsupportedSampleRateError",
    "VoicecoreError",
    "__version__",
]
