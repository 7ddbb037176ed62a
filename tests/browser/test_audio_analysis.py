"""The browser tests' measuring tools, checked on signals with known answers (no browser)."""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np
import pytest

from harness.speech import Utterance

from .audio_analysis import (
    Gap,
    Int16Array,
    MicScript,
    align_reply,
    locate,
    onset,
    resample,
    to_int16,
)

RATE = 44_100


def _voice(seconds: float, seed: int = 0) -> Int16Array:
    """Noise-like 'speech' with no zero samples, so every sample is recognisable."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    return np.asarray(rng.integers(1000, 8000, n) * rng.choice([-1, 1], n), dtype=np.int16)


def _reply_with_pauses() -> np.ndarray:
    """A reply whose own audio contains exact-zero pauses (as TTS audio between words)."""
    pause = np.zeros(round(0.08 * RATE), dtype=np.int16)
    return np.concatenate(
        [np.zeros(300, np.int16), _voice(0.3, 1), pause, _voice(0.2, 2), pause, _voice(0.25, 3)]
    )


def test_a_perfect_playback_has_no_gap_even_across_the_replys_own_pauses() -> None:
    reply = _reply_with_pauses()
    output = np.concatenate([np.zeros(5000, np.int16), reply, np.zeros(9000, np.int16)])
    playback = align_reply(output, reply, RATE)
    assert playback.found
    assert playback.complete
    assert playback.mismatch == -1
    assert playback.gaps == ()
    assert playback.first == 5000 + 300
    assert playback.end == 5000 + len(reply)


@pytest.mark.parametrize("length", [128, 441, 5000])
def test_inserted_silence_is_found_with_its_position_and_length(length: int) -> None:
    reply = _reply_with_pauses()
    cut = 300 + round(0.1 * RATE)
    output = np.concatenate(
        [np.zeros(1000, np.int16), reply[:cut], np.zeros(length, np.int16), reply[cut:]]
    )
    playback = align_reply(output, reply, RATE)
    assert playback.gaps == (Gap(1000 + cut, length),)
    assert playback.complete
    assert playback.inserted_ms == pytest.approx(length * 1000 / RATE)
    assert len(playback.audible_gaps) == (1 if length >= 441 else 0)


def test_silence_inserted_inside_the_replys_own_pause_counts_too() -> None:
    reply = _reply_with_pauses()
    pause_start = 300 + round(0.3 * RATE)  # first sample of the reply's first pause
    inside = pause_start + 100
    output = np.concatenate([reply[:inside], np.zeros(256, np.int16), reply[inside:]])
    playback = align_reply(output, reply, RATE)
    assert [g.length for g in playback.gaps] == [256]
    assert playback.complete


def test_a_reply_cut_by_clear_ends_where_the_output_stopped() -> None:
    reply = _reply_with_pauses()
    cut = 300 + round(0.2 * RATE)
    after = _voice(0.2, 9)  # the next reply, different audio
    output = np.concatenate([reply[:cut], np.zeros(RATE, np.int16), after])
    playback = align_reply(output, reply, RATE)
    assert playback.end == cut
    assert playback.played == cut
    assert not playback.complete
    assert playback.gaps == ()


FADE = 220  # 5 ms at 44.1 kHz, as the player's default


def _faded(samples: Int16Array, gains: np.ndarray) -> Int16Array:
    """``samples`` times ``gains`` as the web player plays them (float32, then back to
    int16 as the page's recording is read)."""
    played = (samples.astype(np.float64) / 32768 * gains).astype(np.float32)
    return to_int16(played)


def _paused(reply: Int16Array, at: int, hold: int, fade_out: int = FADE - 1) -> Int16Array:
    """``reply`` as the player plays it when a pause reaches it at ``reply[at]``: ``fade_out``
    samples one step quieter each (``FADE - 1``, or fewer when the ring ran dry), ``hold``
    samples of silence, then a fade-in from the exact next sample (a resume)."""
    down = (FADE - 1 - np.arange(fade_out)) / FADE
    up = (np.arange(FADE) + 1) / FADE
    back = at + fade_out
    return np.concatenate(
        [
            reply[:at],
            _faded(reply[at:back], down),
            np.zeros(hold, np.int16),
            _faded(reply[back : back + FADE], up),
            reply[back + FADE :],
        ]
    )


def test_a_pause_resumed_is_a_hold_with_every_sample_played() -> None:
    reply = _reply_with_pauses()
    at = 300 + round(0.1 * RATE)
    output = np.concatenate([np.zeros(1000, np.int16), _paused(reply, at, hold=9000)])
    playback = align_reply(output, reply, RATE)
    assert playback.holds == (Gap(1000 + at + FADE - 1, 9000),)
    assert playback.gaps == ()
    assert playback.mismatch == -1
    assert playback.complete
    assert not playback.faded_out
    assert playback.summary()["held_ms"] == [round(9000 * 1000 / RATE, 1)]


def test_a_fade_out_cut_short_by_a_dry_ring_is_still_a_hold() -> None:
    reply = _reply_with_pauses()
    at = 300 + round(0.05 * RATE)
    playback = align_reply(_paused(reply, at, hold=3000, fade_out=50), reply, RATE)
    assert playback.holds == (Gap(at + 50, 3000),)
    assert playback.gaps == ()
    assert playback.complete


def test_a_pause_then_clear_ends_the_reply_after_its_fade_out() -> None:
    reply = _reply_with_pauses()
    at = 300 + round(0.2 * RATE)
    paused = _paused(reply, at, hold=RATE)[: at + FADE - 1 + RATE]  # never resumed
    output = np.concatenate([paused, _voice(0.2, 9)])  # then the next reply
    playback = align_reply(output, reply, RATE)
    assert playback.faded_out
    assert playback.end == at + FADE - 1, "the first silent sample"
    assert playback.played == at + FADE - 1
    assert playback.mismatch == -1
    assert playback.gaps == ()
    assert playback.holds == ()
    assert not playback.complete


def test_a_pause_in_the_replys_own_silence_is_a_hold_when_the_page_reported_it() -> None:
    reply = _reply_with_pauses()
    pause_start = 300 + round(0.3 * RATE)  # the reply's first pause (80 ms of zeros)
    # Paused 20 ms into it, resumed 100 ms later: the fade-in ends inside the zeros, so the
    # output shows only silence inserted into silence.
    at = pause_start + round(0.02 * RATE)
    output = _paused(reply, at, hold=round(0.1 * RATE))
    silent_at = at + FADE - 1
    resumed_at = silent_at + round(0.1 * RATE)
    unknown = align_reply(output, reply, RATE)
    assert len(unknown.gaps) == 1, "no fade to recognise it by"
    assert unknown.holds == ()
    known = align_reply(output, reply, RATE, pauses=((silent_at, resumed_at),))
    assert known.gaps == ()
    assert len(known.holds) == 1
    assert known.complete


def test_a_resume_whose_fade_in_overlaps_the_voice_is_a_hold() -> None:
    reply = _reply_with_pauses()
    voice_back = 300 + round(0.3 * RATE) + round(0.08 * RATE)  # after the reply's first pause
    # The fade-out falls in the reply's silence (nothing to see), the fade-in's last 120
    # samples on the voice.
    at = voice_back - (FADE - 1) - 100
    output = _paused(reply, at, hold=5000)
    playback = align_reply(output, reply, RATE)
    assert playback.gaps == ()
    assert len(playback.holds) == 1
    assert playback.complete
    assert playback.mismatch == -1


def test_a_changed_sample_is_a_mismatch_not_a_gap() -> None:
    reply = _reply_with_pauses()
    output = reply.copy()
    output[2000] = 17
    playback = align_reply(output, reply, RATE)
    assert playback.mismatch == 2000
    assert playback.summary()["sample_exact"] is False


def test_a_reply_absent_from_the_recording_is_not_found() -> None:
    playback = align_reply(np.zeros(RATE, np.int16), _reply_with_pauses(), RATE)
    assert not playback.found
    assert playback.played == 0


def test_to_int16_inverts_the_players_conversion() -> None:
    values = np.array([-32768, -1, 0, 1, 12345, 32767], dtype=np.int16)
    assert np.array_equal(to_int16((values / 32768).astype(np.float32)), values)


def test_onset_finds_the_first_sustained_loud_window() -> None:
    click = np.full(80, 8000, np.int16)  # 5 ms: a click before the speech
    x = np.concatenate(
        [np.zeros(400, np.int16), click, np.zeros(520, np.int16), np.full(1000, 3000, np.int16)]
    )
    at = onset(x, 16_000)
    assert at is not None
    assert 920 <= at <= 1000
    assert onset(np.zeros(1000, np.int16), 16_000) is None
    assert onset(x, 16_000, start=1200) == 1200


def test_mic_script_places_speech_and_writes_a_wav(tmp_path: Path) -> None:
    speech = np.concatenate([np.zeros(800, np.int16), np.full(1600, 4000, np.int16)])
    spoken = Utterance("u", speech, 16_000, "hello")
    script = MicScript(48_000).silence(0.5).speech(spoken).silence(0.25)
    (segment,) = script.segments
    assert segment.start == 24_000
    assert segment.onset - segment.start == pytest.approx(2400, abs=300)  # 800 samples at 16 kHz
    assert script.seconds == pytest.approx(0.5 + 0.15 + 0.25, abs=0.01)
    with wave.open(str(script.write(tmp_path / "mic.wav")), "rb") as wav:
        assert wav.getframerate() == 48_000
        assert wav.getnframes() == len(script.samples)


def test_locate_finds_speech_through_gain_noise_and_a_rate_change() -> None:
    rng = np.random.default_rng(5)
    reference = _voice(0.5, 7)  # taken as 48 kHz audio
    at = 12_345
    recorded = rng.normal(0, 0.01, RATE * 2)
    shifted = reference[::-1][: round(0.5 * RATE)]  # unrelated audio elsewhere
    recorded[30_000 : 30_000 + len(shifted)] += shifted / 32768
    moved = resample(reference, 48_000, RATE).astype(np.float64) / 32768 * 0.3
    recorded[at : at + len(moved)] += moved
    assert locate(reference, recorded, 48_000, RATE) == at
