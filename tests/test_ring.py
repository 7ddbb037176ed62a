"""SampleRing: the lock-free SPSC sample ring, tested from Python.

Behaviour of both overflow policies, the counters, pre-roll peeks, every input the binding
refuses, and two-thread stress runs whose output is checked sample by sample.
"""

from __future__ import annotations

import hashlib
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecore import AudioFormatError, AudioTypeError, ConfigError, RingStats, SampleRing

FRAME = 320  # 20 ms at 16 kHz


def sequence(start: int, count: int) -> npt.NDArray[np.int16]:
    """Positions start..start+count as int16 samples (wrapping modulo 2**16)."""
    return np.arange(start, start + count, dtype=np.int64).astype(np.int16)


def is_run(samples: npt.NDArray[np.int16]) -> bool:
    """True if every sample is its predecessor + 1 (modulo 2**16)."""
    steps = np.diff(samples.astype(np.int64)) % 65536
    return bool(np.all(steps == 1))


# --- construction --------------------------------------------------------------------------


def test_construction_and_repr() -> None:
    ring = SampleRing(32000, "overwrite")
    assert ring.capacity == 32000
    assert ring.policy == "overwrite"
    assert (ring.available, ring.free) == (0, 32000)
    assert repr(ring) == "SampleRing(capacity=32000, policy='overwrite', available=0)"
    assert SampleRing(1, policy="reject").policy == "reject"


@pytest.mark.parametrize("capacity", [0, -1, -320, 2**26 + 1])
def test_capacity_out_of_range_is_a_config_error(capacity: int) -> None:
    with pytest.raises(ConfigError, match=rf"capacity = {capacity} is invalid"):
        SampleRing(capacity, "reject")


def test_unknown_policy_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match='expected "overwrite" or "reject"'):
        SampleRing(16, "drop")  # type: ignore[arg-type]


def test_policy_is_required_and_typed() -> None:
    with pytest.raises(TypeError):
        SampleRing(16)  # type: ignore[call-arg]
    with pytest.raises(TypeError):
        SampleRing(16, 1)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        SampleRing(16.0, "reject")  # type: ignore[arg-type]


# --- audio in and out ----------------------------------------------------------------------


def test_every_accepted_input_type_round_trips() -> None:
    samples = sequence(-100, 50)
    inputs: list[Any] = [
        samples,
        samples.tobytes(),
        bytearray(samples.tobytes()),
        memoryview(samples.tobytes()),
        memoryview(b"\0" + samples.tobytes())[1:],  # an odd offset: unaligned bytes
    ]
    for audio in inputs:
        ring = SampleRing(64, "reject")
        assert ring.push(audio) == 50
        out = ring.pop(50)
        assert out.dtype == np.int16
        np.testing.assert_array_equal(out, samples)


def test_float32_is_scaled_rounded_and_clamped() -> None:
    ring = SampleRing(8, "reject")
    audio = np.array([0.0, 0.5, -0.5, 1.0, -1.0, 3.0, np.nan, -1e9], dtype=np.float32)
    assert ring.push(audio) == 8
    np.testing.assert_array_equal(ring.pop(8), [0, 16384, -16384, 32767, -32768, 32767, 0, -32768])


def test_bytes_outputs_are_pcm16_little_endian() -> None:
    ring = SampleRing(16, "overwrite")
    ring.push(sequence(1000, 6))
    assert ring.peek_last_bytes(2) == sequence(1004, 2).astype("<i2").tobytes()
    assert ring.pop_bytes(6) == sequence(1000, 6).astype("<i2").tobytes()
    assert ring.pop_bytes(6) == b""


@pytest.mark.parametrize(
    ("audio", "error", "message"),
    [
        (np.zeros(4, dtype=np.float64), AudioTypeError, "dtype float64"),
        (np.zeros(4, dtype=np.int32), AudioTypeError, "dtype int32"),
        ([1, 2, 3], AudioTypeError, "type list"),
        ("abc", AudioTypeError, "type str"),
        (b"\x00\x01\x02", AudioFormatError, "got 3 bytes"),
        (np.zeros(8, dtype=np.int16)[::2], AudioFormatError, "not contiguous"),
        (np.zeros((2, 4), dtype=np.int16), AudioFormatError, "one-dimensional"),
    ],
)
def test_bad_audio_is_refused_with_a_clear_error(
    audio: Any, error: type[Exception], message: str
) -> None:
    ring = SampleRing(16, "overwrite")
    with pytest.raises(error, match=message):
        ring.push(audio)
    assert ring.stats().written == 0


