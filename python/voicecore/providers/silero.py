"""Silero VAD on onnxruntime (no torch), gated by the Rust energy VAD.

Silero VAD is a small recurrent network: it reads 16 kHz audio in 32 ms windows (512
samples, plus the last 64 samples of the previous window as context) and carries a hidden
state from window to window. It tells speech from noise far better than an energy detector
(see ``benches/bench_vad.py``) but costs ~120-200 µs of CPU per window, against ~1 µs for
the Rust ``EnergyVad``. So :class:`SileroVad` runs the energy VAD on every 10 ms frame first
and gives Silero only the windows the energy VAD does not already call silence: the windows
holding a frame that is speech on its own (``is_speech``) or inside one of its segments
(``in_segment``, which covers its hangover and bridged pauses). A skipped window counts as
probability 0; the recurrent state simply carries over it (measured on the speech corpus:
decisions agree with the ungated model on 99.9 % of windows, while resetting the state
after a skipped run agrees on only 98.7 %). :meth:`SileroVad.stats` counts the windows
skipped and the CPU time spent, i.e. the CPU the gate saved.

Where the inference runs: off the caller's thread by default. Each ``SileroVad`` owns one
background thread (the session's VAD thread; onnxruntime releases the GIL while it
computes). ``process`` frames the audio, runs the energy gate, hands the windows that need
the model to the thread and returns at once with the events of the windows whose
probabilities have come back: a window's verdict is reported at the first ``process`` call
after its inference finished, i.e. normally one frame later (+20 ms), with the same sample
indices (the events do not depend on when they are reported). The Trio thread pays only
the framing, the gate, a queue hand-off and the decisions (~10 µs per 20 ms frame) instead
of ~120-200 µs per window, and never waits for the model: no wake-up is needed, the next
frame collects the result. ``background=False`` runs the model inline instead
(deterministic timing, for tests on a mock clock). ``drain()`` waits for every window sent.

The model is not shipped: ``voicecore models fetch silero-vad`` (``make models``) puts it in
the cache. :func:`make_vad` builds a :class:`SileroVad` when the model is there, and otherwise
warns (:class:`VadFallbackWarning`, with how to get the model) and returns the energy VAD.

Example::

    vad = make_vad()                       # SileroVad, or EnergyVadStage with a warning
    events = vad.process(frame)            # the events completed so far, oldest first
"""

from __future__ import annotations

import functools
import logging
import queue
import threading
import time
import warnings
import weakref
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from voicecore import models
from voicecore._core import EnergyVad
from voicecore.engine.stages import (
    STT_SAMPLE_RATE,
    VAD,
    AudioFrame,
    EnergyVadStage,
    SpeechEnded,
    SpeechStarted,
    VadEvent,
)
from voicecore.exceptions import (
    AudioFormatError,
    ConfigError,
    ModelNotFoundError,
    VadFallbackWarning,
)
from voicecore.providers._onnx import single_thread_session

__all__ = [
    "SILERO_CONTEXT",
    "SILERO_MODEL_FILE",
    "SILERO_WINDOW",
    "ModelNotFoundError",
    "SileroStats",
    "SileroVad",
    "VadFallbackWarning",
    "make_vad",
]

_log = logging.getLogger("voicecore.providers.silero")

SILERO_MODEL_FILE = "silero_vad.onnx"
"""The model's file in the ``silero-vad`` model's cache directory (``voicecore.models``)."""
SILERO_WINDOW = 512
"""Samples per Silero window at 16 kHz (32 ms)."""
SILERO_CONTEXT = 64
"""Samples of the previous window prepended to each window (the model's input is 576)."""

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class SileroStats:
    """What a :class:`SileroVad` has done so far.

    Attributes:
        windows: complete 32 ms windows received.
        inferred: windows the model ran on.
        skipped: windows the energy gate called silence (the model did not run).
        inference_cpu_s: CPU time of the model runs, in seconds (thread CPU time of the
            thread that ran them; onnxruntime runs on it with one intra-op thread).
        audio_s: audio received, in seconds.
    """

    windows: int
    inferred: int
    skipped: int
    inference_cpu_s: float
    audio_s: float

    @property
    def skipped_fraction(self) -> float:
        """Share of the windows the gate skipped, in [0, 1] (0 before any window)."""
        return self.skipped / self.windows if self.windows else 0.0

    @property
    def cpu_ms_per_audio_minute(self) -> float:
        """Inference CPU time per minute of audio, in ms (0 before any audio)."""
        return 60_000.0 * self.inference_cpu_s / self.audio_s if self.audio_s else 0.0


