"""The Prometheus exposition voicecore wrote by hand before it used ``prometheus_client``:
the baseline ``benches/bench_metrics.py`` times the library against (format 0.0.4, the same
families and values as ``voicecore.metrics.prometheus_text``). Never imported by the product.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Final

from voicecore.diagnostics import Diagnostics
from voicecore.metrics import LATENCY_BUCKETS_S, PROMPT_TOKEN_BUCKETS, SessionMetrics

__all__ = ["handwritten_prometheus_text"]


def _escape_label(value: str) -> str:
    """Label values escape backslash, double quote and line feed (format 0.0.4)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _escape_help(text: str) -> str:
    """HELP text escapes backslash and line feed only."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _format_value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    inner = ",".join(f'{k}="{_escape_label(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


class _Exposition:
    """Builds the text: one HELP and one TYPE line per family, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {_escape_help(help_text)}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict[str, str], value: float) -> None:
        self.lines.append(f"{name}{_labels(labels)} {_format_value(value)}")

    def histogram(
        self,
        name: str,
        labels: dict[str, str],
        bounds: Sequence[float],
        values: Sequence[float],
    ) -> None:
        for bound in bounds:
            count = sum(1 for v in values if v <= bound)
            self.sample(f"{name}_bucket", {**labels, "le": _format_value(float(bound))}, count)
        self.sample(f"{name}_bucket", {**labels, "le": "+Inf"}, len(values))
        self.sample(f"{name}_sum", labels, math.fsum(values))
        self.sample(f"{name}_count", labels, len(values))


_STAGE_OF_FIELD: Final[dict[str, str]] = {
    "stt_final_ms": "stt_final",
    "llm_first_token_ms": "llm_first_token",
    "tts_first_audio_ms": "tts_first_audio",
    "voice_to_voice_ms": "voice_to_voice",
    "barge_in_ms": "barge_in",
}

_SESSION_COUNTERS: Final[tuple[tuple[str, str, str], ...]] = (
    (
        "starved_frames",
        "voicecore_pacer_starved_frames_total",
        "Frame deadlines at which the agent was speaking and the server had no audio ready "
        "(the TTS fell behind); the client's cushion may still have covered them.",
    ),
    (
        "client_underruns",
        "voicecore_client_underruns_total",
        "Times the client's player ran dry, as the client reports them (what the user hears).",
    ),
    (
        "overruns",
        "voicecore_playout_overruns_total",
        "Pushes of agent audio that did not fit the playout queue.",
    ),
    (
        "drops",
        "voicecore_playout_dropped_samples_total",
        "Samples of agent audio dropped by flushes (not heard).",
    ),
    (
        "late_frames",
        "voicecore_playout_late_frames_total",
        "Frames released later than the session's late-frame threshold.",
    ),
    ("frames_released", "voicecore_playout_frames_released_total", "Frames released."),
)


