"""The soak harness's arithmetic and parsing (``harness.soak``); the harness itself
runs in ``benches/system/bench_soak.py``."""

from __future__ import annotations

import numpy as np
import pytest

from harness.launcher import ServerProcess
from harness.soak import (
    GcSample,
    Sample,
    _Counters,
    growth_per_1000_turns,
    main,
    parse_prometheus,
    run_soak,
)
from harness.soak import _result as soak_result


def test_growth_is_the_slope_per_1000_turns() -> None:
    turns = list(range(0, 5000, 100))
    rss_mb = [80.0 + 0.002 * t for t in turns]  # 2 MB per 1,000 turns
    assert growth_per_1000_turns(turns, rss_mb) == pytest.approx(2.0)
    assert growth_per_1000_turns([5, 5, 5], [1.0, 2.0, 3.0]) == 0.0  # no turns: no rate
    assert growth_per_1000_turns([1], [1.0]) == 0.0


def test_descriptors_of_open_connections_are_not_growth() -> None:
    rng = np.random.default_rng(0)
    turns = np.arange(0, 3000, 10)
    connections = rng.integers(4, 9, turns.size)  # 2 descriptors each, coming and going
    fds = 12 + 2 * connections
    plain = growth_per_1000_turns(list(turns), list(fds.astype(float)))
    joint = growth_per_1000_turns(
        list(turns), list(fds.astype(float)), list(connections.astype(float))
    )
    assert joint == pytest.approx(0.0, abs=1e-9)
    assert plain != pytest.approx(0.0, abs=1e-9)  # the noise the covariate removes


def test_parse_prometheus_reads_names_labels_and_values() -> None:
    text = "\n".join(
        [
            "# HELP voicecore_gc_collections_total Garbage collections by generation.",
            "# TYPE voicecore_gc_collections_total counter",
            'voicecore_gc_collections_total{generation="0"} 120',
            'voicecore_gc_collections_total{generation="2"} 3',
            "voicecore_gc_collected_objects_total 4.5e3",
            'voicecore_edge_events_total{session="a b",edge="x\\"y"} 7',
            "not a sample line at all",
            "voicecore_bad_value{} NaNish",
        ]
    )
    samples = parse_prometheus(text)
    assert samples[("voicecore_gc_collections_total", frozenset({("generation", "0")}))] == 120
    assert samples[("voicecore_gc_collections_total", frozenset({("generation", "2")}))] == 3
    assert samples[("voicecore_gc_collected_objects_total", frozenset())] == 4500
    key = ("voicecore_edge_events_total", frozenset({("session", "a b"), ("edge", 'x\\"y')}))
    assert samples[key] == 7
    assert len(samples) == 4


def _samples(rss_mb_per_1000: float) -> list[Sample]:
    samples = [
        Sample(
            elapsed_s=t,
            turns=20 * t,
            rss_kb=int((60 + rss_mb_per_1000 * 20 * t / 1000) * 1e6 / 1024),
            fds=12 + 2 * 8,
            connections=8,
        )
        for t in range(100)
    ]
    samples.append(Sample(100.5, 2000, samples[-1].rss_kb, 12, 0))  # every client gone
    return samples


def test_result_fits_after_warm_up_and_counts_collector_work() -> None:
    server = ServerProcess()  # never started: the result only reads its exit code
    samples = _samples(rss_mb_per_1000=0.5)
    # 300 objects freed by the collector per turn, 1 full collection every 25 s.
    gc_samples = [
        GcSample(float(t), 20 * t, 300 * 20 * t, (t, t // 10, t // 25)) for t in range(0, 100, 5)
    ]
    counters = _Counters(turns=2000)
    result = soak_result(server, counters, samples, gc_samples, 8, 100.5, 0.5)
    assert result.rss_growth_mb_per_1000_turns == pytest.approx(0.5, abs=0.01)
    assert result.fd_growth_per_1000_turns == pytest.approx(0.0, abs=1e-6)
    assert result.gc_collected_per_turn == pytest.approx(300.0)
    assert result.gc_full_collections == 3  # between the first and the last scrape
    assert result.target_met
    assert "samples" not in result.summary()
    assert "gc_samples" not in result.summary()
    late = soak_result(server, counters, samples, gc_samples, 8, 100.5, 0.8)
    assert late.rss_warm_mb > result.rss_warm_mb  # a longer warm-up starts the fit later
    leaking = soak_result(server, counters, _samples(2.0), [], 8, 100.5, 0.5)
    assert leaking.rss_growth_mb_per_1000_turns == pytest.approx(2.0, abs=0.01)
    assert not leaking.target_met
    assert leaking.gc_collected_per_turn is None  # no /metrics scrapes: unknown


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="warmup_fraction"):
        run_soak(warmup_fraction=0.95)
    with pytest.raises(ValueError, match="barge_in_ratio"):
        run_soak(barge_in_ratio=1.5)
    with pytest.raises(ValueError, match="metrics_interval_s"):
        run_soak(metrics_interval_s=0)
    with pytest.raises(SystemExit):
        main(["--server-env", "NO_EQUALS_SIGN"])


def test_server_env_adds_to_the_inherited_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOICECORE_SOAK_TEST", "inherited")
    server = ServerProcess(env={"MALLOC_ARENA_MAX": "2"})
    assert server.env["MALLOC_ARENA_MAX"] == "2"
    assert server.env["VOICECORE_SOAK_TEST"] == "inherited"