def _windows(ms: float, name: str) -> int:
    """``ms`` as a whole number of 32 ms windows, rounded up."""
    if not 0 <= ms <= 10_000:
        raise ConfigError(f"{name} must be in [0, 10000] ms, got {ms}")
    window_ms = 1000 * SILERO_WINDOW / STT_SAMPLE_RATE
    return int(np.ceil(ms / window_ms - 1e-9))


@functools.lru_cache(maxsize=4)
def _load_session(path: Path) -> Any:
    """The onnxruntime session over the Silero model at ``path``: loaded once per process and
    shared by every ``SileroVad`` (``run`` is thread-safe in onnxruntime; each VAD keeps its
    own recurrent state), so a conversation costs its state, not a model (~0.3 s and a few
    MB each before)."""
    return single_thread_session(path, ["input", "sr", "state"], "a Silero VAD v5/v6 model")


class _Model:
    """The onnxruntime session, the recurrent state and the counters: used by one thread at
    a time (the VAD's background thread, or the caller's with ``background=False``)."""

    def __init__(self, session: Any) -> None:
        self.session = session
        self.state: Float32Array = np.zeros((2, 1, 128), dtype=np.float32)
        self.sr = np.array(STT_SAMPLE_RATE, dtype=np.int64)
        self.inferred = 0
        self.cpu_ns = 0  # thread CPU time of the runs

    def run(self, inputs: Sequence[Float32Array]) -> list[float]:
        """Speech probabilities of ``inputs`` (each ``[1, 576]``), in order, state carried."""
        probabilities: list[float] = []
        for model_input in inputs:
            started = time.thread_time_ns()
            output, self.state = self.session.run(
                None, {"input": model_input, "state": self.state, "sr": self.sr}
            )
            self.cpu_ns += time.thread_time_ns() - started
            self.inferred += 1
            probabilities.append(float(output[0, 0]))
        return probabilities


_Result = list[float] | BaseException


def _serve(
    model: _Model,
    jobs: queue.SimpleQueue[list[Float32Array] | None],
    results: queue.SimpleQueue[_Result],
) -> None:
    """The background thread: runs each batch of windows, in order, until told to stop.

    It holds no reference to the ``SileroVad`` (only to its model and queues), so a VAD that
    is garbage collected can stop it (``weakref.finalize`` sends the stop).
    """
    while (batch := jobs.get()) is not None:
        try:
            results.put(model.run(batch))
        except Exception as exc:  # handed to the caller, raised by its next process()
            results.put(exc)


