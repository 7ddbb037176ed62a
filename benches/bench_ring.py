"""SampleRing vs the rings a Python user would write: push and pop of 20 ms frames.

In the same run, interleaved so that machine noise hits all alike:

* voicecore ``SampleRing``: ``pop_into`` a preallocated array (allocation-free) and ``pop``
  (a new array per frame);
* a numpy ring: a preallocated int16 array with wraparound indexes and slice copies (the best
  a Python user would write), overwrite-oldest like the mic ring, with the same two pops;
* ``collections.deque(maxlen=capacity)`` of samples (``extend`` / ``popleft``);
* ``collections.deque(maxlen=...)`` of whole frames: the fastest pure-Python option, but it
  only works in whole frames (no sample-exact pops, no pre-roll of arbitrary length).

Single thread: each frame is pushed then popped; figures are ns per frame (push + pop), audio
samples per second, and the ratio of the baseline's time over voicecore's (> 1: voicecore is
faster). Headline target: voicecore ``pop_into`` at least as fast as the numpy ring's
(``speedup_vs_numpy_ring >= 1``).

Two threads: a producer thread pushes frames into a 1 s reject-policy ring (backpressure)
while a consumer thread pops them; samples per second through the pair, against a numpy ring
behind a ``threading.Lock`` and a ``queue.Queue`` of frames (the idiomatic thread hand-off).
"""

from __future__ import annotations

import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt

from voicecore import SampleRing

RATE = 16000
FRAME = 320  # 20 ms at 16 kHz
CAPACITY = 2 * RATE  # the mic edge's 2 s ring

Frames = list[npt.NDArray[np.int16]]


class NumpyRing:
    """A preallocated int16 ring with wraparound indexes (overwrite-oldest, one thread)."""

    def __init__(self, capacity: int) -> None:
        self.buffer = np.zeros(capacity, dtype=np.int16)
        self.capacity = capacity
        self.write = 0
        self.read = 0

    def push(self, samples: npt.NDArray[np.int16]) -> int:
        n = len(samples)
        start = self.write % self.capacity
        first = min(n, self.capacity - start)
        self.buffer[start : start + first] = samples[:first]
        if first < n:
            self.buffer[: n - first] = samples[first:]
        self.write += n
        self.read = max(self.read, self.write - self.capacity)
        return n

    def pop_into(self, out: npt.NDArray[np.int16]) -> int:
        n = min(len(out), self.write - self.read)
        start = self.read % self.capacity
        first = min(n, self.capacity - start)
        out[:first] = self.buffer[start : start + first]
        if first < n:
            out[first:n] = self.buffer[: n - first]
        self.read += n
        return n

    def pop(self, n: int) -> npt.NDArray[np.int16]:
        out = np.empty(min(n, self.write - self.read), dtype=np.int16)
        self.pop_into(out)
        return out

    def free(self) -> int:
        return self.capacity - (self.write - self.read)


def make_frames(count: int) -> Frames:
    rng = np.random.default_rng(0)
    audio = rng.integers(-20000, 20000, size=count * FRAME, dtype=np.int16)
    return [audio[i * FRAME : (i + 1) * FRAME] for i in range(count)]


# --- single thread: one push and one pop per frame -----------------------------------------


def voicecore_pop_into(frames: Frames) -> None:
    ring = SampleRing(CAPACITY, "overwrite")
    out = np.empty(FRAME, dtype=np.int16)
    for frame in frames:
        ring.push(frame)
        ring.pop_into(out)


def voicecore_pop(frames: Frames) -> None:
    ring = SampleRing(CAPACITY, "overwrite")
    for frame in frames:
        ring.push(frame)
        ring.pop(FRAME)


def numpy_pop_into(frames: Frames) -> None:
    ring = NumpyRing(CAPACITY)
    out = np.empty(FRAME, dtype=np.int16)
    for frame in frames:
        ring.push(frame)
        ring.pop_into(out)


def numpy_pop(frames: Frames) -> None:
    ring = NumpyRing(CAPACITY)
    for frame in frames:
        ring.push(frame)
        ring.pop(FRAME)


def deque_of_samples(frames: Frames) -> None:
    ring: deque[int] = deque(maxlen=CAPACITY)
    for frame in frames:
        ring.extend(frame.tolist())
        n = min(FRAME, len(ring))
        np.array([ring.popleft() for _ in range(n)], dtype=np.int16)


