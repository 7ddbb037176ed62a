"""The page's player of every benchmark client (``harness.player``) on scripted event
sequences."""

from __future__ import annotations

import pytest

from harness.player import PlayoutModel


def test_steady_frames_keep_the_cushion_and_count_no_underrun() -> None:
    player = PlayoutModel(cushion_ms=120.0, frame_ms=20.0)
    for _ in range(6):  # the server's burst fills the cushion
        player.frame(0.0)
    for k in range(1, 50):  # then one frame per 20 ms
        player.frame(k * 0.02)
    assert player.underruns == 0
    # Each paced frame arrives as the previous 20 ms played: 100 ms still ahead of it.
    assert player.lateness_ms[-1] == pytest.approx(20.0)
    assert max(player.lateness_ms) <= 120.0


def test_a_gap_inside_a_reply_is_an_underrun_of_its_length() -> None:
    player = PlayoutModel(cushion_ms=120.0, frame_ms=20.0)
    player.frame(0.0)
    player.frame(0.0)  # 40 ms buffered: playback starts, dry at 0.04 s
    player.frame(0.09)  # resumes 50 ms later
    assert player.underruns == 1
    assert player.underrun_ms == pytest.approx(50.0)
    assert player.lateness_ms == [pytest.approx(170.0)]  # cushion + gap
    assert player.gaps == [(2, pytest.approx(50.0))]


def test_a_reply_starts_after_its_start_threshold_like_the_page() -> None:
    player = PlayoutModel(cushion_ms=120.0, frame_ms=20.0, start_ms=40.0)
    player.frame(0.0)  # one frame: the player waits (up to 40 ms) for more
    player.frame(0.03)  # the second frame reaches the threshold: playback starts now
    player.advance(0.05)
    assert player.underruns == 0
    assert player.played_ms == pytest.approx(20.0)
    player.frame(0.2)  # long after both frames played out: a gap
    assert player.underruns == 1
    assert player.underrun_ms == pytest.approx(130.0)  # dry at 0.07 s


def test_running_dry_at_the_reply_end_is_not_an_underrun() -> None:
    player = PlayoutModel(cushion_ms=120.0, frame_ms=20.0)
    player.frame(0.0)
    player.frame(0.0)
    player.done(0.1)  # agent_done after the ring ran dry at 0.04 s: the reply ended
    player.frame(1.0)  # the next reply starts from idle
    player.advance(1.5)
    player.done(1.5)
    assert player.underruns == 0
    assert player.played_ms == pytest.approx(60.0)


def test_clear_drops_the_buffer_and_the_silence_after_it_is_idle() -> None:
    player = PlayoutModel(cushion_ms=120.0, frame_ms=20.0)
    for _ in range(6):
        player.frame(0.0)
    player.clear(0.05)
    assert player.buffered_ms == 0.0
    player.frame(0.5)  # the next reply
    assert player.underruns == 0
