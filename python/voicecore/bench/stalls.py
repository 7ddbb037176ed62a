"""Stalls and throttling: underruns and client gaps against stall length and cushion, for
``voicecore serve`` and for a pure-Python pacing baseline under the same faults.

Faults (see ``voicecore.bench.faults``): a GC storm, a GIL-hogging thread, the event loop
blocked (all inside the server, through ``VOICECORE_FAULTS``), the whole process frozen
(SIGSTOP/SIGCONT bursts from outside) and a real cgroup CPU quota where writable.

The baseline (``python -m voicecore.bench.stalls baseline-server``) is a minimal Trio
WebSocket server speaking enough of protocol v1 for the bench client: after ``ready`` it
talks on its own, a 3 s reply of tone every 4 s, each paced with ``trio.sleep_until`` on
absolute deadlines (a burst that fills the cushion, then one frame per ``frame_ms``, late
frames sent at once to catch up): what a pacer without the Rust thread looks like. It has
no pipeline, so it does less work than voicecore per frame: if anything the comparison
favours it. Swapping the pacer inside voicecore's ``PlayoutRouter`` would have replaced
the Rust ``FramePacer``'s whole stream API (push with backpressure, cushion control from
playout reports, the release descriptor), which is why the baseline is a process of its own.

Run: ``python -m voicecore.bench.stalls --duration 20`` (prints a table, writes JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.server import ServerConnection, serve

from voicecore.bench import faults
from voicecore.bench.impair import FRAME_MS, launch_server, load_speech, run_client

__all__ = ["SERVERS", "Stall", "baseline_server", "main", "measure_stall", "stall_matrix"]

SERVERS: Final = ("voicecore", "python-pacer")
"""The two servers compared: voicecore (Rust pacer thread) and the ``trio.sleep_until``
pacing baseline."""

REPLY_S: Final = 3.0
PAUSE_S: Final = 1.0


@dataclass(frozen=True)
class Stall:
    """One fault of the matrix.

    Attributes:
        kind: an in-process kind (``gc_storm``, ``gil_hog``, ``loop_block``), ``sigstop``
            (process frozen from outside) or ``cpu_quota`` (``ms`` is then the percent of
            one CPU allowed).
        ms: the hiccup's length, ms (percent for ``cpu_quota``).
        period_s: time between hiccups, s.
    """

    kind: str
    ms: float
    period_s: float = 2.0

    @property
    def label(self) -> str:
        if self.kind == "cpu_quota":
            return f"cpu_quota {self.ms:g}%"
        return f"{self.kind} {self.ms:g}ms/{self.period_s:g}s"


# --- the baseline server ------------------------------------------------------------------


async def _baseline_session(ws: ServerConnection, cushion_ms: int) -> None:
    hello = json.loads(await ws.recv())
    rate = int(hello.get("output_rate", 24000))
    frame_ms = FRAME_MS
    ready = {
        "type": "ready", "protocol": 1, "session_id": "baseline",
        "input_rate": hello.get("input_rate", 16000), "output_rate": rate,
        "frame_ms": frame_ms, "cushion_ms": cushion_ms,
    }  # fmt: skip
    await ws.send(json.dumps(ready))
    samples = rate * frame_ms // 1000
    t = np.arange(samples) / rate
    frame = (3000 * np.sin(2 * np.pi * 400 * t)).astype(np.int16).tobytes()
    burst = cushion_ms // frame_ms
    frame_s = frame_ms / 1000

    async def drain_input() -> None:
        async for _message in ws:  # mic audio and playout reports: read and dropped
            pass

    async with trio.open_nursery() as nursery:
        nursery.start_soon(drain_input)
        turn = 0
        while True:
            turn += 1
            start = trio.current_time()
            for k in range(int(REPLY_S / frame_s)):
                await trio.sleep_until(start + max(0, k - burst) * frame_s)
                await ws.send(frame)
            # The reply is done once the client's cushion has played out, as in voicecore.
            await trio.sleep_until(start + REPLY_S)
            await ws.send(json.dumps({"type": "agent_done", "turn_id": turn, "interrupted": False}))
            await trio.sleep(PAUSE_S)


async def baseline_server(cushion_ms: int = 120) -> None:
    """Serves the pacing baseline on a free 127.0.0.1 port until cancelled; prints
    ``serving on http://127.0.0.1:PORT/`` like ``voicecore serve``. Honours
    ``VOICECORE_FAULTS`` the same way."""

    async def handler(ws: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            await _baseline_session(ws, cushion_ms)

    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    async with trio.open_nursery() as nursery:
        faults.start_from_env(nursery)
        await nursery.start(
            lambda task_status: serve(
                handler, listeners=listeners, compression=None, task_status=task_status
            )
        )
        print(f"serving on http://127.0.0.1:{port}/", flush=True)
        await trio.sleep_forever()


# --- runs ---------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _server(
    kind: str, cushion_ms: int, env: dict[str, str]
) -> AsyncIterator[tuple[int, int]]:
    command = None
    if kind == "python-pacer":
        command = [
            sys.executable, "-m", "voicecore.bench.stalls", "baseline-server",
            "--cushion-ms", str(cushion_ms),
        ]  # fmt: skip
    async with launch_server(cushion_ms=cushion_ms, env=env, command=command) as (process, port):
        yield process.pid, port


async def measure_stall(
    server: str, stall: Stall | None, *, cushion_ms: int = 120, duration_s: float = 20.0
) -> dict[str, Any]:
    """One run of ``server`` (``voicecore`` or ``python-pacer``) under ``stall`` (None:
    no fault): the client's summary row with the server, fault and cushion."""
    if server not in SERVERS:
        raise ValueError(f"server must be one of {SERVERS}, got {server!r}")
    env: dict[str, str] = {}
    if stall is not None and stall.kind in faults.KINDS:
        env[faults.ENV] = f"{stall.kind}:{stall.ms:g}@{stall.period_s:g}"
    speech = load_speech()
    async with _server(server, cushion_ms, env) as (pid, port), trio.open_nursery() as nursery:
        quota: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
        if stall is not None and stall.kind == "sigstop":
            nursery.start_soon(faults.freeze_bursts, pid, stall.ms, stall.period_s)
        elif stall is not None and stall.kind == "cpu_quota":
            quota = faults.cpu_quota(pid, stall.ms)
        with quota:
            result = await run_client(
                port, duration_s, speech=speech, converse=server == "voicecore"
            )
        nursery.cancel_scope.cancel()
    row: dict[str, Any] = {
        "server": server,
        "fault": stall.label if stall is not None else "none",
        "cushion_ms": cushion_ms,
    }
    row.update(result.summary())
    if result.errors:
        row["errors"] = ",".join(result.errors)
    return row


