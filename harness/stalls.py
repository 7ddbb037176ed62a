"""Stalls and throttling: underruns and client gaps against stall length and cushion, for
``voicecore serve`` with its Rust pacer and with a pure-Python pacing baseline, under the
same faults.

Faults (see ``harness.faults``): a GC storm, a GIL-hogging thread, the event loop
blocked (all inside the server, through ``VOICECORE_FAULTS``), the whole process frozen
(SIGSTOP/SIGCONT bursts from outside) and a real cgroup CPU quota where writable.

The baseline is the same program: ``voicecore serve`` started with
``VOICECORE_BENCH_PACER=trio``, which swaps the Rust ``FramePacer`` for
``harness.trio_pacer.TrioFramePacer``: the Rust pacer's release logic, ported line by
line, run by a Trio task with ``trio.sleep_until`` on the event loop instead of its own OS
thread. Same pipeline, same sessions, same client: the only difference is who runs the
pacer, so the difference in the figures is what the Rust thread buys. Each run checks on
``/healthz`` that the server runs the pacer it was asked for.

Run: ``python -m harness.stalls --duration 20`` (prints a table, writes JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import trio

from harness import faults, trio_pacer
from harness.client import run_client
from harness.launcher import ServerProcess
from harness.speech import one_utterance
from voicecore.engine.contracts import PLAYOUT_TO_CLIENT

__all__ = ["PACERS", "SERVERS", "Stall", "main", "measure_stall", "stall_matrix"]

SERVERS: Final = ("voicecore", "python-pacer")
"""The two servers compared: voicecore (Rust pacer thread) and the same server with the
``trio.sleep_until`` pacing baseline."""

PACERS: Final = {"voicecore": "rust", "python-pacer": "trio"}
"""The ``VOICECORE_BENCH_PACER`` value of each server."""


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


# --- runs ---------------------------------------------------------------------------------


def _get(port: int, path: str) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as reply:
        text: str = reply.read().decode()
        return text


async def _check_pacer(port: int, server: str) -> None:
    """Fails unless the server at ``port`` runs the pacer ``server`` stands for."""
    health = json.loads(await trio.to_thread.run_sync(_get, port, "/healthz"))
    scheduling = health["pacer"]["scheduling"]
    is_trio = scheduling == trio_pacer.SCHEDULING
    if is_trio != (PACERS[server] == "trio"):
        raise RuntimeError(
            f"{server}: the server's pacer runs as {scheduling!r}; "
            f"{trio_pacer.ENV}={PACERS[server]} was not honoured"
        )


async def _pacer_lateness(port: int) -> dict[str, float]:
    """The worst session's pacer lateness (p99, max) from ``/metrics``, ms; {} if none."""
    text = await trio.to_thread.run_sync(_get, port, "/metrics")
    figures = {}
    for quantile in ("p99", "max"):
        name = f"voicecore_pacer_lateness_{quantile}_seconds"
        values = [
            float(v)
            for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
            if v.lower() != "nan"
        ]
        if values:
            figures[f"pacer_late_{quantile}_ms"] = round(max(values) * 1000, 1)
    return figures


async def measure_stall(
    server: str,
    stall: Stall | None,
    *,
    cushion_ms: int = PLAYOUT_TO_CLIENT.bound,
    duration_s: float = 20.0,
) -> dict[str, Any]:
    """One run of ``voicecore serve`` with the pacer of ``server`` (``voicecore``: Rust;
    ``python-pacer``: the Trio baseline) under ``stall`` (None: no fault): the client's
    summary row with the server, fault, cushion and the server's worst pacer lateness."""
    if server not in SERVERS:
        raise ValueError(f"server must be one of {SERVERS}, got {server!r}")
    env = {trio_pacer.ENV: PACERS[server]}
    if stall is not None and stall.kind in faults.KINDS:
        env[faults.ENV] = f"{stall.kind}:{stall.ms:g}@{stall.period_s:g}"
    speech = one_utterance()
    args = [
        "--providers", "scripted", "--session-cushion-ms", str(cushion_ms),
        "--max-sessions", "4",  # a fixed capacity: no start-up measurement
    ]  # fmt: skip
    async with ServerProcess(args, env=env) as process:
        port = process.port
        await _check_pacer(port, server)
        async with trio.open_nursery() as nursery:
            quota: contextlib.AbstractContextManager[Any] = contextlib.nullcontext()
            if stall is not None and stall.kind == "sigstop":
                nursery.start_soon(faults.freeze_bursts, process.pid, stall.ms, stall.period_s)
            elif stall is not None and stall.kind == "cpu_quota":
                quota = faults.cpu_quota(process.pid, stall.ms)
            with quota:
                result = await run_client(port, duration_s, speech=speech)
            nursery.cancel_scope.cancel()  # the freezes end (SIGCONT) before /metrics
        lateness = await _pacer_lateness(port)
    row: dict[str, Any] = {
        "server": server,
        "fault": stall.label if stall is not None else "none",
        "cushion_ms": cushion_ms,
    }
    row.update(result.summary())
    row.update(lateness)
    if result.errors:
        row["errors"] = ",".join(result.errors)
    return row


def stall_matrix(*, quick: bool) -> list[tuple[Stall | None, int]]:
    """The (fault, cushion ms) runs: quick mode one fault; full mode every fault kind, the
    loop blocked and the process frozen at 50/100/300 ms, at the default cushion and at
    120 ms (the old default), and a real CPU quota where the machine allows it."""
    default = PLAYOUT_TO_CLIENT.bound
    if quick:
        return [(Stall("loop_block", 100), default)]
    runs: list[tuple[Stall | None, int]] = [(None, default)]
    for cushion in (120, default):
        runs += [(Stall("loop_block", ms), cushion) for ms in (50, 100, 300)]
        runs += [(Stall("sigstop", ms), cushion) for ms in (50, 100, 300)]
    runs += [(Stall("gc_storm", 100), 120), (Stall("gil_hog", 100), 120)]
    if faults.cpu_quota_available():
        runs += [(Stall("cpu_quota", 30), default)]
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.stalls``: the stall matrix, both pacers."""
    parser = argparse.ArgumentParser(prog="python -m harness.stalls")
    parser.add_argument("--duration", type=float, default=20.0, help="seconds per run")
    parser.add_argument("--quick", action="store_true", help="one fault, short runs")
    parser.add_argument("--json", type=Path, default=Path("stalls.json"))
    args = parser.parse_args(argv)

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
