"""The load generator (``harness.loadgen``): the mic audio of its clients, and short runs
of real clients against ``python -m harness.serve --providers scripted`` in a subprocess,
with one worker and with ``--workers 2``."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np

from harness.launcher import ServerProcess
from harness.loadgen import (
    LoadConfig,
    largest_ok,
    run_clients,
    run_step,
)
from harness.speech import mic_clips


def test_mic_audio_is_real_speech_or_says_it_is_synthetic(tmp_path: Path) -> None:
    clips, source = mic_clips(tmp_path)  # an empty folder
    assert source == "synthetic"
    assert clips[0].dtype == np.int16
    assert int(np.abs(clips[0]).max()) > 2000  # loud enough for the energy VAD


def test_clients_speak_and_hear_the_scripted_server(speech_dir: Path) -> None:
    with ServerProcess(["--providers", "scripted", "--max-sessions", "5"]) as server:
        cfg = LoadConfig(
            url=server.ws_url, clients=3, duration_s=9.0, connect_spread_s=0.2, pause_s=2.0
        )
        usage: dict[str, float] = {}
        clients = run_clients(cfg, processes=2, usage=usage)
        assert server.cpu_seconds() > 0
        assert server.rss_kb() > 10 * 1024
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


def test_a_two_worker_server_is_measured_whole() -> None:
    args = ["--providers", "scripted", "--workers", "2", "--max-sessions", "4"]
    with ServerProcess(args) as server:
        pids = server.processes()
        leader = Path(f"/proc/{server.pid}/stat").read_text().rsplit(")", 1)[1].split()
        status = Path(f"/proc/{server.pid}/status").read_text()
        leader_rss_kb = int(status.split("VmRSS:")[1].split()[0])
        assert len(pids) == 3  # the supervisor and its two workers
        # The workers' CPU (each imported voicecore) and memory are counted with the
        # supervisor's.
        leader_cpu_s = (int(leader[11]) + int(leader[12])) / os.sysconf("SC_CLK_TCK")
        assert server.cpu_seconds() > leader_cpu_s
        assert server.rss_kb() > leader_rss_kb + 2 * 10 * 1024


def test_a_step_against_two_workers_counts_both(speech_dir: Path) -> None:
    result = run_step(
        "scripted", 4, duration_s=5.0, pause_s=2.0, speech_dir=speech_dir, pinned=False, workers=2
    )
    # Every client admitted: the workers got the flags (--providers scripted, --max-sessions),
    # not the defaults (the offline pipeline, a capacity measured at start-up).
    assert result.connected == 4
    assert result.failed == 0
    assert result.workers == 2
    assert result.server_cores == len(os.sched_getaffinity(0))
    assert len(result.worker_sessions) == 2
    assert sum(result.worker_sessions) == 4
    assert result.server_cpu_pct > 0
    # The machine's busy CPU counts the server's too (a few points of tick rounding).
    assert result.machine_cpu_pct >= result.server_cpu_pct - 5
    assert result.frames > 0
