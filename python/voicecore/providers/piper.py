"""Piper neural text-to-speech (VITS voices exported to ONNX), offline, in process.

A Piper voice is two files: ``<name>.onnx`` (the network) and ``<name>.onnx.json`` (its
config: sample rate, espeak-ng voice, inference scales and the map from phoneme characters
to the network's input ids). :class:`PiperVoice` loads them; :class:`PiperTTS` implements
the ``TTS`` stage protocol over a voice. Neither depends on the ``piper-tts`` package: the
text goes through voicecore's own espeak-ng (``providers.espeak``) and the network through
onnxruntime.

Text to audio, for each text chunk the engine hands over:

1. **Phonemes**: espeak-ng turns the text into IPA, clause by clause
   (:meth:`EspeakEngine.phonemize_async`, on espeak's one worker thread, queued with the
   espeak syntheses; under a millisecond per sentence).
2. **Pieces**: the clauses are grouped into the units synthesized in one inference: a
   sentence, as Piper does, cut at its clause boundaries (``,`` ``;`` ``:``, dashes) when it
   is longer than ``max_piece_phonemes``. The first piece of a turn (no audio of the turn
   yet: ``ctx.metrics.tts_first_audio_ms is None``) is kept under ``first_piece_phonemes``,
   cut at a clause boundary or, within an overlong clause, between words: a VITS network
   makes no audio until the whole piece is computed, so the first piece's length is the
   turn's time to first audio.
3. **Ids**: each piece's phonemes, decomposed into Unicode code points (NFD), become ids
   through the config's ``phoneme_id_map``, Piper's way: ``^`` (start), then every phoneme
   followed by the pad ``_``, then ``$`` (end); a clause keeps its punctuation (``,`` ``.``
   ``?``...: the voice was trained with it, it shapes the intonation and the pauses).
   Characters the map lacks are dropped (counted in :meth:`PiperVoice.stats`).
4. **Audio**: one inference per piece; its float output becomes int16 and is yielded as
   one ``AudioChunk`` as soon as it exists. The audio of one ``synthesize`` call is exactly
   that call's text (nothing is carried over to the next call), so the engine's heard-text
   bookkeeping (``SpokenReply``) stays exact at chunk boundaries. The voice ends every
   piece with its own silence (about 200 ms after a ``.``), so sentences synthesized one
   by one do not run together.

One session per process, a small worker pool:
    :meth:`PiperVoice.shared` loads a voice once per process (the ONNX session, ~0.4 s and
    ~65 MB for a "medium" voice) and every :class:`PiperTTS` of it, in every conversation,
    shares it. Inferences run on the voice's own pool of worker threads
    (``concurrent.futures.ThreadPoolExecutor``, ``voicecore-piper-*``), as many as the
    cores the process may run on (``os.sched_getaffinity``), each inference on one
    onnxruntime thread: concurrent conversations then use every core, and one inference
    never competes with another for them (on the shared 2-core VM, one inference with two
    intra-op threads ran *slower* than with one: RTF 0.14 against 0.08). onnxruntime's
    ``InferenceSession.run`` is thread-safe and releases the GIL. A request waits in the
    pool's FIFO when all workers are busy.

Cancellation (barge-in):
    when the turn is cancelled or the engine closes the iterator, no further piece is
    synthesized; a piece still queued in the pool is withdrawn; an inference already
    running finishes in its thread (at most one piece: ~0.1-0.3 s of one core) and its audio
    is dropped (``PiperStats.dropped``).

Errors: a voice that is missing or malformed raises ``ModelNotFoundError`` or
``ConfigError`` when it is loaded; a failed phonemization or inference raises
``SynthesisError`` from ``synthesize``.

Example::

    tts = PiperTTS(voicecore.models.require("piper-joe-medium"))
    async for chunk in tts.synthesize("Hello! How can I help you today?", ctx):
        ...  # chunk.pcm: int16 at chunk.sample_rate (22050 Hz)
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import unicodedata
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from math import ceil
from pathlib import Path
from typing import Any, ClassVar, Final

import numpy as np
import numpy.typing as npt
import trio

from voicecore.engine.stages import AudioChunk, TurnContext
from voicecore.exceptions import (
    ConfigError,
    ModelNotFoundError,
    SynthesisError,
    VoicecoreError,
)
from voicecore.providers._onnx import single_thread_session
from voicecore.providers.espeak import EspeakEngine, PhonemeClause

__all__ = [
    "BOS",
    "DEFAULT_FIRST_PIECE_PHONEMES",
    "DEFAULT_MAX_PIECE_PHONEMES",
    "EOS",
    "PAD",
    "PiperConfig",
    "PiperStats",
    "PiperTTS",
    "PiperVoice",
    "plan_pieces",
]

_log = logging.getLogger(__name__)

BOS: Final = "^"
"""Piper's start-of-utterance symbol (the first id of every input)."""
EOS: Final = "$"
"""Piper's end-of-utterance symbol (the last id of every input)."""
PAD: Final = "_"
"""Piper's pad symbol: after the start symbol and after every phoneme."""

