"""cgroup CPU throttling: ``read_cpu_stat`` reads the v1/v2 ``cpu.stat`` counters,
``CpuThrottleSampler`` records their growth on the timeline."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal

import trio

from voicecore.diagnostics.timeline import Timeline

__all__ = [
    "CGROUP_ROOT",
    "CpuStat",
    "CpuThrottleSampler",
    "read_cpu_stat",
]

CGROUP_ROOT: Final = Path("/sys/fs/cgroup")
"""Where cgroup file systems are mounted (v2 unified, or one directory per v1 controller)."""


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
