"""espeak-ng text-to-speech in process, through cffi: the offline default TTS.

:class:`EspeakTTS` implements the ``TTS`` stage protocol over ``libespeak-ng.so`` and its
voice data, both shipped by the ``espeakng-loader`` wheel (no system package needed). The
library is loaded in cffi's ABI mode (``ffi.dlopen``: nothing to compile) and run in
synchronous mode: ``espeak_Synth`` calls back with each buffer of samples as soon as it is
produced (every ``CALLBACK_BUFFER_MS`` of audio), and :class:`EspeakTTS` yields each buffer
to the engine as an ``AudioChunk`` at once, so time to first audio is the time to synthesize
the first buffer (well under a millisecond), not the whole utterance.

One worker thread per process:
    espeak-ng keeps global state (the current voice, its parameters, the synthesis buffers)
    and is not reentrant: one synthesis at a time per process. :class:`EspeakEngine` owns
    the library and one long-lived worker thread that runs every call into it; sessions hand
    it requests through a FIFO queue. Consequence: concurrent sessions' syntheses are
    serialized: a request waits for those queued before it. At the speeds measured on a
    shared 2-core VM (300-1000x real time: 1-3 ms of work per second of speech) that is a
    few milliseconds per sentence ahead of it (``benches/bench_tts.py``: four 12-second
    sentences requested at once, the last one's first audio after 37 ms quiet, 80 ms under
    load); a server with many simultaneous talkers would run one process per core.
    Switching voices between requests costs about 5 ms (espeak-ng loads the voice's data),
    so sessions sharing a voice avoid it.

Streaming to Trio:
    the espeak callback runs on the worker thread. It copies the buffer into a numpy array,
    appends it to the request's queue and, unless a wake-up is already on its way, wakes the
    requesting task with ``TrioToken.run_sync_soon`` (never blocking the worker). Buffers
    produced while the task is busy ride on the pending wake-up: one Trio wake-up per
    batch, not per buffer, keeps the worker's per-buffer cost (and its competition with the
    Trio thread for the GIL) low. The queue is unbounded on purpose: blocking the shared
    worker until one session's consumer catches up (its playout queue is bounded by the
    engine and holds back for seconds of real time) would stall every other session's
    synthesis behind one session's playback. What it may hold is bounded by the request
    itself: the audio of one text chunk (the engine sends one sentence or clause at a
    time), 44.1 kB per second of speech at 22050 Hz, produced in milliseconds.

Cancellation:
    when the Trio side stops (barge-in cancels the turn, or the engine closes the iterator),
    the request's ``cancelled`` flag is set; the callback returns 1 (abort) at its next call,
    at most one buffer of synthesis later (a fraction of a millisecond), and the worker moves
    on to the next request. A request cancelled while still queued is skipped.

Phonemization:
    :meth:`EspeakEngine.phonemize` (and its Trio form :meth:`EspeakEngine.phonemize_async`)
    turns text into IPA phonemes with ``espeak_TextToPhonemes``, one :class:`PhonemeClause`
    per clause espeak-ng reads, for neural voices trained on espeak-ng's phonemes (Piper,
    ``voicecore.providers.piper``). It runs on the same worker as synthesis (espeak-ng's
    state is global: the voice selected, the text reader's position), queued in the same
    FIFO, and takes well under a millisecond per sentence.

Initialization is lazy: the first :class:`EspeakTTS` (or :meth:`EspeakEngine.shared`) starts
the worker, which loads the library and its data (about 1 ms); the constructor then checks
its voice, so a bad voice name fails at start-up, not in the middle of a conversation.
"""

from __future__ import annotations

import contextlib
import difflib
import logging
import re
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from queue import SimpleQueue
from typing import Any, ClassVar, Final, TypeAlias, TypeVar

import cffi
import numpy as np
import numpy.typing as npt
import trio

from voicecore.engine.stages import AudioChunk, TurnContext
from voicecore.exceptions import ConfigError, SynthesisError, VoicecoreError

__all__ = [
    "CALLBACK_BUFFER_MS",
    "DEFAULT_RATE_WPM",
    "MAX_RATE_WPM",
    "MIN_RATE_WPM",
    "EspeakEngine",
    "EspeakStats",
    "EspeakTTS",
    "EspeakVoice",
    "PhonemeClause",
    "SynthesisError",
    "espeak_voices",
]

