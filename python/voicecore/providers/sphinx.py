"""PocketSphinx streaming speech-to-text, offline (the en-US model ships in the wheel).

:class:`SphinxSTT` implements the ``voicecore.engine.stages.STT`` protocol: it feeds the user's
16 kHz audio to a PocketSphinx decoder as it arrives, yields the running hypothesis as a
partial ``Hypothesis`` whenever it changes, and the final one when the audio ends.

Threads: every decoder call (``process_raw``, ``hyp``, ``end_utt``; about 0.25 s of CPU per
second of audio, and ``end_utt`` up to ~0.25 s on a long utterance) runs in a
worker thread through ``trio.to_thread.run_sync`` with the provider's own
``CapacityLimiter(1)``: the decoder is not thread-safe, and the limiter guarantees that no
two threads ever use it at once. PocketSphinx releases the GIL while it decodes.

Cancellation: a cancelled ``transcribe`` returns at once; a decoder call already running
finishes in its thread (at most one ``MAX_PIECE_MS`` piece of audio, or ``end_utt``) while
still holding the limiter, so work never piles up: the next utterance's first call waits
for it. The next utterance then starts cleanly (an utterance left open is ended first).

One ``SphinxSTT`` per session: it owns one decoder, created once (~0.25 s; do it before the
first turn with ``await stt.load()``) and reused for every utterance. A new ``transcribe``
call takes the decoder over: an older call still running fails with ``RuntimeError``
(the engine cancels a superseded utterance before it starts the next one).

Example::

    stt = SphinxSTT()
    await stt.load()
    async for transcript in stt.transcribe(frames, ctx):
        print(transcript.text, transcript.is_final)
"""

from __future__ import annotations

import itertools
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import trio

from voicecore.engine.stages import STT_SAMPLE_RATE, AudioFrame, Hypothesis, TurnContext
from voicecore.exceptions import AudioFormatError, ConfigError, SupersededError

__all__ = ["MAX_PIECE_MS", "SphinxSTT", "SphinxStats"]

MAX_PIECE_MS = 100
"""Audio fed to the decoder per worker call, at most (ms): bounds the work a cancellation
waits for and the delay between partial hypotheses when a large frame arrives (pre-roll)."""

_PIECE_BYTES = 2 * MAX_PIECE_MS * STT_SAMPLE_RATE // 1000
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class SphinxStats:
    """What a :class:`SphinxSTT` has done so far.

    Attributes:
        utterances: ``transcribe`` calls that started decoding.
        finals: utterances that reached their final transcript.
        audio_s: audio decoded, in seconds.
        decode_cpu_s: CPU time of the decoder calls, in seconds (worker thread CPU time).
        decoder_load_s: wall time the decoder took to create, in seconds (None: not yet).
    """

    utterances: int
    finals: int
    audio_s: float
    decode_cpu_s: float
    decoder_load_s: float | None

    @property
    def real_time_factor(self) -> float:
        """Decoding CPU time over audio time (0.25: a second of speech costs 0.25 s)."""
        return self.decode_cpu_s / self.audio_s if self.audio_s else 0.0


