"""Behaviour of ``voicecore.Resampler``: streaming exactness, timing, quality, types, errors."""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from itertools import product
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecore import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    Resampler,
    UnsupportedSampleRateError,
)

COMMON_RATES = [8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000]


def sine(rate: int, hz: float, seconds: float, amplitude: float = 0.5) -> npt.NDArray[np.float32]:
    t = np.arange(int(rate * seconds)) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def noise(n: int, seed: int) -> npt.NDArray[np.float32]:
    return np.random.default_rng(seed).uniform(-0.9, 0.9, n).astype(np.float32)


def run_stream(resampler: Resampler, audio: Any, sizes: list[int]) -> Any:
    """Feeds ``audio`` in chunks of ``sizes`` (cycled), flushes; returns the whole output."""
    parts = []
    start = 0
    i = 0
    while start < len(audio):
        size = sizes[i % len(sizes)]
        parts.append(resampler.process(audio[start : start + size]))
        start += size
        i += 1
    parts.append(resampler.flush())
    if isinstance(parts[0], bytes):
        return b"".join(parts)
    return np.concatenate(parts)


def ratio(in_rate: int, out_rate: int) -> tuple[int, int]:
    g = math.gcd(in_rate, out_rate)
    return out_rate // g, in_rate // g


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48000, 16000), (24000, 48000), (44100, 48000)])
def test_output_does_not_depend_on_chunking(in_rate: int, out_rate: int) -> None:
    signal = noise(in_rate // 2 + 17, seed=1)
    rng = np.random.default_rng(2)
    random_sizes = [0, 1, *rng.integers(0, 2000, 300).tolist()]
    resampler = Resampler(in_rate, out_rate)
    at_once = run_stream(resampler, signal, [len(signal)])
    in_20ms = run_stream(resampler, signal, [in_rate // 50])
    at_random = run_stream(resampler, signal, random_sizes)
    np.testing.assert_allclose(in_20ms, at_once, rtol=0, atol=1e-6)
    np.testing.assert_allclose(at_random, at_once, rtol=0, atol=1e-6)

    pcm = (signal * 32767).astype(np.int16)
    pcm_at_once = run_stream(resampler, pcm, [len(pcm)])
    np.testing.assert_array_equal(run_stream(resampler, pcm, random_sizes), pcm_at_once)
    assert run_stream(resampler, pcm.tobytes(), [2 * s for s in random_sizes]) == (
        pcm_at_once.tobytes()
    )


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(48000, 16000), (24000, 48000), (44100, 48000), (48000, 44100)]
)
@pytest.mark.parametrize("n", [0, 1, 2, 146, 147, 148, 960, 12345])
def test_stream_length_is_latency_plus_ceil_of_scaled_input(
    in_rate: int, out_rate: int, n: int
) -> None:
    up, down = ratio(in_rate, out_rate)
    resampler = Resampler(in_rate, out_rate)
    assert resampler.output_len(n) == -(-n * up // down)
    out = resampler.process(np.zeros(n, np.float32))
    assert len(out) == -(-n * up // down)
    assert len(resampler.flush()) == resampler.latency


def test_twenty_ms_in_gives_twenty_ms_out() -> None:
    down = Resampler(48000, 16000)
    up = Resampler(24000, 48000)
    for _ in range(5):
        assert len(down.process(np.zeros(960, np.float32))) == 320
        assert len(up.process(bytes(960))) == 1920  # 480 samples in, 960 out, as bytes


def snr_db(in_rate: int, out_rate: int, hz: float) -> float:
    """SNR of a resampled sine against the analytic sine, aligned by the latency."""
    resampler = Resampler(in_rate, out_rate)
    out = run_stream(resampler, sine(in_rate, hz, 1.0), [in_rate // 50])
    aligned = out[resampler.latency :].astype(np.float64)
    expected = 0.5 * np.sin(2 * np.pi * hz * np.arange(len(aligned)) / out_rate)
    margin = out_rate // 20  # the tone starts and stops abruptly, which rings
    signal = expected[margin:-margin]
    error = aligned[margin:-margin] - signal
    return float(10 * np.log10(np.sum(signal**2) / np.sum(error**2)))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(48000, 16000), (24000, 48000)])
def test_one_khz_sine_keeps_100_db_snr(in_rate: int, out_rate: int) -> None:
    assert snr_db(in_rate, out_rate, 1000.0) >= 100.0


def test_ten_khz_tone_is_attenuated_90_db_at_48k_to_16k() -> None:
    resampler = Resampler(48000, 16000)
    tone = sine(48000, 10000.0, 1.0)
    out = resampler.process(tone)[2 * resampler.latency :]
    rms_in = np.sqrt(np.mean(tone.astype(np.float64) ** 2))
    rms_out = np.sqrt(np.mean(out.astype(np.float64) ** 2))
    assert 20 * np.log10(rms_in / rms_out) >= 90.0


@pytest.mark.parametrize(("in_rate", "out_rate"), list(product(COMMON_RATES, COMMON_RATES)))
def test_every_common_pair_keeps_100_db_snr(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    assert (resampler.in_rate, resampler.out_rate) == (in_rate, out_rate)
    assert snr_db(in_rate, out_rate, 1000.0) >= 100.0


def test_output_type_mirrors_input_type() -> None:
    pcm = (sine(48000, 440.0, 0.1) * 32767).astype(np.int16)
    resampler = Resampler(48000, 16000)
    as_bytes = resampler.process(pcm.tobytes())
    assert isinstance(as_bytes, bytes)
    assert isinstance(resampler.flush(), bytes)
    for byte_like in (bytearray(pcm.tobytes()), memoryview(pcm.tobytes())):
        assert resampler.process(byte_like) == as_bytes
        resampler.reset()
    as_int16 = resampler.process(pcm)
    assert as_int16.dtype == np.int16
    assert resampler.flush().dtype == np.int16
    assert as_int16.tobytes() == as_bytes
    as_float = resampler.process(pcm.astype(np.float32) / 32768)
    assert as_float.dtype == np.float32
    assert resampler.flush().dtype == np.float32
    np.testing.assert_allclose(as_float * 32768, as_int16, atol=0.5 + 1e-3)


def test_flush_before_any_input_is_float32_silence() -> None:
    resampler = Resampler(24000, 48000)
    tail = resampler.flush()
    assert tail.dtype == np.float32
    assert len(tail) == resampler.latency
    assert not np.any(tail)


def test_int16_output_saturates_instead_of_wrapping() -> None:
    square = np.where((np.arange(4800) // 24) % 2 == 0, 32767, -32768).astype(np.int16)
    out = Resampler(48000, 16000).process(square)
    assert out.max() == 32767
    assert out.min() == -32768


def test_flush_and_reset_start_a_fresh_stream() -> None:
    signal = noise(5000, seed=3)
    resampler = Resampler(48000, 16000)
    first = run_stream(resampler, signal, [960])
    np.testing.assert_array_equal(run_stream(resampler, signal, [960]), first)
    resampler.process(noise(777, seed=4))
    resampler.reset()
    np.testing.assert_array_equal(run_stream(resampler, signal, [960]), first)


def test_output_is_aligned_after_dropping_the_latency() -> None:
    # An impulse at input sample 300 (48 kHz) must peak at output sample 100 (16 kHz).
    impulse = np.zeros(960, np.float32)
    impulse[300] = 1.0
    resampler = Resampler(48000, 16000)
    out = run_stream(resampler, impulse, [960])[resampler.latency :]
    assert int(np.argmax(out)) == 100


def test_repr_shows_rates_ratio_and_latency() -> None:
    text = repr(Resampler(44100, 48000))
    assert text.startswith("Resampler(in_rate=44100, out_rate=48000, ratio=160/147")
    assert "latency=" in text


@pytest.mark.parametrize(
    ("in_rate", "out_rate"),
    [(0, 16000), (16000, 0), (-16000, 8000), (999, 16000), (48000, 384001), (2**40, 16000)],
)
def test_unsupported_rates_raise_with_the_accepted_rates(in_rate: int, out_rate: int) -> None:
    with pytest.raises(UnsupportedSampleRateError, match="44100") as caught:
        Resampler(in_rate, out_rate)
    assert isinstance(caught.value, ConfigError)


def test_a_ratio_too_complex_to_tabulate_is_refused() -> None:
    with pytest.raises(UnsupportedSampleRateError, match="L/M"):
        Resampler(383999, 1024)


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(10, np.float64),
        np.zeros(10, np.int32),
        [0.0, 1.0],
        "pcm",
        memoryview(np.zeros(4, np.float64)),
    ],
)
def test_wrong_audio_types_raise_audio_type_error(audio: Any) -> None:
    with pytest.raises(AudioTypeError):
        Resampler(48000, 16000).process(audio)


@pytest.mark.parametrize(
    "audio",
    [
        b"\x00\x01\x02",
        np.zeros(20, np.float32)[::2],
        np.zeros(20, np.int16)[::2],
        np.zeros((2, 10), np.float32),
    ],
)
def test_bad_audio_layouts_raise_audio_format_error(audio: Any) -> None:
    with pytest.raises(AudioFormatError):
        Resampler(48000, 16000).process(audio)


def test_negative_output_len_raises_config_error() -> None:
    resampler = Resampler(48000, 16000)
    with pytest.raises(ConfigError, match="input_len"):
        resampler.output_len(-1)
    assert resampler.output_len(0) == 0


def test_bad_input_does_not_disturb_the_stream() -> None:
    signal = noise(3000, seed=5)
    clean = run_stream(Resampler(48000, 16000), signal, [960])
    resampler = Resampler(48000, 16000)
    parts = [resampler.process(signal[:960])]
    with pytest.raises(AudioFormatError):
        resampler.process(b"\x00")
    parts += [resampler.process(signal[960:]), resampler.flush()]
    np.testing.assert_array_equal(np.concatenate(parts), clean)


@settings(max_examples=60, deadline=None)
@given(
    sizes=st.lists(st.integers(min_value=0, max_value=700), min_size=1, max_size=40),
    pair=st.sampled_from([(48000, 16000), (24000, 48000), (44100, 48000), (8000, 22050)]),
)
def test_any_chunking_gives_identical_output(sizes: list[int], pair: tuple[int, int]) -> None:
    if not any(sizes):
        sizes = [*sizes, 1]
    signal = noise(3000, seed=6)
    resampler = Resampler(*pair)
    reference = run_stream(resampler, signal, [len(signal)])
    np.testing.assert_array_equal(run_stream(resampler, signal, sizes), reference)


def test_a_stream_may_mix_int16_and_float32_chunks() -> None:
    pcm = (noise(1920, seed=7) * 32767).astype(np.int16)
    as_float = pcm.astype(np.float32) / 32768
    resampler = Resampler(48000, 16000)
    reference = run_stream(resampler, as_float, [960])
    mixed = np.concatenate(
        [resampler.process(pcm[:960]) / 32768, resampler.process(as_float[960:])]
    )
    np.testing.assert_allclose(mixed, reference[: len(mixed)], rtol=0, atol=0.5 / 32768 + 1e-7)


def test_one_resampler_shared_by_threads_stays_consistent() -> None:
    # Calls are serialised by a lock taken without the GIL: every sample is counted once.
    resampler = Resampler(24000, 48000)
    chunk = noise(480, seed=8)
    with ThreadPoolExecutor(max_workers=4) as pool:
        lengths = list(pool.map(lambda _: len(resampler.process(chunk)), range(200)))
    assert sum(lengths) == 200 * 960
    assert resampler.output_len(480) == 960


@pytest.mark.parametrize("rate", [8000, 16000, 48000])
def test_equal_rates_pass_audio_through_delayed_by_the_latency(rate: int) -> None:
    pcm = (noise(1000, seed=10) * 32767).astype(np.int16)
    resampler = Resampler(rate, rate)
    out = run_stream(resampler, pcm, [rate // 50])
    np.testing.assert_array_equal(out[resampler.latency :], pcm)
    floats = noise(1000, seed=11)
    np.testing.assert_array_equal(run_stream(resampler, floats, [7])[resampler.latency :], floats)