T = TypeVar("T")

_log = logging.getLogger(__name__)

CALLBACK_BUFFER_MS: Final = 60
"""Audio per espeak callback, in ms (1323 samples at 22050 Hz). 60 ms is the smallest
buffer espeak-ng's synchronous mode uses (smaller requests are rounded up to it); the first
buffer is ready a fraction of a millisecond after the call whatever its size."""

MIN_RATE_WPM: Final = 80
"""Slowest speaking rate espeak-ng accepts, in words per minute."""

MAX_RATE_WPM: Final = 450
"""Fastest speaking rate espeak-ng accepts, in words per minute."""

DEFAULT_RATE_WPM: Final = 175
"""espeak-ng's default speaking rate, in words per minute."""

# The subset of espeak-ng's speak_lib.h that voicecore calls (ABI mode: enums as int).
_CDEF: Final = """
typedef struct {
    int type;
    unsigned int unique_identifier;
    int text_position;
    int length;
    int audio_position;
    int sample;
    void *user_data;
    union { int number; const char *name; char string[8]; } id;
} espeak_EVENT;
typedef struct {
    const char *name;
    const char *languages;
    const char *identifier;
    unsigned char gender;
    unsigned char age;
    unsigned char variant;
    unsigned char xx1;
    int score;
    void *spare;
} espeak_VOICE;
int espeak_Initialize(int output, int buflength, const char *path, int options);
void espeak_SetSynthCallback(int (*callback)(short *, int, espeak_EVENT *));
int espeak_Synth(const void *text, size_t size, unsigned int position, int position_type,
                 unsigned int end_position, unsigned int flags,
                 unsigned int *unique_identifier, void *user_data);
int espeak_SetParameter(int parameter, int value, int relative);
const espeak_VOICE **espeak_ListVoices(espeak_VOICE *voice_spec);
int espeak_SetVoiceByName(const char *name);
const char *espeak_Info(const char **path_data);
const char *espeak_TextToPhonemes(const void **textptr, int textmode, int phonememode);
"""
_AUDIO_OUTPUT_SYNCHRONOUS: Final = 2
_POS_CHARACTER: Final = 1
_ESPEAK_CHARS_UTF8: Final = 1
_ESPEAK_ENDPAUSE: Final = 0x1000
_ESPEAK_RATE: Final = 1
_ESPEAK_PHONEMES_IPA: Final = 0x02  # phonememode bit 1: IPA (no separator between phonemes)
_EE_OK: Final = 0
_CALLBACK_CONTINUE: Final = 0
_CALLBACK_ABORT: Final = 1

# A chunk ending with one of these (before closing quotes/brackets) ends a sentence: it gets
# espeak's sentence pause (~300 ms at 175 wpm) so consecutive sentences do not run together.
# A clause chunk (the engine may cut the first one at a comma) gets no pause.
_SENTENCE_END: Final = frozenset(".!?…")
_CLOSERS: Final = "\"')]}»\N{RIGHT DOUBLE QUOTATION MARK}\N{RIGHT SINGLE QUOTATION MARK}"

# espeak_TextToPhonemes returns one clause per call and drops its punctuation; the text it
# consumed for the clause ends with that punctuation (then closers, spaces, and the one
# character espeak-ng read ahead). ``…`` counts as ``.`` (an ellipsis is a pause or an end).
_CLAUSE_END: Final = re.compile(
    r"([.!?,;:\N{HORIZONTAL ELLIPSIS}])[" + re.escape(_CLOSERS) + r"]*\s*\S?\Z"
)
# espeak-ng marks words it speaks in another language's voice: "(fr)...(en)".
_LANGUAGE_SWITCH: Final = re.compile(r"\([^()]*\)")


