"""The picture of a recorded timeline: which cause lines up with an audio gap.

``plot`` draws (matplotlib) stacked panels on one time axis: the replies (one row per session,
a bar from audible to end), the client cushion, event-loop lag, GC pauses, CPU throttling and
the late frames' lateness, and stage events as labelled vertical lines. Every gap that
``analysis.find_gaps`` finds is a red band across all panels, so the cause under it is plain
to see.

It is apart from ``analysis`` because matplotlib is optional (the dev extra): it is imported
only when drawing, and its absence is the clear ``MATPLOTLIB_MISSING`` error, never a failure
to read a timeline. The picture shows times relative to the first event; durations are in ms.
"""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Final

from voicecore.diagnostics.analysis import (
    REPLY_KINDS,
    Gap,
    find_gaps,
    find_replies,
    session_of,
    window,
)
from voicecore.diagnostics.timeline import CAUSE_KINDS, Timeline

__all__ = [
    "MATPLOTLIB_MISSING",
    "plot",
]

MATPLOTLIB_MISSING: Final = (
    "drawing the timeline needs matplotlib, which is not installed: "
    "pip install matplotlib (or install voicecore with its dev extra); "
    "the text summary works without it"
)
"""What ``plot`` raises (``ModuleNotFoundError``) and the CLI prints without matplotlib."""

PANEL_KINDS: Final[frozenset[str]] = CAUSE_KINDS | REPLY_KINDS | {"frame_late", "client_cushion"}
"""Kinds drawn in their own panels; every other kind is a stage event (a labelled line)."""

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
        by_session[session_of(event)].append(event)
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


def _short(name: str, limit: int = 22) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _empty(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.5")
