"""Event-loop lag: ``LoopLagCanary``, a Trio task measuring how late a sleep wakes up."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import trio

from voicecore.diagnostics.timeline import Timeline
from voicecore.metrics import percentile

__all__ = [
    "LagStats",
    "LoopLagCanary",
]


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