@dataclass(frozen=True, slots=True)
class EspeakVoice:
    """One voice installed with espeak-ng.

    Attributes:
        name: display name, e.g. ``"English (America)"``.
        identifier: path in the voice data, e.g. ``"gmw/en-US"``.
        languages: language codes the voice speaks, most preferred first (e.g.
            ``("en-us",)``). Any of ``name``, ``identifier`` or these codes selects it;
            ``"+f3"``, ``"+m2"``... appended to it selects a variant (e.g. ``"en-us+f3"``).
    """

    name: str
    identifier: str
    languages: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class EspeakStats:
    """What the process's espeak-ng worker has done since it started.

    Attributes:
        completed: syntheses run to the end of their text.
        aborted: syntheses stopped by their requester (cancelled mid-sentence or while
            queued).
        failed: syntheses that raised an error (e.g. a voice that failed to load).
        audio_ms: audio produced, in ms (aborted syntheses count what they produced).
        busy_ms: worker time spent inside ``espeak_Synth``, in ms.
        queued: requests waiting for the worker now.
    """

    completed: int
    aborted: int
    failed: int
    audio_ms: float
    busy_ms: float
    queued: int


@dataclass(frozen=True, slots=True)
class PhonemeClause:
    """One clause of a text as espeak-ng phonemizes it (:meth:`EspeakEngine.phonemize`).

    espeak-ng reads a text clause by clause: it ends a clause at ``.`` ``!`` ``?`` ``,`` ``;``
    ``:`` (followed by a space or the end), at a dash between spaces and at paragraph
    breaks, and also after abbreviations it knows (``"Mr."``).

    Attributes:
        phonemes: the clause in IPA (espeak-ng's ``espeakPHONEMES_IPA`` output: stress and
            length marks included, words separated by single spaces), without
            the marks of a switch to another language's voice.
        terminator: the punctuation that ended the clause: one of ``. ! ? , ; :`` (an
            ellipsis gives ``.``), or ``""`` (a dash, a line break, the end of the text
            without punctuation).
    """

    phonemes: str
    terminator: str

    @property
    def ends_sentence(self) -> bool:
        """The clause ends with ``.``, ``!`` or ``?``."""
        return self.terminator in (".", "!", "?")


_Pcm: TypeAlias = npt.NDArray[np.int16]


@dataclass(eq=False)
class _Synthesis:
    """One synthesis request, shared by the requesting Trio task and the worker thread."""

    text: bytes
    flags: int
    voice: str
    rate_wpm: int
    token: trio.lowlevel.TrioToken
    ctx: TurnContext | None
    submitted: float = field(default_factory=time.perf_counter)
    cancelled: threading.Event = field(default_factory=threading.Event)
    """Set by the requester (from any thread); the worker's callback then aborts."""
    samples: int = 0
    first_audio_at: float | None = None
    error: BaseException | None = None
    """An exception raised inside the callback (delivered to the requester)."""
    run_finished: bool = False
    """The requesting Trio run has ended: nothing more can be delivered."""
    pending: deque[_Pcm] = field(default_factory=deque)
    """Buffers produced and not yet taken (the worker appends, the Trio task pops)."""
    wake_scheduled: bool = False
    """A wake-up of the Trio task is scheduled (the worker sets it, the wake-up clears it):
    buffers appended meanwhile need no wake-up of their own."""
    ready: trio.Event = field(default_factory=trio.Event)
    """Set (on the Trio thread) when buffers arrive or the synthesis ends."""
    finished: bool = False
    """The worker is done with this request (Trio thread only; no buffer follows)."""
    failure: BaseException | None = None
    """Why the synthesis failed, if it did (Trio thread only)."""

    def wake(self) -> None:
        """Runs on the Trio thread (``run_sync_soon``): wakes the requesting task."""
        self.wake_scheduled = False
        self.ready.set()


@dataclass(eq=False)
class _Control:
    """A function to run on the worker thread (voice checks, voice listing)."""

    fn: Callable[[], Any]
    result: Future[Any] = field(default_factory=Future)