DEFAULT_FIRST_PIECE_PHONEMES: Final = 24
"""Longest first piece of a turn, in phoneme characters: about 1.3 s of speech (the voice
speaks ~18 phoneme characters a second), 0.1-0.2 s of inference on the shared 2-core VM
(RTF 0.08 idle, 0.13-0.15 loaded), for the 150 ms first-audio budget."""

DEFAULT_MAX_PIECE_PHONEMES: Final = 120
"""Longest later piece, in phoneme characters: about 6.5 s of speech, 0.5-1 s of
inference, computed while the pieces before it play (a piece longer than the audio queued
ahead of it, over the RTF, would leave a gap). Longer sentences are cut at clauses."""

_MAX_WAV: Final = 32767.0


@dataclass(frozen=True, slots=True)
class PiperConfig:
    """The parts of a Piper voice's ``.onnx.json`` that synthesis needs.

    Attributes:
        sample_rate: output rate in Hz (``audio.sample_rate``; 22050 for "medium" voices).
        espeak_voice: the espeak-ng voice that phonemizes its text (``espeak.voice``).
        noise_scale: the ``inference`` section's scales, fed to the network as ``scales``:
            ``noise_scale`` (variation of the voice), ``length_scale`` (duration: above 1
            is slower) and ``noise_w`` (variation of the phoneme durations).
        length_scale: see ``noise_scale``.
        noise_w: see ``noise_scale``.
        phoneme_id_map: each phoneme character to its input ids.
        num_symbols: the size of the network's input vocabulary (ids must be below it).
    """

    sample_rate: int
    espeak_voice: str
    noise_scale: float
    length_scale: float
    noise_w: float
    phoneme_id_map: Mapping[str, tuple[int, ...]]
    num_symbols: int

    @classmethod
    def from_json(cls, path: Path | str) -> PiperConfig:
        """Reads a voice's ``.onnx.json``.

        Raises:
            ModelNotFoundError: no such file.
            ConfigError: not a Piper voice config, or one voicecore cannot run (a phoneme
                type other than ``espeak``, several speakers).
        """
        path = Path(path)
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as exc:
            raise ModelNotFoundError(f"no Piper voice config at {path}") from exc
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path} is not a readable Piper voice config: {exc}") from exc
        try:
            phoneme_type = raw.get("phoneme_type", "espeak")
            if phoneme_type != "espeak":
                raise ConfigError(
                    f"{path}: phoneme_type {phoneme_type!r} is not supported (only espeak)"
                )
            if int(raw.get("num_speakers", 1)) != 1:
                raise ConfigError(f"{path}: multi-speaker Piper voices are not supported")
            id_map = {
                str(symbol): tuple(int(i) for i in ids)
                for symbol, ids in raw["phoneme_id_map"].items()
            }
            for symbol in (BOS, EOS, PAD):
                if not id_map.get(symbol):
                    raise ConfigError(f"{path}: phoneme_id_map has no {symbol!r}")
            inference = raw.get("inference", {})
            config = cls(
                sample_rate=int(raw["audio"]["sample_rate"]),
                espeak_voice=str(raw["espeak"]["voice"]),
                noise_scale=float(inference.get("noise_scale", 0.667)),
                length_scale=float(inference.get("length_scale", 1.0)),
                noise_w=float(inference.get("noise_w", 0.8)),
                phoneme_id_map=id_map,
                num_symbols=int(raw.get("num_symbols", 1 + max(max(v) for v in id_map.values()))),
            )
        except ConfigError:
            raise
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError(f"{path} is not a Piper voice config: {exc!r}") from exc
        if not 8000 <= config.sample_rate <= 48000:
            raise ConfigError(f"{path}: sample rate {config.sample_rate} Hz is out of range")
        return config


