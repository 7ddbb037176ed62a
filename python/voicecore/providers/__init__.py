"""Providers: implementations of the stage protocols (``voicecore.stages``).

``voicecore.providers.scripted`` has test doubles with scripted output and controllable
timings (deterministic under Trio's ``MockClock``), for tests, benchmarks and examples.
Network providers (real STT, LLM and TTS services) live beside it.
"""

from voicecore.providers.scripted import ScriptedLLM as ScriptedLLM
from voicecore.providers.scripted import ScriptedSTT as ScriptedSTT
from voicecore.providers.scripted import ScriptedTTS as ScriptedTTS
from voicecore.providers.scripted import Utterance as Utterance

__all__ = ["ScriptedLLM", "ScriptedSTT", "ScriptedTTS", "Utterance"]
