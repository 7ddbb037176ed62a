"""From a recorded timeline to a picture: which cause lines up with an audio gap.

``voicecore serve --timeline PATH`` records the server's timeline (the process probes of
``voicecore.diagnostics`` and every session's events, on one clock) to a JSON file;
``voicecore diagnose PATH`` reads it back. The Rust pacer thread writes the agent's frames to
the client's socket itself, so a session records its replies, not each frame:
``agent_audible`` (a reply's first frame was released), ``turn_end`` / ``turn_cancelled``
(the reply played out / was cut by a barge-in or a failure), ``frame_late`` (a frame released
more than the pacer's late threshold, 5 ms by default, after its deadline; on-time frames are
not reported), the client's ``client_cushion`` reports and the stage events. From them it

* finds the **replies** (``find_replies``): each session's turns, audible from
  ``agent_audible`` to their ``turn_end`` or ``turn_cancelled``;
* finds the **gaps** (``find_gaps``): a frame released so late that its stream went more
  than ``gap_factor`` frames without one (the pacer thread never takes the GIL: the whole
  process was frozen or denied the CPU), and a client cushion that ran nearly dry in the
  middle of a reply (the client was about to underrun: frames reached it late);
* lists, for each gap, the **causes** whose stretch of time overlaps it: event-loop lag, GC
  pauses, cgroup CPU throttling, and frames the pacer released late;
* draws (``plot``, matplotlib) stacked panels on one time axis: the replies (one row per
  session, a bar from audible to end), the client cushion, event-loop lag, GC pauses, CPU
  throttling and the late frames' lateness, and stage events as labelled vertical lines.
  Every gap is a red band across all panels, so the cause under it is plain to see.

Times in the file and here are seconds on one clock (``time.monotonic`` for a server
recording); the picture shows them relative to the first event. Durations are in ms.
"""

from __future__ import annotations

import argparse
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
    "Reply",
    "TimelineRecorder",
    "add_diagnose_arguments",
    "diagnose_command",
    "find_gaps",
    "find_replies",
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

REPLY_KINDS: Final[frozenset[str]] = frozenset({"agent_audible", "turn_end", "turn_cancelled"})
"""The kinds that bound a reply: audible from its first frame until it played out or was cut."""

PANEL_KINDS: Final[frozenset[str]] = CAUSE_KINDS | REPLY_KINDS | {"frame_late", "client_cushion"}
"""Kinds drawn in their own panels; every other kind is a stage event (a labelled line)."""


# --- replies -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reply:
    """One reply of the agent: audible from its first released frame until its end.

    Attributes:
        session: the session it was spoken in.
        turn_id: its turn.
        start: when its first frame was released (``agent_audible``), seconds.
        end: when it played out or was cut (``turn_end`` / ``turn_cancelled``), seconds;
            ``None`` when the timeline holds no end (still playing when it was written).
        cancelled: it was cut (``turn_cancelled``: a barge-in or a failure).
    """

    session: str
    turn_id: Any
    start: float
    end: float | None
    cancelled: bool = False

    def playing_at(self, t: float) -> bool:
        """Whether ``t`` (seconds) is strictly inside the reply."""
        return self.start < t and (self.end is None or t < self.end)


def find_replies(timeline: Timeline) -> list[Reply]:
    """The replies of ``timeline`` in order of their start: each ``agent_audible`` paired
    with the next ``turn_end`` or ``turn_cancelled`` of the same session and turn. A turn
    cancelled before it became audible (a barge-in during the agent's thinking) is not a
    reply; an end whose ``agent_audible`` was evicted from the timeline is ignored."""
    audible: dict[tuple[str, Any], float] = {}
    found: list[Reply] = []
    for event in timeline.events():
        kind = event["kind"]
        if kind not in REPLY_KINDS:
            continue
        key = (_session_of(event), event.get("turn_id"))
        t = float(event["t"])
        if kind == "agent_audible":
            audible.setdefault(key, t)
        elif key in audible:
            cancelled = kind == "turn_cancelled"
            found.append(Reply(key[0], key[1], audible.pop(key), t, cancelled))
    found += [Reply(session, turn, start, None) for (session, turn), start in audible.items()]
    return sorted(found, key=lambda r: r.start)