@dataclass(frozen=True, slots=True)
class PiperStats:
    """What a :class:`PiperVoice` has done since it was loaded (all its users together).

    Attributes:
        inferences: inferences run to the end (``dropped`` included).
        withdrawn: requests cancelled while still queued (never run).
        dropped: inferences whose requester had gone when they finished (barge-in).
        failed: inferences that raised.
        queued: requests submitted and not started yet.
        running: inferences under way now.
        audio_s: audio produced, in seconds.
        busy_s: wall time spent in inferences, in seconds (summed over workers).
        missing_phonemes: phoneme characters dropped because the voice's map lacks them.
        load_s: time to load the ONNX session, in seconds.
    """

    inferences: int
    withdrawn: int
    dropped: int
    failed: int
    queued: int
    running: int
    audio_s: float
    busy_s: float
    missing_phonemes: int
    load_s: float

    @property
    def real_time_factor(self) -> float:
        """Inference time over audio time (0.1: a second of speech costs 0.1 s)."""
        return self.busy_s / self.audio_s if self.audio_s else 0.0


@dataclass(eq=False)
class _Job:
    """One inference request: ids in, int16 samples out (through ``future``)."""

    ids: npt.NDArray[np.int64]
    scales: npt.NDArray[np.float32]
    future: Future[npt.NDArray[np.int16]] = field(default_factory=Future)
    abandoned: bool = False
    """Set by the requester when it stops waiting (read by the worker when it finishes)."""


def _default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def _voice_files(model: Path) -> tuple[Path, Path]:
    """The ``.onnx`` and ``.onnx.json`` of a voice given as either file or its folder."""
    if model.is_dir():
        found = sorted(model.glob("*.onnx"))
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            raise ModelNotFoundError(
                f"{model} holds {what} .onnx files; a Piper voice folder holds exactly one "
                "(<name>.onnx beside <name>.onnx.json); pass the .onnx file itself to choose"
            )
        onnx_path = found[0]
    elif model.suffix == ".json" and model.name.endswith(".onnx.json"):
        onnx_path = model.with_suffix("")
    else:
        onnx_path = model
    json_path = onnx_path.with_name(onnx_path.name + ".json")
    for path in (onnx_path, json_path):
        if not path.is_file():
            raise ModelNotFoundError(
                f"no Piper voice file at {path} (a voice is <name>.onnx beside "
                "<name>.onnx.json; voicecore.models.require() finds the registered ones)"
            )
    return onnx_path, json_path


def _load_session(path: Path) -> Any:
    """An onnxruntime session over a Piper voice (one thread: concurrency comes from the
    voice's worker pool; two intra-op threads made one inference slower here)."""
    return single_thread_session(
        path, ["input", "input_lengths", "scales"], "a single-speaker Piper voice"
    )


