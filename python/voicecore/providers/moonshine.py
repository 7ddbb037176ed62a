"""Moonshine as the engine's streaming STT (``MoonshineSTT``), over a shared
``voicecore.providers.moonshine_model.MoonshineModel``.

Moonshine is not a streaming model, so :class:`MoonshineSTT` makes a streaming STT out of
repeated whole-utterance decodes: partials by re-decoding the growing utterance on a cadence
(skipped, never queued, while a decode runs), and a *speculative final* as soon as the user
pauses, so that when the engine ends the turn the final is usually ready without another
decode.

Measured (``benches/bench_moonshine.py`` and ``bench_offline_pipeline.py``, real speech, 2
shared cores): WER 0.021 against PocketSphinx's 0.25; the final ready 81 ms p50 after the end
of the turn through the engine.

Example::

    model = MoonshineModel.shared(voicecore.models.require("moonshine-base-en"))
    stt = MoonshineSTT(model)
    async for hypothesis in stt.transcribe(frames, ctx):
        print(hypothesis.text, hypothesis.is_final)
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio

from voicecore.engine.stages import STT_SAMPLE_RATE, AudioFrame, Hypothesis, TurnContext
from voicecore.exceptions import (
    AudioFormatError,
    ConfigError,
    UnsupportedSampleRateError,
)
from voicecore.providers.moonshine_model import (
    Decode,
    MoonshineModel,
)

__all__ = ["MoonshineSTT", "MoonshineSTTStats"]

_BLOCK = STT_SAMPLE_RATE // 50  # 20 ms: the energy check's block
_FLOOR_DB = -70.0  # quietest noise floor the energy check assumes (digital silence)

# --- streaming STT ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoonshineSTTStats:
    """What a :class:`MoonshineSTT` has done so far.

    Attributes:
        utterances: ``transcribe`` calls.
        finals: finals yielded.
        partial_decodes: re-decodes of the growing utterance started for partials.
        skipped: partial or speculative decodes not started on time because a decode of the
            same utterance was still running or the pool had no free worker.
        speculative_decodes: decodes started because the user paused.
        speculative_finals: finals that reused a decode started before the audio ended
            (the speculative one, unless the audio ended during a partial decode of exactly
            the final's span): no decode after the end of the audio.
        final_decodes: finals that needed a decode after the audio ended.
    """

    utterances: int
    finals: int
    partial_decodes: int
    skipped: int
    speculative_decodes: int
    speculative_finals: int
    final_decodes: int


class _Utterance:
    """The audio of one utterance and a cheap energy check over it, in 20 ms blocks counted
    from the utterance's first sample (so the verdicts do not depend on the framing)."""

    def __init__(self, margin_db: float) -> None:
        self.pcm = bytearray()
        self.levels: list[float] = []  # dBFS of each complete 20 ms block
        self._margin_db = margin_db
        self._floor = 0.0  # dBFS: the quietest block so far (never below _FLOOR_DB)

    @property
    def samples(self) -> int:
        return len(self.pcm) // 2

    def append(self, pcm: bytes) -> None:
        done = len(self.levels) * _BLOCK
        self.pcm += pcm
        total = self.samples
        if total - done < _BLOCK:
            return
        end = done + (total - done) // _BLOCK * _BLOCK
        blocks = np.frombuffer(self.pcm, dtype="<i2", count=end - done, offset=2 * done)
        power = np.square(blocks.reshape(-1, _BLOCK).astype(np.float32) / 32768.0).mean(axis=1)
        levels = 10.0 * np.log10(np.maximum(power, 1e-12))
        self.levels.extend(levels.tolist())
        self._floor = min(self._floor, max(_FLOOR_DB, float(levels.min())))

    def speech_end(self) -> int | None:
        """One past the last block louder than the noise floor + margin (None: no such
        block: the check cannot tell speech from silence here)."""
        threshold = self._floor + self._margin_db
        for i in range(len(self.levels) - 1, -1, -1):
            if self.levels[i] > threshold:
                return (i + 1) * _BLOCK
        return None

    def cut(self, tail: int) -> int:
        """Where the final's audio ends: ``tail`` samples after the end of speech (all of
        it when the energy check finds no speech, or when the speech runs to the end)."""
        end = self.speech_end()
        total = self.samples
        return total if end is None else min(total, end + tail)

    def array(self, samples: int) -> npt.NDArray[np.int16]:
        return np.frombuffer(bytes(self.pcm[: 2 * samples]), dtype="<i2").astype(np.int16)


class MoonshineSTT:
    """Streaming STT on Moonshine: partials by re-decoding, a speculative final on pauses.

    While the user speaks, the utterance so far is re-decoded every ``partial_interval_ms``
    of new speech (never two decodes of one utterance at once, never queued: a cadence that
    finds the previous decode still running, or no free worker in the model's pool, is
    skipped; and the interval stretches so that partials take at most ``partial_duty`` of
    a worker's time); a partial ``Hypothesis`` is yielded when the text changes.

    Speculative final: a cheap energy check (20 ms blocks against the utterance's noise
    floor + ``margin_db``) notices when no speech has arrived for ``speculative_silence_ms``
    and decodes the utterance up to ``speculative_silence_ms`` after its last speech block
    at once. The final always decodes exactly that span (the trailing silence the engine
    waits out before ending the turn is dropped), so when no speech came after the
    speculative decode the final reuses it, with no decode after the audio ends; and the
    final's text never depends on timing (same audio in, same transcript out).

    Cancellation: a cancelled or closed ``transcribe`` returns at once and aborts its
    running decode (within one decoder step; onnxruntime stops an encoder run in
    progress), which then gives its worker back.

    Args:
        model: a loaded :class:`MoonshineModel` (share one between all sessions), or its
            directory (``MoonshineModel.shared(model)`` is loaded on first use, in a
            worker thread, or by ``await stt.load()``).
        partial_interval_ms: new audio between two partial decodes, at least; None: no
            partials (only the speculative decode and the final).
        partial_duty: the most of a worker's time one utterance's partials take (0.5: after
            a 0.4 s decode, the next starts 0.8 s after it started, at the earliest).
        speculative_silence_ms: silence that triggers the speculative decode, and the
            silence kept after the last speech in the decoded audio; None: no speculative
            decode (the final still decodes the same span). The shorter, the sooner the
            final is ready after the end of turn (the engine waits 500 ms of silence), and
            the more speculative decodes are wasted on pauses inside a sentence (in-sentence
            pauses of 60-160 ms were measured in read speech): CPU, never correctness (a
            speculation is reused only when no speech followed it). 100 ms: the final p50
            81 ms after the end of turn on real speech, against 124 ms at 150 ms.
        margin_db: how far above the utterance's noise floor a 20 ms block counts as speech.

    Raises:
        ConfigError: a setting out of range.
    """

    def __init__(
        self,
        model: MoonshineModel | Path | str,
        *,
        partial_interval_ms: float | None = 400.0,
        partial_duty: float = 0.5,
        speculative_silence_ms: float | None = 100.0,
        margin_db: float = 12.0,
    ) -> None:
        if partial_interval_ms is not None and partial_interval_ms <= 0:
            raise ConfigError(f"partial_interval_ms must be positive, got {partial_interval_ms}")
        if not 0 < partial_duty <= 1:
            raise ConfigError(f"partial_duty must be in (0, 1], got {partial_duty}")
        if speculative_silence_ms is not None and not 20 <= speculative_silence_ms <= 5000:
            raise ConfigError(
                f"speculative_silence_ms must be in 20..5000, got {speculative_silence_ms}"
            )
        if not 0 < margin_db <= 60:
            raise ConfigError(f"margin_db must be in (0, 60], got {margin_db}")
        self._model = model if isinstance(model, MoonshineModel) else None
        self._model_dir = None if isinstance(model, MoonshineModel) else Path(model)
        self._partial_interval = (
            None
            if partial_interval_ms is None
            else round(partial_interval_ms * STT_SAMPLE_RATE / 1000)
        )
        self._duty = partial_duty
        self._speculative = speculative_silence_ms is not None
        self._tail = round((speculative_silence_ms or 100.0) * STT_SAMPLE_RATE / 1000)
        self._margin_db = margin_db
        self._counts = dict.fromkeys(MoonshineSTTStats.__slots__, 0)

    def __repr__(self) -> str:
        return f"MoonshineSTT(model={self._model!r}, stats={self.stats()})"

    def stats(self) -> MoonshineSTTStats:
        """A snapshot of the counters."""
        return MoonshineSTTStats(**self._counts)

    @property
    def model(self) -> MoonshineModel | None:
        """The model (None until loaded, when built from a directory)."""
        return self._model

    async def load(self) -> MoonshineModel:
        """Loads the shared model now (in a worker thread) if it is not loaded yet."""
        if self._model is None:
            assert self._model_dir is not None
            self._model = await trio.to_thread.run_sync(MoonshineModel.shared, self._model_dir)
        return self._model

    async def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        """Transcribes one utterance as it streams in: partials when the text changes, then
        one final (possibly empty) when ``audio`` ends.

        Raises:
            UnsupportedSampleRateError: a frame at another rate than 16 kHz.
            AudioFormatError: PCM16 of odd byte length.
        """
        model = await self.load()
        counts = self._counts
        counts["utterances"] += 1
        utterance = _Utterance(self._margin_db)
        running: Decode | None = None  # at most one decode of this utterance at a time
        done: tuple[int, str] | None = None  # (samples, text) of the newest ended decode
        pending_cut: int | None = None  # a speculative decode not started yet
        speculated = -1  # the cut of the latest speculative decode (started or pending)
        partial = ""  # the last partial yielded
        shown = 0  # samples of the decode behind it
        last_start = 0  # samples when the last partial decode started
        gap = self._partial_interval or 0  # new samples before the next partial decode
        noted = -1  # last_start of the cadence already counted as skipped
        try:
            async for frame in audio:
                if frame.sample_rate != STT_SAMPLE_RATE:
                    raise UnsupportedSampleRateError(
                        f"expected {STT_SAMPLE_RATE} Hz audio, got {frame.sample_rate} Hz"
                    )
                if len(frame.pcm) % 2:
                    raise AudioFormatError(
                        f"PCM16 audio must have an even number of bytes, got {len(frame.pcm)}"
                    )
                utterance.append(frame.pcm)
                total = utterance.samples
                end = utterance.speech_end()
                if self._speculative and end is not None and total - end >= self._tail:
                    cut = end + self._tail
                    if cut != speculated:
                        speculated = pending_cut = cut
                if running is not None and running.done.is_set():
                    ended, running = running, None
                    text = ended.result()
                    if text is not None:
                        done = (ended.samples, text)
                        if ended.kind == "partial" and self._partial_interval is not None:
                            stretch = round(ended.wall_s / self._duty * STT_SAMPLE_RATE)
                            gap = max(self._partial_interval, stretch)
                        # A speculative decode (all the speech so far, at a pause) is news
                        # even with the last partial's words: the reply may start on it.
                        speculative = ended.kind == "speculative"
                        fresh = text != partial or speculative
                        if text and fresh and ended.samples >= shown:
                            partial, shown = text, ended.samples
                            yield Hypothesis(text, is_final=False, speculative=speculative)
                partial_due = (
                    self._partial_interval is not None
                    and total - last_start >= gap
                    and end is not None
                    and end > last_start
                )
                if pending_cut is None and not partial_due:
                    continue
                if running is not None:
                    if pending_cut is not None and running.kind == "partial":
                        running.cancel()  # the user paused: the speculative decode supersedes it
                    elif pending_cut is None and noted != last_start:
                        counts["skipped"] += 1  # still decoding: this cadence is dropped
                        noted = last_start
                    continue
                cut = pending_cut if pending_cut is not None else total
                running = model.try_submit(utterance.array(cut))
                if running is None:  # no free worker: drop the cadence (a speculative waits)
                    if pending_cut is None and noted != last_start:
                        counts["skipped"] += 1
                        noted = last_start
                    continue
                if pending_cut is not None:
                    running.kind = "speculative"
                    counts["speculative_decodes"] += 1
                    pending_cut = None
                else:
                    running.kind = "partial"
                    counts["partial_decodes"] += 1
                    last_start = total
            # The audio ended: the final decodes the utterance up to its speech's end + tail.
            cut = utterance.cut(self._tail)
            if running is not None:
                if running.samples != cut:
                    running.cancel()
                await running.done.wait()
                text = running.result()
                if text is not None:
                    done = (running.samples, text)
                running = None
            if done is not None and done[0] == cut:
                counts["speculative_finals"] += 1
                final = done[1]
            else:
                counts["final_decodes"] += 1
                running = await model.submit(utterance.array(cut))
                final = await running.wait()
                running = None
            counts["finals"] += 1
            yield Hypothesis(final, is_final=True)
        finally:
            if running is not None:
                running.cancel()