# --- gaps --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Gap:
    """A stretch of time in which a stream's audio was (about to be) interrupted.

    Attributes:
        start: when the gap began, seconds on the timeline's clock.
        end: when it ended, seconds.
        stream: the stream it happened on (``"<session> turn <n>"``, or the session).
        kind: ``"release"`` (a frame released too late: the stream went without one) or
            ``"cushion"`` (the client's buffered audio fell below the threshold while a
            reply was playing).
        detail: a short human description (how long, how low).
        causes: the cause events (loop lag, GC pause, CPU throttling, a late frame)
            recorded around it.
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


def _extent(event: dict[str, Any]) -> tuple[float, float]:
    """The stretch of time (seconds) a cause event covers: a loop lag is stamped when the
    stall ended, a GC pause when it began, a throttling sample at the end of its interval,
    a late frame when it was released."""
    t = float(event["t"])
    kind = event["kind"]
    if kind == "loop_lag":
        return t - float(event.get("lag_ms", 0.0)) / 1000.0, t
    if kind == "gc_pause":
        return t, t + float(event.get("duration_ms", 0.0)) / 1000.0
    if kind == "cpu_throttled":
        return t - float(event.get("throttled_ms", 0.0)) / 1000.0, t
    return t - float(event.get("lateness_ms", 0.0)) / 1000.0, t  # frame_late


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
        if e["kind"] == "frame_late"
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
    cause_margin_s: float = 0.25,
) -> list[Gap]:
    """The gaps of ``timeline``, in time order, each with the causes recorded around it.

    * A **release gap**: a ``frame_late`` more than ``(gap_factor - 1) * frame_ms`` late. A
      frame released ``L`` ms late means its stream went ``frame_ms + L`` ms without a
      frame; the gap is the stretch ``[t - L, t]`` before its release. (A pacer holding
      frames back while the client has plenty buffered moves their deadlines: not late.)
    * A **cushion gap**: ``client_cushion`` reports below ``cushion_low_ms`` in the middle of
      a reply of the same session (between its ``agent_audible`` and its end, once its
      cushion had been filled: a reply starts from an empty cushion, and a cushion draining
      after the reply's end, or emptied by a barge-in, is normal). It lasts until the next
      report above the threshold.

    Args:
        timeline: the recorded events (``agent_audible``, ``turn_end``, ``turn_cancelled``
            and ``frame_late`` with ``session``/``turn_id``, ``client_cushion`` with
            ``buffered_ms``, and the cause kinds).
        frame_ms: the frame duration, in ms (> 0).
        gap_factor: the release gap threshold: a stream this many frames' time without a
            frame (> 1).
        cushion_low_ms: the cushion gap threshold, in ms (default: one frame).
        cause_margin_s: how far around a gap causes are looked for, in seconds (>= 0).

    Raises:
        ValueError: a parameter out of range.
    """
    if not frame_ms > 0.0:
        raise ValueError(f"frame_ms must be > 0 ms, got {frame_ms}")
    if not gap_factor > 1.0:
        raise ValueError(f"gap_factor must be > 1, got {gap_factor}")
    if cause_margin_s < 0.0:
        raise ValueError(f"cause_margin_s must be >= 0 s, got {cause_margin_s}")
    low_ms = frame_ms if cushion_low_ms is None else cushion_low_ms
    limit_ms = (gap_factor - 1.0) * frame_ms
    gaps: list[Gap] = []
    for event in timeline.events("frame_late"):
        late_ms = float(event.get("lateness_ms", 0.0))
        if late_ms <= limit_ms:
            continue
        start, end = _extent(event)
        detail = f"no frame for {frame_ms + late_ms:.0f} ms (one released {late_ms:.0f} ms late)"
        gaps.append(Gap(start, end, _stream_of(event), "release", detail))
    replies: dict[str, list[Reply]] = defaultdict(list)
    for reply in find_replies(timeline):
        replies[reply.session].append(reply)
    reports: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for report in timeline.events("client_cushion"):
        reports[_session_of(report)].append(report)
    for session, session_reports in reports.items():
        gaps += _cushion_gaps(session, session_reports, replies.get(session, []), low_ms)
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


def _cushion_gaps(
    session: str, reports: list[dict[str, Any]], replies: list[Reply], low_ms: float
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
            playing = {r.turn_id for r in replies if r.playing_at(t)}
            if float(current.get("buffered_ms", math.inf)) >= low_ms:
                filled |= playing
            elif playing & filled:
                run.append(current)
                continue
        if run:
            lowest = min(float(r["buffered_ms"]) for r in run)
            start_t = float(run[0]["t"])
            end_t = float(current["t"]) if current is not None else float(run[-1]["t"])
            detail = f"client cushion down to {lowest:.0f} ms for {(end_t - start_t) * 1000:.0f} ms"
            gaps.append(Gap(start_t, end_t, session, "cushion", detail))
            run = []
    return gaps


def _describe_cause(event: dict[str, Any], gap: Gap) -> str:
    kind = event["kind"]
    offset_ms = (float(event["t"]) - gap.start) * 1000.0
    when = f"{offset_ms:+.0f} ms"
    if kind == "loop_lag":
        return f"event loop lagged {float(event.get('lag_ms', 0.0)):.0f} ms (woke at {when})"
    if kind == "frame_late":
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
    replies = find_replies(timeline)
    sessions = len({r.session for r in replies})
    cut = sum(1 for r in replies if r.cancelled)
    unended = sum(1 for r in replies if r.end is None)
    lines = [
        f"{len(events)} events over {span:.1f} s ({timeline.evicted} evicted)",
        f"{len(replies)} replies on {sessions} sessions ({cut} cut short, {unended} without "
        f"an end), {counts['frame_late']} frames released late",
        "causes recorded: "
        + ", ".join(f"{counts[k]} {k}" for k in sorted(CAUSE_KINDS))
        + _worst(timeline),
    ]
    if not gap_list:
        lines.append("no gap found")
        return "\n".join(lines)
    lines.append(f"{len(gap_list)} gap(s):")
    for gap in gap_list:
        lines.append(f"  {gap.start - origin:8.3f} s  {gap.stream}: {gap.kind} gap, {gap.detail}")
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
    late = [float(e.get("lateness_ms", 0.0)) for e in timeline.events("frame_late")]
    if lags:
        worst.append(f"longest loop lag {max(lags):.0f} ms")
    if pauses:
        worst.append(f"longest GC pause {max(pauses):.0f} ms")
    if late:
        worst.append(f"latest frame {max(late):.1f} ms late")
    return "; " + ", ".join(worst) if worst else ""


# --- the picture ---------------------------------------------------------------------------------

REPLY_LABELS_MAX: Final = 40
"""Up to this many replies in the picture, each bar is labelled with its turn."""


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

    Panels, top to bottom, sharing the time axis (seconds from the first event): replies
    (one row per session, a bar from ``agent_audible`` to the reply's end, coloured by how
    it ended), client cushion (ms per session), event-loop lag (a bar spanning each stall,
    height its length), GC pauses (bars by generation), CPU throttling and the lateness of
    late frames, and stage events (labelled lines). Gaps are red bands across every panel.
    ``since``/``until`` (seconds on the timeline's clock) draw only that stretch (e.g. from
    the first session, past the server's start-up).

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
    reply_list = find_replies(timeline)  # before windowing: a reply may begin before it
    if since is not None or until is not None:
        timeline = window(timeline, since, until)
        lo, hi = since if since is not None else -math.inf, until if until is not None else math.inf
        gap_list = [g for g in gap_list if g.end >= lo and g.start <= hi]
        reply_list = [r for r in reply_list if r.start <= hi and (r.end is None or r.end >= lo)]
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
    replies_ax, cushion, lag, gc_ax, cpu, stages = axes

    names: list[str] = []
    for reply in reply_list:
        if reply.session not in names:
            names.append(reply.session)
    rows = {name: row for row, name in enumerate(names)}
    for label, color, chosen in (
        (
            "played out",
            "tab:blue",
            [r for r in reply_list if r.end is not None and not r.cancelled],
        ),
        ("cut (barge-in or failure)", "tab:orange", [r for r in reply_list if r.cancelled]),
        ("no end recorded", "0.6", [r for r in reply_list if r.end is None]),
    ):
        if chosen:
            starts = [rel(r.start) for r in chosen]
            stops = [end if r.end is None else rel(r.end) for r in chosen]
            replies_ax.barh(
                [rows[r.session] for r in chosen],
                [max(stop - start, end / 800.0) for start, stop in zip(starts, stops, strict=True)],
                left=starts,
                height=0.7,
                align="center",
                color=color,
                label=label,
            )
    if len(reply_list) <= REPLY_LABELS_MAX:
        for reply in reply_list:
            replies_ax.text(
                max(rel(reply.start), 0.0),
                rows[reply.session],
                f" #{reply.turn_id}",
                fontsize=7,
                va="center",
                ha="left",
            )
    replies_ax.set_yticks(range(len(names)), [_short(n) for n in names], fontsize=7)
    replies_ax.set_ylim(-0.8, max(len(names), 1) - 0.2)
    replies_ax.set_ylabel("replies\n(audible)")
    if names:
        replies_ax.legend(fontsize=7, loc="upper right")
    else:
        _empty(replies_ax, "no agent_audible events")

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
        chosen_pauses = [e for e in pauses if e.get("generation", 0) == generation]
        if chosen_pauses:
            gc_ax.bar(
                [rel(e["t"]) for e in chosen_pauses],
                [float(e.get("duration_ms", 0.0)) for e in chosen_pauses],
                width=[
                    max(float(e.get("duration_ms", 0.0)) / 1000.0, end / 800.0)
                    for e in chosen_pauses
                ],
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
    late_frames = timeline.events("frame_late")
    if late_frames:
        cpu.plot(
            [rel(e["t"]) for e in late_frames],
            [float(e.get("lateness_ms", 0.0)) for e in late_frames],
            ".",
            markersize=4,
            color="tab:red",
            label="late frames (ms past the deadline): process frozen or CPU denied",
        )
    cpu.set_ylabel("CPU throttled /\nfrozen (ms)")
    cpu.set_ylim(bottom=0)
    if throttled or late_frames:
        cpu.legend(fontsize=7, loc="upper right")
    else:
        _empty(cpu, "no throttling, no late frame")

    stage_events = [e for e in events if e["kind"] not in PANEL_KINDS]
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