@pytest.mark.parametrize("method", ["pop", "pop_bytes", "peek_last", "peek_last_bytes"])
def test_negative_counts_are_a_config_error(method: str) -> None:
    ring = SampleRing(16, "overwrite")
    with pytest.raises(ConfigError, match="n = -1 is invalid"):
        getattr(ring, method)(-1)


def test_huge_counts_return_what_there_is() -> None:
    ring = SampleRing(16, "overwrite")
    ring.push(sequence(0, 5))
    assert len(ring.peek_last(2**62)) == 5
    assert len(ring.pop(2**62)) == 5


def test_pop_into_fills_a_caller_array_without_allocating() -> None:
    ring = SampleRing(1000, "reject")
    ring.push(sequence(7, 500))
    out = np.full(FRAME, -1, dtype=np.int16)
    assert ring.pop_into(out) == FRAME
    np.testing.assert_array_equal(out, sequence(7, FRAME))
    assert ring.pop_into(out) == 180
    np.testing.assert_array_equal(out[:180], sequence(7 + FRAME, 180))
    assert ring.stats().underflows == 1


@pytest.mark.parametrize(
    ("out", "error", "message"),
    [
        (np.zeros(4, dtype=np.float32), AudioTypeError, "dtype int16"),
        (bytearray(8), AudioTypeError, "dtype int16"),
        (np.zeros((2, 2), dtype=np.int16), AudioFormatError, "one-dimensional"),
        (np.zeros(8, dtype=np.int16)[::2], AudioFormatError, "not contiguous"),
    ],
)
def test_pop_into_refuses_unusable_outputs(out: Any, error: type[Exception], message: str) -> None:
    ring = SampleRing(16, "reject")
    ring.push(sequence(0, 4))
    with pytest.raises(error, match=message):
        ring.pop_into(out)
    assert ring.available == 4


def test_pop_into_refuses_a_read_only_array() -> None:
    ring = SampleRing(16, "reject")
    out = np.zeros(4, dtype=np.int16)
    out.flags.writeable = False
    with pytest.raises(AudioFormatError, match="not writeable"):
        ring.pop_into(out)


# --- policies and counters -----------------------------------------------------------------


def test_reject_policy_accepts_what_fits_and_counts_the_rest() -> None:
    ring = SampleRing(1000, "reject")
    assert ring.push(sequence(0, 3 * FRAME)) == 3 * FRAME
    assert ring.free == 40
    assert ring.push(sequence(3 * FRAME, FRAME)) == 40
    assert ring.push(sequence(0, FRAME)) == 0
    np.testing.assert_array_equal(ring.pop(2000), sequence(0, 1000))
    stats = ring.stats()
    assert (stats.written, stats.rejected, stats.overwritten, stats.read) == (1000, 600, 0, 1000)


def test_overwrite_policy_keeps_the_newest_and_counts_the_oldest() -> None:
    ring = SampleRing(1000, "overwrite")
    for frame in range(5):
        assert ring.push(sequence(frame * FRAME, FRAME)) == FRAME
    assert (ring.available, ring.free) == (1000, 0)
    assert ring.stats().overwritten == 5 * FRAME - 1000
    np.testing.assert_array_equal(ring.pop(FRAME), sequence(5 * FRAME - 1000, FRAME))
    # A single push larger than the ring keeps its last `capacity` samples.
    assert ring.push(sequence(0, 2500)) == 2500
    np.testing.assert_array_equal(ring.pop(5000), sequence(1500, 1000))
    stats = ring.stats()
    assert stats.written == stats.read + stats.overwritten + stats.available


def test_underflow_counts_pops_that_found_too_little() -> None:
    ring = SampleRing(1000, "reject")
    ring.push(sequence(0, 500))
    assert len(ring.pop(FRAME)) == FRAME  # enough: no underflow
    assert len(ring.pop(FRAME)) == 180  # short by 140
    assert len(ring.pop(FRAME)) == 0  # short by 320
    assert len(ring.pop(0)) == 0  # asked for nothing: no underflow
    assert len(ring.peek_last(FRAME)) == FRAME  # peeks never underflow
    stats = ring.stats()
    assert (stats.underflows, stats.underflow_samples) == (2, 460)


def test_clear_drops_unread_samples() -> None:
    ring = SampleRing(1000, "reject")
    ring.push(sequence(0, 700))
    ring.pop(100)
    assert ring.clear() == 600
    assert ring.available == 0
    ring.push(sequence(700, 10))
    np.testing.assert_array_equal(ring.pop(50), sequence(700, 10))
    stats = ring.stats()
    assert stats.cleared == 600
    assert stats.written == stats.read + stats.overwritten + stats.cleared + stats.available


