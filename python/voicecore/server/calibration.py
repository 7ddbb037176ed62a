"""What one conversation costs with the configured pipeline, measured at start-up.

The server's capacity (``voicecore.server.admission.Capacity``) follows from the CPU one
second of conversation costs. That cost depends on the pipeline (a neural recognizer and
voice cost hundreds of times what the scripted test doubles do) and on the machine, so it is
measured, not guessed: :func:`calibrate` runs one short real conversation through the
pipeline before the server listens, on the real clock, and divides the process' CPU time by
its length.

The conversation: half a second of room noise, the user asking a question (spoken by
espeak-ng, which ships with voicecore: no recording needed), room noise while the agent
answers, until the reply has played out (``agent_done``). The user's mic is streamed in real
time and the client reports its playout buffer as the web page does, so the recognizer's
partial decodes, the end-of-turn pause, the reply's synthesis and its pacing cost what they
cost in a real call. A call alternates speech and listening the same way, so the figure is
the cost of a conversation second, not of a second of speech.

Providers behind a network API (``openai`` kinds) cost the server little and must not be
called (nor billed) at start-up: the measurement puts the scripted stand-ins in their place
and says so (``Calibration.stand_ins``).

One session measured alone is conservative: under load, the recognizer skips partial
decodes that would queue, so a conversation costs a little less.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Final

import numpy as np
import numpy.typing as npt
import trio

from voicecore.engine.transport import memory_transport
from voicecore.exceptions import CalibrationError
from voicecore.pipeline import Pipeline, Providers
from voicecore.protocol import AgentAudio, AgentDone, Error

__all__ = ["QUESTION", "Calibration", "calibrate"]

QUESTION: Final = "What time is it? Tell me the time, please."
"""What the calibration's user asks (the offline responder answers it with the time)."""

_NOISE_RMS: Final = 30.0
"""The room noise under the user's voice, in PCM16 units (about -60 dBFS)."""

_REPORT_S: Final = 0.25
"""Playout report period, as the web page's."""


@dataclass(frozen=True)
class Calibration:
    """One measured conversation.

    Attributes:
        session_cpu: CPU seconds one second of conversation cost (the process' CPU time over
            the conversation, divided by its length).
        cpu_s: the process' CPU time over the conversation, s.
        conversation_s: its length, from the first mic frame to ``agent_done``, s.
        speech_s: the user's speech in it, s.
        stand_ins: the configured providers that were replaced by scripted stand-ins
            because they call a network API (``"stt"``, ``"llm"``, ``"tts"``).
    """

    session_cpu: float
    cpu_s: float
    conversation_s: float
    speech_s: float
    stand_ins: tuple[str, ...] = ()


