"""The pure-Python pacing baseline: voicecore's frame pacer run by a Trio task.

**A benchmark baseline, never for production.** Issue 6 asks for the stall benchmarks to be
shown beside "the pacer replaced by ``trio.sleep_until`` pacing", so that what the Rust
pacer thread buys under GC pauses, a hogged GIL, a blocked event loop or a frozen process is
measured, not claimed. ``TrioFramePacer`` is that replacement, inside the same server:

* the same Python-visible interface as the Rust ``FramePacer`` / ``PacerStream`` as
  ``PlayoutRouter``, ``voicecore.engine.pacing`` and ``Session`` use them (``open_stream``,
  ``push`` returning the samples taken, ``finish``, ``flush`` and its report,
  ``report_playout``, statistics, ``fileno``/``writable_fileno`` as real Linux eventfds,
  ``take_released``, ``now_ns``, ``stop``...);
* the same release logic, ported line by line from ``rust/core/src/pacer`` (``mod.rs``
  and ``stream.rs``): an initial burst up to the cushion, then one frame per ``frame_ms``
  on absolute deadlines ``t0 + n * frame`` computed in integer nanoseconds, the
  ``max_lead`` guard, the cushion kept on target by the phase-locked loop on playout
  reports, the catch-up after lateness, underruns counted per frame slot, the queue bound
  with its "writable" descriptor, a stream held (no deadline, the client model frozen) and
  resumed from the exact sample it paused at;
* the one difference: who runs it. The Rust pacer sleeps on a ``timerfd`` in its own OS
  thread that never takes the GIL; this one is a Trio task (``run``) that awaits
  ``trio.sleep_until(deadline)`` (a ``move_on_at`` around a wake-up event, which API calls
  set when they change the schedule, as the Rust API calls write the thread's eventfd) on
  the event loop, so anything that holds up the loop or the GIL holds up the audio.

Its clock is Trio's (``now_ns()`` is ``trio.current_time()`` in ns), so it also runs under
``trio.testing.MockClock``. ``PlayoutRouter.run`` starts ``run`` for it (a pacer with an
``async def run`` is a ``voicecore.engine.pacing.TaskPacer``); when ``run`` ends (cancelled, or
``stop``) the pacer is stopped.

``python -m harness.serve`` uses it when ``VOICECORE_BENCH_PACER=trio`` (``pacer_from_env``): the
stall benchmark (``harness.stalls``) runs the same server program with either pacer.
"""

from __future__ import annotations

import contextlib
import heapq
import math
import os
import weakref
from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Literal

import numpy as np
import trio

from voicecore._core import SocketSink
from voicecore.exceptions import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    PacerStoppedError,
    SendBufferFullError,
    UnknownStreamError,
    UnsupportedSampleRateError,
)

if TYPE_CHECKING:
    from types import TracebackType

    from voicecore._typing import AudioIn

__all__ = [
    "ENV",
    "SCHEDULING",
    "TrioFlushReport",
    "TrioFramePacer",
    "TrioPacerStats",
    "TrioPacerStream",
    "TrioReleasedFrame",
    "TrioStreamEvent",
    "TrioStreamStats",
    "pacer_from_env",
]

ENV: Final = "VOICECORE_BENCH_PACER"
"""The environment variable that selects the pacer of ``voicecore serve`` (benchmarks only):
``trio`` for this baseline; unset, empty or ``rust`` for the Rust pacer."""

SCHEDULING: Final = "trio task (event loop)"
"""What ``TrioFramePacer.scheduling`` (and so ``/healthz``) says: no thread, a Trio task."""