class EspeakEngine:
    """The process's one espeak-ng instance and the worker thread that runs every call to it.

    Use :meth:`shared`; never construct two (espeak-ng's state is global to the process).
    Thread-safe: any thread or Trio task may submit requests; they run one at a time, in
    submission order, on the worker thread ``voicecore-espeak`` (a daemon thread that lives
    as long as the process).
    """

    _shared: ClassVar[EspeakEngine | None] = None
    _shared_lock: ClassVar[threading.Lock] = threading.Lock()
    _constructing: ClassVar[bool] = False

    def __init__(self) -> None:
        if not EspeakEngine._constructing:
            raise TypeError("espeak-ng's state is process-wide: use EspeakEngine.shared()")
        self._tasks: SimpleQueue[_Synthesis | _Control] = SimpleQueue()
        self._ready: Future[int] = Future()
        self._ffi = cffi.FFI()
        self._ffi.cdef(_CDEF)
        self._lib: Any = None  # cffi's Lib: attributes are the C functions declared above
        # The C callback must stay referenced as long as the library may call it.
        self._callback = self._ffi.callback("int(short *, int, espeak_EVENT *)", self._on_audio)
        self._current: _Synthesis | None = None  # touched by the worker thread only
        self._voice: str | None = None  # the voice loaded now (worker thread only)
        self._rate_wpm: int | None = None
        self._checked_voices: set[str] = set()
        self._data_path = ""  # espeak-ng's data folder, set by the worker when it loads
        self._stats_lock = threading.Lock()
        self._completed = 0
        self._aborted = 0
        self._failed = 0
        self._audio_ms = 0.0
        self._busy_s = 0.0
        self._thread = threading.Thread(target=self._run, name="voicecore-espeak", daemon=True)
        self._thread.start()

    @classmethod
    def shared(cls) -> EspeakEngine:
        """The process's engine, started on first use (its worker loads espeak-ng)."""
        with cls._shared_lock:
            if cls._shared is None:
                cls._constructing = True
                try:
                    cls._shared = cls()
                finally:
                    cls._constructing = False
            return cls._shared

    def __repr__(self) -> str:
        state = "ready" if self._ready.done() else "starting"
        return f"EspeakEngine({state}, {self.stats()})"

    @property
    def sample_rate(self) -> int:
        """espeak-ng's output rate in Hz (22050); blocks until the library is loaded.

        Raises:
            SynthesisError: the library or its data could not be loaded.
        """
        return self._ready.result()

    def stats(self) -> EspeakStats:
        """Counters of the worker's activity so far (see :class:`EspeakStats`)."""
        with self._stats_lock:
            return EspeakStats(
                completed=self._completed,
                aborted=self._aborted,
                failed=self._failed,
                audio_ms=self._audio_ms,
                busy_ms=1000.0 * self._busy_s,
                queued=self._tasks.qsize(),
            )

    def voices(self) -> list[EspeakVoice]:
        """Every installed voice, as espeak-ng lists them (blocks on the worker, ~1 ms)."""
        voices: list[EspeakVoice] = self._call(self._list_voices)
        return voices

    def check_voice(self, voice: str) -> None:
        """Checks that espeak-ng can load ``voice`` (a name, identifier or language code,
        optionally with a ``+variant``); blocks on the worker the first time (~5 ms).

        Raises:
            ConfigError: espeak-ng has no such voice; the message suggests close names and
                says how to list them all.
        """
        if voice in self._checked_voices:
            return
        _, plus, variant = voice.partition("+")
        if plus:
            # espeak-ng ignores an unknown variant silently; its variants are files.
            variants_dir = Path(self._call(lambda: self._data_path)) / "voices" / "!v"
            if not (variants_dir / variant).is_file():
                raise ConfigError(
                    f"espeak-ng has no voice variant {variant!r} (in {voice!r}); the variants "
                    f"are the files in {variants_dir}: "
                    f"{', '.join(sorted(p.name for p in variants_dir.glob('*')))}"
                )
        self._call(lambda: self._select(voice, None))
        self._checked_voices.add(voice)

    def phonemize(self, text: str, voice: str = "en-us") -> list[PhonemeClause]:
        """The IPA phonemes of ``text`` in ``voice``'s language, clause by clause; blocks on
        the worker (queued behind the syntheses before it; well under 1 ms per sentence).

        From a Trio task, use :meth:`phonemize_async` (the event loop keeps running).

        Args:
            text: plain text (UTF-8; NUL characters are read as spaces).
            voice: the espeak-ng voice whose language rules apply (e.g. ``"en-us"``, the
                ``espeak.voice`` of a Piper voice's config).

        Returns:
            The clauses in text order, without those that have no phonemes (e.g. ``"..."``);
            empty for a blank text.

        Raises:
            ConfigError: espeak-ng has no such voice.
            SynthesisError: espeak-ng could not be loaded.
        """
        spoken = text.replace("\0", " ")
        if not spoken.strip():
            return []
        clauses: list[PhonemeClause] = self._call(lambda: self._phonemize(spoken, voice))
        return clauses

    async def phonemize_async(self, text: str, voice: str = "en-us") -> list[PhonemeClause]:
        """:meth:`phonemize` for a Trio task: waits for the worker without blocking the
        event loop. A cancelled call returns at once (the worker still phonemizes the text,
        for nothing: a fraction of a millisecond).
        """
        spoken = text.replace("\0", " ")
        if not spoken.strip():
            return []
        control = _Control(lambda: self._phonemize(spoken, voice))
        token = trio.lowlevel.current_trio_token()
        done = trio.Event()

        def wake(_: Future[Any]) -> None:  # on the worker thread
            with contextlib.suppress(trio.RunFinishedError):
                token.run_sync_soon(done.set)

        control.result.add_done_callback(wake)
        self._tasks.put(control)
        await done.wait()
        clauses: list[PhonemeClause] = control.result.result()
        return clauses

    def submit(self, request: _Synthesis) -> None:
        """Queues a synthesis for the worker (never blocks)."""
        self._tasks.put(request)

    # --- worker thread ---------------------------------------------------------------------

    def _call(self, fn: Callable[[], T]) -> T:
        """Runs ``fn`` on the worker thread and returns its result (blocking the caller)."""
        control = _Control(fn)
        self._tasks.put(control)
        result: T = control.result.result()
        return result

    def _load(self) -> int:
        try:
            import espeakng_loader
        except ImportError as exc:  # a runtime dependency; missing only in a broken install
            raise SynthesisError("espeak-ng is not available: pip install espeakng-loader") from exc
        library = espeakng_loader.get_library_path()
        data = espeakng_loader.get_data_path()
        self._data_path = str(data)
        try:
            self._lib = self._ffi.dlopen(library)
        except OSError as exc:
            raise SynthesisError(f"cannot load espeak-ng from {library}: {exc}") from exc
        rate = int(
            self._lib.espeak_Initialize(
                _AUDIO_OUTPUT_SYNCHRONOUS, CALLBACK_BUFFER_MS, data.encode(), 0
            )
        )
        if rate <= 0:
            raise SynthesisError(f"espeak_Initialize failed ({rate}) with the data in {data}")
        self._lib.espeak_SetSynthCallback(self._callback)
        return rate

    def _run(self) -> None:
        try:
            self._ready.set_result(self._load())
        except BaseException as exc:
            self._ready.set_exception(exc)
        while True:
            task = self._tasks.get()
            failure = self._ready.exception()
            try:
                if isinstance(task, _Control):
                    if failure is not None:
                        raise failure  # the library did not load: the caller gets why
                    task.result.set_result(task.fn())
                elif failure is not None:
                    self._finish(task, failure, time.perf_counter())
                else:
                    self._synthesize(task)
            except BaseException as exc:  # the worker must outlive any one request
                if isinstance(task, _Control) and not task.result.done():
                    task.result.set_exception(exc)
                else:
                    _log.exception("espeak worker: unexpected error")

    def _list_voices(self) -> list[EspeakVoice]:
        ffi = self._ffi
        table = self._lib.espeak_ListVoices(ffi.NULL)
        voices = []
        index = 0
        while table[index] != ffi.NULL:
            entry = table[index]
            # ``languages`` is packed: (priority byte, NUL-terminated code)*, then a 0 byte.
            languages = []
            cursor = entry.languages
            while cursor[0] != b"\0":
                code = self._bytes(cursor + 1)
                languages.append(code.decode("utf-8", "replace"))
                cursor += len(code) + 2
            voices.append(
                EspeakVoice(
                    name=self._bytes(entry.name).decode("utf-8", "replace"),
                    identifier=self._bytes(entry.identifier).decode("utf-8", "replace"),
                    languages=tuple(languages),
                )
            )
            index += 1
        return voices

    def _bytes(self, pointer: Any) -> bytes:
        """The bytes of a NUL-terminated C string (``char *``, for which cffi gives bytes)."""
        raw = self._ffi.string(pointer)
        assert isinstance(raw, bytes)
        return raw

    def _select(self, voice: str, rate_wpm: int | None) -> None:
        """Loads ``voice`` and sets ``rate_wpm`` unless they are already current."""
        if voice != self._voice:
            self._voice = None  # unknown after a failed load
            if self._lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
                raise ConfigError(self._unknown_voice_message(voice))
            self._voice = voice
            self._rate_wpm = None
        if rate_wpm is not None and rate_wpm != self._rate_wpm:
            self._lib.espeak_SetParameter(_ESPEAK_RATE, rate_wpm, 0)
            self._rate_wpm = rate_wpm

    def _phonemize(self, text: str, voice: str) -> list[PhonemeClause]:
        """Runs ``espeak_TextToPhonemes`` over ``text`` until it has read all of it."""
        self._select(voice, None)
        ffi = self._ffi
        raw = text.encode("utf-8")
        buffer = ffi.new("char[]", raw)  # NUL-terminated; kept alive until the end
        cursor = ffi.new("const void **", buffer)
        base = int(ffi.cast("uintptr_t", buffer))
        clauses: list[PhonemeClause] = []
        start = 0
        # espeak-ng sets the cursor to NULL after the last clause; every call consumes at
        # least one character, so the bound is only a guard against a library bug.
        for _ in range(len(raw) + 1):
            if cursor[0] == ffi.NULL:
                break
            result = self._lib.espeak_TextToPhonemes(
                cursor, _ESPEAK_CHARS_UTF8, _ESPEAK_PHONEMES_IPA
            )
            end = (
                len(raw) if cursor[0] == ffi.NULL else int(ffi.cast("uintptr_t", cursor[0])) - base
            )
            ipa = "" if result == ffi.NULL else self._bytes(result).decode("utf-8", "replace")
            phonemes = " ".join(_LANGUAGE_SWITCH.sub("", ipa).split())
            read = raw[start:end].decode("utf-8", "replace")
            start = end
            match = _CLAUSE_END.search(read)
            terminator = "" if match is None else match.group(1)
            if phonemes:
                clauses.append(
                    PhonemeClause(
                        phonemes, "." if terminator == "\N{HORIZONTAL ELLIPSIS}" else terminator
                    )
                )
        return clauses

    def _unknown_voice_message(self, voice: str) -> str:
        voices = self._list_voices()
        names = sorted({code for v in voices for code in v.languages} | {v.name for v in voices})
        close = difflib.get_close_matches(voice.split("+")[0], names, n=5, cutoff=0.5)
        hint = f" Close matches: {', '.join(close)}." if close else ""
        return (
            f"espeak-ng has no voice {voice!r}.{hint} Use a language code (e.g. 'en-us', "
            f"'en-gb', 'de', 'fr'), a voice name or identifier, optionally with a variant "
            f"('en-us+f3'); voicecore.providers.espeak_voices() lists the {len(voices)} "
            "installed voices."
        )

    def _synthesize(self, request: _Synthesis) -> None:
        started = time.perf_counter()
        error: BaseException | None = None
        if not request.cancelled.is_set():
            try:
                self._select(request.voice, request.rate_wpm)
                started = time.perf_counter()  # a voice switch is not synthesis time
                self._current = request
                status = self._lib.espeak_Synth(
                    request.text,
                    len(request.text) + 1,  # bytes, NUL terminator included
                    0,
                    _POS_CHARACTER,
                    0,
                    request.flags,
                    self._ffi.NULL,
                    self._ffi.NULL,
                )
                if status != _EE_OK:
                    error = SynthesisError(f"espeak_Synth failed with status {status}")
            except BaseException as exc:
                error = exc
            finally:
                self._current = None
        self._finish(request, error or request.error, started)

    def _on_audio(self, wav: Any, numsamples: int, events: Any) -> int:
        """espeak's callback (worker thread): forwards one buffer, or aborts the synthesis.

        Never raises (cffi would print the exception and carry on): an error is kept on the
        request and aborts it.
        """
        request = self._current
        if request is None or request.cancelled.is_set():
            return _CALLBACK_ABORT
        if numsamples <= 0:  # an events-only call (end of the text)
            return _CALLBACK_CONTINUE
        try:
            samples = memoryview(self._ffi.buffer(wav, 2 * numsamples))
            pcm = np.frombuffer(samples, dtype=np.int16).copy()  # the buffer is reused
            if request.first_audio_at is None:
                request.first_audio_at = time.perf_counter()
            request.samples += numsamples
            request.pending.append(pcm)
            # Reading the flag after the append: if a wake-up is still scheduled, it has not
            # run yet, and the task it wakes will find this buffer.
            if not request.wake_scheduled:
                request.wake_scheduled = True
                request.token.run_sync_soon(request.wake)
        except trio.RunFinishedError:
            request.run_finished = True
            return _CALLBACK_ABORT
        except BaseException as exc:
            request.error = exc
            return _CALLBACK_ABORT
        return _CALLBACK_CONTINUE

    def _finish(self, request: _Synthesis, error: BaseException | None, started: float) -> None:
        """Accounts for a finished request (``started``: when its synthesis began, on
        ``time.perf_counter``) and ends its stream on the Trio side."""
        ended = time.perf_counter()
        aborted = error is None and (request.cancelled.is_set() or request.run_finished)
        rate = self._ready.result() if self._ready.exception() is None else 0
        audio_ms = 1000.0 * request.samples / rate if rate else 0.0
        with self._stats_lock:
            self._completed += error is None and not aborted
            self._aborted += aborted
            self._failed += error is not None
            self._audio_ms += audio_ms
            self._busy_s += ended - started
        if request.run_finished:
            return
        record = {
            "chars": len(request.text),
            "audio_ms": round(audio_ms, 3),
            "wait_ms": round(1000.0 * (started - request.submitted), 3),
            "synth_ms": round(1000.0 * (ended - started), 3),
            "first_audio_ms": None
            if request.first_audio_at is None
            else round(1000.0 * (request.first_audio_at - started), 3),
            "aborted": aborted,
            "error": None if error is None else repr(error),
        }
        with contextlib.suppress(trio.RunFinishedError):
            request.token.run_sync_soon(_close, request, error, record)