def handwritten_prometheus_text(
    sessions: Iterable[SessionMetrics],
    *,
    open_sessions: int | None = None,
    diagnostics: Diagnostics | None = None,
) -> str:
    """The exposition of ``voicecore.metrics.prometheus_text``, written by hand line by
    line as voicecore did before it used ``prometheus_client`` (the same families, names and
    values): the baseline of ``benches/bench_metrics.py``."""
    sessions = list(sessions)
    turns = [t for s in sessions for t in s.turns]
    out = _Exposition()

    out.family("voicecore_sessions", "gauge", "Sessions open now.")
    out.sample("voicecore_sessions", {}, len(sessions) if open_sessions is None else open_sessions)
    out.family(
        "voicecore_sessions_exported",
        "gauge",
        "Sessions whose figures this exposition holds (open and recently finished).",
    )
    out.sample("voicecore_sessions_exported", {}, len(sessions))
    out.family("voicecore_turns_total", "counter", "Agent turns finished.")
    out.sample("voicecore_turns_total", {}, len(turns))
    out.family(
        "voicecore_turns_interrupted_total", "counter", "Agent turns cut short by a barge-in."
    )
    out.sample("voicecore_turns_interrupted_total", {}, sum(t.interrupted for t in turns))

    out.family(
        "voicecore_turn_latency_seconds",
        "histogram",
        "Per-turn latency by stage, in seconds (all sessions).",
    )
    for field, stage in _STAGE_OF_FIELD.items():
        values = [v / 1000.0 for t in turns if (v := getattr(t, field)) is not None]
        out.histogram("voicecore_turn_latency_seconds", {"stage": stage}, LATENCY_BUCKETS_S, values)

    out.family("voicecore_prompt_tokens", "histogram", "Prompt size per turn, in tokens.")
    tokens = [float(t.prompt_tokens) for t in turns if t.prompt_tokens is not None]
    out.histogram("voicecore_prompt_tokens", {}, PROMPT_TOKEN_BUCKETS, tokens)

    for attr, name, help_text in _SESSION_COUNTERS:
        out.family(name, "counter", help_text)
        for s in sessions:
            out.sample(name, {"session": s.session_id}, getattr(s, attr))

    for quantile in ("p50", "p99", "max"):
        name = f"voicecore_pacer_lateness_{quantile}_seconds"
        out.family(name, "gauge", f"Pacer release lateness, {quantile}, in seconds.")
        for s in sessions:
            value_ms = getattr(s, f"pacer_lateness_{quantile}_ms")
            if value_ms is not None:
                out.sample(name, {"session": s.session_id}, value_ms / 1000.0)

    out.family(
        "voicecore_edge_events_total",
        "counter",
        "Overflow events of the pipeline's edges (drops, rejections, ...).",
    )
    for s in sessions:
        for counter_name, value in sorted(s.edge_counters.items()):
            edge, dot, event = counter_name.rpartition(".")
            if not dot:
                edge, event = counter_name, "count"
            labels = {"session": s.session_id, "edge": edge, "event": event}
            out.sample("voicecore_edge_events_total", labels, value)

    if diagnostics is not None:
        _diagnostics_families(out, diagnostics)
    return "\n".join(out.lines) + "\n"


def _diagnostics_families(out: _Exposition, diagnostics: Diagnostics) -> None:
    lag = diagnostics.canary.stats
    for quantile, value_ms in (("p50", lag.p50_ms), ("p99", lag.p99_ms), ("max", lag.max_ms)):
        name = f"voicecore_loop_lag_{quantile}_seconds"
        out.family(name, "gauge", f"Event-loop lag measured by the canary, {quantile}, in seconds.")
        out.sample(name, {}, value_ms / 1000.0)

    gc_stats = diagnostics.gc.stats
    out.family("voicecore_gc_collections_total", "counter", "Garbage collections by generation.")
    for generation, count in enumerate(gc_stats.by_generation):
        out.sample("voicecore_gc_collections_total", {"generation": str(generation)}, count)
    out.family(
        "voicecore_gc_pause_seconds_total", "counter", "Time stopped in garbage collections."
    )
    out.sample("voicecore_gc_pause_seconds_total", {}, gc_stats.total_ms / 1000.0)
    out.family("voicecore_gc_pause_max_seconds", "gauge", "Longest garbage collection pause.")
    out.sample("voicecore_gc_pause_max_seconds", {}, gc_stats.max_ms / 1000.0)
    out.family("voicecore_gc_collected_objects_total", "counter", "Objects freed by the collector.")
    out.sample("voicecore_gc_collected_objects_total", {}, gc_stats.collected)

    out.family(
        "voicecore_cpu_throttled_periods_total",
        "counter",
        "cgroup CPU periods in which the process was throttled.",
    )
    out.sample("voicecore_cpu_throttled_periods_total", {}, diagnostics.cpu.throttled_periods)
    out.family("voicecore_cpu_throttled_seconds_total", "counter", "Time throttled by the cgroup.")
    out.sample("voicecore_cpu_throttled_seconds_total", {}, diagnostics.cpu.throttled_ms / 1000.0)