async def calibrate(pipeline: Pipeline, *, timeout_s: float = 30.0) -> Calibration:
    """Measures what one second of conversation costs with ``pipeline`` (see the module
    documentation). Takes a few seconds of real time (the conversation's length).

    Raises:
        CalibrationError: the conversation did not reach ``agent_done`` within
            ``timeout_s``, or a provider failed in it (the message says which).
    """
    rate, question = await _user_speech()
    providers, stand_ins = await _local_providers(pipeline)
    transport, client = memory_transport(48000, input_rate=rate)
    session = pipeline.session(transport, providers=providers, session_id="calibration")
    frame = rate // 50  # 20 ms
    noise = np.random.default_rng(0)
    mic = np.concatenate([_noise(noise, rate // 2), question])
    outcome: dict[str, float] = {}
    failure: list[str] = []

    async def speak(started: float) -> None:
        """The mic, in real time: noise, the question, then noise until the end."""
        for index in itertools.count():
            await trio.sleep_until(started + index * 0.02)
            chunk = mic[index * frame : (index + 1) * frame]
            if len(chunk) < frame:
                chunk = _noise(noise, frame)
            await client.send_audio(chunk.astype("<i2").tobytes())

    async def listen(done: trio.CancelScope, playout: _Playout) -> None:
        async for message in client:
            now = trio.current_time()
            if isinstance(message, AgentAudio):
                playout.frame(now, len(message.pcm) / 2 / transport.sample_rate)
            elif isinstance(message, AgentDone):
                outcome["end"] = now
                outcome["cpu"] = time.process_time()
                done.cancel()
                return
            elif isinstance(message, Error):
                failure.append(f"{message.code}: {message.message}")
                done.cancel()
                return

    async def report(playout: _Playout) -> None:
        while True:
            await trio.sleep(_REPORT_S)
            await client.report_playout(playout.buffered_ms(trio.current_time()))

    with trio.move_on_after(timeout_s) as waited, _quiet_engine():
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            async with trio.open_nursery() as conversation:
                playout = _Playout()
                started = trio.current_time()
                cpu_started = time.process_time()
                conversation.start_soon(speak, started)
                conversation.start_soon(listen, conversation.cancel_scope, playout)
                conversation.start_soon(report, playout)
            await client.close()
    if failure:
        raise CalibrationError(f"the start-up conversation failed: {failure[0]}")
    if waited.cancelled_caught or "end" not in outcome:
        raise CalibrationError(
            f"the start-up conversation did not end within {timeout_s:g} s (no reply from "
            "the pipeline)"
        )
    conversation_s = outcome["end"] - started
    cpu_s = outcome["cpu"] - cpu_started
    return Calibration(
        session_cpu=cpu_s / conversation_s,
        cpu_s=cpu_s,
        conversation_s=conversation_s,
        speech_s=len(question) / rate,
        stand_ins=stand_ins,
    )


@contextlib.contextmanager
def _quiet_engine() -> Iterator[None]:
    """The engine's per-turn log lines are left out while the calibration converses: its
    conversation is nobody's, and a deployer reading the start-up would take it for one."""
    engine = logging.getLogger("voicecore.engine")
    level = engine.level
    engine.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        engine.setLevel(level)


def _noise(rng: np.random.Generator, samples: int) -> npt.NDArray[np.int16]:
    return rng.normal(0.0, _NOISE_RMS, samples).astype(np.int16)


async def _user_speech() -> tuple[int, npt.NDArray[np.int16]]:
    """The user's question, spoken by espeak-ng: (rate in Hz, int16 samples)."""
    from voicecore.providers.espeak import EspeakTTS

    voice = EspeakTTS()
    chunks = [chunk.pcm async for chunk in voice.synthesize(QUESTION, None)]
    return voice.sample_rate, np.concatenate(chunks)


async def _local_providers(pipeline: Pipeline) -> tuple[Providers, tuple[str, ...]]:
    """A session's providers with scripted stand-ins for the network ones, loaded."""
    from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance

    providers = await trio.to_thread.run_sync(pipeline.providers)
    config = pipeline.config
    stand_ins: list[str] = []
    if config.stt.kind == "openai":
        providers = replace(providers, stt=ScriptedSTT([Utterance([], QUESTION)]))
        stand_ins.append("stt")
    if config.llm.kind == "openai":
        providers = replace(providers, llm=ScriptedLLM(["It is nine o'clock."]))
        stand_ins.append("llm")
    if config.tts.kind == "openai":
        providers = replace(providers, tts=ScriptedTTS(sample_rate=config.tts.sample_rate))
        stand_ins.append("tts")
    await pipeline.load(providers)
    return providers, tuple(stand_ins)


class _Playout:
    """The client's playout buffer, as the web page's player keeps it: agent audio received
    and not yet played, played in real time from the first frame on."""

    def __init__(self) -> None:
        self._buffered_s = 0.0
        self._at = 0.0

    def _advance(self, now: float) -> None:
        if self._buffered_s > 0:
            self._buffered_s = max(0.0, self._buffered_s - (now - self._at))
        self._at = now

    def frame(self, now: float, duration_s: float) -> None:
        self._advance(now)
        self._buffered_s += duration_s

    def buffered_ms(self, now: float) -> float:
        self._advance(now)
        return 1000.0 * self._buffered_s
