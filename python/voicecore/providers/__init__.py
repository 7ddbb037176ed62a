"""Providers: implementations of the stage protocols (``voicecore.engine.stages``).

``voicecore.providers.scripted`` has test doubles with scripted output and controllable
timings (deterministic under Trio's ``MockClock``), for tests, benchmarks and examples.
Network providers (real STT, LLM and TTS services) live beside it.
Offline defaults include ``espeak`` (``EspeakTTS``, espeak-ng in process) and ``responder``
(``RuleBasedResponder``, a rule-based stand-in for an LLM); ``piper`` (``PiperTTS``) speaks
with a neural Piper voice, offline, given the voice's files.
"""

from voicecore.exceptions import ModelNotFoundError as ModelNotFoundError
from voicecore.exceptions import ProviderAuthError as ProviderAuthError
from voicecore.exceptions import ProviderConnectionError as ProviderConnectionError
from voicecore.exceptions import ProviderError as ProviderError
from voicecore.exceptions import ProviderHTTPError as ProviderHTTPError
from voicecore.exceptions import ProviderResponseError as ProviderResponseError
from voicecore.exceptions import VadFallbackWarning as VadFallbackWarning
from voicecore.providers.espeak import EspeakTTS as EspeakTTS
from voicecore.providers.espeak import espeak_voices as espeak_voices
from voicecore.providers.openai import OpenAILLM as OpenAILLM
from voicecore.providers.openai import OpenAISTT as OpenAISTT
from voicecore.providers.openai import OpenAITTS as OpenAITTS
from voicecore.providers.piper import PiperStats as PiperStats
from voicecore.providers.piper import PiperTTS as PiperTTS
from voicecore.providers.piper import PiperVoice as PiperVoice
from voicecore.providers.responder import RuleBasedResponder as RuleBasedResponder
from voicecore.providers.scripted import ScriptedLLM as ScriptedLLM
from voicecore.providers.scripted import ScriptedSTT as ScriptedSTT
from voicecore.providers.scripted import ScriptedTTS as ScriptedTTS
from voicecore.providers.scripted import Utterance as Utterance
from voicecore.providers.silero import SileroStats as SileroStats
from voicecore.providers.silero import SileroVad as SileroVad
from voicecore.providers.silero import make_vad as make_vad
from voicecore.providers.sphinx import SphinxStats as SphinxStats
from voicecore.providers.sphinx import SphinxSTT as SphinxSTT

__all__ = [
    "EspeakTTS",
    "ModelNotFoundError",
    "OpenAILLM",
    "OpenAISTT",
    "OpenAITTS",
    "PiperStats",
    "PiperTTS",
    "PiperVoice",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
    "RuleBasedResponder",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedTTS",
    "SileroStats",
    "SileroVad",
    "SphinxSTT",
    "SphinxStats",
    "Utterance",
    "VadFallbackWarning",
    "espeak_voices",
    "make_vad",
]
