"""Smart Turn v3.2: does the user's turn end here? A classifier over the last 8 s of audio.

A pause does not always end a turn: people stop mid-sentence to think ("I would like to book
a table for... um"). Smart Turn (Daily, BSD-2-Clause, shipped in the ``pipecat-ai`` wheel;
``voicecore models fetch smart-turn-v3.2``) listens to the end of the user's speech, its
words and its intonation, and says how likely it is that the turn is complete. It is a
Whisper-tiny-sized audio encoder with a classification head, quantized to int8 for CPUs.

Input: Whisper's log-mel features (:func:`log_mel_features`) of the last 8 s of 16 kHz
audio, zero-padded on the left when there is less; output: the probability that the turn is
complete, in [0, 1]. What to feed it, the way pipecat does: the user's turn so far, from
about 0.5 s before the VAD detected the speech start to now, when the VAD reports a pause
(about 200 ms of silence). After an "incomplete" verdict, the next check gets the whole turn
again, the new speech included (older audio falls out of the 8 s window).

Cost (``benches/bench_smart_turn.py``, the shared 2-core VM under other agents' load):
55-60 ms of CPU per prediction, 55-170 ms of wall time depending on that load, of which the
features are 6-20 ms; the model is 8.7 MB and loads in ~0.15 s. One :class:`SmartTurn` per
process (:meth:`SmartTurn.shared`) serves every session; :meth:`SmartTurn.predict_async`
runs one prediction at a time in a worker thread (:func:`prediction_limiter`), so concurrent
sessions queue instead of splitting the cores.

Accuracy (same benchmark; complete sentences against the same audio cut mid-sentence, both
ending in a 200 ms pause; 0.5 for a fixed silence rule): 6 of 7 right on the project's real
recordings, 0.62 on Piper's synthesized speech, 0.40 on espeak-ng's. It was trained on human
speech; synthesized voices mislead it.

Features: voicecore computes them in numpy (no transformers, torch or librosa), exactly as
``transformers.WhisperFeatureExtractor(chunk_length=8)`` does with ``do_normalize=True`` on
the padded 8 s buffer, which is what pipecat feeds the model: the waveform scaled to zero
mean and unit variance over the whole window (left padding included), a centred STFT
(reflect padding, periodic Hann window of 400 samples, hop 160, power spectrum), 80
Slaney-normalized mel filters over 0-8000 Hz, ``log10(max(x, 1e-10))``, the last of the 801
frames dropped, a floor at the maximum minus 8, then ``(x + 4) / 4``. Measured against
transformers 5.25: at most 1.2e-7 apart (float32 rounding).

Example::

    turn = SmartTurn.shared()                       # the cached model, loaded once
    p = await turn.predict_async(pcm16_of_the_turn)  # off the Trio loop
    if p >= DEFAULT_THRESHOLD:
        ...  # the user has finished: reply now
"""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import trio
from numpy.lib.stride_tricks import sliding_window_view

from voicecore import models
from voicecore.engine.stages import STT_SAMPLE_RATE
from voicecore.exceptions import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    ModelNotFoundError,
)
from voicecore.providers._onnx import checked_session

__all__ = [
    "DEFAULT_INTRA_OP_THREADS",
    "DEFAULT_THRESHOLD",
    "MODEL_FILE",
    "MODEL_NAME",
    "N_FRAMES",
    "N_MELS",
    "WINDOW_SAMPLES",
    "SmartTurn",
    "SmartTurnEnd",
    "SmartTurnStats",
    "log_mel_features",
    "prediction_limiter",
]

MODEL_NAME: Final = "smart-turn-v3.2"
"""The model this provider is written and measured for (``voicecore.models`` name)."""
MODEL_FILE: Final = "smart-turn-v3.2-cpu.onnx"
"""The model's file in its cache directory."""

DEFAULT_THRESHOLD: Final = 0.5
"""A turn is complete when the predicted probability is at least this.

The trade-off: a higher threshold cuts the user off less often when they pause mid-sentence
(fewer false "complete"), but more finished turns are then judged incomplete and wait for
the fallback, the fixed end-of-turn silence, before the reply starts. A lower threshold
replies sooner and interrupts more. 0.5 is the model's own decision point (pipecat's, which
uses ``p > 0.5``); ``benches/bench_smart_turn.py`` measures the accuracy there on
recordings and on synthesized speech; it was not tuned on them.
"""

