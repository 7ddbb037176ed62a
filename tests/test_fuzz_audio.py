"""Property-based fuzzing of the audio core's Python surface (issue 6): SampleRing and
Resampler with arbitrary chunkings, input representations and bad inputs.

tests/test_ring.py already checks SampleRing against a reference model with int16 pushes;
here the same samples go in as every accepted representation (bytes, bytearray, memoryview
at odd offsets, int16 and exactly representable float32 arrays) and out through every pop
method, and must give exactly what an int16-fed twin gives. The resampler is fed arbitrary
chunkings at arbitrary supported rate pairs. Arbitrary arrays (dtype, shape, strides) and
objects must either work or raise a voicecore exception. Rust-side properties are in
rust/core/tests/proptest_audio.rs.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from voicecore import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    Resampler,
    SampleRing,
    UnsupportedSampleRateError,
)
from voicecore.protocol import INPUT_RATES, OUTPUT_RATES

T = TypeVar("T")

FUZZ = settings(max_examples=80, deadline=None)

# Every rate a client may declare (the resampler sits between them and the engine's 16 kHz).
RATES = sorted({*INPUT_RATES, *OUTPUT_RATES, 16000})


def attempt(call: Callable[[], T]) -> T | Exception:
    """The call's result, or the exception it raised (checked by the caller: any type other
    than the expected ones fails the test with the exception shown)."""
    try:
        return call()
    except Exception as exc:
        return exc


def as_representation(samples: npt.NDArray[np.int16], kind: str) -> Any:
    """``samples`` in one of the representations SampleRing and Resampler accept."""
    if kind == "int16":
        return samples
    if kind == "float32":  # k / 32768 is exact in float32 and converts back to k
        return samples.astype(np.float32) / np.float32(32768)
    pcm = samples.astype("<i2").tobytes()
    if kind == "bytes":
        return pcm
    if kind == "bytearray":
        return bytearray(pcm)
    if kind == "memoryview_odd":  # PCM at an odd byte offset of a larger buffer
        return memoryview(b"\x00" + pcm)[1:]
    return memoryview(pcm)


REPRESENTATIONS = ["int16", "float32", "bytes", "bytearray", "memoryview", "memoryview_odd"]

ring_ops = st.lists(
    st.one_of(
        st.tuples(
            st.just("push"),
            st.lists(st.integers(-32768, 32767), max_size=50),
            st.sampled_from(REPRESENTATIONS),
        ),
        st.tuples(
            st.sampled_from(["pop", "pop_bytes", "pop_into", "peek_last", "peek_last_bytes"]),
            st.integers(0, 50),
            st.none(),
        ),
        st.tuples(st.just("clear"), st.just(0), st.none()),
    ),
    max_size=40,
)


@FUZZ
@given(st.integers(1, 40), st.sampled_from(["overwrite", "reject"]), ring_ops)
def test_ring_gives_the_same_samples_whatever_the_representation(
    capacity: int, policy: Any, ops: list[Any]
) -> None:
    ring, twin = SampleRing(capacity, policy), SampleRing(capacity, policy)
    for name, arg, kind in ops:
        if name == "push":
            samples = np.array(arg, dtype=np.int16)
            assert ring.push(as_representation(samples, kind)) == twin.push(samples)
        elif name == "clear":
            assert ring.clear() == twin.clear()
        elif name == "pop_into":
            out = np.full(arg, -1, dtype=np.int16)
            count = ring.pop_into(out)
            np.testing.assert_array_equal(out[:count], twin.pop(arg))
        elif name.endswith("_bytes"):
            expected = getattr(twin, name.removesuffix("_bytes"))(arg)
            assert getattr(ring, name)(arg) == expected.astype("<i2").tobytes()
        else:
            np.testing.assert_array_equal(getattr(ring, name)(arg), getattr(twin, name)(arg))
        assert ring.stats() == twin.stats()


def sample_count(output: bytes | npt.NDArray[Any]) -> int:
    """Samples in a resampler output (PCM16 bytes for bytes-like input, else an array)."""
    return len(output) // 2 if isinstance(output, bytes) else len(output)


def expected_total(in_rate: int, out_rate: int, samples: int) -> int:
    """Outputs after ``samples`` inputs: ceil(n * L / M) with L/M = out/in reduced."""
    common = math.gcd(in_rate, out_rate)
    up, down = out_rate // common, in_rate // common
    return -(-samples * up // down)


@FUZZ
@given(
    in_rate=st.sampled_from(RATES),
    out_rate=st.sampled_from(RATES),
    samples=st.lists(st.integers(-32768, 32767), max_size=2500),
    cuts=st.lists(st.integers(0, 2500), max_size=10),
    kind=st.sampled_from(["int16", "float32", "bytes", "memoryview_odd"]),
)
def test_resampler_any_chunking_same_output_and_length_rule(
    in_rate: int, out_rate: int, samples: list[int], cuts: list[int], kind: str
) -> None:
    signal = np.array(samples, dtype=np.int16)
    bounds = sorted({0, len(signal), *(min(cut, len(signal)) for cut in cuts)})
    resampler = Resampler(in_rate, out_rate)
    whole = resampler.process(as_representation(signal, kind))
    whole_tail = resampler.flush()
    produced = 0
    parts = []
    for start, end in itertools.pairwise(bounds):
        expected = resampler.output_len(end - start)
        part = resampler.process(as_representation(signal[start:end], kind))
        assert sample_count(part) == expected
        produced += expected
        parts.append(part)
        assert produced == expected_total(in_rate, out_rate, end)
    tail = resampler.flush()
    assert sample_count(tail) == resampler.latency
    if kind == "bytes" or kind == "memoryview_odd":
        assert b"".join(parts) == whole
        assert bytes(whole_tail) == bytes(tail)
    else:
        chunked = np.concatenate([*parts, tail]) if parts else tail
        np.testing.assert_array_equal(chunked, np.concatenate([whole, whole_tail]))


@settings(max_examples=60, deadline=None)
@given(
    in_rate=st.integers(-(2**31), 2**32 - 1) | st.integers(1000, 400_000),
    out_rate=st.sampled_from(RATES) | st.integers(-(2**31), 2**32 - 1),
)
def test_resampler_arbitrary_rates_work_or_are_refused(in_rate: int, out_rate: int) -> None:
    resampler = attempt(lambda: Resampler(in_rate, out_rate))
    if isinstance(resampler, Exception):
        assert isinstance(resampler, UnsupportedSampleRateError), f"unexpected {resampler!r}"
        assert f"{in_rate} Hz" in str(resampler) or f"{out_rate} Hz" in str(resampler)
        return
    assert 1000 <= in_rate <= 384_000
    assert 1000 <= out_rate <= 384_000
    out = resampler.process(np.full(500, 0.25, np.float32))
    assert len(out) == expected_total(in_rate, out_rate, 500)
    assert np.all(np.isfinite(out))


# --- bad inputs -----------------------------------------------------------------------------

NATIVE_DTYPES = [
    np.int8,
    np.uint8,
    np.int16,
    np.uint16,
    np.int32,
    np.int64,
    np.float16,
    np.float32,
    np.float64,
    np.complex64,
    np.bool_,
]


@st.composite
def arbitrary_arrays(draw: st.DrawFn) -> npt.NDArray[Any]:
    """Arrays of any native dtype and 0-3 dimensions, possibly strided, reversed, Fortran
    ordered or read-only."""
    dtype = draw(st.sampled_from(NATIVE_DTYPES))
    shape = draw(hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=6))
    array: npt.NDArray[Any] = draw(hnp.arrays(dtype, shape))
    if array.ndim >= 1 and draw(st.booleans()):
        array = array[:: draw(st.sampled_from([2, -1, -2, 3]))]
    if array.ndim >= 2 and draw(st.booleans()):
        array = np.asfortranarray(array)
    if draw(st.booleans()):
        array.flags.writeable = False
    return array


def accepted(array: npt.NDArray[Any]) -> bool:
    """What the binding documents as accepted: 1-D C-contiguous int16 or float32."""
    return (
        array.dtype in (np.dtype(np.int16), np.dtype(np.float32))
        and array.ndim == 1
        and array.flags.c_contiguous
    )


@settings(max_examples=150, deadline=None)
@given(arbitrary_arrays(), st.sampled_from(["ring", "resampler"]))
def test_arbitrary_arrays_work_or_raise_a_voicecore_error(
    array: npt.NDArray[Any], target: str
) -> None:
    call = SampleRing(64, "overwrite").push if target == "ring" else Resampler(48000, 16000).process
    outcome = attempt(lambda: call(array))
    if isinstance(outcome, Exception):
        assert isinstance(outcome, AudioTypeError | AudioFormatError), f"unexpected {outcome!r}"
        assert not accepted(array), f"refused an accepted array: {outcome}"
        assert str(outcome)
        return
    assert accepted(array), f"accepted {array.dtype} {array.shape} {array.strides}"


python_objects = st.one_of(
    st.none(),
    st.integers(),
    st.floats(),
    st.text(max_size=10),
    st.lists(st.integers(-5, 5), max_size=5),
    st.binary(max_size=21),
    st.builds(bytearray, st.binary(max_size=21)),
    st.tuples(st.integers()),
)


@settings(max_examples=100, deadline=None)
@given(python_objects, st.sampled_from(["push", "process"]))
def test_arbitrary_objects_work_or_raise_a_voicecore_error(obj: Any, method: str) -> None:
    target: Any = SampleRing(64, "reject") if method == "push" else Resampler(16000, 48000)
    outcome = attempt(lambda: getattr(target, method)(obj))
    if isinstance(outcome, Exception):
        assert isinstance(outcome, AudioTypeError | AudioFormatError), f"unexpected {outcome!r}"
        if isinstance(outcome, AudioFormatError):
            assert isinstance(obj, bytes | bytearray)
            assert len(obj) % 2 == 1
        return
    assert isinstance(obj, bytes | bytearray)
    assert len(obj) % 2 == 0


@settings(max_examples=60, deadline=None)
@given(
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from(["pop", "pop_bytes", "peek_last", "peek_last_bytes"]),
)
def test_any_count_in_range_works_or_is_a_config_error(count: int, method: str) -> None:
    ring = SampleRing(16, "overwrite")
    ring.push(np.arange(20, dtype=np.int16))
    out = attempt(lambda: getattr(ring, method)(count))
    if isinstance(out, Exception):
        assert isinstance(out, ConfigError), f"unexpected {out!r}"
        assert count < 0
        return
    assert len(out) // (2 if method.endswith("bytes") else 1) == min(count, 16)


@pytest.mark.parametrize("dtype", [">i2", ">f4"])
def test_big_endian_arrays_are_refused(dtype: str) -> None:
    """Found by this fuzzing: big-endian arrays used to be read with their bytes swapped."""
    array = np.array([0.25, -0.5] if dtype == ">f4" else [1, 2], dtype=dtype)
    with pytest.raises(AudioTypeError, match="big-endian"):
        SampleRing(8, "reject").push(array)
    with pytest.raises(AudioTypeError, match="big-endian"):
        Resampler(16000, 48000).process(array)