class PiperVoice:
    """A Piper voice: its config and ONE onnxruntime session, shared by every user.

    Use :meth:`shared` to get the process's instance of a voice (loaded on first use);
    constructing one directly loads another copy of the network (tests, benchmarks).

    Thread-safe: :meth:`synthesize` may be called from any thread;
    :meth:`synthesize_async` runs the inference on the voice's worker pool, ``workers``
    threads (default: the cores this process may use), each inference on one onnxruntime
    thread; requests beyond ``workers`` wait in the pool's FIFO.

    Args:
        model: the voice's folder (holding one ``<name>.onnx`` beside
            ``<name>.onnx.json``, as ``voicecore.models.require`` returns it) or its
            ``.onnx`` file.
        workers: inferences run at once (default: the number of usable cores).

    Raises:
        ModelNotFoundError: the files are not there.
        ConfigError: the files are not a Piper voice voicecore can run; ``workers < 1``.
    """

    _shared: ClassVar[dict[Path, PiperVoice]] = {}
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, model: Path | str, *, workers: int | None = None) -> None:
        if workers is not None and (isinstance(workers, bool) or workers < 1):
            raise ConfigError(f"workers must be >= 1, got {workers!r}")
        self.model_path, self.config_path = _voice_files(Path(model))
        self.config: Final = PiperConfig.from_json(self.config_path)
        """The voice's config (sample rate, espeak voice, scales, phoneme map)."""
        self.workers: Final = workers or _default_workers()
        """Inferences run at once (the pool's size)."""
        started = time.perf_counter()
        self._session = _load_session(self.model_path)
        self._load_s = time.perf_counter() - started
        self._scales = self.scales()
        self._id_map = self.config.phoneme_id_map
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="voicecore-piper")
        self._lock = threading.Lock()
        self._inferences = 0
        self._withdrawn = 0
        self._dropped = 0
        self._failed = 0
        self._queued = 0
        self._running = 0
        self._audio_samples = 0
        self._busy_s = 0.0
        self._missing = 0
        # Warm-up: onnxruntime allocates its buffers on the first run (tens of ms that
        # would otherwise land on the first conversation's first audio).
        self._run(self._to_array(self.phoneme_ids("ə")), self._scales)
        with self._lock:
            self._inferences = 0
            self._audio_samples = 0
            self._busy_s = 0.0

    @classmethod
    def shared(cls, model: Path | str) -> PiperVoice:
        """The process's instance of the voice at ``model`` (a folder or ``.onnx`` file),
        loaded on first use (~0.4 s: call it at start-up, not in a turn).

        Raises:
            ModelNotFoundError, ConfigError: as the constructor.
        """
        onnx_path, _ = _voice_files(Path(model))
        key = onnx_path.resolve()
        with cls._shared_lock:
            voice = cls._shared.get(key)
            if voice is None:
                voice = cls._shared[key] = cls(onnx_path)
            return voice

    def __repr__(self) -> str:
        return (
            f"PiperVoice({self.model_path.name!r}, {self.sample_rate} Hz, "
            f"workers={self.workers}, {self.stats()})"
        )

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz."""
        return self.config.sample_rate

    @property
    def espeak_voice(self) -> str:
        """The espeak-ng voice that phonemizes text for this voice (e.g. ``"en-us"``)."""
        return self.config.espeak_voice

    def stats(self) -> PiperStats:
        """Counters of the voice's inferences so far (see :class:`PiperStats`)."""
        with self._lock:
            return PiperStats(
                inferences=self._inferences,
                withdrawn=self._withdrawn,
                dropped=self._dropped,
                failed=self._failed,
                queued=self._queued,
                running=self._running,
                audio_s=self._audio_samples / self.sample_rate,
                busy_s=self._busy_s,
                missing_phonemes=self._missing,
                load_s=self._load_s,
            )

    def release_memory(self) -> None:
        """Gives back the memory onnxruntime's arena grew to for past inferences.

        The session's arena keeps every block it ever allocated, sized by the longest
        sentences synthesized at once (~170-250 MB after a burst of conversations); an arena
        that shrinks after every inference costs ~10-20 % more CPU per synthesis. So the
        server calls this once a burst is over: one tiny inference with onnxruntime's arena
        shrinkage on, which frees every block no running inference holds (~0.1 s on one
        thread; inferences running meanwhile are unaffected). Thread-safe, blocking.
        """
        import onnxruntime

        options = onnxruntime.RunOptions()
        options.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
        ids = self._to_array(self.phoneme_ids("ə"))
        self._session.run(
            None,
            {
                "input": ids,
                "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                "scales": self._scales,
            },
            options,
        )

    def scales(self, length_scale: float | None = None) -> npt.NDArray[np.float32]:
        """The network's ``scales`` input: the config's noise scale, length scale (or
        ``length_scale``) and noise width."""
        config = self.config
        length = config.length_scale if length_scale is None else length_scale
        return np.array([config.noise_scale, length, config.noise_w], dtype=np.float32)

    def phoneme_ids(self, phonemes: str) -> list[int]:
        """Piper's input ids for an IPA string: ``^``, each phoneme (Unicode code point,
        after NFD decomposition) followed by ``_``, then ``$``. Characters missing from the
        voice's map are dropped (and counted in :meth:`stats`)."""
        id_map = self._id_map
        pad = id_map[PAD]
        ids = [*id_map[BOS], *pad]
        missing = 0
        for char in unicodedata.normalize("NFD", phonemes):
            mapped = id_map.get(char)
            if mapped is None:
                missing += 1
                continue
            ids.extend(mapped)
            ids.extend(pad)
        ids.extend(id_map[EOS])
        if missing:
            with self._lock:
                self._missing += missing
            _log.debug("piper: %d phoneme characters not in the map of %r", missing, phonemes)
        return ids

    def synthesize(
        self, phoneme_ids: Sequence[int], *, length_scale: float | None = None
    ) -> npt.NDArray[np.int16]:
        """Runs one inference in the calling thread: mono int16 samples at
        :attr:`sample_rate` for ``phoneme_ids`` (as :meth:`phoneme_ids` makes them).

        Raises:
            ConfigError: no ids, or an id out of the voice's vocabulary.
            SynthesisError: onnxruntime failed.
        """
        scales = self._scales if length_scale is None else self.scales(length_scale)
        return self._run(self._to_array(phoneme_ids), scales)

    async def synthesize_async(
        self, phoneme_ids: Sequence[int], *, length_scale: float | None = None
    ) -> npt.NDArray[np.int16]:
        """:meth:`synthesize` on the voice's worker pool, for a Trio task (the event loop
        keeps running). Cancelled while queued, the request is withdrawn; cancelled while
        running, the inference finishes in its thread and its samples are dropped.

        Raises:
            ConfigError, SynthesisError: as :meth:`synthesize`.
        """
        scales = self._scales if length_scale is None else self.scales(length_scale)
        job = _Job(self._to_array(phoneme_ids), scales)
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: Future[npt.NDArray[np.int16]]) -> None:  # a worker (or this) thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        with self._lock:
            self._queued += 1
        job.future.add_done_callback(wake)
        try:
            self._pool.submit(self._work, job)
        except RuntimeError as exc:  # the pool was shut down (interpreter exit)
            with self._lock:
                self._queued -= 1
            raise SynthesisError(f"the Piper voice's workers are gone: {exc}") from exc
        try:
            await done.wait()
        except BaseException:
            job.abandoned = True
            if job.future.cancel():  # still queued: never runs
                with self._lock:
                    self._withdrawn += 1
            raise
        return job.future.result()

    # --- worker side ------------------------------------------------------------------------

    def _to_array(self, phoneme_ids: Sequence[int]) -> npt.NDArray[np.int64]:
        ids = np.asarray(phoneme_ids, dtype=np.int64).reshape(1, -1)
        if ids.size == 0:
            raise ConfigError("no phoneme ids to synthesize")
        if int(ids.min()) < 0 or int(ids.max()) >= self.config.num_symbols:
            raise ConfigError(
                f"phoneme ids must be in 0..{self.config.num_symbols - 1}, "
                f"got {int(ids.min())}..{int(ids.max())}"
            )
        return ids

    def _work(self, job: _Job) -> None:
        """Runs ``job`` on a pool thread (unless it was withdrawn meanwhile)."""
        if not job.future.set_running_or_notify_cancel():
            with self._lock:
                self._queued -= 1
            return
        with self._lock:
            self._queued -= 1
            self._running += 1
        try:
            pcm = self._run(job.ids, job.scales)
        except BaseException as exc:
            with self._lock:
                self._running -= 1
            job.future.set_exception(exc)
            return
        with self._lock:
            self._running -= 1
            self._dropped += job.abandoned
        job.future.set_result(pcm)

    def _run(
        self, ids: npt.NDArray[np.int64], scales: npt.NDArray[np.float32]
    ) -> npt.NDArray[np.int16]:
        started = time.perf_counter()
        try:
            outputs = self._session.run(
                None,
                {
                    "input": ids,
                    "input_lengths": np.array([ids.shape[1]], dtype=np.int64),
                    "scales": scales,
                },
            )
            audio = np.asarray(outputs[0], dtype=np.float32).reshape(-1)
        except Exception as exc:
            with self._lock:
                self._failed += 1
            raise SynthesisError(
                f"Piper inference failed ({ids.shape[1]} phoneme ids): {exc!r}"
            ) from exc
        pcm: npt.NDArray[np.int16] = np.rint(np.clip(audio, -1.0, 1.0) * _MAX_WAV).astype(np.int16)
        elapsed = time.perf_counter() - started
        with self._lock:
            self._inferences += 1
            self._audio_samples += len(pcm)
            self._busy_s += elapsed
        return pcm