DEFAULT_INTRA_OP_THREADS: Final = 2
"""onnxruntime threads inside one prediction. Two can split the encoder's matrix products
over both cores when they are free. On the shared 2-core VM, where other work kept them busy
(load 2-8), two were no faster than one (p50 ratio 1.04-1.26; ``benches/bench_smart_turn.py``
compares both in each run) and cost ~10 % more CPU: choose 1 where the cores are busy."""

SAMPLE_RATE: Final = STT_SAMPLE_RATE
WINDOW_SAMPLES: Final = 8 * SAMPLE_RATE
"""The model hears the last 8 s of audio (128,000 samples at 16 kHz)."""
N_MELS: Final = 80
"""Mel bands of the features."""
N_FRAMES: Final = 800
"""Feature frames (10 ms each) in the 8 s window."""

STATS_WINDOW: Final = 1000
""":class:`SmartTurnStats` times cover the latest this many predictions."""

_N_FFT: Final = 400  # 25 ms analysis window
_HOP: Final = 160  # 10 ms between frames
_LOG_FLOOR: Final = 1e-10
_DYNAMIC_RANGE: Final = 8.0  # log10 units kept below the loudest value (80 dB)
_NORM_EPS: Final = 1e-7  # in the variance, as WhisperFeatureExtractor

Float32Array = npt.NDArray[np.float32]
Float64Array = npt.NDArray[np.float64]


# --- features --------------------------------------------------------------------------------


def _hz_to_mel(hz: Float64Array) -> Float64Array:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    logstep = 27.0 / np.log(6.4)
    linear = 3.0 * hz / 200.0
    log = 15.0 + np.log(np.maximum(hz, 1000.0) / 1000.0) * logstep
    return np.where(hz >= 1000.0, log, linear)


def _mel_to_hz(mel: Float64Array) -> Float64Array:
    logstep = np.log(6.4) / 27.0
    linear = 200.0 * mel / 3.0
    log = 1000.0 * np.exp(logstep * (np.maximum(mel, 15.0) - 15.0))
    return np.where(mel >= 15.0, log, linear)


@functools.lru_cache(maxsize=1)
def _mel_bands() -> tuple[tuple[int, Float64Array], ...]:
    """The 80 mel filters, each as (first FFT bin, weights over its contiguous bins).

    Triangles evenly spaced on the Slaney mel scale over 0-8000 Hz, each scaled to unit area
    (``2 / width in Hz``), over the 201 bins of a 400-point FFT: Whisper's filterbank
    (librosa's ``mel(norm="slaney", htk=False)``). Kept as bands, not a dense 201 x 80
    matrix: each filter spans 1-14 bins, and a dense product goes to OpenBLAS, which spreads
    it over threads and took 4-12 ms on the busy 2-core VM against ~0.3 ms for the bands.
    """
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(0.0)), _hz_to_mel(np.array(8000.0)), 82))
    bins = np.linspace(0.0, SAMPLE_RATE / 2, _N_FFT // 2 + 1)
    bands = []
    for m in range(N_MELS):
        low, centre, high = edges[m], edges[m + 1], edges[m + 2]
        rising = (bins - low) / (centre - low)
        falling = (high - bins) / (high - centre)
        weights = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (high - low))
        support = np.flatnonzero(weights)
        first = int(support[0]) if support.size else 0
        last = int(support[-1]) + 1 if support.size else 0
        bands.append((first, weights[first:last].copy()))
    return tuple(bands)


@functools.lru_cache(maxsize=1)
def _hann() -> Float64Array:
    """The periodic Hann window of 400 samples (``torch.hann_window``, Whisper's)."""
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(_N_FFT) / _N_FFT)


def _samples(audio: bytes | bytearray | memoryview | npt.NDArray[Any]) -> npt.NDArray[Any]:
    """The last 8 s of ``audio`` as a new 1-D int16 or float32 array (the caller's buffer
    may change afterwards).

    Raises:
        AudioTypeError: another type or dtype.
        AudioFormatError: an odd number of PCM16 bytes, or an array that is not 1-D.
    """
    if isinstance(audio, bytes | bytearray | memoryview):
        raw = memoryview(audio).cast("B")
        if len(raw) % 2:
            raise AudioFormatError(f"PCM16 audio must have an even number of bytes, got {len(raw)}")
        pcm = np.frombuffer(raw, dtype="<i2")
        return pcm[-WINDOW_SAMPLES:].astype(np.int16)
    if not isinstance(audio, np.ndarray):
        raise AudioTypeError(
            f"expected PCM16 bytes or a numpy int16/float32 array, got {type(audio).__name__}"
        )
    if audio.ndim != 1:
        raise AudioFormatError(f"expected a 1-D array of samples, got shape {audio.shape}")
    if audio.dtype not in (np.int16, np.float32):
        raise AudioTypeError(f"expected int16 or float32 samples, got {audio.dtype}")
    return audio[-WINDOW_SAMPLES:].copy()


