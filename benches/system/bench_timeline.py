"""The diagnostic timeline of a stress run: ``voicecore serve --timeline`` under faults,
drawn by ``voicecore diagnose``.

The server runs in its own process group (scripted providers, port 0, loopback) with a GC
storm injected on its event loop (``VOICECORE_FAULTS=gc_storm:MS@P``, see
``harness.faults``) and, from outside, SIGSTOP/SIGCONT freezes of the whole process
(what a CPU quota throttle does). One client speaks a turn every few seconds in real time,
plays the agent's audio into a simulated buffer (20 ms frames consumed in real time, the
protocol's playout reports 4 times a second) and counts its underruns. At the end the server
is stopped with SIGINT (the timeline is dumped on shutdown), and the recorded timeline is
analysed: the gaps ``voicecore.diagnose.find_gaps`` finds, how many have a recorded cause
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

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from harness import subprocess_env
from harness.faults import freeze_bursts
from voicecore.diagnose import find_gaps, plot, summarize
from voicecore.diagnostics import Timeline

REPORTS = Path(__file__).resolve().parents[2] / "reports"
RATE = 16_000
OUT_RATE = 24_000
FRAME_MS = 20
GC_STORM = "gc_storm:250@3.1"  # a 250 ms collection every 3.1 s on the server's loop
FREEZE_MS, FREEZE_PERIOD_S = 300.0, 4.3  # the whole server frozen 300 ms every 4.3 s
TURN_EVERY_S = 4.0
SERVE = (sys.executable, "-m", "harness.serve", "--providers", "scripted", "--port", "0")

_rng = np.random.default_rng(6)


def _noise(ms: float) -> bytes:
    return _rng.normal(0, 30, int(RATE * ms / 1000)).astype("<i2").tobytes()


def _voice(ms: float) -> bytes:
    t = np.arange(int(RATE * ms / 1000)) / RATE
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 15))
    x = 3000 * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + _rng.normal(0, 30, t.size)
    return x.astype("<i2").tobytes()


@dataclass
class Player:
    """The client's playout buffer: frames received are queued and played in real time. An
    underrun is the buffer running dry in the middle of a reply (a frame came after it had
    emptied); the wait between replies is not one."""

    buffered_ms: float = 0.0
    played_ms: float = 0.0
    underruns: int = 0
    frames: int = 0
    max_gap_ms: float = 0.0  # the longest silence heard inside a reply
    _at: float = field(default_factory=time.monotonic)
    _dry_since: float | None = None
    _in_reply: bool = False

    def advance(self) -> None:
        now = time.monotonic()
        elapsed_ms = (now - self._at) * 1000.0
        self._at = now
        if self.buffered_ms > 0.0 and elapsed_ms >= self.buffered_ms:
            self._dry_since = now - (elapsed_ms - self.buffered_ms) / 1000.0
        played = min(elapsed_ms, self.buffered_ms)
        self.played_ms += played
        self.buffered_ms -= played

    def frame(self) -> None:
        self.advance()
        if self._in_reply and self._dry_since is not None:
            self.underruns += 1
            self.max_gap_ms = max(self.max_gap_ms, (self._at - self._dry_since) * 1000.0)
        self._dry_since = None
        self._in_reply = True
        self.frames += 1
        self.buffered_ms += FRAME_MS

    def end_of_reply(self, *, cleared: bool) -> None:
        """The reply is over (its audio plays out) or cleared (barge-in: dropped now)."""
        self.advance()
        if cleared:
            self.buffered_ms = 0.0
        self._in_reply = False
        self._dry_since = None


@asynccontextmanager
async def serve(timeline_path: Path) -> AsyncIterator[tuple[trio.Process, int]]:
    """``voicecore serve`` with the GC storm, in its own process group; SIGINT on exit
    (graceful: the timeline is written), SIGKILL to the group if it does not stop."""
    env = subprocess_env({"PYTHONUNBUFFERED": "1", "VOICECORE_FAULTS": GC_STORM})
    process = await trio.lowlevel.open_process(
        [*SERVE, "--timeline", str(timeline_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=env,
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        output = b""
        with trio.fail_after(30):
            while b"serving on" not in output:
                chunk = await process.stdout.receive_some()
                assert chunk, output.decode()
                output += chunk
        found = re.search(rb"serving on http://127\.0\.0\.1:(\d+)/", output)
        assert found is not None, output.decode()
        yield process, int(found.group(1))
        process.send_signal(signal.SIGINT)
        with trio.move_on_after(15):
            await process.wait()
    finally:
        if process.returncode is None:
            os.killpg(process.pid, signal.SIGKILL)
            await process.wait()


async def talk(ws: ClientConnection, player: Player, seconds: float) -> None:
    """Speaks a turn every ``TURN_EVERY_S`` (voice between noise, real time), plays what
    comes back, reports the playout 4 times a second; for ``seconds``."""
    await ws.send(
        json.dumps(
            {
                "type": "hello",
                "protocol": 1,
                "input_rate": RATE,
                "output_rate": OUT_RATE,
                "frame_ms": FRAME_MS,
                "client": "bench-timeline/1",
            }
        )
    )
    assert json.loads(await ws.recv())["type"] == "ready"
    frame_bytes = 2 * RATE * FRAME_MS // 1000
    turn = _noise(300) + _voice(900) + _noise(TURN_EVERY_S * 1000 - 1200)

    async def mic() -> None:
        start = trio.current_time()
        sent = 0
        while True:
            offset = (sent * frame_bytes) % len(turn)
            await ws.send(turn[offset : offset + frame_bytes])
            sent += 1
            await trio.sleep_until(start + sent * FRAME_MS / 1000)

    async def reports() -> None:
        while True:
            await trio.sleep(0.25)
            player.advance()
            await ws.send(
                json.dumps(
                    {
                        "type": "playout",
                        "buffered_ms": round(player.buffered_ms, 1),
                        "played_ms": round(player.played_ms, 1),
                        "underruns": player.underruns,
                    }
                )
            )

    async def listen() -> None:
        async for message in ws:
            if isinstance(message, bytes):
                player.frame()
            else:
                kind = json.loads(message).get("type")
                if kind in ("clear", "agent_done"):
                    player.end_of_reply(cleared=kind == "clear")

    with trio.move_on_after(seconds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(mic)
            nursery.start_soon(reports)
            nursery.start_soon(listen)


async def stress_run(seconds: float, timeline_path: Path) -> Player:
    player = Player()
    async with serve(timeline_path) as (process, port), trio.open_nursery() as nursery:
        nursery.start_soon(freeze_bursts, process.pid, FREEZE_MS, FREEZE_PERIOD_S)
        with contextlib.suppress(ConnectionClosed):
            async with connect(f"ws://127.0.0.1:{port}/ws", max_size=2**20) as ws:
                await talk(ws, player, seconds)
        nursery.cancel_scope.cancel()  # freeze_bursts leaves the server running
    return player


@pytest.mark.timeout(600)
def test_timeline_of_a_stress_run(
    benchmark: Any, report: Any, quick: bool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    seconds = 6.0 if quick else 20.0
    timeline_path = tmp_path / "timeline.json"
    player = trio.run(stress_run, seconds, timeline_path)

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
        client_frames=player.frames,
        client_underruns=player.underruns,
        client_max_gap_ms=round(player.max_gap_ms, 1),
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
    assert player.frames > 0
    assert {"agent_audible", "client_cushion", "gc_pause", "loop_lag"} <= kinds
    assert picture.stat().st_size > 10_000
