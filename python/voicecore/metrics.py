"""Per-turn and per-session metrics of a voice session: a Python API, JSON events, Prometheus.

Every latency is in **milliseconds** in the Python API and in JSON, and in **seconds** in the
Prometheus exposition (Prometheus' base unit). What each per-turn latency measures:

========================  ==================================================================
``stt_final_ms``          end of user speech (VAD) -> final transcript from the STT
``llm_first_token_ms``    LLM request sent -> first text delta
``tts_first_audio_ms``    first text chunk sent to the TTS -> first PCM chunk back
``voice_to_voice_ms``     end of user speech -> first agent frame released by the pacer
``barge_in_ms``           confirmed user speech during agent audio -> turn cancelled, playout
                          flushed and ``clear`` sent to the transport
========================  ==================================================================

A field is ``None`` when the turn never reached that point (a cancelled turn has no TTS
latency; only an interrupted turn has a barge-in latency).

``SessionMetrics`` holds plain counters and is not tied to Trio: the engine updates it from
its tasks, and an exporter reads it. It takes no lock: update it from the event loop thread.

Prometheus exposition (``prometheus_text``), text format 0.0.4. Label cardinality decision:

* per-turn latencies and prompt sizes are **histograms with fixed buckets aggregated over all
  sessions** and carry no ``session`` label: buckets x stages x sessions would explode, and
  latency distributions are what dashboards and alerts use;
* per-session counters and gauges (underruns, overruns, drops, late frames, pacer lateness,
  edge overflow) **carry a ``session`` label**: a handful of series per live session, and a
  glitch must be traceable to its session. Pass only live sessions: a session that is gone
  simply stops being exported.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

if TYPE_CHECKING:
    from voicecore.diagnostics import Diagnostics

__all__ = [
    "LATENCY_BUCKETS_S",
    "PROMPT_TOKEN_BUCKETS",
    "TURN_LATENCY_FIELDS",
    "PacerStatsLike",
    "SessionMetrics",
    "TurnMetrics",
    "prometheus_text",
]

TURN_LATENCY_FIELDS: Final[tuple[str, ...]] = (
    "stt_final_ms",
    "llm_first_token_ms",
    "tts_first_audio_ms",
    "voice_to_voice_ms",
    "barge_in_ms",
)
"""The per-turn latency fields of ``TurnMetrics``, in ms."""

LATENCY_BUCKETS_S: Final[tuple[float, ...]] = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    1.5,
    2.0,
    3.0,
    5.0,
    10.0,
)
"""Upper bounds (s) of the turn latency histogram buckets: from barge-in's few ms to a slow
LLM's seconds, denser around the 0.2-1 s a voice-to-voice budget lives in."""

PROMPT_TOKEN_BUCKETS: Final[tuple[float, ...]] = (
    250,
    500,
    1000,
    2000,
    4000,
    8000,
    16000,
    32000,
)
"""Upper bounds (tokens) of the prompt size histogram buckets."""


@dataclass
class TurnMetrics:
    """Latencies (ms) and prompt size of one agent turn; see the module docstring.

    Mutable on purpose: the engine fills the fields in as the turn progresses and hands the
    record to ``SessionMetrics.add_turn`` when the turn ends.
    """

    turn_id: int
    stt_final_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    voice_to_voice_ms: float | None = None
    barge_in_ms: float | None = None
    prompt_tokens: int | None = None
    interrupted: bool = False

    def to_dict(self) -> dict[str, Any]:
        """The turn as a JSON-ready dict (latencies in ms, ``None`` for points not reached)."""
        return asdict(self)


