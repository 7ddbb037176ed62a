"""Turn and session metrics: the Python API, JSON events and the Prometheus exposition."""

from __future__ import annotations

import gc
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import voicecore
from voicecore.diagnostics import Diagnostics, Timeline
from voicecore.metrics import (
    LATENCY_BUCKETS_S,
    TURN_LATENCY_FIELDS,
    SessionMetrics,
    TurnMetrics,
    percentile,
    prometheus_text,
)


@dataclass(frozen=True)
class FakePacerStats:
    frames_released: int = 500
    underruns: int = 3
    dropped_samples: int = 4800
    lateness_p50_ms: float = 0.05
    lateness_p99_ms: float = 0.4
    lateness_max_ms: float = 1.5


def make_session(session_id: str = "s1") -> SessionMetrics:
    metrics = SessionMetrics(session_id)
    metrics.add_turn(
        TurnMetrics(
            turn_id=1,
            stt_final_ms=120.0,
            llm_first_token_ms=300.0,
            tts_first_audio_ms=90.0,
            voice_to_voice_ms=650.0,
            prompt_tokens=420,
        )
    )
    metrics.add_turn(
        TurnMetrics(
            turn_id=2,
            stt_final_ms=80.0,
            llm_first_token_ms=250.0,
            barge_in_ms=2.5,
            prompt_tokens=900,
            interrupted=True,
        )
    )
    return metrics


# --- Python API ------------------------------------------------------------------------------


def test_turn_defaults_and_to_dict() -> None:
    turn = TurnMetrics(turn_id=7)
    assert turn.to_dict() == {
        "turn_id": 7,
        "stt_final_ms": None,
        "llm_first_token_ms": None,
        "tts_first_audio_ms": None,
        "voice_to_voice_ms": None,
        "barge_in_ms": None,
        "prompt_tokens": None,
        "interrupted": False,
    }
    assert set(TURN_LATENCY_FIELDS) <= set(turn.to_dict())


def test_update_pacer_replaces_cumulative_counters() -> None:
    metrics = SessionMetrics("s1")
    metrics.update_pacer(FakePacerStats())
    metrics.update_pacer(FakePacerStats(underruns=5, dropped_samples=9600))
    assert metrics.starved_frames == 5  # a snapshot, not a sum
    assert metrics.drops == 9600
    assert metrics.frames_released == 500
    assert metrics.pacer_lateness_p99_ms == 0.4
    assert metrics.pacer_lateness_max_ms == 1.5


def test_update_pacer_from_a_real_pacer_on_the_virtual_clock() -> None:
    metrics = SessionMetrics("s1")
    with voicecore.FramePacer(frame_ms=20, clock="virtual") as pacer:
        stream = pacer.open_stream(16000, cushion_ms=40)
        stream.push(b"\x00\x00" * 1600)  # 100 ms
        pacer.advance(200)  # 100 ms of audio, then underruns while still playing
        metrics.update_pacer(stream.stats())
        assert metrics.frames_released == stream.stats().frames_released
        assert metrics.frames_released >= 5
        metrics.update_pacer(pacer.stats())
    assert metrics.pacer_lateness_p50_ms is not None
    assert metrics.pacer_lateness_max_ms is not None
    assert metrics.pacer_lateness_max_ms >= metrics.pacer_lateness_p50_ms >= 0.0


def test_count_accumulates_named_edge_counters() -> None:
    metrics = SessionMetrics("s1")
    metrics.count("dsp->stt.dropped")
    metrics.count("dsp->stt.dropped", 4)
    metrics.count("llm->chunker.rejected", 0)
    assert metrics.edge_counters == {"dsp->stt.dropped": 5, "llm->chunker.rejected": 0}


@pytest.mark.parametrize(("name", "n"), [("", 1), ("dsp->stt.dropped", -1)])
def test_count_rejects_bad_input(name: str, n: int) -> None:
    with pytest.raises(ValueError, match=r"counter|n must"):
        SessionMetrics("s1").count(name, n)


def test_constructor_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="session_id"):
        SessionMetrics("")


def test_latency_summary() -> None:
    summary = make_session().latency_summary()
    assert summary["stt_final_ms"] == {"count": 2, "p50": 100.0, "p99": 119.6, "max": 120.0}
    assert summary["voice_to_voice_ms"]["count"] == 1
    assert summary["barge_in_ms"]["max"] == 2.5
    assert summary["tts_first_audio_ms"]["p50"] == 90.0
    assert SessionMetrics("empty").latency_summary()["stt_final_ms"]["p50"] is None


def test_percentile() -> None:
    assert percentile([1.0], 99) == 1.0
    assert percentile([0.0, 10.0], 50) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 100) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 0) == 1.0
    with pytest.raises(ValueError, match="no values"):
        percentile([], 50)
    with pytest.raises(ValueError, match="outside"):
        percentile([1.0], 101)


# --- JSON ------------------------------------------------------------------------------------