def _features(samples: npt.NDArray[Any]) -> Float32Array:
    """:func:`log_mel_features` of at most 8 s of int16 or float32 samples."""
    window = np.zeros(WINDOW_SAMPLES, dtype=np.float32)
    if len(samples):
        scale = np.float32(1 / 32768) if samples.dtype == np.int16 else np.float32(1)
        window[WINDOW_SAMPLES - len(samples) :] = samples * scale
    # In float32 like the reference, on the padded window: the padding counts in the mean
    # and variance, as it did when the model was trained and as pipecat runs it.
    window = (window - window.mean()) / np.sqrt(window.var() + np.float32(_NORM_EPS))
    padded = np.pad(window.astype(np.float64), _N_FFT // 2, mode="reflect")
    frames = sliding_window_view(padded, _N_FFT)[::_HOP]  # 801 frames, a view
    spectrum = np.fft.rfft(frames * _hann(), axis=-1)
    power = spectrum.real**2 + spectrum.imag**2  # (801, 201)
    mel = np.empty((N_MELS, len(power)), dtype=np.float64)
    for m, (first, weights) in enumerate(_mel_bands()):
        mel[m] = power[:, first : first + len(weights)] @ weights
    log_mel = np.log10(np.maximum(mel[:, :N_FRAMES], _LOG_FLOOR))
    log_mel = np.maximum(log_mel, log_mel.max() - _DYNAMIC_RANGE)
    features: Float32Array = ((log_mel + 4.0) / 4.0).astype(np.float32)
    return features


def log_mel_features(audio: bytes | bytearray | memoryview | npt.NDArray[Any]) -> Float32Array:
    """Smart Turn's input: Whisper log-mel features of the last 8 s of 16 kHz mono audio.

    Audio shorter than 8 s is padded with zeros on the left (the speech stays at the end of
    the window, where the model looks for the end of the turn); longer audio keeps its last
    8 s. See the module documentation for the steps; ~3-25 ms (the FFT of 801 frames).

    Args:
        audio: PCM16 bytes (little-endian), or a 1-D int16 array, or a 1-D float32 array in
            [-1, 1]; 16 kHz.

    Returns:
        A C-contiguous float32 array of shape ``(N_MELS, N_FRAMES)`` = ``(80, 800)``, values
        in [-1.5, ~2] (the frame at index ``t`` is centred on sample ``160 * t`` of the
        window).

    Raises:
        AudioTypeError: another type or dtype.
        AudioFormatError: an odd number of PCM16 bytes, or an array that is not 1-D.
    """
    return _features(_samples(audio))


# --- the model -------------------------------------------------------------------------------


_LIMITER: trio.lowlevel.RunVar[trio.CapacityLimiter] = trio.lowlevel.RunVar(
    "voicecore_smart_turn_limiter"
)


def prediction_limiter() -> trio.CapacityLimiter:
    """The limiter every :meth:`SmartTurn.predict_async` of this Trio run goes through: one
    prediction at a time, the others queue (FIFO). Call from Trio.

    One per Trio run (a ``RunVar``), so process-wide for the server, which runs one event
    loop; a limiter cannot be shared between two Trio runs in different threads.
    """
    try:
        return _LIMITER.get()
    except LookupError:
        limiter = trio.CapacityLimiter(1)
        _LIMITER.set(limiter)
        return limiter


@dataclass(frozen=True, slots=True)
class SmartTurnStats:
    """What a :class:`SmartTurn` has done so far (every session together).

    Attributes:
        predictions: predictions completed (sync and async).
        abandoned: async predictions that ran but whose caller had been cancelled meanwhile
            (they finish in their thread; the result is dropped; counted in ``predictions``).
        mean_ms: mean wall time of a prediction (features + inference), over the latest
            :data:`STATS_WINDOW` predictions; 0 before any. Queueing is not included.
        p95_ms: the 95th percentile of the same.
        features_mean_ms: mean wall time of the features alone, same predictions.
        load_s: time the model took to load and warm up, in seconds.
    """

    predictions: int
    abandoned: int
    mean_ms: float
    p95_ms: float
    features_mean_ms: float
    load_s: float


class _Job:
    """One async prediction: its audio, whether its caller was cancelled, whether its
    prediction has finished (both flags under the model's lock)."""

    __slots__ = ("cancelled", "done", "samples")

    def __init__(self, samples: npt.NDArray[Any]) -> None:
        self.samples = samples
        self.cancelled = False
        self.done = False


class SmartTurn:
    """Smart Turn v3 on onnxruntime: one session, shared by every conversation.

    Use :meth:`shared` for the process's instance (loaded on first use); constructing one
    directly loads another copy of the model (tests, benchmarks). Thread-safe: onnxruntime's
    ``run`` is, and the model keeps no state between predictions (the same audio always
    gives the same probability).

    Args:
        model_path: the ``smart-turn-v3.2-cpu.onnx`` file or the folder holding it; default
            the cached one (``voicecore.models.require("smart-turn-v3.2")``).
        intra_op_threads: onnxruntime threads inside one prediction (default 2; they do not
            spin while idle).

    Raises:
        ModelNotFoundError: no model file (the message says how to fetch it).
        ConfigError: ``intra_op_threads`` below 1, or a file that is not a Smart Turn v3
            model.
    """

    _shared: ClassVar[dict[tuple[Path, int], SmartTurn]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        model_path: Path | str | None = None,
        *,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
    ) -> None:
        if isinstance(intra_op_threads, bool) or intra_op_threads < 1:
            raise ConfigError(f"intra_op_threads must be at least 1, got {intra_op_threads!r}")
        self.model_path: Final = _model_file(model_path)
        """The model file."""
        self.intra_op_threads: Final = intra_op_threads
        """onnxruntime threads inside one prediction."""
        started = time.perf_counter()
        self._session = checked_session(
            self.model_path,
            ["input_features"],
            "a Smart Turn v3 model",
            intra_op_threads=intra_op_threads,
        )
        # Warm-up: onnxruntime allocates its buffers on the first run (tens of ms that would
        # otherwise land on the first conversation's first end of turn).
        self._infer(_features(np.zeros(0, dtype=np.int16)))
        self._load_s = time.perf_counter() - started
        self._lock = threading.Lock()
        self._predictions = 0
        self._abandoned = 0
        self._times_ms: deque[tuple[float, float]] = deque(maxlen=STATS_WINDOW)

    @classmethod
    def shared(
        cls,
        model_path: Path | str | None = None,
        *,
        intra_op_threads: int = DEFAULT_INTRA_OP_THREADS,
    ) -> SmartTurn:
        """The process's instance for ``model_path`` (default the cached model) and
        ``intra_op_threads``, loaded on the first call (~0.1-0.2 s: call it at start-up or
        in a worker thread). Thread-safe.

        Raises:
            ModelNotFoundError, ConfigError: as the constructor.
        """
        key = (_model_file(model_path).resolve(), intra_op_threads)
        with cls._shared_lock:
            model = cls._shared.get(key)
            if model is None:
                model = cls._shared[key] = cls(key[0], intra_op_threads=intra_op_threads)
            return model

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"SmartTurn({self.model_path.name!r}, intra_op_threads={self.intra_op_threads}, "
            f"predictions={stats.predictions}, mean_ms={stats.mean_ms:.1f})"
        )

    def stats(self) -> SmartTurnStats:
        """A snapshot of the counters (see :class:`SmartTurnStats`)."""
        with self._lock:
            times = np.array(self._times_ms, dtype=np.float64).reshape(-1, 2)
            predictions, abandoned = self._predictions, self._abandoned
        return SmartTurnStats(
            predictions=predictions,
            abandoned=abandoned,
            mean_ms=float(times[:, 0].mean()) if len(times) else 0.0,
            p95_ms=float(np.percentile(times[:, 0], 95)) if len(times) else 0.0,
            features_mean_ms=float(times[:, 1].mean()) if len(times) else 0.0,
            load_s=self._load_s,
        )

    def predict(self, audio: bytes | bytearray | memoryview | npt.NDArray[Any]) -> float:
        """The probability that the turn is complete at the end of ``audio``, in [0, 1].

        Blocking (~45-60 ms): call it from a worker thread, or use :meth:`predict_async`
        from Trio.

        Args:
            audio: the turn so far, 16 kHz mono: PCM16 bytes, or a 1-D int16 or float32
                (-1..1) array; only its last 8 s count.

        Raises:
            AudioTypeError, AudioFormatError: as :func:`log_mel_features`.
        """
        return self._predict(_samples(audio))

    async def predict_async(
        self, audio: bytes | bytearray | memoryview | npt.NDArray[Any]
    ) -> float:
        """:meth:`predict` in a worker thread, for a Trio task: the event loop keeps running.

        Predictions of the whole Trio run go one at a time (:func:`prediction_limiter`): a
        call waits its turn first. The audio is copied before the call waits, so the caller
        may reuse its buffer at once.

        Cancellation: while waiting its turn, the call is withdrawn; while its prediction
        runs, the call returns (raises ``trio.Cancelled``) at once and the prediction
        finishes in its thread, its result dropped (``abandoned`` in :meth:`stats`). The
        next prediction starts only when that thread is done, so an abandoned prediction
        never runs beside another.

        Raises:
            AudioTypeError, AudioFormatError: as :func:`log_mel_features` (before waiting).
        """
        job = _Job(_samples(audio))
        try:
            return await trio.to_thread.run_sync(
                self._run_job,
                job,
                limiter=prediction_limiter(),
                abandon_on_cancel=True,
                thread_name="voicecore-smart-turn",
            )
        except trio.Cancelled:
            with self._lock:
                job.cancelled = True
                # Finished, but the result had not reached the task yet: dropped too. Not
                # finished: the thread counts it when it is (or it never started, when the
                # cancel came while queueing: nothing to count).
                self._abandoned += job.done
            raise

    def _run_job(self, job: _Job) -> float:
        probability = self._predict(job.samples)
        with self._lock:
            job.done = True
            self._abandoned += job.cancelled
        return probability

    def _predict(self, samples: npt.NDArray[Any]) -> float:
        started = time.perf_counter()
        features = _features(samples)
        features_done = time.perf_counter()
        probability = self._infer(features)
        ended = time.perf_counter()
        with self._lock:
            self._predictions += 1
            self._times_ms.append((1000 * (ended - started), 1000 * (features_done - started)))
        return probability

    def _infer(self, features: Float32Array) -> float:
        (output,) = self._session.run(None, {"input_features": features[np.newaxis]})
        return float(np.asarray(output).reshape(-1)[0])


