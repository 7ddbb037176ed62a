"""Diagnostics for audio gaps: one timeline, and the usual causes measured onto it.

A gap in the agent's audio has a handful of usual causes in a Python server: the event loop
was blocked (a CPU-bound call on it, a slow callback), the garbage collector paused the
process, or the container ran out of CPU quota and was throttled. This module measures each
of them onto one ``Timeline``, next to the engine's own events (a reply becoming audible,
frames the pacer released late, the client's cushion, stage events), so that a gap can be
lined up with its cause:

* ``LoopLagCanary``: a Trio task that sleeps a fixed interval and records how late it woke;
* ``GcMonitor``: a ``gc.callbacks`` hook recording each collection's pause;
* ``GcPolicy``: keeps automatic collections out of the agent's speech (``gc.freeze()`` after
  warm-up, collections deferred while the agent speaks and run in silence);
* ``read_cpu_stat`` / ``CpuThrottleSampler``: cgroup v1/v2 ``cpu.stat`` throttling counters;
* ``Diagnostics``: the canary, the GC monitor and the sampler together, one per process.

**One clock.** Every timeline time is in seconds of ``time.monotonic()`` by default: the
clock of ``CLOCK_MONOTONIC``, which the Rust pacer's deadlines use too, so a
``ReleasedFrame.released_ns`` lines up as ``released_ns / 1e9`` (``Timeline.record_at``).
Trio's own clock (``trio.current_time()``) has an arbitrary offset: durations measured on it
(loop lag) are valid, its absolute times are not comparable; timeline events therefore take
their time from the timeline's clock. Any clock works as long as every event of a timeline
is stamped by it: tests inject ``clock=trio.current_time`` under a ``MockClock`` to get
deterministic times (a session's default timeline is on the Trio clock, and the session maps
pacer times onto it). Durations (``lag_ms``, ``duration_ms``, ``throttled_ms``) are in ms.
"""

from __future__ import annotations

import gc
import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final, Literal

import trio

from voicecore.metrics import percentile

__all__ = [
    "CAUSE_KINDS",
    "CGROUP_ROOT",
    "CpuStat",
    "CpuThrottleSampler",
    "Diagnostics",
    "GcMonitor",
    "GcPolicy",
    "GcStats",
    "LagStats",
    "LoopLagCanary",
    "Timeline",
    "read_cpu_stat",
]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
"""Where cgroup file systems are mounted (v2 unified, or one directory per v1 controller)."""

CAUSE_KINDS: Final[frozenset[str]] = frozenset({"loop_lag", "gc_pause", "cpu_throttled"})
"""Timeline kinds that explain an audio gap (see ``Timeline.causes_near``)."""


# --- timeline --------------------------------------------------------------------------------


