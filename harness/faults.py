"""Fault injection for the stall benchmarks: hiccups inside a server, freezes from outside.

Inside the server process (opt-in, off by default): set ``VOICECORE_FAULTS`` before starting
``voicecore serve`` and the server runs ``run_faults`` as a task. Never set it in production:
it exists to make the server glitch on purpose. The value is ``KIND[:MS][@PERIOD_S]``:

* ``gc_storm:MS@P``: every ``P`` s, a full ``gc.collect()`` over a heap of live reference cycles
  sized so one collection takes about ``MS`` ms, on the event loop (where Python's GC
  pauses land in a real server);
* ``gil_hog:MS@P``: every ``P`` s, a thread holds the GIL for ``MS`` ms in one C call (a
  pure-Python loop would hand the GIL back every 5 ms; a C extension call does not);
* ``loop_block:MS@P``: every ``P`` s, the event loop is blocked for ``MS`` ms
  (``time.sleep`` on the loop: a synchronous call in an async handler).

``MS`` defaults to 100 ms and ``P`` to 1 s. Example: ``VOICECORE_FAULTS=loop_block:300@2``.

From outside the process: ``freeze_bursts`` (SIGSTOP/SIGCONT: the whole process frozen, as
a CPU quota throttle does) and ``cpu_quota`` (a real cgroup CPU quota: ``cpu.max`` on
cgroup v2, ``cpu.cfs_quota_us`` on v1, where the machine lets us write it).
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import trio

__all__ = [
    "ENV",
    "FaultSpec",
    "cpu_quota",
    "cpu_quota_available",
    "freeze_bursts",
    "parse_faults",
    "run_faults",
    "spec_from_env",
]

ENV: Final = "VOICECORE_FAULTS"
"""The environment variable that turns fault injection on in ``voicecore serve``."""

KINDS: Final = ("gc_storm", "gil_hog", "loop_block")


@dataclass(frozen=True)
class FaultSpec:
    """One periodic in-process fault.

    Attributes:
        kind: ``gc_storm``, ``gil_hog`` or ``loop_block``.
        duration_ms: how long each hiccup lasts, ms.
        period_s: time between the starts of two hiccups, s.
    """

    kind: str
    duration_ms: float = 100.0
    period_s: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"fault kind must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if not 0 < self.duration_ms <= 10_000:
            raise ValueError(f"fault duration must be in (0, 10000] ms, got {self.duration_ms}")
        if not self.period_s * 1000 > self.duration_ms:
            raise ValueError(
                f"fault period ({self.period_s} s) must exceed its duration ({self.duration_ms} ms)"
            )

    def __str__(self) -> str:
        return f"{self.kind}:{self.duration_ms:g}@{self.period_s:g}"


def parse_faults(text: str) -> FaultSpec:
    """Parses ``KIND[:MS][@PERIOD_S]`` (see the module's docstring).

    Raises:
        ValueError: an unknown kind or a malformed or out-of-range number.
    """
    text = text.strip()
    period_s = 1.0
    if "@" in text:
        text, period = text.split("@", 1)
        period_s = float(period)
    duration_ms = 100.0
    if ":" in text:
        text, duration = text.split(":", 1)
        duration_ms = float(duration)
    return FaultSpec(text, duration_ms, period_s)


# --- in-process faults --------------------------------------------------------------------


class _Node:
    """A garbage cycle's node (``__slots__``-less, so the collector must traverse it)."""

    def __init__(self) -> None:
        self.other: _Node | None = None


def _calibrated_garbage(duration_ms: float) -> list[_Node]:
    """A heap of live cycles that makes one ``gc.collect()`` take about ``duration_ms``."""
    heap: list[_Node] = []
    size = 10_000
    while True:
        while len(heap) < size:
            a, b = _Node(), _Node()
            a.other, b.other = b, a
            heap += (a, b)
        start = time.perf_counter()
        gc.collect()
        elapsed_ms = (time.perf_counter() - start) * 1000
        if elapsed_ms >= duration_ms or size >= 20_000_000:
            return heap
        size = int(size * min(8.0, max(1.2, duration_ms / max(elapsed_ms, 0.01))))


def _hold_gil(duration_ms: float) -> None:
    """Holds the GIL for about ``duration_ms``: ``sum`` over a range runs in C and never
    checks the interpreter's switch request, so no other thread runs meanwhile."""
    deadline = time.perf_counter() + duration_ms / 1000
    chunk = 200_000
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        sum(range(chunk))
        taken = time.perf_counter() - start
        # Grow the chunk until one C call fills the remaining time in one go.
        remaining = deadline - time.perf_counter()
        if taken > 0:
            chunk = max(10_000, int(chunk * remaining / taken))


async def run_faults(spec: FaultSpec) -> None:
    """Injects ``spec``'s hiccup every ``period_s`` until cancelled (run it as a task)."""
    garbage = _calibrated_garbage(spec.duration_ms) if spec.kind == "gc_storm" else None
    stop = threading.Event()
    hog_due = threading.Event()

    def hog() -> None:
        while not stop.is_set():
            if hog_due.wait(0.1):
                hog_due.clear()
                _hold_gil(spec.duration_ms)

    thread = None
    if spec.kind == "gil_hog":
        thread = threading.Thread(target=hog, name="voicecore-gil-hog", daemon=True)
        thread.start()
    try:
        next_at = trio.current_time() + spec.period_s
        while True:
            await trio.sleep_until(next_at)
            next_at += spec.period_s
            if spec.kind == "loop_block":
                time.sleep(spec.duration_ms / 1000)
            elif spec.kind == "gc_storm":
                assert garbage is not None
                gc.collect()
            else:
                hog_due.set()
    finally:
        stop.set()
        if thread is not None:
            thread.join(timeout=1.0 + spec.duration_ms / 1000)


def spec_from_env() -> FaultSpec | None:
    """The faults ``VOICECORE_FAULTS`` asks for (see the module's docstring), or None when it
    is unset; ``python -m harness.serve`` runs them inside the server process.

    Raises:
        ValueError: the variable is set to something unparsable.
    """
    text = os.environ.get(ENV, "").strip()
    return parse_faults(text) if text else None


# --- faults from outside the process ------------------------------------------------------


async def freeze_bursts(pid: int, freeze_ms: float, period_s: float) -> None:
    """Freezes process group ``pid`` (SIGSTOP) for ``freeze_ms`` every ``period_s`` until
    cancelled; always leaves it running (SIGCONT) on the way out."""
    if not period_s * 1000 > freeze_ms > 0:
        raise ValueError(f"need 0 < freeze_ms ({freeze_ms}) < period ({period_s} s)")
    try:
        next_at = trio.current_time() + period_s
        while True:
            await trio.sleep_until(next_at)
            next_at += period_s
            os.killpg(pid, signal.SIGSTOP)
            try:
                await trio.sleep(freeze_ms / 1000)
            finally:
                os.killpg(pid, signal.SIGCONT)
    except ProcessLookupError:
        return


_CGROUP_V2: Final = Path("/sys/fs/cgroup")
_CGROUP_V1_CPU: Final = Path("/sys/fs/cgroup/cpu")


def _cgroup_root() -> tuple[Path, str] | None:
    """(the cpu controller's root folder, "v1" or "v2"), or None if neither is writable."""
    if (_CGROUP_V2 / "cgroup.controllers").is_file() and os.access(_CGROUP_V2, os.W_OK):
        return _CGROUP_V2, "v2"
    if (_CGROUP_V1_CPU / "cpu.cfs_quota_us").is_file() and os.access(_CGROUP_V1_CPU, os.W_OK):
        return _CGROUP_V1_CPU, "v1"
    return None


def cpu_quota_available() -> bool:
    """Whether this machine lets us create a cgroup with a CPU quota (root, writable)."""
    return _cgroup_root() is not None


@contextlib.contextmanager
def cpu_quota(pid: int, percent: float, period_ms: int = 100) -> Iterator[Path]:
    """Puts process ``pid`` (all its threads) in a new cgroup limited to ``percent`` of one
    CPU per ``period_ms``, yields the cgroup's folder, then moves it back and removes it.

    Raises:
        OSError: the cgroup cannot be created or written (no cgroup, not root).
    """
    if not 0 < percent <= 100:
        raise ValueError(f"percent must be in (0, 100], got {percent}")
    found = _cgroup_root()
    if found is None:
        raise OSError("no writable cgroup cpu controller on this machine")
    root, version = found
    group = root / f"voicecore-bench-{os.getpid()}-{pid}"
    group.mkdir()
    period_us = period_ms * 1000
    quota_us = max(1000, int(period_us * percent / 100))
    try:
        if version == "v2":
            (group / "cpu.max").write_text(f"{quota_us} {period_us}")
        else:
            (group / "cpu.cfs_period_us").write_text(str(period_us))
            (group / "cpu.cfs_quota_us").write_text(str(quota_us))
            # The pacer thread runs SCHED_FIFO, and cgroup v1 refuses a real-time task in a
            # group without real-time bandwidth (EINVAL): give it the same share.
            rt_period_us = int((group / "cpu.rt_period_us").read_text())
            rt_runtime_us = int(rt_period_us * percent / 100)
            (group / "cpu.rt_runtime_us").write_text(str(rt_runtime_us))
        (group / "cgroup.procs").write_text(str(pid))
        yield group
    finally:
        with contextlib.suppress(OSError):
            (root / "cgroup.procs").write_text(str(pid))
        with contextlib.suppress(OSError):
            group.rmdir()