def test_stats_snapshot_is_a_value() -> None:
    ring = SampleRing(10, "overwrite")
    ring.push(sequence(0, 14))
    ring.pop(3)
    stats = ring.stats()
    assert isinstance(stats, RingStats)
    assert stats == ring.stats()
    assert repr(stats) == (
        "RingStats(capacity=10, available=7, written=14, read=3, overwritten=4, "
        "rejected=0, underflows=0, underflow_samples=0, cleared=0)"
    )
    ring.pop(1)
    assert stats != ring.stats()


# --- pre-roll ------------------------------------------------------------------------------


def test_peek_last_gives_pre_roll_of_real_speech_already_consumed(speech: list[Any]) -> None:
    utterance = speech[0]
    samples = utterance.samples
    pre_roll = utterance.sample_rate * 300 // 1000  # 300 ms
    ring = SampleRing(utterance.sample_rate * 2, "overwrite")  # 2 s, as the mic edge
    frame = utterance.sample_rate // 50
    consumed = []
    for start in range(0, len(samples) - frame + 1, frame):
        ring.push(samples[start : start + frame])
        consumed.append(ring.pop(frame))  # the VAD consumes every frame as it arrives
    end = len(consumed) * frame
    np.testing.assert_array_equal(np.concatenate(consumed), samples[:end])
    # The frames before the onset were consumed but are still in the ring.
    np.testing.assert_array_equal(ring.peek_last(pre_roll), samples[end - pre_roll : end])
    assert ring.available == 0
    assert ring.stats().read == end


def test_peek_last_is_limited_to_what_the_ring_retains() -> None:
    ring = SampleRing(100, "overwrite")
    assert len(ring.peek_last(10)) == 0
    ring.push(sequence(0, 250))
    np.testing.assert_array_equal(ring.peek_last(1000), sequence(150, 100))
    assert ring.available == 100


# --- two threads ---------------------------------------------------------------------------


def test_stress_reject_policy_one_producer_one_consumer() -> None:
    """The producer re-offers what was refused; the consumer must receive the exact
    sequence once, in order (checked sample by sample and by a digest of all bytes)."""
    total = 400_000
    ring = SampleRing(1000, "reject")
    source = sequence(0, total)
    sent = hashlib.sha256()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            rng = np.random.default_rng(1)
            position = 0
            while position < total:
                chunk = source[position : position + int(rng.integers(1, 2 * FRAME))]
                accepted = ring.push(chunk)
                sent.update(chunk[:accepted].tobytes())
                position += accepted
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)

    producer = threading.Thread(target=produce)
    producer.start()
    received = hashlib.sha256()
    rng = np.random.default_rng(2)
    out = np.empty(2 * FRAME, dtype=np.int16)
    position = 0
    while position < total:
        count = ring.pop_into(out[: int(rng.integers(1, 2 * FRAME))])
        np.testing.assert_array_equal(out[:count], source[position : position + count])
        received.update(out[:count].tobytes())
        position += count
    producer.join()
    assert not errors
    assert received.digest() == sent.digest()
    stats = ring.stats()
    assert (stats.written, stats.read, stats.overwritten, stats.available) == (total, total, 0, 0)
    assert stats.rejected > 0, "the ring never filled up: the test did not exercise backpressure"


def test_stress_overwrite_policy_one_producer_one_consumer() -> None:
    """The producer never waits; whatever the consumer gets is an in-order run of the
    sequence, and written == read + overwritten + available at the end."""
    total = 600_000
    ring = SampleRing(700, "overwrite")
    done = threading.Event()
    errors: list[BaseException] = []

    def produce() -> None:
        try:
            rng = np.random.default_rng(3)
            position = 0
            while position < total:
                count = min(int(rng.integers(1, 2 * FRAME)), total - position)
                assert ring.push(sequence(position, count)) == count
                position += count
                time.sleep(0)  # let the consumer in, so that it both reads and is lapped
        except BaseException as error:  # surfaced by the main thread
            errors.append(error)
        finally:
            done.set()

    producer = threading.Thread(target=produce)
    producer.start()
    rng = np.random.default_rng(4)
    previous_last: int | None = None
    while not (done.is_set() and ring.available == 0):
        if rng.integers(0, 8) == 0:
            assert is_run(ring.peek_last(int(rng.integers(1, 1000))))
        if rng.integers(0, 50) == 0:
            time.sleep(0.001)  # fall behind now and then: the producer laps us
        chunk = ring.pop(int(rng.integers(1, 2 * FRAME)))
        assert is_run(chunk)
        if len(chunk) and previous_last is not None:
            # Only forwards: a sample is never returned twice or out of order.
            assert (int(chunk[0]) - previous_last) % 65536 != 0
        if len(chunk):
            previous_last = int(chunk[-1])
    producer.join()
    assert not errors
    stats = ring.stats()
    assert stats.written == total
    assert stats.read + stats.overwritten + stats.available == total
    assert previous_last == int(sequence(total - 1, 1)[0])
    assert stats.overwritten > 0, "the producer never lapped the consumer"
    assert stats.read > total // 50, "the consumer hardly read: the test exercised little"


