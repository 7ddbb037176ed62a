"""Scripted providers: STT, LLM and TTS test doubles with controllable timings.

They implement the stage protocols of ``voicecore.engine.stages`` exactly as real providers do
(streaming, cancellable), but their output and their delays are given, so a test or a
benchmark knows what to expect. Every delay is a ``trio.sleep``: under Trio's ``MockClock``
they take no real time and are deterministic; with zero delays they measure the engine's own
overhead. Each records what it was asked (``calls``/``texts``, the last ``RECORDED_CALLS``
calls) for assertions, and each can be told to fail (``error``) or to stall (``stall``) at a
chosen point, to exercise the engine's error handling and timeouts.

Example::

    stt = ScriptedSTT([Utterance(["what", "what time"], "What time is it?")])
    llm = ScriptedLLM(["It is ten past nine."], first_token_delay_s=0.2)
    tts = ScriptedTTS(sample_rate=24000, ms_per_char=50.0)
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Final, TypeVar

import numpy as np
import trio

from voicecore.engine.history import Message
from voicecore.engine.stages import AudioChunk, AudioFrame, Hypothesis, TurnContext

__all__ = ["RECORDED_CALLS", "ScriptedLLM", "ScriptedSTT", "ScriptedTTS", "Utterance"]

RECORDED_CALLS: Final = 100
"""Calls each provider keeps a record of (``calls``, ``texts``, ``audio_ms``): the most
recent ones. ``voicecore serve --providers scripted`` shares one LLM and one TTS among every
session for as long as it runs (the soak and load benchmarks run it for hours), so a record
of every call, each with its whole prompt, would grow without bound; tests look at a few.
``call_count`` counts them all."""

_T = TypeVar("_T")


def _record(records: list[_T], item: _T) -> None:
    """Appends ``item``, forgetting the oldest records beyond ``RECORDED_CALLS``."""
    records.append(item)
    if len(records) > RECORDED_CALLS:
        del records[: len(records) - RECORDED_CALLS]


async def _stall() -> None:
    """Waits forever (until cancelled): a provider that hangs."""
    await trio.sleep_forever()


@dataclass(frozen=True)
class Utterance:
    """What ``ScriptedSTT`` "recognizes" for one utterance.

    Attributes:
        partials: partial transcripts, one per ``partial_every_ms`` of audio received.
        final: the final transcript.
        error: raised (after the partials) instead of giving the final.
        stall: hang instead of giving the final (the engine's timeout must cut it off).
    """

    partials: Sequence[str] = ()
    final: str = ""
    error: Exception | None = None
    stall: bool = False


class ScriptedSTT:
    """A streaming STT that plays a script, one ``Utterance`` per ``transcribe`` call.

    Partial ``i`` is yielded once ``(i + 1) * partial_every_ms`` of audio has arrived (so
    partials flow while the user speaks). The final comes ``final_delay_s`` after the audio
    ends, or earlier, after ``endpoint_silence_ms`` of trailing silence (peak below
    ``silence_peak``), like an STT with its own endpointing.

    Args:
        script: the utterances, in order; the last one repeats when the script runs out.
        partial_every_ms: audio (ms) per partial.
        final_delay_s: delay of the final after the end of the audio, in seconds.
        endpoint_silence_ms: trailing silence (ms) after which the final comes at once;
            None: only at the end of the audio.
        silence_peak: a frame whose peak |sample| is below this is silence.

    Raises:
        ValueError: an empty script, or a negative or zero duration.
    """

    def __init__(
        self,
        script: Sequence[Utterance],
        *,
        partial_every_ms: float = 200.0,
        final_delay_s: float = 0.0,
        endpoint_silence_ms: float | None = None,
        silence_peak: int = 500,
    ) -> None:
        if not script:
            raise ValueError("the script needs at least one utterance")
        if partial_every_ms <= 0 or final_delay_s < 0:
            raise ValueError("partial_every_ms must be > 0 and final_delay_s >= 0")
        if endpoint_silence_ms is not None and endpoint_silence_ms <= 0:
            raise ValueError("endpoint_silence_ms must be > 0 ms or None")
        self.script = list(script)
        self.partial_every_ms = partial_every_ms
        self.final_delay_s = final_delay_s
        self.endpoint_silence_ms = endpoint_silence_ms
        self.silence_peak = silence_peak
        self.call_count = 0
        """``transcribe`` calls so far (the script's position)."""
        self.calls: list[TurnContext] = []
        """The context of each ``transcribe`` call, in order (the last ``RECORDED_CALLS``)."""
        self.audio_ms: list[float] = []
        """Audio received per call, in ms (updated as it arrives; same calls as ``calls``)."""

    def __repr__(self) -> str:
        return f"ScriptedSTT({len(self.script)} utterances, calls={self.call_count})"

    async def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        """Yields the next utterance's partials as audio arrives, then its final."""
        utterance = self.script[min(self.call_count, len(self.script) - 1)]
        self.call_count += 1
        _record(self.calls, ctx)
        _record(self.audio_ms, 0.0)
        sent = 0  # partials yielded so far
        received_ms = 0.0
        silence_ms = 0.0
        async for frame in audio:
            received_ms += frame.duration_ms
            self.audio_ms[-1] = received_ms
            if self.endpoint_silence_ms is not None:  # instant by default: no work per frame
                samples = np.frombuffer(frame.pcm, dtype="<i2").astype(np.int32)
                peak = int(np.abs(samples).max(initial=0))
                silence_ms = silence_ms + frame.duration_ms if peak < self.silence_peak else 0.0
            while (
                sent < len(utterance.partials) and received_ms >= (sent + 1) * self.partial_every_ms
            ):
                yield Hypothesis(utterance.partials[sent], is_final=False)
                sent += 1
            if self.endpoint_silence_ms is not None and silence_ms >= self.endpoint_silence_ms:
                break
        await trio.sleep(self.final_delay_s)
        if utterance.error is not None:
            raise utterance.error
        if utterance.stall:
            await _stall()
        yield Hypothesis(utterance.final, is_final=True)


@dataclass
class _Reply:
    deltas: list[str]
    error: Exception | None = None
    error_after: int = 0
    stall_after: int | None = None


class ScriptedLLM:
    """A streaming LLM that plays scripted replies, one per ``generate`` call.

    A reply given as a string is streamed word by word (each delta a word with its leading
    space), as a list of strings delta by delta. The first delta comes
    ``first_token_delay_s`` after the call, the next ones ``token_delay_s`` apart.

    Args:
        replies: the replies, in order; the last one repeats when they run out.
        first_token_delay_s: time to first delta, in seconds.
        token_delay_s: time between deltas, in seconds.

    Raises:
        ValueError: no replies, or a negative delay.
    """

    def __init__(
        self,
        replies: Sequence[str | Sequence[str]],
        *,
        first_token_delay_s: float = 0.0,
        token_delay_s: float = 0.0,
    ) -> None:
        if not replies:
            raise ValueError("the script needs at least one reply")
        if first_token_delay_s < 0 or token_delay_s < 0:
            raise ValueError("delays must be >= 0 s")
        self._replies = [_Reply(self.split(r) if isinstance(r, str) else list(r)) for r in replies]
        self.first_token_delay_s = first_token_delay_s
        self.token_delay_s = token_delay_s
        self.call_count = 0
        """``generate`` calls so far (the script's position)."""
        self.calls: list[list[Message]] = []
        """The messages of each ``generate`` call, in order (what the LLM was shown; the last
        ``RECORDED_CALLS``)."""
        self.closed = 0
        """How many generations were closed (completed or cancelled): no stream stays open."""

    def __repr__(self) -> str:
        return f"ScriptedLLM({len(self._replies)} replies, calls={self.call_count})"

    @staticmethod
    def split(text: str) -> list[str]:
        """``text`` as word deltas, each with its leading space: ``"a b"`` -> ``["a", " b"]``."""
        words = text.split(" ")
        return [words[0], *(" " + w for w in words[1:])] if text else []

    def fail(self, reply: int, error: Exception, *, after_deltas: int = 0) -> None:
        """Makes reply number ``reply`` (0-based) raise ``error`` after ``after_deltas`` deltas."""
        self._replies[reply].error = error
        self._replies[reply].error_after = after_deltas

    def stall(self, reply: int, *, after_deltas: int = 0) -> None:
        """Makes reply number ``reply`` hang after ``after_deltas`` deltas."""
        self._replies[reply].stall_after = after_deltas

    async def generate(self, messages: Sequence[Message], ctx: TurnContext) -> AsyncIterator[str]:
        """Yields the next scripted reply's deltas with the configured delays."""
        reply = self._replies[min(self.call_count, len(self._replies) - 1)]
        self.call_count += 1
        _record(self.calls, list(messages))
        try:
            await trio.sleep(self.first_token_delay_s)
            for index, delta in enumerate(reply.deltas):
                if reply.error is not None and index == reply.error_after:
                    raise reply.error
                if reply.stall_after is not None and index == reply.stall_after:
                    await _stall()
                if index:
                    await trio.sleep(self.token_delay_s)
                yield delta
            if reply.error is not None and reply.error_after >= len(reply.deltas):
                raise reply.error
        finally:
            self.closed += 1


@dataclass
class ScriptedTTS:
    """A streaming TTS that "speaks" any text as a tone of a duration proportional to it.

    Each call yields ``ceil(duration / chunk_ms)`` chunks of a sine tone (or silence with
    ``tone_hz=0``), where duration = ``ms_per_char * len(text)``: the first after
    ``first_audio_delay_s``, the next ones ``chunk_delay_s`` apart.

    Attributes:
        sample_rate: output rate in Hz.
        ms_per_char: audio per character of text, in ms (~60 ms is natural speech).
        chunk_ms: audio per chunk, in ms.
        first_audio_delay_s: time to first chunk, in seconds.
        chunk_delay_s: time between chunks, in seconds.
        tone_hz: the tone's frequency (0: silence).
        amplitude: the tone's peak, in PCM16 units.
        error: raised on the call whose 0-based index is ``fail_call``.
        stall_call: the call (0-based) that hangs instead of yielding audio.
        texts: the text of each call, in order (the last ``RECORDED_CALLS``).
        closed: how many calls were closed (completed or cancelled).
        call_count: calls so far (what ``fail_call`` and ``stall_call`` count).
    """

    sample_rate: int = 24000
    ms_per_char: float = 60.0
    chunk_ms: float = 100.0
    first_audio_delay_s: float = 0.0
    chunk_delay_s: float = 0.0
    tone_hz: float = 220.0
    amplitude: int = 8000
    error: Exception | None = None
    fail_call: int | None = None
    stall_call: int | None = None
    texts: list[str] = field(default_factory=list)
    closed: int = 0
    call_count: int = 0

    def samples_for(self, text: str) -> int:
        """The number of samples the TTS produces for ``text`` (at ``sample_rate``)."""
        return round(self.ms_per_char * len(text) * self.sample_rate / 1000)

    async def synthesize(self, text: str, ctx: TurnContext) -> AsyncIterator[AudioChunk]:
        """Yields the tone for ``text`` chunk by chunk with the configured delays."""
        call = self.call_count
        self.call_count += 1
        _record(self.texts, text)
        total = self.samples_for(text)
        per_chunk = max(1, round(self.chunk_ms * self.sample_rate / 1000))
        t = np.arange(total, dtype=np.float64) / self.sample_rate
        pcm = (self.amplitude * np.sin(2 * math.pi * self.tone_hz * t)).astype(np.int16)
        try:
            await trio.sleep(self.first_audio_delay_s)
            if self.error is not None and call == self.fail_call:
                raise self.error
            if call == self.stall_call:
                await _stall()
            for index, offset in enumerate(range(0, total, per_chunk)):
                if index:
                    await trio.sleep(self.chunk_delay_s)
                yield AudioChunk(pcm[offset : offset + per_chunk], self.sample_rate)
        finally:
            self.closed += 1