class SmartTurnEnd:
    """The engine's end-of-turn model (``voicecore.engine.stages.TurnEndModel``) over a
    shared :class:`SmartTurn`: a turn is complete when its probability reaches ``threshold``.

    Args:
        model: the (shared) model.
        threshold: see :data:`DEFAULT_THRESHOLD`.

    Raises:
        ConfigError: a threshold outside (0, 1).
    """

    def __init__(self, model: SmartTurn, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not 0.0 < threshold < 1.0:
            raise ConfigError(f"threshold must be in (0, 1), got {threshold!r}")
        self.model = model
        self.threshold = threshold

    def __repr__(self) -> str:
        return f"SmartTurnEnd({self.model!r}, threshold={self.threshold})"

    async def is_complete(self, pcm: bytes) -> bool:
        """Whether the turn whose audio (16 kHz PCM16, its pause included) is ``pcm`` is
        complete (off the event loop, one prediction at a time per process)."""
        return await self.model.predict_async(pcm) >= self.threshold


def _model_file(model_path: Path | str | None) -> Path:
    """The model file: ``model_path`` (a file, or a folder holding :data:`MODEL_FILE`), or
    the cached one.

    Raises:
        ModelNotFoundError: no such file (the message says how to get it).
    """
    if model_path is None:
        return models.require(MODEL_NAME) / MODEL_FILE
    path = Path(model_path)
    if path.is_dir():
        path = path / MODEL_FILE
    if not path.is_file():
        raise ModelNotFoundError(
            f"Smart Turn model not found at {path}. Pass model_path= the {MODEL_FILE} file "
            f'(or its folder), or leave it unset and run "voicecore models fetch {MODEL_NAME}" '
            '(or "make models") to use the cached one.'
        )
    return path
