"""The benchmarks' synthesized sounds (``harness.speech``): a cough is as long and as loud as
asked and has no speech band below 200 Hz; espeak-ng speech is trimmed to the voice."""

from __future__ import annotations

import numpy as np
import pytest

from harness.speech import RATE, cough, espeak_speech


@pytest.mark.parametrize("duration_ms", [150, 300])
def test_a_cough_has_its_duration_peak_band_and_decay(duration_ms: int) -> None:
    burst = cough(duration_ms, peak_dbfs=-12.0, seed=3)
    assert burst.size == duration_ms * RATE // 1000
    assert np.abs(burst.astype(np.int32)).max() == round(32767 * 10 ** (-12 / 20))
    spectrum = np.abs(np.fft.rfft(burst.astype(np.float64))) ** 2
    freqs = np.fft.rfftfreq(burst.size, 1 / RATE)
    assert spectrum[freqs < 150].sum() < 1e-3 * spectrum.sum()
    tenth = burst.size // 10
    first, last = burst[:tenth].astype(np.float64), burst[-tenth:].astype(np.float64)
    assert np.sqrt(np.mean(last**2)) < 0.2 * np.sqrt(np.mean(first**2))


def test_espeak_speech_starts_and_ends_with_the_voice() -> None:
    said = espeak_speech("yeah", "en-us+f3", rate_wpm=220)
    assert 0.2 * RATE < said.size < 0.6 * RATE
    assert abs(int(said[0])) >= 64
    assert abs(int(said[-1])) >= 64
    assert said.dtype == np.int16
