"""Frame pacing under load: voicecore's Rust pacer beside a pure-Trio pacer, in one run.

Both pacers release 20 ms frames on absolute deadlines ``t0 + n * 20 ms`` at the same time,
in the same process, under each load:

* ``idle``: nothing else running in this process (the machine may still be shared);
* ``gil_hog``: a Python thread spinning pure-Python code, so the GIL is always wanted;
* ``gil_hog+gc_storm``: plus a thread allocating cyclic garbage with low GC thresholds over
  a large live heap, so full collections (which hold the GIL) run back to back;
* ``loop_blocked``: the Trio loop blocked 100 ms every second (a CPU-bound call on it);
* ``cpu_saturated``: two busy-loop subprocesses, one per core of this 2-core machine;
* ``cpu_saturated`` again with ``realtime=False``: the Rust thread at normal priority, to show
  what SCHED_FIFO buys.

Lateness is release time minus deadline. For the Rust pacer the pacer thread measures it
itself (``ReleasedFrame.lateness_ns``); for the Trio pacer it is ``trio.current_time()`` at
wake-up minus the deadline passed to ``trio.sleep_until``. ``handoff_p99_ms`` is informative:
how long released Rust frames then waited for the Trio consumer (what the client cushion
absorbs; it is not pacing lateness).

Target for the Rust pacer under every load: p99 <= 0.5 ms and max <= 2 ms.

A second benchmark serves 100 streams at once (one pacer thread, a deadline heap), then runs
100 Trio tasks pacing one stream each, with no added load.
"""

from __future__ import annotations

import gc
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import trio

from voicecore import FramePacer
from voicecore.engine.pacing import push, released_frames

FRAME_S = 0.020
P99_TARGET_MS = 0.5
MAX_TARGET_MS = 2.0


@dataclass
class Lateness:
    """Lateness figures of one pacer over one run, in ms."""

    p50: float
    p99: float
    max: float
    frames: int

    @classmethod
    def of(cls, values_ms: list[float]) -> Lateness:
        data = np.asarray(values_ms)
        return cls(
            float(np.percentile(data, 50)),
            float(np.percentile(data, 99)),
            float(data.max()),
            len(data),
        )


@dataclass
class RunResult:
    rust: Lateness
    trio: Lateness
    handoff_p99_ms: float
    scheduling: str
    underruns: int


# --- loads ------------------------------------------------------------------------------


def _spin(stop: threading.Event) -> None:
    while not stop.is_set():
        sum(i * i for i in range(2000))


def _garbage(stop: threading.Event) -> None:
    while not stop.is_set():
        for _ in range(1000):
            cycle: list[Any] = []
            cycle.append(cycle)


@contextmanager
def _threads(*targets: Callable[[threading.Event], None]) -> Iterator[None]:
    stop = threading.Event()
    threads = [threading.Thread(target=t, args=(stop,), daemon=True) for t in targets]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join()


@contextmanager
def _idle() -> Iterator[None]:
    yield


@contextmanager
def _gil_hog() -> Iterator[None]:
    with _threads(_spin):
        yield


@contextmanager
def _gc_storm() -> Iterator[None]:
    # A large live heap makes every full collection long; low thresholds make them frequent.
    live: list[list[dict[str, int]]] = [[{} for _ in range(8)] for _ in range(60_000)]
    thresholds = gc.get_threshold()
    gc.set_threshold(50, 2, 2)
    try:
        with _threads(_spin, _garbage):
            yield
    finally:
        gc.set_threshold(*thresholds)
        del live
        gc.collect()


@contextmanager
def _cpu_saturated() -> Iterator[None]:
    hogs: list[subprocess.Popen[bytes]] = []
    try:
        for _ in range(2):
            hogs.append(subprocess.Popen([sys.executable, "-c", "while True: pass"]))
        time.sleep(0.2)  # let them reach full speed
        yield
    finally:
        for hog in hogs:
            hog.kill()
        for hog in hogs:
            hog.wait()


# (name, load, realtime, loop blocked 100 ms every second)
LOADS: list[tuple[str, Callable[[], AbstractContextManager[None]], bool, bool]] = [
    ("idle", _idle, True, False),
    ("gil_hog", _gil_hog, True, False),
    ("gil_hog+gc_storm", _gc_storm, True, False),
    ("loop_blocked", _idle, True, True),
    ("cpu_saturated", _cpu_saturated, True, False),
    ("cpu_saturated(realtime=False)", _cpu_saturated, False, False),
]


# --- the two pacers, run side by side in one Trio loop -----------------------------------


async def _trio_pacer(duration_s: float, lateness_ms: list[float]) -> None:
    """The baseline: a Trio task sleeping until absolute deadlines."""
    t0 = trio.current_time()
    for n in range(round(duration_s / FRAME_S)):
        deadline = t0 + n * FRAME_S
        await trio.sleep_until(deadline)
        lateness_ms.append((trio.current_time() - deadline) * 1e3)


async def _block_loop(duration_s: float) -> None:
    """Blocks the whole Trio loop for 100 ms every second (a CPU-bound call on the loop)."""
    end = trio.current_time() + duration_s
    while trio.current_time() + 1.0 < end:
        await trio.sleep(0.9)
        time.sleep(0.1)