def test_two_producers_are_serialised_not_undefined() -> None:
    """Misuse (two producer threads) is serialised by the binding: every push lands whole."""
    pushes, chunk = 300, 50
    ring = SampleRing(2 * pushes * chunk, "reject")

    def produce(value: int) -> None:
        block = np.full(chunk, value, dtype=np.int16)
        for _ in range(pushes):
            assert ring.push(block) == chunk

    threads = [threading.Thread(target=produce, args=(value,)) for value in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    received = ring.pop(2 * pushes * chunk).reshape(-1, chunk)
    assert len(received) == 2 * pushes
    assert np.all(received == received[:, :1])  # every block intact
    assert sorted(np.bincount(received[:, 0])[1:].tolist()) == [pushes, pushes]


# --- against a reference model -------------------------------------------------------------


class ModelRing:
    """The ring's documented single-thread semantics, written plainly in Python."""

    def __init__(self, capacity: int, policy: str) -> None:
        self.capacity, self.policy = capacity, policy
        self.history: list[int] = []  # every sample ever accepted, by position
        self.read_pos = 0
        self.counts = dict.fromkeys(
            ["read", "overwritten", "rejected", "underflows", "underflow_samples", "cleared"], 0
        )

    def _step_over_lapped(self) -> None:
        oldest = max(self.read_pos, len(self.history) - self.capacity)
        self.counts["overwritten"] += oldest - self.read_pos
        self.read_pos = oldest

    def push(self, samples: list[int]) -> int:
        accepted = len(samples)
        if self.policy == "reject":
            accepted = min(accepted, self.capacity - (len(self.history) - self.read_pos))
            self.counts["rejected"] += len(samples) - accepted
        self.history += samples[:accepted]
        return accepted

    def pop(self, n: int) -> list[int]:
        self._step_over_lapped()
        available = len(self.history) - self.read_pos
        if available < n:
            self.counts["underflows"] += 1
            self.counts["underflow_samples"] += n - available
        out = self.history[self.read_pos : self.read_pos + min(n, available)]
        self.read_pos += len(out)
        self.counts["read"] += len(out)
        return out

    def peek_last(self, n: int) -> list[int]:
        count = min(n, len(self.history), self.capacity)
        return self.history[len(self.history) - count :]

    def clear(self) -> int:
        self._step_over_lapped()
        cleared = len(self.history) - self.read_pos
        self.read_pos = len(self.history)
        self.counts["cleared"] += cleared
        return cleared

    def stats(self) -> dict[str, int]:
        written = len(self.history)
        lapped = max(0, written - self.capacity - self.read_pos)
        return {
            **self.counts,
            "overwritten": self.counts["overwritten"] + lapped,
            "written": written,
            "available": min(written - self.read_pos, self.capacity),
            "capacity": self.capacity,
        }


operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), st.integers(0, 40)),
        st.tuples(st.just("pop"), st.integers(0, 40)),
        st.tuples(st.just("peek_last"), st.integers(0, 40)),
        st.tuples(st.just("clear"), st.just(0)),
    ),
    max_size=60,
)


@given(
    capacity=st.integers(1, 24),
    policy=st.sampled_from(["overwrite", "reject"]),
    ops=operations,
)
def test_matches_the_reference_model(capacity: int, policy: Any, ops: list[Any]) -> None:
    ring, model = SampleRing(capacity, policy), ModelRing(capacity, policy)
    position = 0
    for name, size in ops:
        if name == "push":
            samples = sequence(position, size)
            assert ring.push(samples) == model.push(samples.tolist())
            position += size
        elif name == "clear":
            assert ring.clear() == model.clear()
        else:
            assert getattr(ring, name)(size).tolist() == getattr(model, name)(size)
        stats = ring.stats()
        assert {key: getattr(stats, key) for key in model.stats()} == model.stats()
