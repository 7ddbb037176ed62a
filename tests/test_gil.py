"""Long Rust calls release the GIL: another Python thread keeps running during them.

The interpreter's switch interval is raised to 0.5 s (longer than any of these calls takes)
for the measurement, so the counting thread can only run while the main thread has released
the GIL of its own accord; a call that held the GIL throughout would leave the counter where
it was. (Getting the GIL back from the counting thread then costs the main thread one
interval, which is why these tests take about 0.5 s each.)
"""

from __future__ import annotations

import functools
import sys
import threading
from collections.abc import Callable

import numpy as np
import pytest

import voicecore

TEN_MINUTES = (np.random.default_rng(0).standard_normal(16000 * 600) * 3000).astype(np.int16)


def count_during(call: Callable[[], object]) -> int:
    """Runs `call` while a thread counts; returns how far it counted during the call."""
    counter = 0
    stop = threading.Event()
    running = threading.Event()

    def count() -> None:
        nonlocal counter
        running.set()
        while not stop.is_set():
            counter += 1

    thread = threading.Thread(target=count)
    thread.start()
    running.wait()
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        before = counter
        call()
        during = counter - before
    finally:
        sys.setswitchinterval(interval)
        stop.set()
        thread.join()
    return during


CALLS: dict[str, Callable[[], object]] = {
    "Resampler.process": functools.partial(voicecore.Resampler(16000, 44100).process, TEN_MINUTES),
    "VadFeatures.compute_many": functools.partial(
        voicecore.VadFeatures(frame_ms=10).compute_many, TEN_MINUTES
    ),
    "EnergyVad.process": functools.partial(voicecore.EnergyVad(frame_ms=10).process, TEN_MINUTES),
    "EchoGate.process": functools.partial(voicecore.EchoGate(16000).process, TEN_MINUTES),
    "SampleRing.push": functools.partial(
        voicecore.SampleRing(TEN_MINUTES.size, "overwrite").push, TEN_MINUTES
    ),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_long_calls_let_other_threads_run(name: str) -> None:
    # A release is a chance, not a guarantee: the OS may not wake the other thread before a
    # short call ends. A call that held the GIL would count 0 on every attempt.
    assert any(count_during(CALLS[name]) > 0 for _ in range(20)), f"{name} kept the GIL"