async def _run_both(duration_s: float, realtime: bool, block_loop: bool) -> RunResult:
    rust_ms: list[float] = []
    handoff_ms: list[float] = []
    trio_ms: list[float] = []
    second = (np.sin(np.arange(16_000) * 0.05) * 8000).astype(np.int16)
    with FramePacer(20, realtime=realtime) as pacer:
        stream = pacer.open_stream(16_000, cushion_ms=120, queue_ms=2000)

        async def produce() -> None:
            while True:
                await push(stream, second)

        async def consume() -> None:
            async for batch in released_frames(pacer):
                now = time.monotonic_ns()
                for frame in batch:
                    rust_ms.append(frame.lateness_ns / 1e6)
                    handoff_ms.append((now - frame.released_ns) / 1e6)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            nursery.start_soon(consume)
            if block_loop:
                nursery.start_soon(_block_loop, duration_s)
            await _trio_pacer(duration_s, trio_ms)
            nursery.cancel_scope.cancel()
        underruns = stream.stats().underruns
        scheduling = pacer.scheduling
    return RunResult(
        rust=Lateness.of(rust_ms),
        trio=Lateness.of(trio_ms),
        handoff_p99_ms=float(np.percentile(handoff_ms, 99)),
        scheduling=scheduling,
        underruns=underruns,
    )


def _run_all(duration_s: float) -> dict[str, RunResult]:
    results = {}
    for name, load, realtime, block_loop in LOADS:
        with load():
            results[name] = trio.run(_run_both, duration_s, realtime, block_loop)
    return results


@pytest.mark.timeout(300)
def test_pacing_lateness_under_load(benchmark: Any, report: Any, quick: bool) -> None:
    """>= 10 s per load (1.5 s in quick mode); both pacers measured in the same window."""
    duration_s = 1.5 if quick else 10.0
    results: dict[str, RunResult] = benchmark.pedantic(
        _run_all, args=(duration_s,), rounds=1, iterations=1
    )
    for name, result in results.items():
        rust, baseline = result.rust, result.trio
        met = rust.p99 <= P99_TARGET_MS and rust.max <= MAX_TARGET_MS
        # A p99 below 1 us is reported as 1 us in the ratio, so it stays finite.
        ratio = baseline.p99 / max(rust.p99, 0.001)
        report.row(
            load=name,
            seconds=duration_s,
            rust_p50_ms=rust.p50,
            rust_p99_ms=rust.p99,
            rust_max_ms=rust.max,
            trio_p50_ms=baseline.p50,
            trio_p99_ms=baseline.p99,
            trio_max_ms=baseline.max,
            p99_ratio_trio_over_rust=ratio,
            rust_target_met=met,
            scheduling=result.scheduling,
            rust_frames=rust.frames,
            trio_frames=baseline.frames,
            underruns=result.underruns,
            handoff_p99_ms=result.handoff_p99_ms,
        )
        report.figure(f"{name}: p99 ratio trio/rust", ratio)
        report.figure(f"{name}: rust target met (p99<=0.5ms, max<=2ms)", met)
        assert rust.frames >= 0.9 * duration_s / FRAME_S, f"{name}: the Rust pacer stalled"
        assert result.underruns == 0, f"{name}: the producer could not keep the queue fed"


async def _rust_streams(duration_s: float, streams: int) -> tuple[Lateness, str]:
    """One pacer thread serving `streams` streams, fed and drained from Trio."""
    lateness_ms: list[float] = []
    second = np.zeros(16_000, dtype=np.int16)
    with FramePacer(20) as pacer:

        async def produce(index: int) -> None:
            await trio.sleep(index * 0.0002)  # sessions start at different times
            stream = pacer.open_stream(16_000, cushion_ms=120, queue_ms=2000)
            while True:
                await push(stream, second)

        async def consume() -> None:
            async for batch in released_frames(pacer):
                lateness_ms.extend(frame.lateness_ns / 1e6 for frame in batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(consume)
            for index in range(streams):
                nursery.start_soon(produce, index)
            await trio.sleep(duration_s)
            nursery.cancel_scope.cancel()
        return Lateness.of(lateness_ms), pacer.scheduling


async def _trio_streams(duration_s: float, streams: int) -> Lateness:
    """The baseline: one Trio task per stream sleeping until its absolute deadlines."""
    lateness_ms: list[float] = []

    async def session(index: int) -> None:
        await trio.sleep(index * 0.0002)
        await _trio_pacer(duration_s, lateness_ms)

    async with trio.open_nursery() as nursery:
        for index in range(streams):
            nursery.start_soon(session, index)
    return Lateness.of(lateness_ms)


def _many_streams(duration_s: float, streams: int) -> tuple[Lateness, Lateness, str]:
    # One after the other, so neither loop carries the other's work.
    rust, scheduling = trio.run(_rust_streams, duration_s, streams)
    return rust, trio.run(_trio_streams, duration_s, streams), scheduling


@pytest.mark.timeout(120)
def test_many_streams_on_one_pacer_thread(benchmark: Any, report: Any, quick: bool) -> None:
    """100 streams on one pacer thread vs 100 Trio tasks; 5 s each (1 s in quick mode)."""
    duration_s, streams = (1.0 if quick else 5.0), 100
    rust, baseline, scheduling = benchmark.pedantic(
        _many_streams, args=(duration_s, streams), rounds=1, iterations=1
    )
    met = rust.p99 <= P99_TARGET_MS and rust.max <= MAX_TARGET_MS
    ratio = baseline.p99 / max(rust.p99, 0.001)
    report.row(
        streams=streams,
        seconds=duration_s,
        rust_p50_ms=rust.p50,
        rust_p99_ms=rust.p99,
        rust_max_ms=rust.max,
        trio_p50_ms=baseline.p50,
        trio_p99_ms=baseline.p99,
        trio_max_ms=baseline.max,
        p99_ratio_trio_over_rust=ratio,
        rust_target_met=met,
        scheduling=scheduling,
        rust_frames=rust.frames,
        trio_frames=baseline.frames,
    )
    report.figure("100 streams: p99 ratio trio/rust", ratio)
    report.figure("100 streams: rust target met (p99<=0.5ms, max<=2ms)", met)
    assert rust.frames >= 0.9 * streams * duration_s / FRAME_S
