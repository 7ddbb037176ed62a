"""From a recorded timeline to a picture: which cause lines up with an audio gap.

``voicecore serve --timeline PATH`` records the server's timeline (the process probes of
``voicecore.diagnostics`` and every session's stage events and released frames, on one
clock) to a JSON file; ``voicecore diagnose PATH`` reads it back and

* finds the **gaps** (``find_gaps``): a stream whose frames were released more than
  ``gap_factor`` frames apart in the middle of a reply (the pacer was starved or stopped),
  and a client cushion that ran nearly dry while a reply was playing (the client was
  about to underrun: frames reached it late);
* lists, for each gap, the **causes** whose stretch of time overlaps it:
  event-loop lag, GC pauses, cgroup CPU throttling, and frames the pacer released late
  (the process frozen or denied the CPU);
* draws (``plot``, matplotlib) stacked panels on one time axis: frames released per stream,
  the client cushion, event-loop lag, GC pauses, CPU throttling and pacer lateness (the
  pacer thread never takes the GIL: frames released late mean the whole process was
  frozen or denied the CPU), and stage events as labelled vertical lines. Every gap is a
  red band across all panels, so the cause under it is plain to see.

Times in the file and here are seconds on one clock (``time.monotonic`` for a server
recording); the picture shows them relative to the first event. Durations are in ms.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal

import trio

from voicecore.diagnostics import CAUSE_KINDS, Timeline

__all__ = [
    "DEFAULT_FRAME_MS",
    "MATPLOTLIB_MISSING",
    "Gap",
    "TimelineRecorder",
    "add_diagnose_arguments",
    "diagnose_command",
    "find_gaps",
    "plot",
    "summarize",
    "window",
]

DEFAULT_FRAME_MS: Final = 20.0
"""The frame duration assumed when the timeline does not say (the server's default)."""

MATPLOTLIB_MISSING: Final = (
    "drawing the timeline needs matplotlib, which is not installed: "
    "pip install matplotlib (or install voicecore with its dev extra); "
    "the text summary works without it"
)
"""What ``plot`` raises (``ModuleNotFoundError``) and the CLI prints without matplotlib."""

PROBE_KINDS: Final[frozenset[str]] = CAUSE_KINDS | {"audio_released", "client_cushion"}
"""Kinds drawn in their own panels; every other kind is a stage event (a labelled line)."""


# --- gaps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A stretch of time in which a stream's audio was (about to be) interrupted.

    Attributes:
        start: when the gap began, seconds on the timeline's clock.
        end: when it ended, seconds.
        stream: the stream it happened on (``"<session> turn <n>"``, or the session).
        kind: ``"release"`` (frames released too far apart) or ``"cushion"`` (the client's
            buffered audio fell below the threshold while a reply was playing).
        detail: a short human description (how long, how low).
        causes: the cause events (loop lag, GC pause, CPU throttling) recorded around it.
    """

    start: float
    end: float
    stream: str
    kind: Literal["release", "cushion"]
    detail: str
    causes: list[dict[str, Any]] = field(default_factory=list)

    @property
    def duration_ms(self) -> float:
        """The gap's length in ms."""
        return (self.end - self.start) * 1000.0


def _session_of(event: dict[str, Any]) -> str:
    return str(event.get("session", "session"))


def _stream_of(event: dict[str, Any]) -> str:
    turn = event.get("turn_id")
    return _session_of(event) if turn is None else f"{_session_of(event)} turn {turn}"


def _frames_by_stream(timeline: Timeline) -> dict[str, list[dict[str, Any]]]:
    streams: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in timeline.events("audio_released"):
        streams[_stream_of(event)].append(event)
    return dict(streams)


def _extent(event: dict[str, Any]) -> tuple[float, float]:
    """The stretch of time (seconds) a cause event covers: a loop lag is stamped when the
    stall ended, a GC pause when it began, a throttling sample at the end of its interval."""
    t = float(event["t"])
    kind = event["kind"]
    if kind == "loop_lag":
        return t - float(event.get("lag_ms", 0.0)) / 1000.0, t
    if kind == "gc_pause":
        return t, t + float(event.get("duration_ms", 0.0)) / 1000.0
    if kind == "cpu_throttled":
        return t - float(event.get("throttled_ms", 0.0)) / 1000.0, t
    return t - float(event.get("lateness_ms", 0.0)) / 1000.0, t  # a late frame


def _cause_window(
    timeline: Timeline, start: float, end: float, margin_s: float, late_ms: float
) -> list[Any]:
    """The causes whose stretch overlaps the gap widened by ``margin_s`` on each side, and
    the latest frame released more than ``late_ms`` late there.

    The pacer thread never takes the GIL, so a late frame means the whole process was
    stopped (SIGSTOP, a cgroup quota) or denied the CPU: a cause no probe inside Python
    records.
    """
    lo, hi = start - margin_s, end + margin_s
    candidates = timeline.events(since=lo - 60.0, until=hi + 60.0)  # no stall lasts a minute
    causes = [
        e
        for e in candidates
        if e["kind"] in CAUSE_KINDS and _extent(e)[0] <= hi and _extent(e)[1] >= lo
    ]
    late = [
        e
        for e in candidates
        if e["kind"] == "audio_released"
        and float(e.get("lateness_ms", 0.0)) > late_ms
        and _extent(e)[0] <= hi
        and _extent(e)[1] >= lo
    ]
    if late:
        causes.append(max(late, key=lambda e: float(e["lateness_ms"])))
    return sorted(causes, key=lambda e: float(e["t"]))


def find_gaps(
    timeline: Timeline,
    *,
    frame_ms: float = DEFAULT_FRAME_MS,
    gap_factor: float = 2.5,
    cushion_low_ms: float | None = None,
    reply_margin_s: float = 1.0,
    cause_margin_s: float = 0.25,
) -> list[Gap]:
    """The gaps of ``timeline``, in time order, each with the causes recorded around it.

    * A **release gap**: two consecutive frames of one stream (a session's turn) more than
      ``gap_factor * frame_ms`` apart, unless a client report before or during it shows
      enough audio buffered to cover the wait (the pacer holds frames back on purpose while
      the client has more than its target buffered).
    * A **cushion gap**: ``client_cushion`` reports below ``cushion_low_ms`` in the middle of
      a reply (frames of the same turn released within ``reply_margin_s`` seconds before and
      after the report; a cushion draining after a reply's last frame, or emptied by a
      barge-in, is normal). It lasts until the next report above the threshold.

    Args:
        timeline: the recorded events (``audio_released`` with ``turn_id``/``session``,
            ``client_cushion`` with ``buffered_ms``, and the cause kinds).
        frame_ms: the frame duration, in ms (> 0).
        gap_factor: the release gap threshold, in frames (> 1).
        cushion_low_ms: the cushion gap threshold, in ms (default: one frame).
        reply_margin_s: see cushion gaps, in seconds (>= 0).
        cause_margin_s: how far around a gap causes are looked for, in seconds (>= 0).

    Raises:
        ValueError: a parameter out of range.
    """
    if not frame_ms > 0.0:
        raise ValueError(f"frame_ms must be > 0 ms, got {frame_ms}")
    if not gap_factor > 1.0:
        raise ValueError(f"gap_factor must be > 1, got {gap_factor}")
    if reply_margin_s < 0.0 or cause_margin_s < 0.0:
        raise ValueError("reply_margin_s and cause_margin_s must be >= 0 s")
    low_ms = frame_ms if cushion_low_ms is None else cushion_low_ms
    limit_s = gap_factor * frame_ms / 1000.0
    reports: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for report in timeline.events("client_cushion"):
        reports[_session_of(report)].append(report)
    gaps: list[Gap] = []
    frames = _frames_by_stream(timeline)
    for stream, events in frames.items():
        session_reports = reports.get(_session_of(events[0]), [])
        for before, after in itertools.pairwise(events):
            start, end = float(before["t"]), float(after["t"])
            if end - start <= limit_s:
                continue
            if _covered(session_reports, start, end):
                continue  # the client had enough buffered: the pacer was holding back
            detail = f"no frame for {(end - start) * 1000:.0f} ms"
            gaps.append(Gap(start, end, stream, "release", detail))
    turns_at: dict[str, list[tuple[float, Any]]] = defaultdict(list)
    for events in frames.values():
        for event in events:
            turns_at[_session_of(event)].append((float(event["t"]), event.get("turn_id")))
    for session, session_reports in reports.items():
        gaps += _cushion_gaps(
            session, session_reports, turns_at.get(session, []), low_ms, reply_margin_s
        )
    gaps.sort(key=lambda g: g.start)
    return [
        Gap(
            g.start,
            g.end,
            g.stream,
            g.kind,
            g.detail,
            _cause_window(timeline, g.start, g.end, cause_margin_s, frame_ms),
        )
        for g in gaps
    ]


def _covered(reports: list[dict[str, Any]], start: float, end: float) -> bool:
    """Whether the client reported enough audio buffered to play through ``end``: the last
    report before ``start``, or one during the pause (after a catch-up burst the pacer
    holds frames back until the client's cushion is back on target)."""
    last_before = None
    for report in reports:
        t = float(report["t"])
        buffered_s = float(report.get("buffered_ms", 0.0)) / 1000.0
        if t <= start:
            last_before = (t, buffered_s)
        elif t < end and t + buffered_s >= end:
            return True
    return last_before is not None and start + last_before[1] >= end


def _cushion_gaps(
    session: str,
    reports: list[dict[str, Any]],
    released: list[tuple[float, Any]],
    low_ms: float,
    reply_margin_s: float,
) -> list[Gap]:
    """The cushion gaps of one session: runs of low reports in the middle of a reply whose
    cushion had been filled (a reply starts from an empty cushion: not a gap)."""
    gaps: list[Gap] = []
    filled: set[Any] = set()  # turns whose cushion was seen at or above the threshold
    run: list[dict[str, Any]] = []
    for index in range(len(reports) + 1):
        current = reports[index] if index < len(reports) else None
        if current is not None:
            t = float(current["t"])
            turns_before = {turn for r, turn in released if t - reply_margin_s <= r < t}
            turns_after = {turn for r, turn in released if t < r <= t + reply_margin_s}
            playing = turns_before & turns_after
            if float(current.get("buffered_ms", math.inf)) >= low_ms:
                filled |= playing
            elif playing & filled:
                run.append(current)
                continue
        if run:
            lowest = min(float(r["buffered_ms"]) for r in run)
            end_t = float(current["t"]) if current is not None else float(run[-1]["t"])
            detail = f"client cushion down to {lowest:.0f} ms"
            gaps.append(Gap(float(run[0]["t"]), end_t, session, "cushion", detail))
            run = []
    return gaps


def _describe_cause(event: dict[str, Any], gap: Gap) -> str:
    kind = event["kind"]
    offset_ms = (float(event["t"]) - gap.start) * 1000.0
    when = f"{offset_ms:+.0f} ms"
    if kind == "loop_lag":
        return f"event loop lagged {float(event.get('lag_ms', 0.0)):.0f} ms (woke at {when})"
    if kind == "audio_released":
        return (
            f"the pacer released a frame {float(event['lateness_ms']):.0f} ms late (at {when}): "
            "the whole process was frozen or denied the CPU"
        )
    if kind == "gc_pause":
        return (
            f"GC pause {float(event.get('duration_ms', 0.0)):.0f} ms, generation "
            f"{event.get('generation', '?')} (began at {when})"
        )
    return (
        f"CPU throttled {float(event.get('throttled_ms', 0.0)):.0f} ms in "
        f"{event.get('throttled_periods', '?')} periods (sampled at {when})"
    )


def summarize(timeline: Timeline, gaps: Iterable[Gap] | None = None) -> str:
    """A text summary: what the timeline holds, then each gap with the causes around it
    (times relative to the first event, in seconds; offsets of causes relative to the gap's
    start, in ms)."""
    events = timeline.events()
    if not events:
        return "the timeline is empty"
    gap_list = list(gaps) if gaps is not None else find_gaps(timeline)
    origin = float(events[0]["t"])
    span = float(events[-1]["t"]) - origin
    counts: dict[str, int] = defaultdict(int)
    for event in events:
        counts[str(event["kind"])] += 1
    streams = len(_frames_by_stream(timeline))
    lines = [
        f"{len(events)} events over {span:.1f} s ({timeline.evicted} evicted), "
        f"{counts['audio_released']} frames released on {streams} streams",
        "causes recorded: "
        + ", ".join(f"{counts[k]} {k}" for k in sorted(CAUSE_KINDS))
        + _worst(timeline),
    ]
    if not gap_list:
        lines.append("no gap found")
        return "\n".join(lines)
    lines.append(f"{len(gap_list)} gap(s):")
    for gap in gap_list:
        lines.append(
            f"  {gap.start - origin:8.3f} s  {gap.stream}: {gap.kind} gap, {gap.detail}"
            f" ({gap.duration_ms:.0f} ms)"
        )
        if not gap.causes:
            lines.append(
                "      no cause recorded nearby: a slow provider (queue starved), the "
                "network, or the client itself"
            )
        for cause in gap.causes:
            lines.append(f"      <- {_describe_cause(cause, gap)}")
    return "\n".join(lines)


def _worst(timeline: Timeline) -> str:
    worst: list[str] = []
    lags = [float(e.get("lag_ms", 0.0)) for e in timeline.events("loop_lag")]
    pauses = [float(e.get("duration_ms", 0.0)) for e in timeline.events("gc_pause")]
    late = [float(e.get("lateness_ms", 0.0)) for e in timeline.events("audio_released")]
    if lags:
        worst.append(f"longest loop lag {max(lags):.0f} ms")
    if pauses:
        worst.append(f"longest GC pause {max(pauses):.0f} ms")
    if late:
        worst.append(f"latest frame {max(late):.1f} ms late")
    return "; " + ", ".join(worst) if worst else ""


# --- the picture ---------------------------------------------------------------------------------


def plot(
    timeline: Timeline,
    path: str | os.PathLike[str],
    *,
    gaps: Iterable[Gap] | None = None,
    title: str | None = None,
    since: float | None = None,
    until: float | None = None,
) -> Path:
    """Draws the timeline to ``path`` (PNG, SVG or PDF by its suffix) and returns the path.

    Panels, top to bottom, sharing the time axis (seconds from the first event): frames
    released (one row per stream, late frames in red), client cushion (ms per session),
    event-loop lag (a bar spanning each stall, height its length), GC pauses (bars by
    generation), CPU throttling and pacer lateness, and stage events (labelled lines).
    Gaps are red bands across every panel. ``since``/``until`` (seconds on the timeline's
    clock) draw only that stretch (e.g. from the first session, past the server's start-up).

    Raises:
        ModuleNotFoundError: matplotlib is not installed (message: ``MATPLOTLIB_MISSING``).
        ValueError: the timeline is empty.
    """
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display needed
        import matplotlib.pyplot as plt
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(MATPLOTLIB_MISSING) from exc
    gap_list = list(gaps) if gaps is not None else find_gaps(timeline)
    if since is not None or until is not None:
        timeline = window(timeline, since, until)
        lo, hi = since if since is not None else -math.inf, until if until is not None else math.inf
        gap_list = [g for g in gap_list if g.end >= lo and g.start <= hi]
    events = timeline.events()
    if not events:
        raise ValueError("the timeline is empty: nothing to draw")
    origin = float(events[0]["t"])
    end = float(events[-1]["t"]) - origin

    def rel(t: Any) -> float:
        return float(t) - origin

    fig, axes = plt.subplots(
        6,
        1,
        sharex=True,
        figsize=(14, 12),
        gridspec_kw={"height_ratios": [2.2, 1.6, 1.2, 1.2, 1.2, 1.4]},
    )
    released, cushion, lag, gc_ax, cpu, stages = axes

    frames = _frames_by_stream(timeline)
    names = sorted(frames, key=lambda s: float(frames[s][0]["t"]))
    for row, name in enumerate(names):
        on_time = [rel(e["t"]) for e in frames[name] if float(e.get("lateness_ms", 0.0)) <= 5.0]
        late = [rel(e["t"]) for e in frames[name] if float(e.get("lateness_ms", 0.0)) > 5.0]
        released.vlines(on_time, row - 0.35, row + 0.35, color="tab:blue", linewidth=0.6)
        released.vlines(late, row - 0.45, row + 0.45, color="tab:red", linewidth=1.2)
    released.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
    released.set_ylim(-0.8, max(len(names), 1) - 0.2)
    released.set_ylabel("frames\nreleased")
    if not names:
        _empty(released, "no audio_released events")

    by_session: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for event in timeline.events("client_cushion"):
        by_session[_session_of(event)].append(event)
    for session, reports in by_session.items():
        cushion.step(
            [rel(e["t"]) for e in reports],
            [float(e.get("buffered_ms", 0.0)) for e in reports],
            where="post",
            linewidth=1.0,
            label=_short(session),
        )
    cushion.set_ylabel("client\ncushion (ms)")
    cushion.set_ylim(bottom=0)
    if by_session:
        if len(by_session) <= 6:
            cushion.legend(fontsize=7, loc="upper right")
    else:
        _empty(cushion, "no client_cushion reports")

    lags = timeline.events("loop_lag")
    lag.bar(
        [rel(e["t"]) - float(e.get("lag_ms", 0.0)) / 1000.0 for e in lags],
        [float(e.get("lag_ms", 0.0)) for e in lags],
        width=[max(float(e.get("lag_ms", 0.0)) / 1000.0, end / 800.0) for e in lags],
        align="edge",
        color="tab:orange",
    )
    lag.set_ylabel("event-loop\nlag (ms)")
    if not lags:
        _empty(lag, "no loop_lag events")

    pauses = timeline.events("gc_pause")
    colors = {0: "tab:green", 1: "tab:olive", 2: "tab:purple"}
    for generation, color in colors.items():
        chosen = [e for e in pauses if e.get("generation", 0) == generation]
        if chosen:
            gc_ax.bar(
                [rel(e["t"]) for e in chosen],
                [float(e.get("duration_ms", 0.0)) for e in chosen],
                width=[max(float(e.get("duration_ms", 0.0)) / 1000.0, end / 800.0) for e in chosen],
                align="edge",
                color=color,
                label=f"generation {generation}",
            )
    gc_ax.set_ylabel("GC pause\n(ms)")
    if pauses:
        gc_ax.legend(fontsize=7, loc="upper right")
    else:
        _empty(gc_ax, "no gc_pause events")

    throttled = timeline.events("cpu_throttled")
    if throttled:
        cpu.bar(
            [rel(e["t"]) for e in throttled],
            [float(e.get("throttled_ms", 0.0)) for e in throttled],
            width=end / 400.0,
            color="tab:brown",
            label="cgroup throttled (ms per sample)",
        )
    late_frames = [
        e for e in timeline.events("audio_released") if float(e.get("lateness_ms", 0.0)) > 0.0
    ]
    if late_frames:
        cpu.plot(
            [rel(e["t"]) for e in late_frames],
            [float(e["lateness_ms"]) for e in late_frames],
            ".",
            markersize=2,
            color="tab:red",
            label="pacer lateness (ms): process frozen or CPU denied",
        )
    cpu.set_ylabel("CPU throttled /\nfrozen (ms)")
    cpu.set_ylim(bottom=0)
    if throttled or late_frames:
        cpu.legend(fontsize=7, loc="upper right")
    else:
        _empty(cpu, "no throttling, no late frame")

    stage_events = [e for e in events if e["kind"] not in PROBE_KINDS]
    levels = 6
    for index, event in enumerate(stage_events):
        x = rel(event["t"])
        stages.axvline(x, color="0.4", linewidth=0.7)
        label = str(event.get("name") or event["kind"])
        if event.get("turn_id") is not None:
            label += f" #{event['turn_id']}"
        stages.text(
            x,
            0.95 - 0.155 * (index % levels),
            " " + label,
            fontsize=7,
            va="top",
            ha="left",
            transform=stages.get_xaxis_transform(),
        )
    stages.set_yticks([])
    stages.set_ylabel("stage\nevents")
    if not stage_events:
        _empty(stages, "no stage events")

    for ax in axes:
        for gap in gap_list:
            ax.axvspan(rel(gap.start), rel(gap.end), color="red", alpha=0.15, linewidth=0)
        ax.grid(axis="x", alpha=0.3)
    stages.set_xlim(-end * 0.01, end * 1.01 if end > 0 else 1.0)
    stages.set_xlabel("time (s from the first event); red bands: audio gaps")
    fig.suptitle(title or f"voicecore timeline: {len(gap_list)} gap(s)", fontsize=12)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out


def window(timeline: Timeline, since: float | None, until: float | None) -> Timeline:
    """A timeline of ``timeline``'s events with ``since <= t <= until`` (seconds)."""
    events = timeline.events(since=since, until=until)
    part = Timeline(max_events=max(len(events), 1))
    for event in events:
        part.record_at(event["t"], event["kind"], **_fields(event))
    return part


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")


# --- recording a server's timeline ------------------------------------------------------------


class TimelineRecorder:
    """Writes a server's timeline to a JSON file: the process probes' timeline and every
    session's, merged on the probes' clock (``time.monotonic``).

    A session's timeline runs on the Trio clock (``trio.current_time``); the recorder
    measures the offset between the two clocks inside the Trio run and maps each session
    event onto ``time.monotonic``, adding a ``session`` field. Finished sessions are kept
    (the last ``keep_sessions``) so that the file still shows them.

    ``run`` dumps every ``interval_s`` seconds and once more when cancelled (the server's
    shutdown), writing to a temporary file renamed over ``path``: a reader never sees a
    half-written file.

    Args:
        path: the JSON file (``Timeline.to_json`` format, readable by ``voicecore diagnose``).
        probes: the process diagnostics' timeline, or ``None``.
        interval_s: seconds between periodic dumps (> 0).
        keep_sessions: sessions kept after they end (>= 0). Each keeps up to
            ``SERVER_TIMELINE_EVENTS`` events; a dump takes about 1 s and 10 MB per 100,000
            events (measured on the project's 2-core VM).

    Raises:
        ValueError: a parameter out of range.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        probes: Timeline | None,
        *,
        interval_s: float = 10.0,
        keep_sessions: int = 10,
    ) -> None:
        if not interval_s > 0.0:
            raise ValueError(f"interval_s must be > 0 s, got {interval_s}")
        if keep_sessions < 0:
            raise ValueError(f"keep_sessions must be >= 0, got {keep_sessions}")
        self.path = Path(path)
        self.probes = probes
        self.interval_s = interval_s
        self._live: dict[str, Timeline] = {}
        self._ended: deque[tuple[str, Timeline]] = deque(maxlen=keep_sessions)
        self._trio_minus_monotonic: float | None = None
        self.dumps = 0

    def __repr__(self) -> str:
        return (
            f"TimelineRecorder(path={str(self.path)!r}, sessions={len(self._live)}, "
            f"ended={len(self._ended)}, dumps={self.dumps})"
        )

    def add_session(self, session_id: str, timeline: Timeline) -> None:
        """Records ``timeline`` (on the Trio clock) as session ``session_id``'s."""
        self._live[session_id] = timeline

    def end_session(self, session_id: str) -> None:
        """Session ``session_id`` ended: its timeline is kept among the recent ones."""
        timeline = self._live.pop(session_id, None)
        if timeline is not None:
            self._ended.append((session_id, timeline))

    def merged(self) -> Timeline:
        """Every recorded event on ``time.monotonic``, in one timeline."""
        offset = self._trio_minus_monotonic or 0.0
        sessions = [*self._ended, *self._live.items()]
        probe_events = self.probes.events() if self.probes is not None else []
        session_events = [(sid, e) for sid, tl in sessions for e in tl.events()]
        merged = Timeline(max_events=max(len(probe_events) + len(session_events), 1))
        for event in probe_events:
            merged.record_at(event["t"], event["kind"], **_fields(event))
        for session_id, event in session_events:
            fields = {**_fields(event), "session": session_id}
            merged.record_at(float(event["t"]) - offset, event["kind"], **fields)
        return merged

    def dump(self) -> None:
        """Writes ``merged()`` to ``path`` atomically (temporary file, then rename)."""
        text = self.merged().to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dumps += 1

    async def run(self) -> None:
        """Dumps every ``interval_s`` seconds until cancelled, then once more.

        The periodic dumps run in a worker thread: serialising many sessions' events takes
        long enough to show up as event-loop lag (the thread still shares the GIL, but the
        loop gets it back every switch interval). The last one, on cancellation, runs on
        the loop: the server is stopping and a cancelled task cannot wait for a thread.
        """
        self._trio_minus_monotonic = _clock_offset()
        try:
            while True:
                await trio.sleep(self.interval_s)
                await trio.to_thread.run_sync(self.dump)
        finally:
            self.dump()


def _fields(event: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in event.items() if k not in ("t", "kind")}


def _clock_offset() -> float:
    """``trio.current_time() - time.monotonic()``, from the tightest of a few readings."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.monotonic()
        trio_now = trio.current_time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, trio_now - (before + after) / 2.0)
    assert best is not None
    return best[1]


# --- the command ------------------------------------------------------------------------------


def add_diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``voicecore diagnose``'s arguments to ``parser``."""
    parser.add_argument("timeline", type=Path, help="a timeline JSON file (serve --timeline)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="the picture to write (.png, .svg or .pdf) [default: the timeline's name, .png]",
    )
    parser.add_argument(
        "--frame-ms",
        type=float,
        default=DEFAULT_FRAME_MS,
        help=f"the frames' duration in ms [default {DEFAULT_FRAME_MS:g}]",
    )
    parser.add_argument(
        "--since",
        type=float,
        help="draw from this many seconds after the first event [default: the start]",
    )
    parser.add_argument(
        "--until",
        type=float,
        help="draw up to this many seconds after the first event [default: the end]",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="print the text summary only (no matplotlib)"
    )


def diagnose_command(args: argparse.Namespace) -> int:
    """``voicecore diagnose``: prints the gaps and their causes, draws the picture; returns
    the exit status (0; 1 when the file cannot be read or drawn; 2 without matplotlib)."""
    path: Path = args.timeline
    try:
        timeline = Timeline.from_json(path.read_text(encoding="utf-8"))
        gaps = find_gaps(timeline, frame_ms=args.frame_ms)
    except (OSError, ValueError) as exc:
        print(f"voicecore diagnose: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    print(summarize(timeline, gaps))
    if args.no_plot or len(timeline) == 0:
        return 0
    output: Path = args.output if args.output is not None else path.with_suffix(".png")
    origin = float(timeline.events()[0]["t"])
    try:
        plot(
            timeline,
            output,
            gaps=gaps,
            title=f"{path.name}: {len(gaps)} gap(s)",
            since=None if args.since is None else origin + args.since,
            until=None if args.until is None else origin + args.until,
        )
    except ModuleNotFoundError:
        print(f"voicecore diagnose: {MATPLOTLIB_MISSING}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"voicecore diagnose: cannot write {output}: {exc}", file=sys.stderr)
        return 1
    print(f"picture: {output}")
    return 0