def plan_pieces(
    clauses: Sequence[PhonemeClause],
    *,
    first_max: int = DEFAULT_FIRST_PIECE_PHONEMES,
    max_len: int = DEFAULT_MAX_PIECE_PHONEMES,
) -> list[str]:
    """Groups espeak-ng's clauses into the IPA strings synthesized one inference each.

    A piece is a sentence (clauses joined by a space, each with its punctuation), cut at
    clause boundaries when it would exceed ``max_len`` phoneme characters; the first piece
    is cut under ``first_max`` likewise. A clause longer than its limit is cut between
    words, into parts of about equal length (the first part at most ``first_max`` and at
    most half the clause, so its rest is not a lone word).

    Args:
        clauses: :meth:`EspeakEngine.phonemize`'s output.
        first_max: longest first piece, in phoneme characters (``max_len`` for no special
            first piece).
        max_len: longest later piece, in phoneme characters.

    Raises:
        ConfigError: a limit below 1 or ``first_max > max_len``.
    """
    if first_max < 1 or max_len < 1 or first_max > max_len:
        raise ConfigError(
            f"piece limits must be 1 <= first_max <= max_len, got {first_max} and {max_len}"
        )
    pieces: list[str] = []
    current = ""

    def close() -> None:
        nonlocal current
        if current:
            pieces.append(current)
            current = ""

    for clause in clauses:
        part = clause.phonemes + clause.terminator
        limit = max_len if pieces else first_max
        if current and len(current) + 1 + len(part) > limit:
            close()
            limit = max_len
        if not current and len(part) > limit:
            for words in _split_words(part, limit, max_len):
                close()
                current = words
        else:
            current = f"{current} {part}" if current else part
        if clause.ends_sentence:
            close()
    close()
    return pieces