def test_to_json_round_trips_through_json() -> None:
    metrics = make_session()
    metrics.update_pacer(FakePacerStats())
    metrics.count("dsp->stt.dropped", 2)
    data = json.loads(json.dumps(metrics.to_json()))
    assert data["session"] == "s1"
    assert data["turns"] == 2
    assert data["interrupted_turns"] == 1
    assert data["starved_frames"] == 3
    assert data["client_underruns"] == 0
    assert data["drops"] == 4800
    assert data["pacer_lateness_ms"] == {"p50": 0.05, "p99": 0.4, "max": 1.5}
    assert data["edges"] == {"dsp->stt.dropped": 2}
    assert [t["turn_id"] for t in data["turn_list"]] == [1, 2]
    assert data["turn_list"][1]["barge_in_ms"] == 2.5


def test_json_events_one_per_turn_then_a_summary() -> None:
    events = make_session().json_events()
    assert [e["type"] for e in events] == ["turn", "turn", "session_summary"]
    assert all(e["session"] == "s1" for e in events)
    assert events[0]["voice_to_voice_ms"] == 650.0
    assert events[1]["interrupted"] is True
    assert events[2]["turns"] == 2
    assert "turn_list" not in events[2]
    for event in events:
        assert json.loads(json.dumps(event)) == event


# --- Prometheus text exposition format 0.0.4 (written by prometheus_client) ----------------------