class SphinxSTT:
    """Streaming STT on PocketSphinx, decoding off the Trio thread.

    Args:
        second_pass: run PocketSphinx's second and third searches (``fwdflat`` and
            ``bestpath``) when the utterance ends. Off by default: the final is on the
            voice-to-voice critical path, and on our real-speech recordings the passes
            delayed it by 130-340 ms per utterance without lowering the word error rate
            (0.35 with them, 0.27 without, on 48 words: ``benches/bench_offline_stt_vad``).
        decoder_options: extra ``pocketsphinx.Decoder`` options (for example ``hmm``,
            ``lm``, ``dict`` for another model); they override ``second_pass``. The sample
            rate is always 16000 Hz, the engine's STT rate.

    Raises:
        ConfigError: a ``samprate`` option other than 16000.
    """

    def __init__(
        self, *, second_pass: bool = False, decoder_options: Mapping[str, Any] | None = None
    ) -> None:
        options = dict(decoder_options or {})
        rate = options.pop("samprate", STT_SAMPLE_RATE)
        if rate != STT_SAMPLE_RATE:
            raise ConfigError(
                f"the engine feeds the STT {STT_SAMPLE_RATE} Hz audio; samprate={rate} "
                "is not supported"
            )
        self._options: dict[str, Any] = {
            "samprate": STT_SAMPLE_RATE,
            "fwdflat": second_pass,
            "bestpath": second_pass,
            **options,
        }
        self._decoder: Any = None  # pocketsphinx.Decoder, created in a worker
        self._limiter = trio.CapacityLimiter(1)
        # Owned by the worker calls (serialized by the limiter):
        self._owner = 0  # the transcribe call whose utterance the decoder holds
        self._in_utterance = False
        self._audio_bytes = 0
        self._cpu_ns = 0
        self._load_s: float | None = None
        self._finals = 0
        self._calls = itertools.count(1)
        self._utterances = 0

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"SphinxSTT(loaded={self._decoder is not None}, utterances={stats.utterances}, "
            f"audio_s={stats.audio_s:.1f}, rtf={stats.real_time_factor:.2f})"
        )

    def stats(self) -> SphinxStats:
        """A snapshot of the counters."""
        return SphinxStats(
            utterances=self._utterances,
            finals=self._finals,
            audio_s=self._audio_bytes / (2 * STT_SAMPLE_RATE),
            decode_cpu_s=self._cpu_ns / 1e9,
            decoder_load_s=self._load_s,
        )

    async def load(self) -> None:
        """Creates the decoder now, in a worker thread (~0.25 s), if it does not exist yet.

        Optional: the first ``transcribe`` does it otherwise, delaying that turn's partials.
        """
        await self._run(self._ensure_decoder)

    async def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        """Decodes one utterance as it streams in: partials when the hypothesis changes,
        then one final (possibly empty text) when ``audio`` ends.

        Raises:
            ValueError: a frame at another sample rate.
            AudioFormatError: PCM16 of odd byte length.
            RuntimeError: a newer ``transcribe`` call took the decoder over.
        """
        call = next(self._calls)
        self._utterances += 1
        await self._run(self._start, call)
        partial = ""
        async for frame in audio:
            if frame.sample_rate != STT_SAMPLE_RATE:
                raise ValueError(f"expected {STT_SAMPLE_RATE} Hz audio, got {frame.sample_rate}")
            if len(frame.pcm) % 2:
                raise AudioFormatError(
                    f"PCM16 audio must have an even number of bytes, got {len(frame.pcm)}"
                )
            for offset in range(0, len(frame.pcm), _PIECE_BYTES):
                piece = frame.pcm[offset : offset + _PIECE_BYTES]
                hypothesis = await self._run(self._feed, call, piece)
                if hypothesis and hypothesis != partial:
                    partial = hypothesis
                    yield Hypothesis(hypothesis, is_final=False)
        final = await self._run(self._finish, call)
        yield Hypothesis(final, is_final=True)

    # --- worker side: every function below runs in a worker thread, under the limiter ----

    async def _run(self, fn: Callable[..., R], *args: Any) -> R:
        # abandon_on_cancel: a cancelled turn returns at once; the call finishes in its thread
        # still holding the limiter, so the decoder is never used by two threads at once.
        return await trio.to_thread.run_sync(
            fn, *args, limiter=self._limiter, abandon_on_cancel=True
        )

    def _ensure_decoder(self) -> Any:
        if self._decoder is None:
            from pocketsphinx import Decoder

            started = time.perf_counter()
            self._decoder = Decoder(**self._options)
            self._load_s = time.perf_counter() - started
        return self._decoder

    def _start(self, call: int) -> None:
        decoder = self._ensure_decoder()
        started = time.thread_time_ns()
        if self._in_utterance:
            decoder.end_utt()  # left open by a cancelled or superseded call: discard it
        decoder.start_utt()
        self._in_utterance = True
        self._owner = call
        self._cpu_ns += time.thread_time_ns() - started

    def _check_owner(self, call: int) -> None:
        if call != self._owner:
            raise SupersededError(
                "a newer transcribe call took this SphinxSTT's decoder over; use one "
                "SphinxSTT per concurrent audio stream"
            )

    def _feed(self, call: int, pcm: bytes) -> str:
        self._check_owner(call)
        started = time.thread_time_ns()
        self._decoder.process_raw(pcm, False, False)
        hypothesis = self._decoder.hyp()
        self._cpu_ns += time.thread_time_ns() - started
        self._audio_bytes += len(pcm)
        return str(hypothesis.hypstr) if hypothesis is not None else ""

    def _finish(self, call: int) -> str:
        self._check_owner(call)
        started = time.thread_time_ns()
        self._decoder.end_utt()
        self._in_utterance = False
        hypothesis = self._decoder.hyp()
        self._cpu_ns += time.thread_time_ns() - started
        self._finals += 1
        return str(hypothesis.hypstr) if hypothesis is not None else ""
