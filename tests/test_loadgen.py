"""The load generator (``harness.loadgen``): its player model on scripted event
sequences, and a short run of real clients against ``voicecore serve --providers scripted``
in a subprocess."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from harness.loadgen import (
    LoadConfig,
    PlayoutModel,
    ServerProcess,
    largest_ok,
    load_mic_audio,
    run_clients,
    run_step,
)


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


def test_mic_audio_is_real_speech_or_says_it_is_synthetic(tmp_path: Path) -> None:
    clips, source = load_mic_audio(tmp_path)  # an empty folder
    assert source == "synthetic"
    assert clips[0].dtype == np.int16
    assert int(np.abs(clips[0]).max()) > 2000  # loud enough for the energy VAD


def test_clients_speak_and_hear_the_scripted_server(speech_dir: Path) -> None:
    with ServerProcess("scripted", max_sessions=5, cpus=None) as server:
        cfg = LoadConfig(
            url=server.url, clients=3, duration_s=9.0, connect_spread_s=0.2, pause_s=2.0
        )
        usage: dict[str, float] = {}
        clients = run_clients(cfg, processes=2, usage=usage)
        assert server.cpu_seconds() > 0
        assert server.rss_mb() > 10
    assert [c.error for c in clients] == ["", "", ""]
    assert usage["cpu_s"] > 0  # the workers' own CPU time came back
    assert usage["wall_s"] >= 9.0
    assert all(c.connected and c.cushion_ms > 0 for c in clients)
    # Every client sent 20 ms mic frames on a real-time clock for 9 s.
    assert all(abs(len(c.mic_lateness_ms) - 450) <= 1 for c in clients)
    # The scripted agent answered and its audio was played out by the model.
    assert sum(c.frames for c in clients) > 50
    assert sum(c.turns for c in clients) >= 1
    assert all(x > -1000 for c in clients for x in c.lateness_ms)


def test_a_step_reports_server_figures(speech_dir: Path) -> None:
    result = run_step("scripted", 2, duration_s=5.0, pause_s=2.0, speech_dir=speech_dir)
    assert result.connected == 2
    assert result.failed == 0
    assert result.mic_frames >= 2 * 249
    assert result.mic_source.startswith("speech:")
    assert not math.isnan(result.server_cpu_pct)
    assert result.server_cpu_pct > 0
    assert result.client_cpu_pct > 0
    assert result.rss_mb > result.rss_idle_mb * 0.5
    assert largest_ok([]) == 0