class Timeline:
    """A bounded, thread-safe record of timestamped events on one clock.

    Each event is a dict ``{"t": seconds, "kind": str, **fields}``. Kinds used by voicecore:
    a reply's lifecycle (``"agent_audible"``: its first frame released; ``"turn_end"`` /
    ``"turn_cancelled"``: played out / cut), ``"frame_late"`` (a frame released more than the
    pacer's late threshold after its deadline, with ``lateness_ms``; on-time frames are not
    recorded), ``"client_cushion"``, ``"loop_lag"``, ``"gc_pause"``, ``"cpu_throttled"`` and
    the engine's stage events (``"speech_start"``, ``"speech_end"``, ``"stt_final"``,
    ``"llm_first_token"``, ``"tts_first_audio"``, ``"turn_start"``, ``"barge_in"``, ...).

    When full, the oldest events are evicted (counted in ``evicted``): a long session keeps
    its recent history at a bounded memory cost.

    Thread safety: ``record`` may be called from any thread (the GC callback runs in whatever
    thread triggered the collection, possibly while that thread is inside ``record``). The
    event dict is built before taking the lock, and the critical section allocates no object
    the garbage collector tracks, so a collection cannot start inside it; the lock is
    re-entrant anyway, so a nested ``record`` from a GC callback could never deadlock.

    Args:
        clock: returns now in seconds; ``time.monotonic`` (the pacer's clock) by default,
            ``trio.current_time`` under a ``MockClock`` in tests.
        max_events: capacity in events (>= 1).

    Raises:
        ValueError: ``max_events`` < 1.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_events: int = 100_000
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.clock = clock
        self.max_events = max_events
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._lock = threading.RLock()
        self._evicted = 0

    def __repr__(self) -> str:
        return (
            f"Timeline(events={len(self._events)}, max_events={self.max_events}, "
            f"evicted={self._evicted})"
        )

    def __len__(self) -> int:
        return len(self._events)

    @property
    def evicted(self) -> int:
        """Events evicted because the timeline was full."""
        return self._evicted

    def now(self) -> float:
        """Now on the timeline's clock, in seconds."""
        return self.clock()

    def record(self, kind: str, **fields: Any) -> None:
        """Records an event of ``kind`` at now (the timeline's clock) with extra ``fields``.

        ``fields`` must not use the keys ``t`` and ``kind``; values should be JSON-serialisable
        (others are exported with ``str``).
        """
        self._append({"t": self.clock(), "kind": kind, **fields})

    def record_at(self, t: float, kind: str, **fields: Any) -> None:
        """Records an event that happened at ``t`` (seconds, on the timeline's clock), e.g. a
        pacer frame at ``frame.released_ns / 1e9`` or a GC pause at its start."""
        self._append({"t": t, "kind": kind, **fields})

    def _append(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._events) == self.max_events:
                self._evicted += 1
            self._events.append(event)

    def events(
        self, kind: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Events in time order (recording order among equal times), optionally only those of
        ``kind`` and with ``since <= t <= until`` (seconds)."""
        with self._lock:
            snapshot = list(self._events)
        return sorted(
            (
                e
                for e in snapshot
                if (kind is None or e["kind"] == kind)
                and (since is None or e["t"] >= since)
                and (until is None or e["t"] <= until)
            ),
            key=lambda e: float(e["t"]),
        )

    def causes_near(self, t: float, window_s: float = 0.2) -> list[dict[str, Any]]:
        """Events of ``CAUSE_KINDS`` (loop lag, GC pause, CPU throttling) within ``window_s``
        seconds before or after ``t``: what to look at when the audio had a gap at ``t``.

        A loop-lag event is recorded when the canary wakes, i.e. at the *end* of the stall it
        measured (``t - lag_ms / 1000`` is when it began); a GC pause at its start.
        """
        return [
            e
            for e in self.events(since=t - window_s, until=t + window_s)
            if e["kind"] in CAUSE_KINDS
        ]

    def clear(self) -> None:
        """Forgets every event (and the eviction count)."""
        with self._lock:
            self._events.clear()
            self._evicted = 0

    def to_json(self) -> str:
        """The timeline as JSON: ``{"clock": ..., "evicted": n, "events": [...]}``, events in
        time order, times in seconds."""
        clock_name = getattr(self.clock, "__qualname__", type(self.clock).__qualname__)
        return json.dumps(
            {"clock": clock_name, "evicted": self._evicted, "events": self.events()},
            default=str,
        )

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Writes ``to_json()`` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, text: str, *, max_events: int | None = None) -> Timeline:
        """A timeline holding the events of ``to_json()`` output, for offline analysis (e.g.
        ``causes_near``); its clock is ``time.monotonic``, its capacity ``max_events`` or the
        number of events (at least 1).

        Raises:
            ValueError: the text is not JSON of a timeline (``json.JSONDecodeError`` is a
                ``ValueError``), or an event lacks ``t`` or ``kind``.
        """
        data = json.loads(text)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise ValueError("not a timeline: expected an object with an 'events' list")
        timeline = cls(max_events=max_events or max(len(events), 1))
        for event in events:
            if not isinstance(event, dict) or "t" not in event or "kind" not in event:
                raise ValueError(f"not a timeline event: {event!r}")
            timeline._append(event)
        timeline._evicted += int(data.get("evicted", 0))
        return timeline


# --- event-loop lag ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LagStats:
    """Event-loop lag statistics, in ms (``count`` samples; percentiles over the most recent
    window, ``max_ms`` over the canary's whole life)."""

    count: int
    p50_ms: float
    p99_ms: float
    max_ms: float


class LoopLagCanary:
    """A Trio task measuring event-loop lag: how late a ``trio.sleep`` wakes up.

    Each iteration sleeps until ``expected = now + interval_s`` and, on waking, computes
    ``lag = actual wake - expected`` on the Trio clock. A lag means the loop was busy with
    something else (a blocking call, a long callback, a GC pause, CPU throttling) when the
    canary was due: every other task waiting for a deadline, e.g. the one sending audio
    frames, was held up as long. Lags above ``threshold_ms`` are recorded as ``"loop_lag"``
    events (``lag_ms``) in the timeline; every lag feeds ``stats``.

    Start it in the session's nursery: ``nursery.start_soon(canary.run)``; cancel the nursery
    to stop it.

    Args:
        timeline: where ``"loop_lag"`` events go, or ``None`` for statistics only.
        interval_s: sleep between measurements, in seconds (> 0). Shorter catches shorter
            stalls at the cost of more wake-ups.
        threshold_ms: lag above which an event is recorded, in ms (>= 0). The default ignores
            the ~1 ms of timer slack of an idle loop.
        window: how many recent lags the percentiles cover (>= 1).

    Raises:
        ValueError: a parameter out of range.
    """

    def __init__(
        self,
        timeline: Timeline | None,
        *,
        interval_s: float = 0.05,
        threshold_ms: float = 5.0,
        window: int = 10_000,
    ) -> None:
        if not interval_s > 0.0:
            raise ValueError(f"interval_s must be > 0 s, got {interval_s}")
        if not threshold_ms >= 0.0:
            raise ValueError(f"threshold_ms must be >= 0 ms, got {threshold_ms}")
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.timeline = timeline
        self.interval_s = interval_s
        self.threshold_ms = threshold_ms
        self._recent: deque[float] = deque(maxlen=window)
        self._count = 0
        self._max_ms = 0.0

    def __repr__(self) -> str:
        return f"LoopLagCanary(interval_s={self.interval_s}, stats={self.stats})"

    async def run(self) -> None:
        """Measures forever (until cancelled)."""
        while True:
            expected = trio.current_time() + self.interval_s
            await trio.sleep_until(expected)
            self.observe((trio.current_time() - expected) * 1000.0)

    def observe(self, lag_ms: float) -> None:
        """Accounts one lag measurement, in ms (``run`` calls it; public for other probes)."""
        lag_ms = max(lag_ms, 0.0)
        self._recent.append(lag_ms)
        self._count += 1
        self._max_ms = max(self._max_ms, lag_ms)
        if self.timeline is not None and lag_ms > self.threshold_ms:
            self.timeline.record("loop_lag", lag_ms=lag_ms)

    @property
    def stats(self) -> LagStats:
        """Lag statistics so far (zeros before the first measurement)."""
        if not self._recent:
            return LagStats(count=0, p50_ms=0.0, p99_ms=0.0, max_ms=0.0)
        ordered = sorted(self._recent)
        return LagStats(
            count=self._count,
            p50_ms=percentile(ordered, 50),
            p99_ms=percentile(ordered, 99),
            max_ms=self._max_ms,
        )

    def reset(self) -> None:
        """Forgets every measurement."""
        self._recent.clear()
        self._count = 0
        self._max_ms = 0.0


# --- garbage collector ------------------------------------------------------------------------


@dataclass(frozen=True)
class GcStats:
    """Garbage collection pauses seen by a ``GcMonitor``: ``count`` collections, their total
    and longest pause in ms, per generation counts (index = generation), objects collected
    and uncollectable."""

    count: int
    total_ms: float
    max_ms: float
    by_generation: tuple[int, int, int]
    collected: int
    uncollectable: int


class GcMonitor:
    """Records every garbage collection's pause through ``gc.callbacks``.

    Each collection becomes a ``"gc_pause"`` event at its start time, with ``duration_ms``,
    ``generation``, ``collected`` and ``uncollectable``, and feeds ``stats``. A collection
    holds the GIL for its whole duration: every Python thread, including the event loop, is
    stopped meanwhile (the Rust pacer thread is not: it never takes the GIL).

    Use as a context manager, or ``install()`` / ``uninstall()``; uninstalling removes only
    this monitor's callback and leaves any other callback in place.

    Thread safety: the callback runs in whichever thread triggered the collection; CPython
    runs one collection at a time, so start and stop never interleave. The callback never
    raises (an exception there would be reported as unraisable at every collection).

    Args:
        timeline: where ``"gc_pause"`` events go, or ``None`` for statistics only.
        min_pause_ms: shortest pause recorded in the timeline, in ms (every pause feeds
            ``stats``); young-generation collections of a few µs are frequent and harmless.
    """

    def __init__(self, timeline: Timeline | None = None, *, min_pause_ms: float = 0.0) -> None:
        self.timeline = timeline
        self.min_pause_ms = min_pause_ms
        self._started_at: float | None = None
        self._started_on_timeline = 0.0
        self._count = 0
        self._total_ms = 0.0
        self._max_ms = 0.0
        self._by_generation = [0, 0, 0]
        self._collected = 0
        self._uncollectable = 0

    def __repr__(self) -> str:
        return f"GcMonitor(installed={self.installed}, stats={self.stats})"

    @property
    def installed(self) -> bool:
        """Whether the callback is in ``gc.callbacks``."""
        return self._callback in gc.callbacks

    def install(self) -> None:
        """Adds the callback to ``gc.callbacks`` (idempotent)."""
        if not self.installed:
            gc.callbacks.append(self._callback)

    def uninstall(self) -> None:
        """Removes this monitor's callback (idempotent); other callbacks stay."""
        while self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        self._started_at = None

    def __enter__(self) -> GcMonitor:
        self.install()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.uninstall()

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        # perf_counter for the duration (finest resolution); the timeline's clock for when.
        if phase == "start":
            self._started_at = time.perf_counter()
            if self.timeline is not None:
                self._started_on_timeline = self.timeline.now()
            return
        if self._started_at is None:  # installed in the middle of a collection
            return
        duration_ms = (time.perf_counter() - self._started_at) * 1000.0
        self._started_at = None
        generation = info.get("generation", 0)
        collected = info.get("collected", 0)
        uncollectable = info.get("uncollectable", 0)
        self._count += 1
        self._total_ms += duration_ms
        self._max_ms = max(self._max_ms, duration_ms)
        if 0 <= generation < len(self._by_generation):
            self._by_generation[generation] += 1
        self._collected += collected
        self._uncollectable += uncollectable
        if self.timeline is not None and duration_ms >= self.min_pause_ms:
            self.timeline.record_at(
                self._started_on_timeline,
                "gc_pause",
                duration_ms=duration_ms,
                generation=generation,
                collected=collected,
                uncollectable=uncollectable,
            )

    @property
    def stats(self) -> GcStats:
        """Pauses seen so far."""
        gen0, gen1, gen2 = self._by_generation
        return GcStats(
            count=self._count,
            total_ms=self._total_ms,
            max_ms=self._max_ms,
            by_generation=(gen0, gen1, gen2),
            collected=self._collected,
            uncollectable=self._uncollectable,
        )

    def reset(self) -> None:
        """Forgets the statistics (the timeline keeps its events)."""
        self._count = 0
        self._total_ms = 0.0
        self._max_ms = 0.0
        self._by_generation = [0, 0, 0]
        self._collected = 0
        self._uncollectable = 0


class GcPolicy:
    """Keeps garbage collection pauses out of the agent's speech.

    * ``freeze_after_warmup``: ``warmed_up()`` runs a full collection, then ``gc.freeze()``
      moves every surviving object (imported modules, models, caches) to the permanent
      generation, so later full collections no longer traverse them: shorter pauses.
    * ``defer_while_speaking``: ``agent_speaking(True)`` disables automatic collections
      (``gc.disable()``); ``agent_speaking(False)`` runs ``gc.collect(collect_generation)``
      (the young garbage piled up meanwhile, while nobody listens) and re-enables them.
      ``tick()``, called periodically while speaking, bounds the pile: it runs a young
      collection once more than ``max_deferred`` objects await one, so a very long reply
      cannot grow memory without bound (one bounded pause beats an unbounded heap).

    The garbage collector is per process, not per session: with several sessions, pass each
    one's ``who`` key; collections stay deferred while *any* of them speaks. On a busy server
    that may be always, which is what ``max_deferred`` is for.

    Use as a context manager: it records the collector's state on entry (enabled flag,
    whether anything was frozen) and restores it on exit whatever happens: re-enables or
    keeps disabled as found, and ``gc.unfreeze()`` if it froze and nothing was frozen before
    (objects frozen by someone else earlier cannot be told apart, so they stay frozen).

    Thread safety: the methods may be called from any thread (a lock orders them), but
    ``gc.disable()`` affects every thread of the process, including those the policy does not
    know about: a thread allocating a lot while the agent speaks grows the deferred pile.

    Args:
        freeze_after_warmup: ``warmed_up()`` freezes the heap.
        defer_while_speaking: ``agent_speaking`` defers collections.
        collect_generation: generation (0, 1 or 2) collected when speech ends.
        max_deferred: young objects allowed to await a collection while speaking before
            ``tick()`` collects anyway (>= 1), or ``None`` for no bound.

    Raises:
        ValueError: ``collect_generation`` not 0, 1 or 2; ``max_deferred`` < 1.
    """

    def __init__(
        self,
        *,
        freeze_after_warmup: bool = True,
        defer_while_speaking: bool = True,
        collect_generation: Literal[0, 1, 2] = 1,
        max_deferred: int | None = 200_000,
    ) -> None:
        if collect_generation not in (0, 1, 2):
            raise ValueError(f"collect_generation must be 0, 1 or 2, got {collect_generation}")
        if max_deferred is not None and max_deferred < 1:
            raise ValueError(f"max_deferred must be >= 1 or None, got {max_deferred}")
        self.freeze_after_warmup = freeze_after_warmup
        self.defer_while_speaking = defer_while_speaking
        self.collect_generation = collect_generation
        self.max_deferred = max_deferred
        self._lock = threading.RLock()
        self._active = False
        self._was_enabled = True
        self._was_frozen = False
        self._froze = False
        self._speakers: set[Hashable] = set()
        self.deferred_collections = 0
        self.forced_collections = 0

    def __repr__(self) -> str:
        return (
            f"GcPolicy(active={self._active}, speaking={self.speaking}, "
            f"frozen={self._froze}, deferred_collections={self.deferred_collections}, "
            f"forced_collections={self.forced_collections})"
        )

    @property
    def speaking(self) -> bool:
        """Whether some agent is speaking (collections deferred)."""
        return bool(self._speakers)

    def __enter__(self) -> GcPolicy:
        with self._lock:
            if self._active:
                raise RuntimeError("GcPolicy is already active")
            self._was_enabled = gc.isenabled()
            self._was_frozen = gc.get_freeze_count() > 0
            self._froze = False
            self._speakers.clear()
            self._active = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        with self._lock:
            self._active = False
            self._speakers.clear()
            if self._froze and not self._was_frozen:
                gc.unfreeze()
            self._froze = False
            if self._was_enabled:
                gc.enable()
            else:
                gc.disable()

    def _check_active(self) -> None:
        if not self._active:
            raise RuntimeError("GcPolicy is not active: use it as a context manager")

    def warmed_up(self) -> None:
        """The process has loaded what it keeps (models, caches): collect, then freeze.

        Does nothing without ``freeze_after_warmup`` or if this policy already froze.

        Raises:
            RuntimeError: the policy is not active (outside its ``with`` block).
        """
        with self._lock:
            self._check_active()
            if not self.freeze_after_warmup or self._froze:
                return
            # Collect first: garbage frozen now would never be freed.
            gc.collect()
            gc.freeze()
            self._froze = True

    def agent_speaking(self, speaking: bool, *, who: Hashable = None) -> None:
        """The agent ``who`` (a session key; one agent by default) starts or stops speaking.

        Starting defers automatic collections; when the last speaker stops, the young
        garbage is collected at once and automatic collections resume (if they were enabled
        on entry). Idempotent per ``who``.

        Raises:
            RuntimeError: the policy is not active (outside its ``with`` block).
        """
        with self._lock:
            self._check_active()
            if not self.defer_while_speaking:
                return
            if speaking:
                if not self._speakers and self._was_enabled:
                    gc.disable()
                self._speakers.add(who)
                return
            if who not in self._speakers:
                return
            self._speakers.discard(who)
            if not self._speakers and self._was_enabled:
                gc.collect(self.collect_generation)
                self.deferred_collections += 1
                gc.enable()

    def tick(self) -> bool:
        """While collections are deferred, collects the young generation if more than
        ``max_deferred`` objects await it; returns whether it collected. Cheap: call it often
        (e.g. per released batch of frames, or from a periodic task).

        Raises:
            RuntimeError: the policy is not active (outside its ``with`` block).
        """
        with self._lock:
            self._check_active()
            if not self._speakers or self.max_deferred is None:
                return False
            if gc.get_count()[0] <= self.max_deferred:
                return False
            gc.collect(0)
            self.forced_collections += 1
            return True


# --- cgroup CPU throttling -------------------------------------------------------------------


@dataclass(frozen=True)
class CpuStat:
    """CPU bandwidth counters of the process' cgroup (cumulative since the cgroup started).

    ``nr_periods``: enforcement periods with runnable tasks; ``nr_throttled``: periods in
    which the cgroup used its quota and was throttled; ``throttled_usec``: total throttled
    time in µs (cgroup v1 reports ns; converted); ``version``: 1 or 2; ``path``: the file
    read. All zero when the cgroup has no CPU limit.
    """

    nr_periods: int
    nr_throttled: int
    throttled_usec: int
    version: Literal[1, 2]
    path: str


def _parse_flat_keyed(text: str) -> dict[str, int]:
    """Parses ``key value`` lines; ignores lines that are not a name and an integer."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2:
            try:
                values[parts[0]] = int(parts[1])
            except ValueError:
                continue
    return values


def read_cpu_stat(root: str | os.PathLike[str] = CGROUP_ROOT) -> CpuStat | None:
    """Reads the CPU throttling counters of the cgroup mounted at ``root``.

    Looks for cgroup v2 ``<root>/cpu.stat`` (``nr_periods``, ``nr_throttled``,
    ``throttled_usec``), then cgroup v1 ``<root>/cpu,cpuacct/cpu.stat`` or
    ``<root>/cpu/cpu.stat`` (``throttled_time`` in ns). Inside a container the mount shows the
    container's own cgroup. A v2 ``cpu.stat`` without the bandwidth keys (no CPU controller
    enabled, so no quota) reads as zeros.

    Returns:
        The counters, or ``None`` when no ``cpu.stat`` is readable (not Linux, no cgroup fs).
    """
    base = Path(root)
    candidates: tuple[tuple[Path, Literal[1, 2]], ...] = (
        (base / "cpu.stat", 2),
        (base / "cpu,cpuacct" / "cpu.stat", 1),
        (base / "cpu" / "cpu.stat", 1),
    )
    for path, version in candidates:
        try:
            text = path.read_text(encoding="ascii")
        except OSError:
            continue
        values = _parse_flat_keyed(text)
        if version == 2:
            throttled_usec = values.get("throttled_usec", 0)
        else:
            throttled_usec = values.get("throttled_time", 0) // 1000
        return CpuStat(
            nr_periods=values.get("nr_periods", 0),
            nr_throttled=values.get("nr_throttled", 0),
            throttled_usec=throttled_usec,
            version=version,
            path=str(path),
        )
    return None


class CpuThrottleSampler:
    """A Trio task sampling ``read_cpu_stat`` and recording throttling into the timeline.

    Every ``interval_s`` it reads the counters; when ``nr_throttled`` grew, it records a
    ``"cpu_throttled"`` event with the deltas (``periods``, ``throttled_periods``,
    ``throttled_ms``) over the interval just ended. Throttling stops every thread of the
    cgroup, the pacer's included, for the rest of the enforcement period (100 ms by
    default): the worst kind of gap, and invisible from inside the process without this.
    ``run`` returns at once when no ``cpu.stat`` is readable.

    Reading ``cpu.stat`` is a small synchronous read of a virtual file (µs), done on the
    event loop on purpose: a thread hop would cost more.

    Args:
        timeline: where ``"cpu_throttled"`` events go.
        interval_s: sampling period, in seconds (> 0).
        root: the cgroup mount (see ``read_cpu_stat``).

    Raises:
        ValueError: ``interval_s`` <= 0.
    """

    def __init__(
        self,
        timeline: Timeline,
        *,
        interval_s: float = 1.0,
        root: str | os.PathLike[str] = CGROUP_ROOT,
    ) -> None:
        if not interval_s > 0.0:
            raise ValueError(f"interval_s must be > 0 s, got {interval_s}")
        self.timeline = timeline
        self.interval_s = interval_s
        self.root = root
        self.throttled_periods = 0
        self.throttled_ms = 0.0
        self.samples = 0

    def __repr__(self) -> str:
        return (
            f"CpuThrottleSampler(interval_s={self.interval_s}, samples={self.samples}, "
            f"throttled_periods={self.throttled_periods}, throttled_ms={self.throttled_ms})"
        )

    async def run(self) -> None:
        """Samples until cancelled (or until ``cpu.stat`` becomes unreadable)."""
        previous = read_cpu_stat(self.root)
        while previous is not None:
            await trio.sleep(self.interval_s)
            current = read_cpu_stat(self.root)
            if current is None:
                return
            self._account(previous, current)
            previous = current

    def _account(self, previous: CpuStat, current: CpuStat) -> None:
        self.samples += 1
        throttled = current.nr_throttled - previous.nr_throttled
        if throttled <= 0:  # nothing new, or the counters were reset (cgroup recreated)
            return
        throttled_ms = max(current.throttled_usec - previous.throttled_usec, 0) / 1000.0
        self.throttled_periods += throttled
        self.throttled_ms += throttled_ms
        self.timeline.record(
            "cpu_throttled",
            periods=current.nr_periods - previous.nr_periods,
            throttled_periods=throttled,
            throttled_ms=throttled_ms,
        )


# --- all of it together ----------------------------------------------------------------------


class Diagnostics:
    """The process-wide probes on one timeline: loop-lag canary, GC monitor, CPU throttling.

    The event loop, the garbage collector and the cgroup are shared by every session of the
    process, so run one ``Diagnostics`` per process (per Trio run), not per session; give the
    sessions the same ``timeline`` so that their events line up with the probes'.

    Example::

        diagnostics = Diagnostics()
        async with trio.open_nursery() as nursery:
            await nursery.start(diagnostics.run)
            ...  # sessions, with timeline=diagnostics.timeline
        diagnostics.timeline.dump("timeline.json")

    Args:
        timeline: the shared timeline (a new one on ``time.monotonic`` by default).
        loop_lag_interval_s: the canary's interval, in seconds.
        loop_lag_threshold_ms: lag above which a ``"loop_lag"`` event is recorded, in ms.
        gc_min_pause_ms: shortest GC pause recorded as an event, in ms (all feed the stats):
            young collections of a few µs would otherwise flood the timeline.
        cpu_interval_s: the cgroup sampling period, in seconds.
        cgroup_root: where the cgroup file system is mounted.

    Raises:
        ValueError: an interval <= 0 or a negative threshold.
    """

    def __init__(
        self,
        timeline: Timeline | None = None,
        *,
        loop_lag_interval_s: float = 0.05,
        loop_lag_threshold_ms: float = 5.0,
        gc_min_pause_ms: float = 1.0,
        cpu_interval_s: float = 1.0,
        cgroup_root: str | os.PathLike[str] = CGROUP_ROOT,
    ) -> None:
        self.timeline = timeline if timeline is not None else Timeline()
        self.canary = LoopLagCanary(
            self.timeline, interval_s=loop_lag_interval_s, threshold_ms=loop_lag_threshold_ms
        )
        self.gc = GcMonitor(self.timeline, min_pause_ms=gc_min_pause_ms)
        self.cpu = CpuThrottleSampler(self.timeline, interval_s=cpu_interval_s, root=cgroup_root)

    def __repr__(self) -> str:
        return f"Diagnostics({self.timeline!r}, {self.canary!r}, {self.gc!r}, {self.cpu!r})"

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Runs every probe until cancelled (``await nursery.start(diagnostics.run)``); the GC
        callback is installed once started and removed when this returns."""
        with self.gc:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.canary.run)
                nursery.start_soon(self.cpu.run)
                task_status.started()

    def summary(self) -> dict[str, Any]:
        """The probes' statistics as a JSON-ready dict (times in ms)."""
        lag = self.canary.stats
        gc_stats = self.gc.stats
        return {
            "loop_lag_ms": {
                "count": lag.count,
                "p50": lag.p50_ms,
                "p99": lag.p99_ms,
                "max": lag.max_ms,
            },
            "gc": {
                "count": gc_stats.count,
                "total_ms": gc_stats.total_ms,
                "max_ms": gc_stats.max_ms,
                "by_generation": list(gc_stats.by_generation),
                "collected": gc_stats.collected,
                "uncollectable": gc_stats.uncollectable,
            },
            "cpu": {
                "samples": self.cpu.samples,
                "throttled_periods": self.cpu.throttled_periods,
                "throttled_ms": self.cpu.throttled_ms,
            },
            "timeline": {"events": len(self.timeline), "evicted": self.timeline.evicted},
        }