def deque_of_frames(frames: Frames) -> None:
    ring: deque[npt.NDArray[np.int16]] = deque(maxlen=CAPACITY // FRAME)
    for frame in frames:
        ring.append(frame)
        ring.popleft()


SINGLE: dict[str, Callable[[Frames], None]] = {
    "voicecore pop_into": voicecore_pop_into,
    "voicecore pop": voicecore_pop,
    "numpy ring pop_into": numpy_pop_into,
    "numpy ring pop": numpy_pop,
    "deque of samples": deque_of_samples,
    "deque of frames": deque_of_frames,
}


def best_times(
    runs: dict[str, Callable[[Frames], None]], frames: Frames, rounds: int
) -> dict[str, float]:
    """Best wall time of each run over interleaved rounds, in seconds."""
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            start = time.perf_counter()
            run(frames)
            best[name] = min(best[name], time.perf_counter() - start)
    return best


def test_outputs_agree() -> None:
    """Every implementation hands back the frames it was given (so the timings compare
    like with like)."""
    frames = make_frames(300)
    expected = np.concatenate(frames)
    vc, numpy_ring = SampleRing(CAPACITY, "overwrite"), NumpyRing(CAPACITY)
    samples: deque[int] = deque(maxlen=CAPACITY)
    got: dict[str, list[npt.NDArray[np.int16]]] = {"vc": [], "np": [], "dq": []}
    for frame in frames:
        vc.push(frame)
        numpy_ring.push(frame)
        samples.extend(frame.tolist())
        got["vc"].append(vc.pop(FRAME))
        got["np"].append(numpy_ring.pop(FRAME))
        got["dq"].append(np.array([samples.popleft() for _ in range(FRAME)], dtype=np.int16))
    for parts in got.values():
        np.testing.assert_array_equal(np.concatenate(parts), expected)


def test_single_thread_push_pop_20ms_frames(benchmark: Any, report: Any, quick: bool) -> None:
    frames = make_frames(500 if quick else 5000)
    rounds = 3 if quick else 7
    benchmark.pedantic(voicecore_pop_into, args=(frames,), rounds=rounds, iterations=1)
    best = best_times(SINGLE, frames, rounds)
    ns_per_frame = {name: seconds * 1e9 / len(frames) for name, seconds in best.items()}
    reference = ns_per_frame["voicecore pop_into"]
    for name, ns in ns_per_frame.items():
        report.row(
            ring=name,
            ns_per_frame=round(ns),
            msamples_per_s=round(FRAME / ns * 1e3, 1),
            time_vs_voicecore_pop_into=round(ns / reference, 2),
        )
    speedup_numpy = ns_per_frame["numpy ring pop_into"] / reference
    report.figure("speedup_vs_numpy_ring", round(speedup_numpy, 2))
    report.figure(
        "speedup_pop_vs_numpy_ring_pop",
        round(ns_per_frame["numpy ring pop"] / ns_per_frame["voicecore pop"], 2),
    )
    report.figure(
        "speedup_vs_deque_of_samples", round(ns_per_frame["deque of samples"] / reference, 1)
    )
    report.figure(
        "speedup_vs_deque_of_frames", round(ns_per_frame["deque of frames"] / reference, 2)
    )
    report.figure("target_speedup_vs_numpy_ring_ge_1", speedup_numpy >= 1.0)


# --- two threads: producer -> consumer with backpressure -----------------------------------


def voicecore_threads(frames: Frames) -> None:
    ring = SampleRing(RATE, "reject")
    total = len(frames) * FRAME

    def produce() -> None:
        for frame in frames:
            rest = frame
            while len(rest):
                rest = rest[ring.push(rest) :]
                if len(rest):
                    time.sleep(0)  # full: let the consumer run

    producer = threading.Thread(target=produce)
    producer.start()
    out = np.empty(FRAME, dtype=np.int16)
    received = 0
    while received < total:
        count = ring.pop_into(out)
        if count == 0:
            time.sleep(0)  # empty: let the producer run
        received += count
    producer.join()


def numpy_locked_threads(frames: Frames) -> None:
    ring = NumpyRing(RATE)
    lock = threading.Lock()
    total = len(frames) * FRAME

    def produce() -> None:
        for frame in frames:
            while True:
                with lock:
                    if ring.free() >= FRAME:
                        ring.push(frame)
                        break
                time.sleep(0)

    producer = threading.Thread(target=produce)
    producer.start()
    out = np.empty(FRAME, dtype=np.int16)
    received = 0
    while received < total:
        with lock:
            count = ring.pop_into(out)
        if count == 0:
            time.sleep(0)
        received += count
    producer.join()


def queue_threads(frames: Frames) -> None:
    frames_queue: queue.Queue[npt.NDArray[np.int16]] = queue.Queue(maxsize=RATE // FRAME)

    def produce() -> None:
        for frame in frames:
            frames_queue.put(frame)

    producer = threading.Thread(target=produce)
    producer.start()
    for _ in frames:
        frames_queue.get()
    producer.join()


THREADED: dict[str, Callable[[Frames], None]] = {
    "voicecore (reject policy)": voicecore_threads,
    "numpy ring + Lock": numpy_locked_threads,
    "queue.Queue of frames": queue_threads,
}


def test_two_threads_producer_consumer(benchmark: Any, report: Any, quick: bool) -> None:
    frames = make_frames(1000 if quick else 10000)
    rounds = 3 if quick else 5
    benchmark.pedantic(voicecore_threads, args=(frames,), rounds=rounds, iterations=1)
    best = best_times(THREADED, frames, rounds)
    reference = best["voicecore (reject policy)"]
    for name, seconds in best.items():
        report.row(
            ring=name,
            msamples_per_s=round(len(frames) * FRAME / seconds / 1e6, 2),
            ns_per_frame=round(seconds * 1e9 / len(frames)),
            time_vs_voicecore=round(seconds / reference, 2),
        )
    report.figure(
        "threads_speedup_vs_numpy_locked", round(best["numpy ring + Lock"] / reference, 2)
    )
    report.figure("threads_speedup_vs_queue", round(best["queue.Queue of frames"] / reference, 2))
