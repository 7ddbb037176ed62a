"""The garbage collector: ``GcMonitor`` records each collection's pause, ``GcPolicy`` keeps
automatic collections out of the agent's speech (freeze after warm-up, defer to silences)."""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Hashable
from dataclasses import dataclass
from types import TracebackType
from typing import Literal

from voicecore.diagnostics.timeline import Timeline

__all__ = [
    "GcMonitor",
    "GcPolicy",
    "GcStats",
]


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
