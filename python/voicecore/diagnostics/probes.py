"""``Diagnostics``: the process-wide probes (loop-lag canary, GC monitor, CPU throttling
sampler) run together on one timeline, and their ``summary``."""

from __future__ import annotations

import os
from typing import Any

import trio

from voicecore.diagnostics.cpu import CGROUP_ROOT, CpuThrottleSampler
from voicecore.diagnostics.gc import GcMonitor
from voicecore.diagnostics.loop_lag import LoopLagCanary
from voicecore.diagnostics.timeline import Timeline

__all__ = [
    "Diagnostics",
]


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