class PacerStatsLike(Protocol):
    """What ``SessionMetrics.update_pacer`` reads: ``PacerStats`` and ``StreamStats`` both
    fit."""

    @property
    def frames_released(self) -> int:
        """Frames released so far."""

    @property
    def underruns(self) -> int:
        """Frame periods a playing stream had no audio for."""

    @property
    def dropped_samples(self) -> int:
        """Samples dropped by flushes (barge-in), in samples."""

    @property
    def lateness_p50_ms(self) -> float:
        """Median release lateness, in ms."""

    @property
    def lateness_p99_ms(self) -> float:
        """99th percentile release lateness, in ms."""

    @property
    def lateness_max_ms(self) -> float:
        """Maximum release lateness, in ms."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, by linear interpolation.

    Raises:
        ValueError: ``sorted_values`` is empty or ``q`` is outside [0, 100].
    """
    if not sorted_values:
        raise ValueError("percentile of no values")
    if not 0.0 <= q <= 100.0:
        raise ValueError(f"percentile {q} is outside [0, 100]")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


class SessionMetrics:
    """Metrics of one session: its turns, playout counters, pacer lateness, edge overflow.

    Counters (ints, never decreasing):

    * ``underruns``: frame periods the playing stream had no audio for (set by
      ``update_pacer``; the pacer counts them);
    * ``drops``: samples of agent audio dropped by playout flushes, i.e. not heard (set by
      ``update_pacer``);
    * ``overruns``: pushes of agent audio that did not fit the playout queue (the engine
      increments it);
    * ``late_frames``: frames the pacer released later than its late threshold (the engine
      counts the pacer's ``"late"`` stream events; the pacer never reports on-time frames).

    Pacer lateness (``pacer_lateness_p50_ms``/``p99``/``max``, ms; ``None`` until the first
    ``update_pacer``) comes from the pacer's own statistics.

    Args:
        session_id: identifies the session in JSON and as the Prometheus ``session`` label.

    Raises:
        ValueError: an empty ``session_id``.
    """

    def __init__(self, session_id: str) -> None:
        if not session_id:
            raise ValueError("session_id must not be empty")
        self.session_id = session_id
        self.turns: list[TurnMetrics] = []
        self.underruns = 0
        self.overruns = 0
        self.drops = 0
        self.late_frames = 0
        self.frames_released = 0
        self.pacer_lateness_p50_ms: float | None = None
        self.pacer_lateness_p99_ms: float | None = None
        self.pacer_lateness_max_ms: float | None = None
        self.edge_counters: dict[str, int] = {}

    def __repr__(self) -> str:
        return (
            f"SessionMetrics({self.session_id!r}, turns={len(self.turns)}, "
            f"underruns={self.underruns}, overruns={self.overruns}, drops={self.drops}, "
            f"late_frames={self.late_frames})"
        )

    def add_turn(self, turn: TurnMetrics) -> None:
        """Records a finished turn (one record per turn id; the record is kept, not copied)."""
        self.turns.append(turn)

    def update_pacer(self, stats: PacerStatsLike) -> None:
        """Takes a snapshot of the pacer's cumulative statistics.

        Pass the session's ``PacerStream.stats()`` (or ``FramePacer.stats()`` when the pacer
        serves this session only). The counters are cumulative, so they are replaced, not
        added: call it as often as you like (e.g. once per turn and at the end).
        """
        self.frames_released = stats.frames_released
        self.underruns = stats.underruns
        self.drops = stats.dropped_samples
        self.pacer_lateness_p50_ms = stats.lateness_p50_ms
        self.pacer_lateness_p99_ms = stats.lateness_p99_ms
        self.pacer_lateness_max_ms = stats.lateness_max_ms

    def count(self, name: str, n: int = 1) -> None:
        """Adds ``n`` to the named counter of a pipeline edge, e.g. ``"dsp->stt.dropped"``.

        By convention the name is ``"<edge>.<event>"``; Prometheus exports the part before the
        last dot as the ``edge`` label and the rest as the ``event`` label.

        Raises:
            ValueError: an empty name or a negative ``n``.
        """
        if not name:
            raise ValueError("counter name must not be empty")
        if n < 0:
            raise ValueError(f"counters only grow: n must be >= 0, got {n}")
        self.edge_counters[name] = self.edge_counters.get(name, 0) + n

    def latency_summary(self) -> dict[str, dict[str, float | int | None]]:
        """Per latency field: ``count`` of turns that reached it and its ``p50``/``p99``/``max``
        in ms (``None`` when no turn did)."""
        summary: dict[str, dict[str, float | int | None]] = {}
        for field in TURN_LATENCY_FIELDS:
            values = sorted(v for t in self.turns if (v := getattr(t, field)) is not None)
            summary[field] = {
                "count": len(values),
                "p50": percentile(values, 50) if values else None,
                "p99": percentile(values, 99) if values else None,
                "max": values[-1] if values else None,
            }
        return summary

    def _summary(self) -> dict[str, Any]:
        return {
            "session": self.session_id,
            "turns": len(self.turns),
            "interrupted_turns": sum(t.interrupted for t in self.turns),
            "underruns": self.underruns,
            "overruns": self.overruns,
            "drops": self.drops,
            "late_frames": self.late_frames,
            "frames_released": self.frames_released,
            "pacer_lateness_ms": {
                "p50": self.pacer_lateness_p50_ms,
                "p99": self.pacer_lateness_p99_ms,
                "max": self.pacer_lateness_max_ms,
            },
            "edges": dict(self.edge_counters),
            "latency_ms": self.latency_summary(),
        }

    def to_json(self) -> dict[str, Any]:
        """The whole session as a JSON-ready dict: the summary plus ``turn_list`` (each turn's
        ``to_dict()``)."""
        return {**self._summary(), "turn_list": [t.to_dict() for t in self.turns]}

    def json_events(self) -> list[dict[str, Any]]:
        """One event per turn (``"type": "turn"``) then one ``"type": "session_summary"``;
        each carries ``"session"``, ready for a JSON-lines log."""
        events: list[dict[str, Any]] = [
            {"type": "turn", "session": self.session_id, **t.to_dict()} for t in self.turns
        ]
        events.append({"type": "session_summary", **self._summary()})
        return events


