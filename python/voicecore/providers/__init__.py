"""Providers: implementations of the stage protocols (``voicecore.engine.stages``).

The offline pipeline (no network, no API key; its models come from registry packages,
``voicecore models fetch``): ``silero`` (``SileroVad``, behind the Rust energy VAD),
``moonshine`` (``MoonshineSTT``, a neural recognizer), ``responder`` (``RuleBasedResponder``: a
few rules, not a language model, and it says so) and ``piper`` (``PiperTTS``, a neural voice);
``smart_turn`` (``SmartTurn``) predicts whether a pause ends the user's turn. Their models are
loaded once per process and shared by every session. The fallbacks
``sphinx`` (``SphinxSTT``, PocketSphinx) and ``espeak`` (``EspeakTTS``, espeak-ng) need no
model file. ``openai`` holds the network providers (any OpenAI-compatible server: Ollama,
llama.cpp's server, vLLM...); ``scripted`` has test doubles with scripted output and
controllable timings (deterministic under Trio's ``MockClock``).
"""

from voicecore.providers.espeak import EspeakTTS as EspeakTTS
from voicecore.providers.espeak import espeak_voices as espeak_voices
from voicecore.providers.moonshine import MoonshineSTT as MoonshineSTT
from voicecore.providers.moonshine_model import MoonshineModel as MoonshineModel
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
from voicecore.providers.smart_turn import SmartTurn as SmartTurn
from voicecore.providers.sphinx import SphinxStats as SphinxStats
from voicecore.providers.sphinx import SphinxSTT as SphinxSTT

__all__ = [
    "EspeakTTS",
    "MoonshineModel",
    "MoonshineSTT",
    "OpenAILLM",
    "OpenAISTT",
    "OpenAITTS",
    "PiperStats",
    "PiperTTS",
    "PiperVoice",
    "RuleBasedResponder",
    "ScriptedLLM",
    "ScriptedSTT",
    "ScriptedTTS",
    "SileroStats",
    "SileroVad",
    "SmartTurn",
    "SphinxSTT",
    "SphinxStats",
    "Utterance",
    "espeak_voices",
    "make_vad",
]
