"""Replies, audio gaps and their causes in a recorded timeline, and its text summary.

``voicecore serve --timeline PATH`` records the server's timeline (the process probes of
``voicecore.diagnostics`` and every session's events, on one clock: ``recorder``) to a JSON
file; ``voicecore diagnose PATH`` reads it back. The Rust pacer thread writes the agent's frames
to the client's socket itself, so a session records its replies, not each frame:
``agent_audible`` (a reply's first frame was released), ``turn_end`` / ``turn_cancelled``
(the reply played out / was cut by a barge-in or a failure), ``frame_late`` (a frame released
more than the pacer's late threshold, 5 ms by default, after its deadline; on-time frames are
not reported), the client's ``client_cushion`` reports and the stage events. From them this
module

* finds the **replies** (``find_replies``): each session's turns, audible from
  ``agent_audible`` to their ``turn_end`` or ``turn_cancelled``;
* finds the **gaps** (``find_gaps``): a frame released so late that its stream went more
  than ``gap_factor`` frames without one (the pacer thread never takes the GIL: the whole
  process was frozen or denied the CPU), and a client cushion that ran nearly dry in the
  middle of a reply (the client was about to underrun: frames reached it late);
* lists, for each gap, the **causes** whose stretch of time overlaps it: event-loop lag, GC
  pauses, cgroup CPU throttling, and frames the pacer released late;
* says it in text (``summarize``), and cuts out a stretch of a timeline (``window``).

It needs nothing beyond the timeline: the picture of the same findings is ``drawing``'s
(matplotlib, an optional dependency), so the text summary works without it.

Times in the file and here are seconds on one clock (``time.monotonic`` for a server
recording). Durations are in ms.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from voicecore.diagnostics.timeline import CAUSE_KINDS, Timeline, event_fields

__all__ = [
    "DEFAULT_FRAME_MS",
    "Gap",
    "Reply",
    "find_gaps",
    "find_replies",
    "summarize",
    "window",
]

DEFAULT_FRAME_MS: Final = 20.0
"""The frame duration assumed when the timeline does not say (the server's default)."""

REPLY_KINDS: Final[frozenset[str]] = frozenset({"agent_audible", "turn_end", "turn_cancelled"})
"""The kinds that bound a reply: audible from its first frame until it played out or was cut."""


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
        key = (session_of(event), event.get("turn_id"))
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


def session_of(event: dict[str, Any]) -> str:
    """The session an event was recorded in (``"session"`` when it does not say: a
    single session's own timeline)."""
    return str(event.get("session", "session"))


def _stream_of(event: dict[str, Any]) -> str:
    turn = event.get("turn_id")
    return session_of(event) if turn is None else f"{session_of(event)} turn {turn}"


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
        reports[session_of(report)].append(report)
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


def window(timeline: Timeline, since: float | None, until: float | None) -> Timeline:
    """A timeline of ``timeline``'s events with ``since <= t <= until`` (seconds)."""
    events = timeline.events(since=since, until=until)
    part = Timeline(max_events=max(len(events), 1))
    for event in events:
        part.record_at(event["t"], event["kind"], **event_fields(event))
    return part
