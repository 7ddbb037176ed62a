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

Prometheus exposition (``prometheus_text``, written by the ``prometheus_client`` library),
text format 0.0.4. Label cardinality decision:

* per-turn latencies and prompt sizes are **histograms with fixed buckets aggregated over all
  sessions** and carry no ``session`` label: buckets x stages x sessions would explode, and
  latency distributions are what dashboards and alerts use;
* per-session counters and gauges (starved frames, client underruns, overruns, drops, late
  frames, pacer lateness, edge overflow) **carry a ``session`` label**: a handful of series
  per live session, and a glitch must be traceable to its session. Pass only live sessions:
  a session that is gone simply stops being exported.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from voicecore.diagnostics import Diagnostics

__all__ = [
    "LATENCY_BUCKETS_S",
    "PROMPT_TOKEN_BUCKETS",
    "TURN_LATENCY_FIELDS",
    "PacerStatsLike",
    "SessionMetrics",
    "TurnMetrics",
    "diagnostics_families",
    "prometheus_text",
    "session_families",
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

    * ``starved_frames``: frame deadlines at which the agent was speaking and the pacer had
      no audio for the stream (the TTS fell behind; set by ``update_pacer``: the pacer's
      ``underruns``). The client's cushion may still cover them: what the user hears is
      ``client_underruns``;
    * ``client_underruns``: times the client's player ran dry, as the client reports them in
      its ``playout`` messages (the transport counts them);
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
        self.starved_frames = 0
        self.client_underruns = 0
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
            f"starved_frames={self.starved_frames}, client_underruns={self.client_underruns}, "
            f"overruns={self.overruns}, drops={self.drops}, "
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
        self.starved_frames = stats.underruns
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
            "starved_frames": self.starved_frames,
            "client_underruns": self.client_underruns,
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


# --- Prometheus exposition (prometheus_client) ------------------------------------------------


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


def _histogram(
    name: str,
    help_text: str,
    bounds: Sequence[float],
    series: Iterable[tuple[Sequence[str], Sequence[float]]],
    labels: Sequence[str] = (),
) -> HistogramMetricFamily:
    """A histogram family of fixed ``bounds``: one series per (label values, observations)."""
    family = HistogramMetricFamily(name, help_text, labels=labels)
    bound_names = [repr(float(bound)) for bound in bounds]
    for label_values, values in series:
        ordered = sorted(values)
        buckets = [
            (le, bisect.bisect_right(ordered, bound))
            for le, bound in zip(bound_names, bounds, strict=True)
        ]
        buckets.append(("+Inf", len(ordered)))
        family.add_metric(label_values, buckets, math.fsum(ordered))
    return family


def session_families(
    sessions: Sequence[SessionMetrics], *, open_sessions: int | None = None
) -> Iterator[Metric]:
    """The metric families of ``sessions`` (see :func:`prometheus_text`), for a
    ``prometheus_client`` collector."""
    turns = [t for s in sessions for t in s.turns]
    yield GaugeMetricFamily(
        "voicecore_sessions",
        "Sessions open now.",
        value=len(sessions) if open_sessions is None else open_sessions,
    )
    yield GaugeMetricFamily(
        "voicecore_sessions_exported",
        "Sessions whose figures this exposition holds (open and recently finished).",
        value=len(sessions),
    )
    yield CounterMetricFamily("voicecore_turns", "Agent turns finished.", value=len(turns))
    yield CounterMetricFamily(
        "voicecore_turns_interrupted",
        "Agent turns cut short by a barge-in.",
        value=sum(t.interrupted for t in turns),
    )
    yield _histogram(
        "voicecore_turn_latency_seconds",
        "Per-turn latency by stage, in seconds (all sessions).",
        LATENCY_BUCKETS_S,
        (
            ([stage], [v / 1000.0 for t in turns if (v := getattr(t, field)) is not None])
            for field, stage in _STAGE_OF_FIELD.items()
        ),
        labels=["stage"],
    )
    yield _histogram(
        "voicecore_prompt_tokens",
        "Prompt size per turn, in tokens.",
        PROMPT_TOKEN_BUCKETS,
        [((), [float(t.prompt_tokens) for t in turns if t.prompt_tokens is not None])],
    )
    for attr, name, help_text in _SESSION_COUNTERS:
        counter = CounterMetricFamily(name, help_text, labels=["session"])
        for s in sessions:
            counter.add_metric([s.session_id], getattr(s, attr))
        yield counter
    for quantile in ("p50", "p99", "max"):
        gauge = GaugeMetricFamily(
            f"voicecore_pacer_lateness_{quantile}_seconds",
            f"Pacer release lateness, {quantile}, in seconds.",
            labels=["session"],
        )
        for s in sessions:
            value_ms = getattr(s, f"pacer_lateness_{quantile}_ms")
            if value_ms is not None:
                gauge.add_metric([s.session_id], value_ms / 1000.0)
        yield gauge
    edges = CounterMetricFamily(
        "voicecore_edge_events",
        "Overflow events of the pipeline's edges (drops, rejections, ...).",
        labels=["session", "edge", "event"],
    )
    for s in sessions:
        for counter_name, value in sorted(s.edge_counters.items()):
            edge, dot, event = counter_name.rpartition(".")
            if not dot:
                edge, event = counter_name, "count"
            edges.add_metric([s.session_id, edge, event], value)
    yield edges


def diagnostics_families(diagnostics: Diagnostics) -> Iterator[Metric]:
    """The process diagnostics' metric families (see :func:`prometheus_text`)."""
    lag = diagnostics.canary.stats
    for quantile, value_ms in (("p50", lag.p50_ms), ("p99", lag.p99_ms), ("max", lag.max_ms)):
        yield GaugeMetricFamily(
            f"voicecore_loop_lag_{quantile}_seconds",
            f"Event-loop lag measured by the canary, {quantile}, in seconds.",
            value=value_ms / 1000.0,
        )
    gc_stats = diagnostics.gc.stats
    collections = CounterMetricFamily(
        "voicecore_gc_collections", "Garbage collections by generation.", labels=["generation"]
    )
    for generation, count in enumerate(gc_stats.by_generation):
        collections.add_metric([str(generation)], count)
    yield collections
    yield CounterMetricFamily(
        "voicecore_gc_pause_seconds",
        "Time stopped in garbage collections.",
        value=gc_stats.total_ms / 1000.0,
    )
    yield GaugeMetricFamily(
        "voicecore_gc_pause_max_seconds",
        "Longest garbage collection pause.",
        value=gc_stats.max_ms / 1000.0,
    )
    yield CounterMetricFamily(
        "voicecore_gc_collected_objects",
        "Objects freed by the collector.",
        value=gc_stats.collected,
    )
    yield CounterMetricFamily(
        "voicecore_cpu_throttled_periods",
        "cgroup CPU periods in which the process was throttled.",
        value=diagnostics.cpu.throttled_periods,
    )
    yield CounterMetricFamily(
        "voicecore_cpu_throttled_seconds",
        "Time throttled by the cgroup.",
        value=diagnostics.cpu.throttled_ms / 1000.0,
    )


class _Snapshot(Collector):
    """A collector of fixed families (one exposition of :func:`prometheus_text`)."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self._families)


def prometheus_text(
    sessions: Iterable[SessionMetrics],
    *,
    open_sessions: int | None = None,
    diagnostics: Diagnostics | None = None,
) -> str:
    """The metrics of ``sessions`` (and of the process' ``diagnostics``, if given) in the
    Prometheus text exposition format 0.0.4, written by ``prometheus_client``.

    Serve it with ``Content-Type: text/plain; version=0.0.4; charset=utf-8``. Families:

    * ``voicecore_sessions`` (gauge): the sessions open now, ``open_sessions`` (default: all
      of ``sessions``); ``voicecore_sessions_exported`` (gauge): the sessions whose figures
      follow (a server exports recently finished sessions too);
    * ``voicecore_turns_total`` and ``voicecore_turns_interrupted_total`` (counters);
    * ``voicecore_turn_latency_seconds{stage=...}`` (histogram, ``LATENCY_BUCKETS_S``, all
      sessions together), stages ``stt_final``, ``llm_first_token``, ``tts_first_audio``,
      ``voice_to_voice``, ``barge_in``;
    * ``voicecore_prompt_tokens`` (histogram, ``PROMPT_TOKEN_BUCKETS``, all sessions);
    * per session (label ``session``): ``voicecore_pacer_starved_frames_total`` (frame
      deadlines the server had no agent audio for, whether or not the client's cushion
      covered them), ``voicecore_client_underruns_total`` (what the client reports: its
      player ran dry), ``voicecore_playout_*_total`` counters, pacer lateness gauges
      ``voicecore_pacer_lateness_{p50,p99,max}_seconds`` and
      ``voicecore_edge_events_total{edge=...,event=...}``;
    * with ``diagnostics`` (process-wide, no ``session`` label): event-loop lag gauges
      ``voicecore_loop_lag_{p50,p99,max}_seconds``, ``voicecore_gc_collections_total
      {generation=...}``, ``voicecore_gc_pause_seconds_total``,
      ``voicecore_gc_pause_max_seconds``, ``voicecore_gc_collected_objects_total``,
      ``voicecore_cpu_throttled_periods_total`` and ``voicecore_cpu_throttled_seconds_total``
      (counted since the diagnostics started).
    """
    families = list(session_families(list(sessions), open_sessions=open_sessions))
    if diagnostics is not None:
        families.extend(diagnostics_families(diagnostics))
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(families))
    return generate_latest(registry).decode()