# --- Prometheus text exposition format 0.0.4 -------------------------------------------------


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
    ("underruns", "voicecore_playout_underruns_total", "Frame periods with no agent audio."),
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


def prometheus_text(
    sessions: Iterable[SessionMetrics],
    *,
    open_sessions: int | None = None,
    diagnostics: Diagnostics | None = None,
) -> str:
    """The metrics of ``sessions`` (and of the process' ``diagnostics``, if given) in the
    Prometheus text exposition format 0.0.4.

    Serve it with ``Content-Type: text/plain; version=0.0.4``. Families:

    * ``voicecore_sessions`` (gauge): the sessions open now, ``open_sessions`` (default: all
      of ``sessions``); ``voicecore_sessions_exported`` (gauge): the sessions whose figures
      follow (a server exports recently finished sessions too);
    * ``voicecore_turns_total`` and ``voicecore_turns_interrupted_total`` (counters);
    * ``voicecore_turn_latency_seconds{stage=...}`` (histogram, ``LATENCY_BUCKETS_S``, all
      sessions together), stages ``stt_final``, ``llm_first_token``, ``tts_first_audio``,
      ``voice_to_voice``, ``barge_in``;
    * ``voicecore_prompt_tokens`` (histogram, ``PROMPT_TOKEN_BUCKETS``, all sessions);
    * per session (label ``session``): ``voicecore_playout_*_total`` counters, pacer lateness
      gauges ``voicecore_pacer_lateness_{p50,p99,max}_seconds`` and
      ``voicecore_edge_events_total{edge=...,event=...}``;
    * with ``diagnostics`` (process-wide, no ``session`` label): event-loop lag gauges
      ``voicecore_loop_lag_{p50,p99,max}_seconds``, ``voicecore_gc_collections_total
      {generation=...}``, ``voicecore_gc_pause_seconds_total``,
      ``voicecore_gc_pause_max_seconds``, ``voicecore_gc_collected_objects_total``,
      ``voicecore_cpu_throttled_periods_total`` and ``voicecore_cpu_throttled_seconds_total``
      (counted since the diagnostics started).
    """
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