METRIC_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
HELP_RE = re.compile(rf"^# HELP ({METRIC_NAME}) (.*)$")
TYPE_RE = re.compile(rf"^# TYPE ({METRIC_NAME}) (counter|gauge|histogram|summary|untyped)$")
SAMPLE_RE = re.compile(rf"^({METRIC_NAME})(?:\{{(.*)\}})? (\S+)$")
LABEL_RE = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\\n]|\\[\\"n])*)"(,|$)')


def unescape(value: str) -> str:
    return re.sub(r"\\(.)", lambda m: {"n": "\n"}.get(m.group(1), m.group(1)), value)


def parse_labels(text: str) -> dict[str, str]:
    labels: dict[str, str] = {}
    position = 0
    while position < len(text):
        match = LABEL_RE.match(text, position)
        assert match, f"bad label set {text!r} at {position}"
        labels[match.group(1)] = unescape(match.group(2))
        position = match.end()
    return labels


@dataclass
class Family:
    kind: str
    help: str
    samples: list[tuple[str, dict[str, str], float]] = field(default_factory=list)


def parse_exposition(text: str) -> dict[str, Family]:
    """A strict little parser of format 0.0.4: HELP then TYPE once per family, before its
    samples, every sample belonging to the family declared last."""
    assert text.endswith("\n")
    families: dict[str, Family] = {}
    current: str | None = None
    pending_help: tuple[str, str] | None = None
    suffixes = {"histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}
    for line in text.splitlines():
        if m := HELP_RE.match(line):
            assert m.group(1) not in families, f"family {m.group(1)} declared twice"
            pending_help = (m.group(1), unescape(m.group(2)))
            continue
        if m := TYPE_RE.match(line):
            assert pending_help is not None
            assert pending_help[0] == m.group(1)
            families[m.group(1)] = Family(kind=m.group(2), help=pending_help[1])
            current, pending_help = m.group(1), None
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"not a sample line: {line!r}"
        assert current is not None
        name, labels, value = m.group(1), parse_labels(m.group(2) or ""), float(m.group(3))
        allowed = {current + s for s in suffixes.get(families[current].kind, ("",))}
        assert name in allowed, f"{name} under family {current}"
        families[current].samples.append((name, labels, value))
    return families


def check_histogram(family: Family, base: str) -> None:
    series: dict[tuple[tuple[str, str], ...], list[tuple[float, float]]] = {}
    sums: dict[tuple[tuple[str, str], ...], dict[str, float]] = {}
    for name, labels, value in family.samples:
        key = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        if name == base + "_bucket":
            series.setdefault(key, []).append((float(labels["le"]), value))
        else:
            sums.setdefault(key, {})[name] = value
    assert series
    for key, buckets in series.items():
        bounds = [b for b, _ in buckets]
        counts = [c for _, c in buckets]
        assert bounds == sorted(bounds)
        assert math.isinf(bounds[-1])
        assert counts == sorted(counts), "buckets are cumulative"
        assert counts[-1] == sums[key][base + "_count"]


def test_exposition_parses_back_and_has_the_right_values() -> None:
    s1 = make_session("s1")
    s1.update_pacer(FakePacerStats())
    s1.count("dsp->stt.dropped", 3)
    s1.count("overflow", 1)
    s2 = SessionMetrics("s2")
    s2.add_turn(TurnMetrics(turn_id=1, stt_final_ms=40.0, voice_to_voice_ms=480.0))
    s2.overruns = 2
    s2.client_underruns = 7
    families = parse_exposition(prometheus_text([s1, s2]))

    for name, family in families.items():
        assert family.help
        if family.kind == "counter":
            assert name.endswith("_total"), name
        if family.kind == "histogram":
            check_histogram(family, name)

    assert families["voicecore_sessions"].samples == [("voicecore_sessions", {}, 2.0)]
    assert families["voicecore_turns_total"].samples[0][2] == 3
    assert families["voicecore_turns_interrupted_total"].samples[0][2] == 1

    latency = families["voicecore_turn_latency_seconds"]
    assert all("session" not in labels for _, labels, _ in latency.samples)
    v2v = {
        labels.get("le", name): value
        for name, labels, value in latency.samples
        if labels["stage"] == "voice_to_voice"
    }
    assert v2v["voicecore_turn_latency_seconds_count"] == 2
    assert v2v["voicecore_turn_latency_seconds_sum"] == pytest.approx(1.13)
    assert v2v["0.5"] == 1  # 480 ms
    assert v2v["0.75"] == 2  # and 650 ms
    assert v2v["+Inf"] == 2
    barge = {
        labels.get("le"): value
        for name, labels, value in latency.samples
        if labels["stage"] == "barge_in" and name.endswith("_bucket")
    }
    assert barge["0.001"] == 0
    assert barge["0.0025"] == 1  # le is inclusive: 2.5 ms
    assert len(barge) == len(LATENCY_BUCKETS_S) + 1

    tokens = families["voicecore_prompt_tokens"].samples
    assert ("voicecore_prompt_tokens_sum", {}, 1320.0) in tokens

    starved = families["voicecore_pacer_starved_frames_total"].samples
    assert starved == [
        ("voicecore_pacer_starved_frames_total", {"session": "s1"}, 3.0),
        ("voicecore_pacer_starved_frames_total", {"session": "s2"}, 0.0),
    ]
    client_underruns = families["voicecore_client_underruns_total"].samples
    assert client_underruns[1] == ("voicecore_client_underruns_total", {"session": "s2"}, 7.0)
    overruns = families["voicecore_playout_overruns_total"].samples
    assert overruns[1] == ("voicecore_playout_overruns_total", {"session": "s2"}, 2.0)
    p99 = families["voicecore_pacer_lateness_p99_seconds"].samples
    assert p99 == [("voicecore_pacer_lateness_p99_seconds", {"session": "s1"}, 0.0004)]
    edges = families["voicecore_edge_events_total"].samples
    assert (
        "voicecore_edge_events_total",
        {"session": "s1", "edge": "dsp->stt", "event": "dropped"},
        3.0,
    ) in edges
    assert (
        "voicecore_edge_events_total",
        {"session": "s1", "edge": "overflow", "event": "count"},
        1.0,
    ) in edges


def test_exposition_escapes_label_values() -> None:
    nasty = 'a"b\\c\nd'
    metrics = SessionMetrics(nasty)
    metrics.count('edge "x"\\y.dropped', 1)
    text = prometheus_text([metrics])
    assert '{session="a\\"b\\\\c\\nd"}' in text
    assert all(line.count("\n") == 0 for line in text.splitlines())
    families = parse_exposition(text)
    sessions = {
        labels["session"]
        for family in families.values()
        for _, labels, _ in family.samples
        if "session" in labels
    }
    assert sessions == {nasty}
    edge_labels = families["voicecore_edge_events_total"].samples[0][1]
    assert edge_labels["edge"] == 'edge "x"\\y'


def test_exposition_of_no_sessions_is_valid() -> None:
    families = parse_exposition(prometheus_text([]))
    assert families["voicecore_sessions"].samples[0][2] == 0
    check_histogram(families["voicecore_turn_latency_seconds"], "voicecore_turn_latency_seconds")
    assert families["voicecore_pacer_starved_frames_total"].samples == []


def test_exposition_with_process_diagnostics(tmp_path: Path) -> None:
    diagnostics = Diagnostics(Timeline(), cgroup_root=tmp_path)
    for lag_ms in (1.0, 2.0, 30.0):
        diagnostics.canary.observe(lag_ms)
    diagnostics.cpu.throttled_periods = 4
    diagnostics.cpu.throttled_ms = 250.0
    with diagnostics.gc:
        gc.collect()
    families = parse_exposition(prometheus_text([make_session()], diagnostics=diagnostics))
    for name, family in families.items():
        if family.kind == "counter":
            assert name.endswith("_total"), name
        if name.startswith(("voicecore_loop_", "voicecore_gc_", "voicecore_cpu_")):
            assert all("session" not in labels for _, labels, _ in family.samples)
    assert families["voicecore_loop_lag_max_seconds"].samples[0][2] == pytest.approx(0.03)
    assert families["voicecore_loop_lag_p50_seconds"].samples[0][2] == pytest.approx(0.002)
    by_generation = {
        labels["generation"]: value
        for _, labels, value in families["voicecore_gc_collections_total"].samples
    }
    assert set(by_generation) == {"0", "1", "2"}
    assert by_generation["2"] >= 1
    pause_total = families["voicecore_gc_pause_seconds_total"].samples[0][2]
    assert pause_total >= families["voicecore_gc_pause_max_seconds"].samples[0][2] > 0
    assert families["voicecore_cpu_throttled_periods_total"].samples[0][2] == 4
    assert families["voicecore_cpu_throttled_seconds_total"].samples[0][2] == 0.25
    assert "voicecore_loop_lag_max_seconds" not in parse_exposition(prometheus_text([]))