class SileroVad:
    """Silero VAD as a ``voicecore.engine.stages.VAD`` stage, behind the Rust energy VAD's gate.

    Speech starts on a window whose probability reaches ``threshold`` and is confirmed after
    ``min_speech_ms`` of windows at or above ``neg_threshold`` (hysteresis: inside speech, a
    window only counts as silence below ``neg_threshold``). It ends after ``min_silence_ms``
    of windows below ``neg_threshold``. Events carry sample indices of the 16 kHz stream:
    ``SpeechStarted`` at the first sample of the first speech window minus
    ``speech_pad_ms``, ``SpeechEnded`` one past the last speech window (the true end of
    speech, like ``EnergyVadStage``: the ``min_silence_ms`` wait is not included). The events
    do not depend on how the audio is cut into frames, nor on when the background thread
    delivers (only the call that reports them does).

    One instance per session: it holds the model's recurrent state, its own onnxruntime
    session (one intra-op thread) and its background thread. Not for concurrent use: feed
    one frame at a time, in order. ``close()`` stops the thread (so does garbage collection).

    Args:
        model_path: the ``silero_vad.onnx`` file; default the cached one
            (``voicecore.models.require("silero-vad") / SILERO_MODEL_FILE``).
        threshold: probability at which a window starts speech, in (0, 1).
        neg_threshold: probability below which a window is silence inside speech;
            default ``threshold - 0.15`` (at least 0.01).
        min_speech_ms: speech must last this long to be reported (rounded up to 32 ms
            windows, at least one); in ms.
        min_silence_ms: silence must last this long to end speech (rounded up to windows);
            in ms.
        speech_pad_ms: ``SpeechStarted`` is moved this much earlier (Silero rises a little
            after the onset; the STT gets the onset); in ms, [0, 1000].
        gate: run the model only on windows the energy VAD does not call silence.
        energy_vad: the gate's detector (16 kHz); default ``EnergyVad(16000, 10)``.
        background: run the model in the VAD's own thread (events normally one frame
            later); False: inline in ``process`` (deterministic timing).

    Raises:
        ModelNotFoundError: no model file (the message says how to fetch it).
        ConfigError: a threshold or duration out of range, a file that is not the model.
        ValueError: an ``energy_vad`` at another sample rate.
    """

    def __init__(
        self,
        model_path: str | Path | None = None,
        *,
        threshold: float = 0.5,
        neg_threshold: float | None = None,
        min_speech_ms: float = 64.0,
        min_silence_ms: float = 100.0,
        speech_pad_ms: float = 32.0,
        gate: bool = True,
        energy_vad: EnergyVad | None = None,
        background: bool = True,
    ) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold}")
        if neg_threshold is None:
            neg_threshold = max(0.01, threshold - 0.15)
        if not 0.0 < neg_threshold <= threshold:
            raise ConfigError(
                f"neg_threshold must be in (0, threshold={threshold}], got {neg_threshold}"
            )
        if not 0 <= speech_pad_ms <= 1000:
            raise ConfigError(f"speech_pad_ms must be in [0, 1000] ms, got {speech_pad_ms}")
        self.threshold = threshold
        self.neg_threshold = neg_threshold
        self._min_speech = max(1, _windows(min_speech_ms, "min_speech_ms"))
        self._min_silence = max(1, _windows(min_silence_ms, "min_silence_ms"))
        self._pad = round(speech_pad_ms * STT_SAMPLE_RATE / 1000)
        if gate:
            self._gate: EnergyVad | None = (
                energy_vad if energy_vad is not None else EnergyVad(STT_SAMPLE_RATE, 10)
            )
            if self._gate.sample_rate != STT_SAMPLE_RATE:
                raise ValueError(
                    f"the gate's EnergyVad must run at {STT_SAMPLE_RATE} Hz, "
                    f"got {self._gate.sample_rate} Hz"
                )
        else:
            self._gate = None

        if model_path is None:
            path = models.require("silero-vad") / SILERO_MODEL_FILE
        else:
            path = Path(model_path)
            if not path.is_file():
                raise ModelNotFoundError(_missing_message(path))
        self.model_path = path
        self._model = _Model(_load_session(path.resolve()))
        self.background = background

        # Audio of the window being filled, and the previous window's last 64 samples.
        self._buffer: Float32Array = np.zeros(SILERO_WINDOW, dtype=np.float32)
        self._filled = 0
        self._context: Float32Array = np.zeros(SILERO_CONTEXT, dtype=np.float32)
        self._received = 0  # samples fed
        self._next_window = 0  # index of the window being filled
        self._open_windows: set[int] = set()  # windows the gate lets through
        # Windows completed but not decided yet (index, model ran on it), and the
        # probabilities that came back for them, both oldest first.
        self._undecided: deque[tuple[int, bool]] = deque()
        self._probabilities: deque[float] = deque()
        # The background thread, started with the first window it gets.
        self._jobs: queue.SimpleQueue[list[Float32Array] | None] = queue.SimpleQueue()
        self._results: queue.SimpleQueue[_Result] = queue.SimpleQueue()
        self._in_flight = 0  # batches sent, results not collected
        self._sent = 0  # windows given to the model
        self._thread: threading.Thread | None = None
        self._closed = False
        # Decision state (window indices; samples = index * SILERO_WINDOW).
        self._triggered = False
        self._candidate: int | None = None  # first window of unconfirmed speech
        self._speech_run = 0
        self._silence_run = 0
        self._last_speech_end = 0
        self._speech_until = 0
        self._last_probability = 0.0

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"SileroVad(threshold={self.threshold}, neg_threshold={self.neg_threshold}, "
            f"gate={'on' if self._gate is not None else 'off'}, windows={stats.windows}, "
            f"skipped={stats.skipped_fraction:.0%}, speech_until={self._speech_until})"
        )

    @property
    def speech_until(self) -> int:
        """One past the last sample of the last window judged speech (0 before any)."""
        return self._speech_until

    @property
    def last_probability(self) -> float:
        """The speech probability of the latest decided window (0.0 if the gate skipped it)."""
        return self._last_probability

    @property
    def gated(self) -> bool:
        """Whether the energy VAD gates the model."""
        return self._gate is not None

    def stats(self) -> SileroStats:
        """A snapshot of the window and CPU counters (a window still in the background
        thread counts as neither inferred nor skipped yet)."""
        return SileroStats(
            windows=self._next_window,
            inferred=self._model.inferred,
            skipped=self._next_window - self._sent,
            inference_cpu_s=self._model.cpu_ns / 1e9,
            audio_s=self._received / STT_SAMPLE_RATE,
        )

    def process(self, frame: AudioFrame) -> list[VadEvent]:
        """Feeds one 16 kHz frame (any length); returns the speech events decided so far.

        With ``background=True`` (the default) the model runs in the VAD's thread and this
        never waits for it: the events of a window come with the first call after its
        inference finished (normally the next frame). Inline, ~0.12-0.2 ms per window that
        passes the gate (a 20 ms frame completes at most one 32 ms window).

        Raises:
            ValueError: another sample rate, or a frame that does not follow the previous one.
            AudioFormatError: PCM16 of odd byte length.
            RuntimeError: the VAD is closed.
            Exception: whatever onnxruntime raised in the background thread.
        """
        if self._closed:
            raise RuntimeError("this SileroVad is closed")
        windows, inputs = self._prepare(frame)
        self._undecided.extend(windows)
        self._sent += len(inputs)
        if inputs and self.background:
            self._send(inputs)
        elif inputs:
            self._probabilities.extend(self._model.run(inputs))
        self._collect(wait=False)
        return self._decide()

    def drain(self) -> list[VadEvent]:
        """Waits for the windows still in the background thread; returns their events.

        Blocks the caller for at most the inference of the windows sent (a few ms).
        """
        self._collect(wait=True)
        return self._decide()

    def flush(self) -> list[VadEvent]:
        """End of the stream: drains, then ends open speech at its last speech window.

        Returns the drained events, then ``SpeechEnded`` if speech was open. The samples of
        an incomplete last window are not judged.
        """
        events = self.drain()
        self._candidate = None
        if self._triggered:
            self._triggered = False
            events.append(SpeechEnded(self._last_speech_end))
        return events

    def close(self) -> None:
        """Stops the background thread (idempotent); the VAD takes no more audio."""
        if self._closed:
            return
        self._closed = True
        if self._thread is not None:
            self._jobs.put(None)
            self._thread.join()

    # --- background thread -----------------------------------------------------------------

    def _send(self, inputs: list[Float32Array]) -> None:
        if self._thread is None:
            self._thread = threading.Thread(
                target=_serve,
                args=(self._model, self._jobs, self._results),
                name="voicecore-silero",
                daemon=True,
            )
            self._thread.start()
            weakref.finalize(self, self._jobs.put, None)
        self._jobs.put(inputs)
        self._in_flight += 1

    def _collect(self, *, wait: bool) -> None:
        """Moves the probabilities that came back into ``_probabilities``, in order."""
        while self._in_flight:
            try:
                result = self._results.get(block=wait)
            except queue.Empty:
                return
            self._in_flight -= 1
            if isinstance(result, BaseException):
                raise result
            self._probabilities.extend(result)

    # --- steps ---------------------------------------------------------------------------

    def _prepare(self, frame: AudioFrame) -> tuple[list[tuple[int, bool]], list[Float32Array]]:
        """Frames the audio into windows and gates them (cheap; on the caller's thread).

        Returns the windows completed by ``frame`` (index, whether the model must run on
        it) and the model inputs of those it must run on, in order.
        """
        if frame.sample_rate != STT_SAMPLE_RATE:
            raise ValueError(f"expected {STT_SAMPLE_RATE} Hz audio, got {frame.sample_rate} Hz")
        if frame.start_sample != self._received:
            raise ValueError(
                f"frame starts at sample {frame.start_sample}, expected {self._received} "
                "(frames must be contiguous, in stream order)"
            )
        if len(frame.pcm) % 2:
            raise AudioFormatError(
                f"PCM16 audio must have an even number of bytes, got {len(frame.pcm)}"
            )
        if self._gate is not None:
            self._gate_frames(frame.pcm)
        samples = np.frombuffer(frame.pcm, dtype="<i2")
        self._received += len(samples)
        completed: list[tuple[int, bool]] = []
        inputs: list[Float32Array] = []
        offset = 0
        while offset < len(samples):
            take = min(SILERO_WINDOW - self._filled, len(samples) - offset)
            chunk = samples[offset : offset + take]
            self._buffer[self._filled : self._filled + take] = chunk * np.float32(1 / 32768)
            self._filled += take
            offset += take
            if self._filled < SILERO_WINDOW:
                break
            index = self._next_window
            run = self._gate is None or index in self._open_windows
            if run:
                self._open_windows.discard(index)
                inputs.append(np.concatenate((self._context, self._buffer))[np.newaxis, :])
            completed.append((index, run))
            self._context[:] = self._buffer[-SILERO_CONTEXT:]
            self._filled = 0
            self._next_window += 1
        return completed, inputs

    def _gate_frames(self, pcm: bytes) -> None:
        """Runs the energy VAD; marks the windows holding a frame it does not call silence.

        A 10 ms frame belongs to the window holding its last sample, so a window's verdict
        is complete when the window is (chunking-invariant, no added delay).
        """
        assert self._gate is not None
        out = self._gate.process_frames(pcm)
        if not len(out):
            return
        active = np.flatnonzero(out.is_speech | out.in_segment)
        if active.size:
            length = self._gate.frame_length
            last_samples = (active + out.first_frame + 1) * length - 1
            self._open_windows.update((last_samples // SILERO_WINDOW).tolist())

    def _decide(self) -> list[VadEvent]:
        """Runs the hysteresis state machine over the windows whose verdict is known, in
        order: a skipped window at once (probability 0), an inferred one once its
        probability is back."""
        events: list[VadEvent] = []
        while self._undecided:
            index, ran = self._undecided[0]
            if ran and not self._probabilities:
                break  # still in the background thread
            self._undecided.popleft()
            self._step(index, self._probabilities.popleft() if ran else 0.0, events)
        return events

    def _step(self, index: int, probability: float, events: list[VadEvent]) -> None:
        """One window's verdict: updates the speech state, appends the events it completes."""
        self._last_probability = probability
        end = (index + 1) * SILERO_WINDOW
        if self._triggered:
            if probability >= self.neg_threshold:
                self._silence_run = 0
                self._last_speech_end = self._speech_until = end
            else:
                self._silence_run += 1
                if self._silence_run >= self._min_silence:
                    self._triggered = False
                    events.append(SpeechEnded(self._last_speech_end))
            return
        if self._candidate is None:
            if probability < self.threshold:
                return
            self._candidate = index
            self._speech_run = 0
        if probability < self.neg_threshold:
            self._candidate = None  # too short to be speech: a click, a breath
            return
        self._speech_run += 1
        self._last_speech_end = self._speech_until = end
        if self._speech_run >= self._min_speech:
            self._triggered = True
            self._silence_run = 0
            start = max(0, self._candidate * SILERO_WINDOW - self._pad)
            self._candidate = None
            events.append(SpeechStarted(start))


def _missing_message(path: Path) -> str:
    return (
        f"Silero VAD model not found at {path}. Pass model_path= the {SILERO_MODEL_FILE} file, "
        'or leave it unset and run "voicecore models fetch silero-vad" (or "make models") to '
        "use the cached one."
    )


def make_vad(
    prefer: Literal["silero", "energy"] = "silero",
    *,
    model_path: str | Path | None = None,
    **silero_options: Any,
) -> VAD:
    """The session's VAD: Silero behind the energy gate if possible, else the energy VAD.

    Args:
        prefer: ``"silero"`` (the default; falls back when the model is missing) or
            ``"energy"`` (the Rust energy VAD alone).
        model_path: the Silero model file; default the cached one.
        **silero_options: keyword arguments of :class:`SileroVad` (thresholds, durations).

    Returns:
        A :class:`SileroVad`, or an ``EnergyVadStage`` after a :class:`VadFallbackWarning`
        (also logged) when the model file or onnxruntime is missing.

    Raises:
        ValueError: an unknown ``prefer``.
        ConfigError: bad Silero options or a model file that is not the model (a
            misconfiguration is reported, not papered over by the fallback).
    """
    if prefer == "energy":
        return EnergyVadStage()
    if prefer != "silero":
        raise ValueError(f"prefer must be 'silero' or 'energy', got {prefer!r}")
    try:
        return SileroVad(model_path, **silero_options)
    except (ModelNotFoundError, ImportError) as exc:
        message = f"{exc} Falling back to the energy VAD."
        _log.warning("%s", message)
        warnings.warn(message, VadFallbackWarning, stacklevel=2)
        return EnergyVadStage()