def _split_words(part: str, first: int, limit: int) -> list[str]:
    """``part`` cut between words: a first part under ``first`` (and under half of
    ``part``), then parts of about equal length under ``limit``. A single word longer than
    its limit stays whole (the network takes it; only latency suffers)."""
    words = part.split(" ")
    parts: list[str] = []
    if first < limit:  # the turn's first piece: short, but not so short its rest is a crumb
        target = min(first, len(part) // 2)
        taken, index = words[0], 1
        while index < len(words) and len(taken) + 1 + len(words[index]) <= target:
            taken += " " + words[index]
            index += 1
        parts.append(taken)
        words = words[index:]
    if words:
        rest = len(" ".join(words))
        target = ceil(rest / ceil(rest / limit))  # equal parts, as few as the limit allows
        taken = ""
        for word in words:
            if taken and (len(taken) + 1 + len(word) > limit or len(taken) >= target):
                parts.append(taken)
                taken = word
            else:
                taken = f"{taken} {word}" if taken else word
        parts.append(taken)
    return parts


class PiperTTS:
    """Streaming text-to-speech with a Piper voice (``TTS`` stage protocol), offline.

    Each ``synthesize`` call phonemizes its text with espeak-ng, cuts it into pieces
    (sentences; clauses of a long sentence; a short first piece for the turn's first
    audio) and yields each piece's audio as one ``AudioChunk`` (mono int16 at
    :attr:`sample_rate`, 22050 Hz for "medium" voices) as soon as its inference is done.
    Every ``PiperTTS`` of a voice shares the process's :class:`PiperVoice` (one ONNX
    session, a worker pool sized to the cores) and the process's espeak-ng worker.

    Args:
        model: a voice folder or ``.onnx`` file (loaded once per process through
            :meth:`PiperVoice.shared`, ~0.4 s the first time), or a loaded
            :class:`PiperVoice`.
        first_piece_phonemes: longest first piece of a turn, in phoneme characters (the
            turn's time to first audio grows with it).
        max_piece_phonemes: longest later piece, in phoneme characters.
        length_scale: phoneme durations relative to the voice's (the config's
            ``length_scale``, usually 1.0); above 1 speaks slower. None: the voice's.

    Raises:
        ModelNotFoundError: the voice's files are not there.
        ConfigError: not a usable Piper voice, an espeak-ng voice that does not exist, or
            a parameter out of range.
        SynthesisError: espeak-ng could not be loaded.
    """

    def __init__(
        self,
        model: Path | str | PiperVoice,
        *,
        first_piece_phonemes: int = DEFAULT_FIRST_PIECE_PHONEMES,
        max_piece_phonemes: int = DEFAULT_MAX_PIECE_PHONEMES,
        length_scale: float | None = None,
    ) -> None:
        for name, value in (
            ("first_piece_phonemes", first_piece_phonemes),
            ("max_piece_phonemes", max_piece_phonemes),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
        if not 1 <= first_piece_phonemes <= max_piece_phonemes:
            raise ConfigError(
                "piece limits must be 1 <= first_piece_phonemes <= max_piece_phonemes, got "
                f"{first_piece_phonemes} and {max_piece_phonemes}"
            )
        if length_scale is not None and not 0.25 <= float(length_scale) <= 4.0:
            raise ConfigError(f"length_scale must be 0.25-4.0, got {length_scale}")
        self.voice: Final = model if isinstance(model, PiperVoice) else PiperVoice.shared(model)
        """The shared voice (its ``stats()`` for monitoring)."""
        self._espeak = EspeakEngine.shared()
        self._espeak.check_voice(self.voice.espeak_voice)
        self.first_piece_phonemes: Final = first_piece_phonemes
        """Longest first piece of a turn, in phoneme characters."""
        self.max_piece_phonemes: Final = max_piece_phonemes
        """Longest later piece, in phoneme characters."""
        self.length_scale: Final = None if length_scale is None else float(length_scale)
        """Phoneme durations relative to the voice's (None: the voice's own)."""

    def __repr__(self) -> str:
        return (
            f"PiperTTS({self.voice.model_path.name!r}, first_piece_phonemes="
            f"{self.first_piece_phonemes}, max_piece_phonemes={self.max_piece_phonemes})"
        )

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz (the voice's)."""
        return self.voice.sample_rate

    def release_memory(self) -> None:
        """Gives back the memory the voice's arena grew to (:meth:`PiperVoice.release_memory`:
        blocking, thread-safe)."""
        self.voice.release_memory()

    async def pieces(self, text: str, *, first_of_turn: bool = True) -> list[str]:
        """The IPA pieces ``synthesize`` would make of ``text`` (one inference each).

        Raises:
            SynthesisError: espeak-ng failed.
        """
        try:
            clauses = await self._espeak.phonemize_async(text, self.voice.espeak_voice)
        except VoicecoreError:
            raise
        except Exception as exc:
            raise SynthesisError(f"espeak-ng could not phonemize the text: {exc!r}") from exc
        first = self.first_piece_phonemes if first_of_turn else self.max_piece_phonemes
        return plan_pieces(clauses, first_max=first, max_len=self.max_piece_phonemes)

    async def synthesize(self, text: str, ctx: TurnContext | None) -> AsyncIterator[AudioChunk]:
        """Yields the speech of ``text``, one chunk per piece, each as soon as it exists.

        Text that is empty, blank or without anything to pronounce yields nothing.
        Cancelling the task or closing the iterator stops at once: no further piece is
        synthesized (see the module documentation). Each call is recorded on ``ctx``'s
        timeline as a ``"piper_synth"`` event: ``chars``, ``pieces`` (planned), ``done``
        (yielded), ``phonemize_ms``, ``first_audio_ms`` (call to first chunk ready),
        ``synth_ms`` (inference wall time, summed), ``audio_ms``, ``aborted``, ``error``.

        Args:
            text: the text to speak (plain text, UTF-8; no SSML).
            ctx: the turn (for the timeline record; a turn with no audio yet gets the
                short first piece); None outside a session (treated as a turn's start).

        Raises:
            TypeError: ``text`` is not a ``str``.
            SynthesisError: espeak-ng or the inference failed.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        spoken = text.replace("\0", " ").strip()
        if not spoken:
            return
        first_of_turn = ctx is None or ctx.metrics.tts_first_audio_ms is None
        started = time.perf_counter()
        record: dict[str, Any] = {
            "chars": len(spoken),
            "pieces": 0,
            "done": 0,
            "phonemize_ms": None,
            "first_audio_ms": None,
            "synth_ms": 0.0,
            "audio_ms": 0.0,
            "aborted": True,
            "error": None,
        }
        try:
            pieces = await self.pieces(spoken, first_of_turn=first_of_turn)
            record["phonemize_ms"] = round(1000 * (time.perf_counter() - started), 3)
            record["pieces"] = len(pieces)
            for piece in pieces:
                ids = self.voice.phoneme_ids(piece)
                asked = time.perf_counter()
                pcm = await self.voice.synthesize_async(ids, length_scale=self.length_scale)
                now = time.perf_counter()
                record["synth_ms"] = round(record["synth_ms"] + 1000 * (now - asked), 3)
                if record["first_audio_ms"] is None:
                    record["first_audio_ms"] = round(1000 * (now - started), 3)
                record["audio_ms"] = round(
                    record["audio_ms"] + 1000 * len(pcm) / self.sample_rate, 3
                )
                record["done"] += 1
                yield AudioChunk(pcm, self.sample_rate)
            record["aborted"] = False
        except Exception as exc:
            record["error"] = repr(exc)
            if isinstance(exc, VoicecoreError):
                raise
            raise SynthesisError(f"Piper synthesis failed: {exc!r}") from exc
        finally:
            if ctx is not None:
                try:
                    ctx.record("piper_synth", **record)
                except Exception:
                    _log.exception("cannot record a Piper synthesis on the timeline")