def _close(request: _Synthesis, error: BaseException | None, record: dict[str, Any]) -> None:
    """Runs on the Trio thread (``run_sync_soon``, after every wake-up of the request):
    records the synthesis on the turn's timeline and ends the request's stream.

    Must not raise: an exception in a ``run_sync_soon`` callback crashes the Trio run.
    """
    try:
        if request.ctx is not None:
            request.ctx.record("espeak_synth", **record)
    except Exception:
        _log.exception("cannot record an espeak synthesis on the timeline")
    request.failure = error
    request.finished = True
    request.ready.set()


def espeak_voices() -> list[EspeakVoice]:
    """Every voice installed with espeak-ng (starts the shared engine if needed).

    Any of a voice's ``languages``, its ``name`` or its ``identifier`` is a valid
    ``EspeakTTS(voice=...)``.
    """
    return EspeakEngine.shared().voices()


class EspeakTTS:
    """Streaming text-to-speech with espeak-ng (``TTS`` stage protocol), offline, in process.

    Each ``synthesize`` call yields the audio of its text as it is produced, in chunks of
    ``CALLBACK_BUFFER_MS`` (60 ms) of mono int16 PCM at ``sample_rate`` (22050 Hz); the first
    chunk is ready well under a millisecond of synthesis after the request reaches the
    worker. All instances share the process's :class:`EspeakEngine` (one synthesis at a
    time, FIFO; see the module documentation), each with its own voice and rate.

    A text chunk ending a sentence (``.``, ``!``, ``?``, ``…``) gets espeak's sentence pause
    at its end (about 300 ms at 175 wpm), so sentences synthesized one by one do not run
    together; a clause gets none.

    Args:
        voice: an espeak-ng voice: a language code (``"en-us"``, ``"en-gb"``, ``"de"``...), a
            voice name or identifier, optionally with a variant (``"en-us+f3"``).
            :func:`espeak_voices` lists them.
        rate_wpm: speaking rate in words per minute, ``MIN_RATE_WPM``-``MAX_RATE_WPM``
            (80-450; espeak-ng's default is 175).

    Raises:
        ConfigError: an unknown voice (the message says how to list the voices) or a rate
            out of range.
        TypeError: a voice that is not a ``str`` or a rate that is not an ``int``.
        SynthesisError: espeak-ng could not be loaded.
    """

    def __init__(self, voice: str = "en-us", *, rate_wpm: int = DEFAULT_RATE_WPM) -> None:
        if not isinstance(voice, str):
            raise TypeError(f"voice must be a str, got {type(voice).__name__}")
        if isinstance(rate_wpm, bool) or not isinstance(rate_wpm, int):
            raise TypeError(f"rate_wpm must be an int, got {type(rate_wpm).__name__}")
        if not voice.strip() or "\0" in voice:
            raise ConfigError(f"voice must be a non-empty voice name, got {voice!r}")
        if not MIN_RATE_WPM <= rate_wpm <= MAX_RATE_WPM:
            raise ConfigError(
                f"rate_wpm must be {MIN_RATE_WPM}-{MAX_RATE_WPM} words per minute, got {rate_wpm}"
            )
        self._engine = EspeakEngine.shared()
        self._engine.check_voice(voice)
        self.voice: Final = voice
        """The espeak-ng voice name."""
        self.rate_wpm: Final = rate_wpm
        """Speaking rate, in words per minute."""

    def __repr__(self) -> str:
        return f"EspeakTTS(voice={self.voice!r}, rate_wpm={self.rate_wpm})"

    @property
    def sample_rate(self) -> int:
        """Output rate in Hz (22050)."""
        return self._engine.sample_rate

    @property
    def engine(self) -> EspeakEngine:
        """The process's shared espeak-ng engine (its ``stats()`` for monitoring)."""
        return self._engine

    async def synthesize(self, text: str, ctx: TurnContext | None) -> AsyncIterator[AudioChunk]:
        """Yields the speech of ``text`` chunk by chunk as espeak-ng produces it.

        Text that is empty or only whitespace yields nothing. Closing the iterator or
        cancelling the task aborts the synthesis at espeak's next callback. Each synthesis is
        recorded on ``ctx``'s timeline as an ``"espeak_synth"`` event (``chars``,
        ``audio_ms``, ``wait_ms`` in the queue, ``synth_ms`` of worker time,
        ``first_audio_ms`` from the request to the first buffer, ``aborted``, ``error``).

        Args:
            text: the text to speak (plain text, UTF-8; no SSML).
            ctx: the turn (for the timeline record); None outside a session.

        Raises:
            TypeError: ``text`` is not a ``str``.
            SynthesisError: espeak-ng failed.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        spoken = text.replace("\0", " ").strip()
        if not spoken:
            return
        request = _Synthesis(
            text=spoken.encode("utf-8"),
            flags=_ESPEAK_CHARS_UTF8
            | (_ESPEAK_ENDPAUSE if spoken.rstrip(_CLOSERS)[-1:] in _SENTENCE_END else 0),
            voice=self.voice,
            rate_wpm=self.rate_wpm,
            token=trio.lowlevel.current_trio_token(),
            ctx=ctx,
        )
        self._engine.submit(request)
        try:
            while True:
                while request.pending:
                    # Buffers already here are yielded without waiting; stop at once anyway
                    # if the turn was cancelled meanwhile (cheap: no trip to the scheduler).
                    await trio.lowlevel.checkpoint_if_cancelled()
                    yield AudioChunk(request.pending.popleft(), self._engine.sample_rate)
                # ``finished`` is set after the last append, so check it before ``pending``.
                if request.finished and not request.pending:
                    break
                if not request.pending:
                    request.ready = trio.Event()
                    await request.ready.wait()
        finally:
            request.cancelled.set()
        if request.failure is not None:
            if isinstance(request.failure, VoicecoreError):
                raise request.failure
            raise SynthesisError(f"espeak-ng failed: {request.failure!r}") from request.failure