FRAME_DURATIONS_MS: Final = (10, 20, 40)
LATE_FRAME_NS: Final = 5_000_000
"""Release lateness above which a frame is reported ``"late"`` (the Rust pacer's
``LATE_FRAME_NS``)."""
SUPPORTED_RATES: Final = (8000, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
_SUPPORTED_TEXT: Final = (
    "8000, 12000, 16000, 22050, 24000, 32000, 44100 or 48000 Hz "
    "(22050 only with 20 or 40 ms frames, where a frame is a whole number of samples)"
)

# The constants of rust/core/src/pacer/stream.rs (see its module doc for the model).
_PHASE_GAIN: Final = 0.5
_RATE_GAIN: Final = 0.1
_MAX_RATE_PPM: Final = 50_000
_MIN_RATE_INTERVAL_NS: Final = 50_000_000
_MAX_REPORTED_MS: Final = 60_000.0
_NS_PER_SECOND: Final = 1_000_000_000
_PPM: Final = 1_000_000


def _round(value: float) -> int:
    """Rounds half away from zero, as Rust's ``f64::round`` (Python's rounds half to even)."""
    return int(math.copysign(math.floor(abs(value) + 0.5), value))


def _invalid(name: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"{name} = {value} is invalid; expected {expected}")


# --- eventfds -------------------------------------------------------------------------------


class _EventFd:
    """A non-blocking Linux eventfd used as a level-triggered flag, like the Rust
    ``EventFd``: readable from ``signal`` until ``drain``. Closed when garbage-collected, so
    it outlives every handle (and any Trio task waiting on it through one)."""

    def __init__(self) -> None:
        self.fd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        weakref.finalize(self, os.close, self.fd)

    def signal(self) -> None:
        # BlockingIOError: the counter is at its maximum, so it is readable anyway.
        with contextlib.suppress(BlockingIOError):
            os.eventfd_write(self.fd, 1)

    def drain(self) -> None:
        with contextlib.suppress(BlockingIOError):  # not signalled
            os.eventfd_read(self.fd)


# --- lateness histogram ---------------------------------------------------------------------

_EXACT_BELOW: Final = 64
_SUB_BITS: Final = 5
_SUB_BUCKETS: Final = 1 << _SUB_BITS
_BUCKETS: Final = _EXACT_BELOW + (64 - 6) * _SUB_BUCKETS


class _LatenessHistogram:
    """The Rust pacer's log-linear lateness histogram (``stats.rs``): quantiles exact to
    within 1/32 of their value, the maximum exact, constant memory over a long run."""

    def __init__(self) -> None:
        self.counts = [0] * _BUCKETS
        self.total = 0
        self.max_ns = 0

    @staticmethod
    def _bucket(value: int) -> int:
        if value < _EXACT_BELOW:
            return value
        exponent = min(value.bit_length(), 64) - 1
        sub = (min(value, (1 << 64) - 1) >> (exponent - _SUB_BITS)) - _SUB_BUCKETS
        return _EXACT_BELOW + (exponent - 6) * _SUB_BUCKETS + sub

    @staticmethod
    def _upper_edge(index: int) -> int:
        if index < _EXACT_BELOW:
            return index
        offset = index - _EXACT_BELOW
        exponent = offset // _SUB_BUCKETS + 6
        width = 1 << (exponent - _SUB_BITS)
        return min((_SUB_BUCKETS + offset % _SUB_BUCKETS + 1) * width, 1 << 64) - 1

    def record(self, value_ns: int) -> None:
        value = max(value_ns, 0)
        self.counts[self._bucket(value)] += 1
        self.total += 1
        self.max_ns = max(self.max_ns, value)

    def quantile_ns(self, q: float) -> int:
        if self.total == 0:
            return 0
        rank = max(math.ceil(min(max(q, 0.0), 1.0) * self.total), 1)
        seen = 0
        for index, count in enumerate(self.counts):
            seen += count
            if seen >= rank:
                return min(self._upper_edge(index), self.max_ns)
        return self.max_ns


# --- the objects handed to Python -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrioReleasedFrame:
    """One released frame (as ``voicecore.ReleasedFrame``).

    Attributes:
        stream_id: the stream it belongs to.
        seq: its position in the stream: 0, 1, 2... (never reset).
        pcm16: exactly one frame, PCM16 little-endian bytes.
        deadline_ns: when it was due, ns of Trio's clock.
        released_ns: when the pacer task released it, ns of Trio's clock.
    """

    stream_id: int
    seq: int
    pcm16: bytes
    deadline_ns: int
    released_ns: int

    @property
    def lateness_ns(self) -> int:
        """``released_ns - deadline_ns``: how late the pacer task was, ns."""
        return self.released_ns - self.deadline_ns


@dataclass(frozen=True, slots=True)
class TrioStreamEvent:
    """A stream's lifecycle event (as ``voicecore.StreamEvent``): ``"started"`` (its first
    frame released), ``"drained"`` (after ``finish``, its last sample released) or ``"late"``
    (a frame released more than ``LATE_FRAME_NS`` after its deadline); ``at_ns`` on Trio's
    clock; ``lateness_ns`` of the frame concerned (None for ``"drained"``)."""

    stream_id: int
    kind: Literal["started", "drained", "late"]
    at_ns: int
    lateness_ns: int | None


@dataclass(frozen=True, slots=True)
class TrioFlushReport:
    """What ``TrioPacerStream.flush`` dropped and what had gone out (as
    ``voicecore.FlushReport``; counts in samples, durations in ms)."""

    dropped_samples: int
    released_samples: int
    client_buffered_samples: int
    sample_rate: int

    @property
    def heard_samples(self) -> int:
        """``released_samples - client_buffered_samples``: what the user has heard."""
        return self.released_samples - self.client_buffered_samples

    @property
    def dropped_ms(self) -> float:
        """``dropped_samples`` in ms."""
        return self.dropped_samples * 1000 / self.sample_rate

    @property
    def released_ms(self) -> float:
        """``released_samples`` in ms."""
        return self.released_samples * 1000 / self.sample_rate

    @property
    def heard_ms(self) -> float:
        """``heard_samples`` in ms."""
        return self.heard_samples * 1000 / self.sample_rate


@dataclass(frozen=True, slots=True)
class TrioStreamStats:
    """One stream's statistics (as ``voicecore.StreamStats``; lateness in ms)."""

    frames_released: int
    underruns: int
    flushes: int
    dropped_samples: int
    sink_refused: int
    queued_samples: int
    queued_ms: float
    released_samples: int
    client_buffered_ms: float
    client_rate_ppm: int
    playing: bool
    holds: int
    held_ms: float
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float


@dataclass(frozen=True, slots=True)
class TrioPacerStats:
    """The pacer's statistics over its life (as ``voicecore.PacerStats``; lateness in ms)."""

    scheduling: str
    open_streams: int
    frames_released: int
    underruns: int
    flushes: int
    dropped_samples: int
    sink_refused: int
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float


@dataclass
class _Counters:
    frames_released: int = 0
    underruns: int = 0
    flushes: int = 0
    dropped_samples: int = 0
    sink_refused: int = 0


@dataclass(frozen=True, slots=True)
class _Info:
    """A validated stream's identity and sizes (``StreamInfo``)."""

    id: int
    sample_rate: int
    frame_samples: int
    cushion_ms: int
    max_lead_ms: int
    queue_ms: int

    def samples_of_ms(self, ms: int) -> int:
        return self.sample_rate * ms // 1000


def _validate(
    stream_id: int,
    frame_ms: int,
    *,
    sample_rate: int,
    channels: int,
    cushion_ms: int,
    max_lead_ms: int | None,
    queue_ms: int,
) -> _Info:
    """``StreamInfo::validate``: the same checks, the same exceptions."""
    if sample_rate not in SUPPORTED_RATES or sample_rate * frame_ms % 1000:
        if sample_rate < 0:
            raise _invalid("sample_rate", sample_rate, _SUPPORTED_TEXT)
        raise UnsupportedSampleRateError(
            f"sample rate {sample_rate} Hz is not supported; use {_SUPPORTED_TEXT}"
        )
    if channels != 1:
        raise _invalid("channels", channels, "1 (mono)")
    if not frame_ms <= cushion_ms <= 10_000:
        raise _invalid(
            "cushion_ms", cushion_ms, "at least one frame (frame_ms) and at most 10000 ms"
        )
    lead = max_lead_ms if max_lead_ms is not None else cushion_ms + 4 * frame_ms
    if not cushion_ms + frame_ms <= lead <= 20_000:
        raise _invalid("max_lead_ms", lead, "at least cushion_ms + frame_ms and at most 20000 ms")
    if not frame_ms <= queue_ms <= 600_000:
        raise _invalid("queue_ms", queue_ms, "at least one frame (frame_ms) and at most 600000 ms")
    return _Info(stream_id, sample_rate, sample_rate * frame_ms // 1000, cushion_ms, lead, queue_ms)


def _pcm16(audio: AudioIn) -> bytes:
    """The audio as PCM16 little-endian bytes, accepting what ``PacerStream.push`` accepts.

    Raises:
        AudioTypeError: an unsupported type or dtype.
        AudioFormatError: odd PCM16 byte length, a 2-D or non-contiguous array, a
            big-endian array, or non-finite float samples.
    """
    if isinstance(audio, bytes | bytearray | memoryview):
        view = memoryview(audio)
        if view.itemsize == 1:
            if not view.c_contiguous:
                raise AudioFormatError("audio must be C-contiguous")
            if view.nbytes % 2:
                raise AudioFormatError(
                    f"PCM16 audio must be a whole number of 2-byte samples; got {view.nbytes} bytes"
                )
            return view.tobytes()
    array = np.asarray(audio)
    if array.dtype.newbyteorder("=") not in (np.dtype(np.int16), np.dtype(np.float32)):
        raise AudioTypeError(f"audio must be PCM16 bytes, int16 or float32; got {array.dtype}")
    if array.ndim != 1 or not array.flags.c_contiguous:
        raise AudioFormatError("audio arrays must be one-dimensional and C-contiguous")
    if not array.dtype.isnative:
        raise AudioFormatError("audio arrays must be in the machine's byte order")
    if array.dtype == np.int16:
        return array.astype("<i2", copy=False).tobytes()
    if not np.isfinite(array).all():
        index = int(np.flatnonzero(~np.isfinite(array))[0])
        raise AudioFormatError(
            f"invalid audio: sample {index} is {array[index]}, not a finite number"
        )
    # push_f32: clip to [-1, 1], scale, round half away from zero.
    scaled = np.clip(array, -1.0, 1.0).astype(np.float64) * 32767.0
    rounded: bytes = np.trunc(scaled + np.copysign(0.5, scaled)).astype("<i2").tobytes()
    return rounded


# --- one stream: stream.rs ------------------------------------------------------------------


@dataclass
class _Report:
    at_ns: int
    buffered: int
    released_then: int


class _Stream:
    """One stream's state: ``Stream`` of ``stream.rs``, method for method. Samples are
    counted in samples; the queue holds PCM16 bytes (2 per sample)."""

    def __init__(
        self, info: _Info, now_ns: int, sink: SocketSink | None = None, *, held: bool = False
    ) -> None:
        self.info = info
        self.sink = sink
        self.queue = bytearray()
        self.capacity = info.samples_of_ms(info.queue_ms)
        self.writable = _EventFd()
        self.wants_writable = False
        self.finishing = False
        self.idle = True  # Phase::Idle; else Phase::Scheduled{starved}
        self.starved = False
        self.generation = 0
        self.next_seq = 0
        self.released = 0
        self.anchor_ns = now_ns
        self.anchor_played = 0
        self.rate_ppm = 0
        self.last_report: _Report | None = None
        self.last_rate_report_ns: int | None = None
        self.not_before_ns = now_ns
        self.counters = _Counters()
        self.lateness = _LatenessHistogram()
        self.started = False  # the "started" event was emitted
        self.drained = False  # this utterance's "drained" was emitted (or a flush cut it)
        self.held_since_ns: int | None = now_ns if held else None  # None: not held
        self.holds = int(held)  # opening held counts as one
        self.held_ns = 0  # total of the holds that have ended

    def take_drained(self) -> bool:
        """True once per utterance, when ``finish`` was called and the queue is empty."""
        if self.finishing and not self.queue and not self.drained:
            self.drained = True
            return True
        return False

    @property
    def queued(self) -> int:
        return len(self.queue) // 2

    def frame_ns(self) -> int:
        return self.info.frame_samples * _NS_PER_SECOND // self.info.sample_rate

    def has_frame(self) -> bool:
        return self.queued >= self.info.frame_samples

    def waiting_for_audio(self) -> bool:
        return self.idle or self.starved

    def _per_second(self) -> int:
        return self.info.sample_rate * (_PPM + self.rate_ppm)

    def duration_ns(self, samples: int) -> int:
        """Time for the client to play ``samples`` at the estimated rate, rounded up."""
        return -(-samples * _NS_PER_SECOND * _PPM // self._per_second())

    def samples_in(self, elapsed_ns: int) -> int:
        """Samples the client plays in ``elapsed_ns`` at the estimated rate, rounded down."""
        return max(elapsed_ns, 0) * self._per_second() // (_NS_PER_SECOND * _PPM)

    @property
    def held(self) -> bool:
        return self.held_since_ns is not None

    def held_ns_at(self, now_ns: int) -> int:
        """Total time held by ``now_ns``, the current hold included."""
        since = self.held_since_ns
        return self.held_ns + (0 if since is None else now_ns - since)

    def unbounded_played(self, now_ns: int) -> int:
        if self.held:  # the client paused: frozen where the hold began
            return self.anchor_played
        return self.anchor_played + self.samples_in(now_ns - self.anchor_ns)

    def client_buffered(self, now_ns: int) -> int:
        return self.released - min(self.unbounded_played(now_ns), self.released)

    def next_deadline_ns(self) -> int:
        """The model's slot, the ``max_lead`` guard and ``not_before``, whichever is latest."""
        frame = self.info.frame_samples
        cushion = self.info.samples_of_ms(self.info.cushion_ms)
        ahead = self.released + frame - cushion - self.anchor_played
        deadline = self.not_before_ns
        if ahead > 0:
            deadline = max(deadline, self.anchor_ns + self.duration_ns(ahead))
        report = self.last_report
        if report is not None:
            max_lead = self.info.samples_of_ms(self.info.max_lead_ms)
            excess = report.buffered + (self.released - report.released_then) + frame - max_lead
            if excess > 0:
                deadline = max(deadline, report.at_ns + self.duration_ns(excess))
        return deadline

    def restart(self, now_ns: int) -> bool:
        if self.unbounded_played(now_ns) >= self.released:
            self.anchor_ns = now_ns
            self.anchor_played = self.released
        self.not_before_ns = now_ns
        return self.has_frame()

    def push(self, pcm: bytes, now_ns: int) -> tuple[int, bool]:
        samples = len(pcm) // 2
        accepted = min(samples, max(self.capacity - self.queued, 0))
        self.queue += pcm[: 2 * accepted]
        if accepted < samples:
            self.writable.drain()  # so the next signal means "space now"
            self.wants_writable = True
        if accepted > 0:
            self.finishing = False
            self.drained = False
        schedule = (
            accepted > 0 and not self.held and self.waiting_for_audio() and self.restart(now_ns)
        )
        return accepted, schedule

    def finish(self, now_ns: int) -> tuple[int, bool]:
        frame = self.info.frame_samples
        padding = (frame - self.queued % frame) % frame
        self.queue += bytes(2 * padding)
        self.finishing = True
        schedule = (
            padding > 0 and not self.held and self.waiting_for_audio() and self.restart(now_ns)
        )
        return padding, schedule

    def release(self) -> tuple[int, bytes]:
        size = 2 * self.info.frame_samples
        frame = bytes(self.queue[:size])
        del self.queue[:size]  # O(1) at a bytearray's front
        self.released += self.info.frame_samples
        self.counters.frames_released += 1
        if self.wants_writable and self.queued <= self.capacity // 2:
            self.wants_writable = False
            self.writable.signal()
        seq = self.next_seq
        self.next_seq += 1
        return seq, frame

    def slot_without_frame(self) -> bool:
        if self.finishing and not self.queue:
            self.finishing = False
            return True
        self.counters.underruns += 1
        return False

    def flush(self, purged_samples: int, now_ns: int) -> TrioFlushReport:
        queued = self.queued
        self.queue.clear()
        self.released -= purged_samples
        client_buffered = self.client_buffered(now_ns)
        dropped = queued + purged_samples
        self.counters.dropped_samples += dropped
        self.counters.flushes += 1
        self.finishing = False
        self.drained = True  # the utterance was cut, not played out: no "drained" for it
        self.idle, self.starved = True, False
        self.generation += 1
        self.anchor_ns = now_ns
        self.anchor_played = self.released
        self.last_report = None
        self.last_rate_report_ns = None
        if self.wants_writable:
            self.wants_writable = False
            self.writable.signal()
        return TrioFlushReport(dropped, self.released, client_buffered, self.info.sample_rate)

    def hold(self, now_ns: int) -> bool:
        """Freezes the client model and drops the heap entry; False when held already."""
        if self.held:
            return False
        self.anchor_played = min(self.unbounded_played(now_ns), self.released)
        self.anchor_ns = now_ns
        self.held_since_ns = now_ns
        self.holds += 1
        self.generation += 1
        return True

    def resume(self, now_ns: int) -> bool:
        """The client plays on from the frozen position from now; False when not held."""
        since = self.held_since_ns
        if since is None:
            return False
        self.held_since_ns = None
        self.held_ns += now_ns - since
        self.anchor_ns = now_ns
        if self.last_report is not None:  # the max_lead guard skips the hold
            self.last_report.at_ns = now_ns - max(since - self.last_report.at_ns, 0)
        self.last_rate_report_ns = None  # the client's resume delay is not drift
        self.not_before_ns = now_ns
        return True

    def due_after_resume(self) -> bool | None:
        """After a resume: ``starved`` when it must be scheduled, None when it stays idle."""
        if self.has_frame():
            return False
        return None if self.idle else self.starved

    def report(self, buffered_ms: float, now_ns: int) -> bool:
        if not 0.0 <= buffered_ms <= _MAX_REPORTED_MS:
            raise _invalid("buffered_ms", buffered_ms, "a finite number of ms from 0 to 60000")
        buffered = _round(buffered_ms * self.info.sample_rate / 1000.0)
        measured = min(max(self.released - buffered, 0), self.released)
        unbounded = self.unbounded_played(now_ns)
        estimate = min(unbounded, self.released)
        error = measured - estimate
        if not self.held and buffered > 0 and unbounded < self.released:  # the client plays
            previous = self.last_rate_report_ns
            if previous is not None and now_ns - previous >= _MIN_RATE_INTERVAL_NS:
                correction = (
                    _RATE_GAIN * error * 1e15 / ((now_ns - previous) * self.info.sample_rate)
                )
                self.rate_ppm = min(
                    max(self.rate_ppm + _round(correction), -_MAX_RATE_PPM), _MAX_RATE_PPM
                )
            frame = self.info.frame_samples
            step = _round(min(max(_PHASE_GAIN * error, -frame), frame))
            self.anchor_played = min(max(estimate + step, 0), self.released)
            self.last_rate_report_ns = now_ns
        else:
            # A dry or paused (held) client says where it stopped, not how fast it plays.
            self.anchor_played = measured
            self.last_rate_report_ns = None
        self.anchor_ns = now_ns
        self.last_report = _Report(now_ns, buffered, self.released)
        self.not_before_ns = now_ns
        return not self.held and not self.idle and not self.starved


# --- the pacer: mod.rs, with a Trio task for the thread --------------------------------------


class TrioFramePacer:
    """A frame pacer run by a Trio task on the event loop: the Rust ``FramePacer``'s
    interface and release logic, with ``trio.sleep_until`` for its thread (a benchmark
    baseline; see the module doc).

    Start ``run`` as a task (``PlayoutRouter.run`` does); the pacer releases frames only
    while it runs, and stops when it returns. Times are ns of Trio's clock.

    Args:
        frame_ms: frame duration in ms: 10, 20 or 40.

    Raises:
        ConfigError: ``frame_ms`` not 10, 20 or 40.
    """

    def __init__(self, frame_ms: int = 20) -> None:
        if frame_ms not in FRAME_DURATIONS_MS:
            raise _invalid("frame_ms", frame_ms, "10, 20 or 40 (ms)")
        self._frame_ms = frame_ms
        self._stopped = False
        self._running = False
        self._next_id = 1
        self._streams: dict[int, _Stream] = {}
        self._heap: list[tuple[int, int, int]] = []  # (deadline_ns, id, generation)
        self._ready: deque[TrioReleasedFrame] = deque()
        self._events: list[TrioStreamEvent] = []
        self._released = _EventFd()
        self._wake = trio.Event()
        self._totals = _Counters()
        self._lateness = _LatenessHistogram()

    @property
    def frame_ms(self) -> int:
        """Frame duration, in ms."""
        return self._frame_ms

    @property
    def clock(self) -> Literal["trio"]:
        """``"trio"``: deadlines are on Trio's clock (real, or a test's ``MockClock``)."""
        return "trio"

    @property
    def scheduling(self) -> str:
        """Where the pacing runs: a task of the Trio event loop, not a thread."""
        return SCHEDULING

    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` has been called (or ``run`` has ended)."""
        return self._stopped

    def __repr__(self) -> str:
        return (
            f"TrioFramePacer(frame_ms={self._frame_ms}, open_streams={len(self._streams)}, "
            f"running={self._running}, stopped={self._stopped})"
        )

    def __enter__(self) -> TrioFramePacer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def now_ns(self) -> int:
        """Now on Trio's clock, in ns (inside ``trio.run`` only)."""
        return round(trio.current_time() * 1e9)

    def _check_running(self) -> None:
        if self._stopped:
            raise PacerStoppedError("the pacer has been stopped")

    def _stream(self, stream_id: int) -> _Stream:
        self._check_running()
        stream = self._streams.get(stream_id)
        if stream is None:
            raise UnknownStreamError(
                f"pacer stream {stream_id} does not exist (never opened, or closed)"
            )
        return stream

    def open_stream(
        self,
        sample_rate: int,
        *,
        channels: int = 1,
        cushion_ms: int = 120,
        max_lead_ms: int | None = None,
        queue_ms: int = 2000,
        sink: SocketSink | None = None,
        held: bool = False,
    ) -> TrioPacerStream:
        """Opens a mono playout stream (rate in Hz, durations in ms; the same arguments and
        checks as ``FramePacer.open_stream``); it plays once it has a frame of audio (and,
        opened ``held``, once resumed). With a ``sink``, this pacer's task writes each
        released frame to it, as the Rust pacer's thread does (here the event loop must be
        free for that to happen).

        Raises:
            UnsupportedSampleRateError, ConfigError: a value out of range.
            PacerStoppedError: the pacer has been stopped.
        """
        self._check_running()
        info = _validate(
            self._next_id,
            self._frame_ms,
            sample_rate=sample_rate,
            channels=channels,
            cushion_ms=cushion_ms,
            max_lead_ms=max_lead_ms,
            queue_ms=queue_ms,
        )
        self._next_id += 1
        stream = _Stream(info, self.now_ns(), sink, held=held)
        self._streams[info.id] = stream
        return TrioPacerStream(self, info, stream.writable)

    def fileno(self) -> int:
        """The eventfd readable while released frames may be waiting (and once stopped);
        owned by the pacer: do not close it."""
        return self._released.fd

    def take_released(self) -> list[TrioReleasedFrame]:
        """Takes every released frame waiting (of streams without a sink), oldest first, and
        clears ``fileno()`` unless events still wait. Works after ``stop()``."""
        frames = list(self._ready)
        self._ready.clear()
        if not self._events:
            self._released.drain()
        return frames

    def take_events(self) -> list[TrioStreamEvent]:
        """Takes every stream event waiting, oldest first, and clears ``fileno()`` unless
        frames still wait. Works after ``stop()``."""
        events, self._events = self._events, []
        if not self._ready:
            self._released.drain()
        return events

    def stats(self) -> TrioPacerStats:
        """Statistics over the pacer's life (works after ``stop()``)."""
        totals, lateness = self._totals, self._lateness
        return TrioPacerStats(
            scheduling=self.scheduling,
            open_streams=len(self._streams),
            frames_released=totals.frames_released,
            underruns=totals.underruns,
            flushes=totals.flushes,
            dropped_samples=totals.dropped_samples,
            sink_refused=totals.sink_refused,
            lateness_p50_ms=lateness.quantile_ns(0.5) / 1e6,
            lateness_p99_ms=lateness.quantile_ns(0.99) / 1e6,
            lateness_max_ms=lateness.max_ns / 1e6,
        )

    def stop(self) -> None:
        """Stops the pacer (idempotent): ``run`` returns, every stream's producer and the
        consumer wake, and every call but the statistics and ``take_released`` raises
        ``PacerStoppedError``."""
        self._stopped = True
        for stream in self._streams.values():
            stream.writable.signal()
        self._released.signal()
        self._wake.set()

    # --- the engine (mod.rs) -------------------------------------------------------------

    def _schedule(self, stream_id: int, *, starved: bool, deadline_ns: int) -> None:
        stream = self._streams.get(stream_id)
        if stream is not None:
            stream.generation += 1
            stream.idle, stream.starved = False, starved
            heapq.heappush(self._heap, (deadline_ns, stream_id, stream.generation))

    def _reschedule(self, stream_id: int) -> None:
        self._schedule(
            stream_id, starved=False, deadline_ns=self._streams[stream_id].next_deadline_ns()
        )
        self._wake.set()  # the pacer task recomputes its sleep

    def _next_due(self) -> tuple[int, int, int] | None:
        """The earliest live heap entry, dropping stale ones on the way."""
        while self._heap:
            due = self._heap[0]
            stream = self._streams.get(due[1])
            if stream is not None and stream.generation == due[2]:
                return due
            heapq.heappop(self._heap)
        return None

    def _serve(self, due: tuple[int, int, int], now_ns: int) -> None:
        """Serves one due entry at ``now_ns``: a release, an underrun, or the end of an
        utterance."""
        heapq.heappop(self._heap)
        deadline_ns, stream_id, _generation = due
        stream = self._streams[stream_id]
        if stream.has_frame():
            seq, pcm = stream.release()
            lateness = now_ns - deadline_ns
            stream.lateness.record(lateness)
            self._lateness.record(lateness)
            self._totals.frames_released += 1
            if not stream.started:
                stream.started = True
                self._events.append(TrioStreamEvent(stream_id, "started", now_ns, lateness))
            if lateness > LATE_FRAME_NS:
                self._events.append(TrioStreamEvent(stream_id, "late", now_ns, lateness))
            if stream.take_drained():
                self._events.append(TrioStreamEvent(stream_id, "drained", now_ns, None))
            if stream.sink is not None:
                # On the wire, and that is all: as the Rust pacer, no copy for the consumer.
                try:
                    stream.sink.write_ws_binary_pcm16(pcm)
                except (SendBufferFullError, ConnectionResetError):
                    stream.counters.sink_refused += 1
                    self._totals.sink_refused += 1
            else:
                self._ready.append(TrioReleasedFrame(stream_id, seq, pcm, deadline_ns, now_ns))
            self._schedule(stream_id, starved=False, deadline_ns=stream.next_deadline_ns())
        elif stream.slot_without_frame():
            stream.idle, stream.starved = True, False
        else:
            self._totals.underruns += 1
            self._schedule(stream_id, starved=True, deadline_ns=deadline_ns + stream.frame_ns())

    def _run_due(self, floor_ns: int) -> int | None:
        """Serves every entry due by now (never earlier than ``floor_ns``, the deadline the
        task slept to, so float rounding of Trio's clock cannot leave it due-but-unserved),
        publishes the released frames, and returns the next deadline."""
        waiting = len(self._ready) + len(self._events)
        while (due := self._next_due()) is not None:
            now = max(self.now_ns(), floor_ns)
            if due[0] > now:
                break
            self._serve(due, now)
        if len(self._ready) + len(self._events) > waiting:
            self._released.signal()
        due = self._next_due()
        return None if due is None else due[0]

    async def run(self) -> None:
        """The pacer's "thread": sleeps until the earliest deadline (or until an API call
        changes the schedule), releases what is due, and repeats until ``stop()``. When it
        returns or is cancelled, the pacer is stopped.

        Raises:
            RuntimeError: ``run`` is already running.
        """
        if self._running:
            raise RuntimeError("TrioFramePacer.run is already running")
        self._running = True
        try:
            floor_ns = 0
            while not self._stopped:
                self._wake = trio.Event()
                deadline_ns = self._run_due(floor_ns)
                if deadline_ns is None:
                    await self._wake.wait()
                    floor_ns = 0
                    continue
                with trio.move_on_at(deadline_ns / 1e9) as sleep:
                    await self._wake.wait()
                floor_ns = deadline_ns if sleep.cancelled_caught else 0
        finally:
            self._running = False
            self.stop()

    # --- per-stream calls (PacerStream delegates here) -----------------------------------

    def _push(self, stream_id: int, audio: AudioIn) -> int:
        pcm = _pcm16(audio)
        stream = self._stream(stream_id)
        accepted, schedule = stream.push(pcm, self.now_ns())
        if schedule:
            self._reschedule(stream_id)
        return accepted

    def _finish(self, stream_id: int) -> int:
        stream = self._stream(stream_id)
        now_ns = self.now_ns()
        padding, schedule = stream.finish(now_ns)
        if stream.take_drained():
            self._events.append(TrioStreamEvent(stream_id, "drained", now_ns, None))
            self._released.signal()
        if schedule:
            self._reschedule(stream_id)
        return padding

    def _flush(self, stream_id: int) -> TrioFlushReport:
        stream = self._stream(stream_id)
        purged = 0
        if stream.sink is None:  # with a sink, released frames are already on the wire
            kept = [frame for frame in self._ready if frame.stream_id != stream_id]
            purged = sum(len(f.pcm16) // 2 for f in self._ready if f.stream_id == stream_id)
            self._ready = deque(kept)
        report = stream.flush(purged, self.now_ns())
        self._totals.flushes += 1
        self._totals.dropped_samples += report.dropped_samples
        return report

    def _report_playout(self, stream_id: int, buffered_ms: float) -> None:
        if self._stream(stream_id).report(buffered_ms, self.now_ns()):
            self._reschedule(stream_id)

    def _hold(self, stream_id: int) -> bool:
        return self._stream(stream_id).hold(self.now_ns())

    def _resume(self, stream_id: int) -> bool:
        stream = self._stream(stream_id)
        if not stream.resume(self.now_ns()):
            return False
        starved = stream.due_after_resume()
        if starved is not None:
            self._schedule(stream_id, starved=starved, deadline_ns=stream.next_deadline_ns())
            self._wake.set()  # the pacer task recomputes its sleep
        return True

    def _is_held(self, stream_id: int) -> bool:
        return self._stream(stream_id).held

    def _close(self, stream_id: int) -> None:
        stream = self._stream(stream_id)
        del self._streams[stream_id]
        self._totals.dropped_samples += stream.queued
        stream.writable.signal()

    def _stream_stats(self, stream_id: int) -> TrioStreamStats:
        stream = self._stream(stream_id)
        rate = stream.info.sample_rate
        lateness = stream.lateness
        return TrioStreamStats(
            frames_released=stream.counters.frames_released,
            underruns=stream.counters.underruns,
            flushes=stream.counters.flushes,
            dropped_samples=stream.counters.dropped_samples,
            sink_refused=stream.counters.sink_refused,
            queued_samples=stream.queued,
            queued_ms=stream.queued * 1000 / rate,
            released_samples=stream.released,
            client_buffered_ms=stream.client_buffered(self.now_ns()) * 1000 / rate,
            client_rate_ppm=stream.rate_ppm,
            playing=not stream.idle,
            holds=stream.holds,
            held_ms=stream.held_ns_at(self.now_ns()) / 1e6,
            lateness_p50_ms=lateness.quantile_ns(0.5) / 1e6,
            lateness_p99_ms=lateness.quantile_ns(0.99) / 1e6,
            lateness_max_ms=lateness.max_ns / 1e6,
        )


class TrioPacerStream:
    """A playout stream of a ``TrioFramePacer`` (as ``voicecore.PacerStream``): a bounded
    queue of audio sliced into frames; ``push`` returns how many samples fit and
    ``writable_fileno()`` becomes readable once the queue has drained to half its capacity.
    """

    def __init__(self, pacer: TrioFramePacer, info: _Info, writable: _EventFd) -> None:
        self._pacer = pacer
        self._info = info
        self._writable = writable  # keeps the descriptor open while this handle lives

    @property
    def id(self) -> int:
        """The stream id (``TrioReleasedFrame.stream_id`` of its frames)."""
        return self._info.id

    @property
    def sample_rate(self) -> int:
        """Sample rate, in Hz."""
        return self._info.sample_rate

    @property
    def frame_samples(self) -> int:
        """Samples per frame."""
        return self._info.frame_samples

    @property
    def cushion_ms(self) -> int:
        """Target client cushion, in ms."""
        return self._info.cushion_ms

    @property
    def max_lead_ms(self) -> int:
        """Maximum lead over the client's playback, in ms."""
        return self._info.max_lead_ms

    @property
    def queue_ms(self) -> int:
        """Playout queue capacity, in ms."""
        return self._info.queue_ms

    def __repr__(self) -> str:
        info = self._info
        return (
            f"TrioPacerStream(id={info.id}, sample_rate={info.sample_rate}, "
            f"frame_samples={info.frame_samples}, cushion_ms={info.cushion_ms}, "
            f"max_lead_ms={info.max_lead_ms}, queue_ms={info.queue_ms})"
        )

    def push(self, audio: AudioIn) -> int:
        """Queues audio (PCM16 bytes-like, or a 1-D numpy int16/float32 array at the
        stream's rate); returns how many samples fit.

        Raises:
            AudioTypeError, AudioFormatError: audio the stream cannot take.
            UnknownStreamError: the stream is closed.
            PacerStoppedError: the pacer has been stopped.
        """
        return self._pacer._push(self._info.id, audio)

    def finish(self) -> int:
        """Ends an utterance: pads the partial last frame with silence and returns the
        samples added; once drained the stream goes idle without underruns."""
        return self._pacer._finish(self._info.id)

    def flush(self) -> TrioFlushReport:
        """Drops the queued audio and the released frames not yet taken, at once; says what
        was dropped and what had gone out."""
        return self._pacer._flush(self._info.id)

    def report_playout(self, buffered_ms: float) -> None:
        """The client holds ``buffered_ms`` ms of this stream's audio now.

        Raises:
            ConfigError: negative, non-finite, or above 60000 ms.
        """
        self._pacer._report_playout(self._info.id, buffered_ms)

    def hold(self) -> bool:
        """Holds the stream (as ``PacerStream.hold``): nothing is released and no underrun
        counted until ``resume()``, the client model is frozen, ``push`` still queues.
        Returns ``True`` when the hold began, ``False`` when already held.

        Raises:
            UnknownStreamError: the stream is closed.
            PacerStoppedError: the pacer has been stopped.
        """
        return self._pacer._hold(self._info.id)

    def resume(self) -> bool:
        """Resumes a held stream from the exact sample it paused at (as
        ``PacerStream.resume``). Returns ``True`` when it was held, ``False`` otherwise.

        Raises:
            UnknownStreamError: the stream is closed.
            PacerStoppedError: the pacer has been stopped.
        """
        return self._pacer._resume(self._info.id)

    @property
    def held(self) -> bool:
        """Whether the stream is held.

        Raises:
            UnknownStreamError: the stream is closed.
            PacerStoppedError: the pacer has been stopped.
        """
        return self._pacer._is_held(self._info.id)

    def close(self) -> None:
        """Closes the stream, dropping its queued audio; further calls raise
        ``UnknownStreamError``."""
        self._pacer._close(self._info.id)

    def writable_fileno(self) -> int:
        """The eventfd readable when a cut-short ``push`` may go on (and on flush, close and
        stop); do not close it."""
        return self._writable.fd

    def stats(self) -> TrioStreamStats:
        """This stream's statistics."""
        return self._pacer._stream_stats(self._info.id)


def pacer_from_env(frame_ms: int) -> TrioFramePacer | None:
    """The pacer ``voicecore serve`` should use, from ``VOICECORE_BENCH_PACER`` (a benchmark
    option): a ``TrioFramePacer(frame_ms)`` for ``trio``; None (the Rust pacer) when it is
    unset, empty or ``rust``.

    Raises:
        ValueError: any other value.
    """
    choice = os.environ.get(ENV, "").strip().lower()
    if choice in ("", "rust"):
        return None
    if choice == "trio":
        return TrioFramePacer(frame_ms)
    raise ValueError(f"{ENV} must be 'rust' or 'trio', got {os.environ[ENV]!r}")
