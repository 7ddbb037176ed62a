"""The speakerphone client of the turn-taking benchmark (``harness.speakerphone``): the echo's
delay and gain are exact on a known signal, and the player pauses, resumes, clears and starts
like the page's."""

from __future__ import annotations

import numpy as np
import pytest

from harness.speakerphone import Speakerphone

RATE = 16000
FRAME = 320  # 20 ms


def ramp(n: int, start: int = 1) -> np.ndarray:
    """A known signal: ``start, start + 1, ...`` (every sample distinct)."""
    return np.arange(start, start + n, dtype=np.int16)


def mic_run(phone: Speakerphone, frames: int) -> np.ndarray:
    """What a silent user's mic sends for ``frames`` frames: the echo alone."""
    return np.concatenate(
        [phone.mix(np.zeros(FRAME, dtype=np.int16), k * FRAME) for k in range(frames)]
    )


def test_the_echo_is_the_played_audio_delayed_and_scaled_exactly() -> None:
    phone = Speakerphone(RATE, origin=10.0, delay_ms=80, gain_db=-10)
    signal = ramp(3 * FRAME, start=1000)
    arrival = 10.0 + 0.1  # sample 1600: three frames at once, above the 40 ms threshold
    for k in range(3):
        phone.frame(arrival, signal[k * FRAME : (k + 1) * FRAME].tobytes())
    heard = mic_run(phone, 20)  # 400 ms
    delay = 80 * RATE // 1000
    expected = np.zeros(heard.size)
    expected[1600 + delay : 1600 + delay + signal.size] = signal * 10 ** (-10 / 20)
    np.testing.assert_array_equal(heard, np.round(expected).astype(np.int16))
    assert phone.played[1600 : 1600 + signal.size].tolist() == signal.tolist()


def test_the_user_is_mixed_with_the_echo_and_clipped() -> None:
    phone = Speakerphone(RATE, origin=0.0, delay_ms=0, gain_db=0)
    loud = np.full(3 * FRAME, 30000, dtype=np.int16)
    phone.frame(0.0, loud.tobytes())
    user = np.full(FRAME, 10000, dtype=np.int16)
    assert phone.mix(user, 0).tolist() == [32767] * FRAME
    assert phone.mix(-user, FRAME).tolist() == [20000] * FRAME


def test_a_reply_waits_for_its_start_threshold() -> None:
    phone = Speakerphone(RATE, origin=0.0, delay_ms=0, gain_db=0, start_ms=40)
    phone.frame(0.0, ramp(FRAME).tobytes())  # 20 ms: below the threshold
    phone.frame(0.03, ramp(FRAME, start=2000).tobytes())  # 40 ms buffered: starts at 0.03
    played = mic_run(phone, 5)
    assert not played[:480].any()
    assert played[480 : 480 + FRAME].tolist() == ramp(FRAME).tolist()
    # One frame alone starts after waiting the threshold's duration.
    alone = Speakerphone(RATE, origin=0.0, delay_ms=0, gain_db=0, start_ms=40)
    alone.frame(0.0, ramp(FRAME).tobytes())
    assert mic_run(alone, 4)[640:960].tolist() == ramp(FRAME).tolist()


def test_pause_holds_every_sample_and_resume_goes_on_from_it() -> None:
    phone = Speakerphone(RATE, origin=0.0, delay_ms=0, gain_db=0)
    signal = ramp(10 * FRAME)
    for k in range(10):
        phone.frame(0.0, signal[k * FRAME : (k + 1) * FRAME].tobytes())
    phone.pause(0.05)  # 800 samples played
    assert phone.buffered_ms == pytest.approx(150.0)
    phone.resume(0.15)
    played = mic_run(phone, 15)
    assert played[:800].tolist() == signal[:800].tolist()
    assert not played[800:2400].any()  # silent while paused
    assert played[2400:4000].tolist() == signal[800:2400].tolist()
    assert phone.pauses == 1


def test_clear_drops_the_buffer_and_ends_a_pause() -> None:
    phone = Speakerphone(RATE, origin=0.0, delay_ms=0, gain_db=0)
    for _ in range(10):
        phone.frame(0.0, ramp(FRAME).tobytes())
    phone.pause(0.02)
    phone.clear(0.04)
    assert phone.buffered_ms == 0.0
    assert not phone.paused
    assert not mic_run(phone, 10)[FRAME:].any()
    # The next reply starts afresh (its own threshold).
    phone.frame(0.2, ramp(FRAME, start=5).tobytes())
    assert mic_run(phone, 20)[3200 + 640 : 3200 + 960].tolist() == ramp(FRAME, start=5).tolist()


def test_agent_done_ends_the_reply_when_it_has_played() -> None:
    phone = Speakerphone(RATE, origin=0.0, delay_ms=0, gain_db=0)
    phone.frame(0.0, ramp(FRAME).tobytes())
    phone.done(0.001)  # the whole reply is there: it plays without waiting
    played = mic_run(phone, 3)
    assert played[16 : 16 + FRAME].tolist() == ramp(FRAME).tolist()
    assert phone.buffered_ms == 0.0
    assert "idle" in repr(phone)


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="rate"):
        Speakerphone(0, origin=0.0, delay_ms=0)
    with pytest.raises(ValueError, match="delay_ms"):
        Speakerphone(RATE, origin=0.0, delay_ms=-1)
