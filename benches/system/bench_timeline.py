"""The diagnostic timeline of a stress run: ``voicecore serve --timeline`` under faults,
drawn by ``voicecore diagnose``.

The server runs in its own process group (scripted providers, port 0, loopback) with a GC
storm injected on its event loop (``VOICECORE_FAULTS=gc_storm:MS@P``, see
``harness.faults``) and, from outside, SIGSTOP/SIGCONT freezes of the whole process
(what a CPU quota throttle does). One client (``harness.client.run_client``, without
barge-ins) converses in real time, plays the agent's audio into the page's player
(``harness.player``; the protocol's playout reports 4 times a second) and counts its
underruns. At the end the server
is stopped with SIGINT (the timeline is dumped on shutdown), and the recorded timeline is
analysed: the gaps ``voicecore.diagnostics.find_gaps`` finds, how many have a recorded cause
beside them, and the picture, saved as ``reports/timeline-stress.png``.

There is no baseline tool that draws this picture; the figure compared is the client's own
view: underruns the client counted against gaps the server's timeline shows, and the share
of those gaps the timeline explains (a cause whose stretch of time overlaps the gap, give or
take 250 ms). One run on a shared machine: the fault sizes it reaches vary (a "250 ms" GC
storm took 290-820 ms in our runs), the figures are indicative.

Quick mode (CI): a 6 s run, no figure asserted beyond the harness working (the server
recorded a timeline with replies and probes, the picture was written).
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.client import ClientResult, run_client
from harness.faults import freeze_bursts
from harness.launcher import ServerProcess
from harness.speech import one_utterance
from voicecore.diagnostics import Timeline, find_gaps, plot, summarize

REPORTS = Path(__file__).resolve().parents[2] / "reports"
GC_STORM = "gc_storm:250@3.1"  # a 250 ms collection every 3.1 s on the server's loop
FREEZE_MS, FREEZE_PERIOD_S = 300.0, 4.3  # the whole server frozen 300 ms every 4.3 s


async def stress_run(seconds: float, timeline_path: Path) -> ClientResult:
    """The server with the GC storm and the freezes, one client conversing for ``seconds``;
    the server is stopped with SIGINT (graceful: the timeline is written)."""
    server = ServerProcess(
        ["--providers", "scripted", "--timeline", str(timeline_path), "--max-sessions", "4"],
        env={"VOICECORE_FAULTS": GC_STORM},
        start_timeout_s=30.0,
    )
    async with server:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(freeze_bursts, server.pid, FREEZE_MS, FREEZE_PERIOD_S)
            result = await run_client(
                server.port,
                seconds,
                speech=one_utterance(),
                barge_in=False,
                name="bench-timeline/1",
            )
            nursery.cancel_scope.cancel()  # freeze_bursts leaves the server running
        await server.astop(signal.SIGINT)
    return result


@pytest.mark.timeout(600)
def test_timeline_of_a_stress_run(
    benchmark: Any, report: Any, quick: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seconds = 6.0 if quick else 20.0
    timeline_path = tmp_path / "timeline.json"
    client = trio.run(stress_run, seconds, timeline_path)

    timeline = Timeline.from_json(timeline_path.read_text(encoding="utf-8"))
    gaps = benchmark.pedantic(find_gaps, args=(timeline,), rounds=3, iterations=1)
    REPORTS.mkdir(exist_ok=True)
    picture = REPORTS / ("timeline-stress-quick.png" if quick else "timeline-stress.png")
    started = time.perf_counter()
    # From the session's first event: the server's start-up (the fault injector building its
    # heap of garbage) is not part of the conversation.
    first_session = min(float(e["t"]) for e in timeline.events() if "session" in e)
    plot(
        timeline,
        picture,
        gaps=gaps,
        title=f"stress run: {GC_STORM} in the server, SIGSTOP freezes of {FREEZE_MS:g} ms "
        f"every {FREEZE_PERIOD_S:g} s",
        since=first_session,
    )
    plot_s = time.perf_counter() - started
    summary = summarize(timeline, gaps)
    with capsys.disabled():
        print(f"\n{summary}\npicture: {picture}")

    kinds = {str(e["kind"]) for e in timeline.events()}
    explained = sum(1 for g in gaps if g.causes)
    report.row(
        run_s=seconds,
        events=len(timeline),
        late_frames=len(timeline.events("frame_late")),
        client_frames=client.frames,
        client_underruns=client.underruns,
        client_max_gap_ms=round(max(client.gaps_ms, default=0.0), 1),
        gaps_found=len(gaps),
        gaps_with_cause=explained,
        explained_ratio=round(explained / len(gaps), 3) if gaps else 1.0,
        gc_pauses=len(timeline.events("gc_pause")),
        loop_lags=len(timeline.events("loop_lag")),
        plot_s=round(plot_s, 2),
    )
    report.figure("picture", str(picture))

    # The harness worked: a timeline with audible replies, probes and cushion reports came
    # back from the server, the client heard the agent, and the picture was written.
    assert client.frames > 0
    assert {"agent_audible", "client_cushion", "gc_pause", "loop_lag"} <= kinds
    assert picture.stat().st_size > 10_000