def stall_matrix(*, quick: bool) -> list[tuple[Stall | None, int]]:
    """The (fault, cushion ms) runs: quick mode one fault; full mode every fault kind, the
    loop blocked and the process frozen at 50/100/300 ms, at the default and a 300 ms
    cushion, and a real CPU quota where the machine allows it."""
    if quick:
        return [(Stall("loop_block", 100), 120)]
    runs: list[tuple[Stall | None, int]] = [(None, 120)]
    for cushion in (120, 300):
        runs += [(Stall("loop_block", ms), cushion) for ms in (50, 100, 300)]
        runs += [(Stall("sigstop", ms), cushion) for ms in (50, 100, 300)]
    runs += [(Stall("gc_storm", 100), 120), (Stall("gil_hog", 100), 120)]
    if faults.cpu_quota_available():
        runs += [(Stall("cpu_quota", 30), 120)]
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m voicecore.bench.stalls [baseline-server]``."""
    parser = argparse.ArgumentParser(prog="python -m voicecore.bench.stalls")
    parser.add_argument("mode", nargs="?", choices=("run", "baseline-server"), default="run")
    parser.add_argument("--cushion-ms", type=int, default=120, help="baseline server's cushion")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="one fault, short runs")
    parser.add_argument("--json", type=Path, default=Path("stalls.json"))
    args = parser.parse_args(argv)
    if args.mode == "baseline-server":
        with contextlib.suppress(KeyboardInterrupt):
            trio.run(baseline_server, args.cushion_ms)
        return 0

    async def run() -> list[dict[str, Any]]:
        rows = []
        for stall, cushion in stall_matrix(quick=args.quick):
            for server in SERVERS:
                rows.append(
                    await measure_stall(server, stall, cushion_ms=cushion, duration_s=args.duration)
                )
        return rows

    rows = trio.run(run)
    for row in rows:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    args.json.write_text(json.dumps({"rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
