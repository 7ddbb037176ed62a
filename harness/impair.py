"""Network impairment for the system benchmarks: a delaying, jittering, stalling TCP proxy,
and the runs of one conversing client (``harness.client``) through it.

Why a proxy and not ``tc netem``: netem needs the ``sch_netem`` kernel module, which many
containers and CI machines lack (this one did: ``tc qdisc add ... netem`` answers "Specified
qdisc kind is unknown"). On TCP, what a listener hears of a lost packet is not a hole but
a stall: the bytes behind it wait for the retransmission. The proxy reproduces that
directly on the byte stream, in both directions, on 127.0.0.1 only:

* every chunk read is forwarded ``delay_ms`` later, plus a uniform jitter of
  ``+-jitter_ms``, never before the chunk ahead of it (TCP does not reorder bytes);
* with probability ``stall_probability`` a chunk (and so everything behind it) is held
  ``stall_ms`` more: a lost segment's retransmission.

The client (``harness.client.run_client``) speaks protocol v1 like the web page: it streams
20 ms mic frames of real speech on a real-time clock, plays the agent's frames into the
page's player (``harness.player``: a frame that arrives after it ran dry, within a reply,
is an underrun, and the time it was dry is the gap), sends ``playout`` reports 4 times a
second, barges in on every other reply, and measures voice-to-voice and barge-in latency
at the client.

Run: ``python -m harness.impair --duration 30`` (prints a table and writes JSON).
"""

from __future__ import annotations

import argparse
import json
import math
import random
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

import trio

from harness.client import CLOSE_GRACE_S, run_client
from harness.launcher import ServerProcess
from harness.speech import one_utterance
from voicecore.engine.contracts import PLAYOUT_TO_CLIENT

__all__ = [
    "PROFILES",
    "ImpairingProxy",
    "Profile",
    "find_min_cushion",
    "main",
    "measure",
]


@dataclass(frozen=True)
class Profile:
    """A network condition, applied to each direction of the byte stream.

    Attributes:
        name: the profile's name.
        delay_ms: one-way delay added to every chunk, ms.
        jitter_ms: uniform jitter around the delay (+-), ms.
        stall_probability: chance that a chunk is held back (a lost segment on TCP).
        stall_ms: how long a held-back chunk waits for its retransmission, ms.
    """

    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    stall_probability: float = 0.0
    stall_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.stall_ms < 0:
            raise ValueError(f"{self.name}: delays must be >= 0 ms")
        if not 0 <= self.stall_probability < 1:
            raise ValueError(f"{self.name}: stall_probability must be in [0, 1)")
        if self.jitter_ms > self.delay_ms:
            raise ValueError(f"{self.name}: jitter_ms must not exceed delay_ms")


PROFILES: Final[dict[str, Profile]] = {
    "clean": Profile("clean"),
    # ~50 ms added latency with jitter; 1 % of segments lost, each recovered by a
    # retransmission after Linux's minimum RTO (200 ms), which holds the stream behind it.
    "moderate": Profile("moderate", 50.0, 15.0, 0.01, 200.0),
    # ~150 ms, 5 % lost; a longer recovery (RTO backoff on a slow path).
    "degraded": Profile("degraded", 150.0, 40.0, 0.05, 300.0),
}
"""The issue's three profiles (delays one way, in each direction)."""


# --- the proxy ----------------------------------------------------------------------------


class ImpairingProxy:
    """A loopback TCP proxy that forwards to ``127.0.0.1:upstream_port`` through ``profile``.

    Args:
        upstream_port: the server's port.
        profile: the impairment of both directions.
        seed: the random generator's seed (runs are repeatable in what they inject).

    Attributes:
        port: the port the proxy listens on (once ``run`` has started).
        chunks: chunks forwarded (both directions).
        stalls: chunks held back for a retransmission.
    """

    def __init__(self, upstream_port: int, profile: Profile, *, seed: int = 1) -> None:
        self.upstream_port = upstream_port
        self.profile = profile
        self.port: int | None = None
        self.chunks = 0
        self.stalls = 0
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"ImpairingProxy({self.port} -> {self.upstream_port}, {self.profile.name})"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listens on 127.0.0.1 (a free port) and proxies every connection until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, client: trio.SocketStream) -> None:
        async with client:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
            async with upstream, trio.open_nursery() as nursery:
                # Either side closing ends the pair: a half-open proxy would hide it.
                nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, sink)
            async with send:
                last_due = 0.0
                while True:
                    try:
                        chunk = await source.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        chunk = b""
                    if not chunk:
                        break
                    due = max(last_due, trio.current_time() + self._delay_s())
                    self.chunks += 1
                    if self._rng.random() < self.profile.stall_probability:
                        self.stalls += 1
                        due += self.profile.stall_ms / 1000
                    last_due = due
                    send.send_nowait((due, chunk))
        scope.cancel()

    def _delay_s(self) -> float:
        p = self.profile
        return (p.delay_ms + self._rng.uniform(-p.jitter_ms, p.jitter_ms)) / 1000

    @staticmethod
    async def _deliver(
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]], sink: trio.SocketStream
    ) -> None:
        async with receive:
            async for due, chunk in receive:
                await trio.sleep_until(due)
                try:
                    await sink.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


# --- runs ---------------------------------------------------------------------------------


def _server_args(cushion_ms: int) -> list[str]:
    """The server of every run: the scripted, instant providers and the cushion tried."""
    return [
        "--providers", "scripted", "--session-cushion-ms", str(cushion_ms),
        "--max-sessions", "4",  # a fixed capacity: no start-up measurement
    ]  # fmt: skip


async def measure(
    profile: Profile,
    *,
    cushion_ms: int = PLAYOUT_TO_CLIENT.bound,
    duration_s: float = 30.0,
    seed: int = 1,
) -> dict[str, Any]:
    """One server, one proxy with ``profile``, one client for ``duration_s``: the summary
    row (see ``ClientResult.summary``) with the profile's name and the cushion."""
    speech = one_utterance()
    # Bounded: a run that hangs fails (the server is still stopped) instead of blocking.
    with trio.fail_after(duration_s + CLOSE_GRACE_S + 60):
        async with (
            ServerProcess(_server_args(cushion_ms)) as server,
            trio.open_nursery() as nursery,
        ):
            proxy = ImpairingProxy(server.port, profile, seed=seed)
            proxy_port = await nursery.start(proxy.run)
            result = await run_client(proxy_port, duration_s, speech=speech)
            nursery.cancel_scope.cancel()
    row: dict[str, Any] = {"profile": profile.name, "cushion_ms": result.cushion_ms}
    row.update(result.summary())
    row["stalls_injected"] = proxy.stalls
    if result.errors:
        row["errors"] = ",".join(result.errors)
    return row


async def find_min_cushion(
    profile: Profile, candidates: Sequence[int], *, duration_s: float = 30.0
) -> tuple[int | None, list[dict[str, Any]]]:
    """Runs every cushion (ms) of ``candidates`` under ``profile``; returns the smallest
    one from which on every run had zero underruns (None if the largest had some; one lucky
    clean run below a failing one does not count), and every run's row."""
    rows = []
    for cushion in sorted(candidates):
        rows.append(await measure(profile, cushion_ms=cushion, duration_s=duration_s))
    best = None
    for row in reversed(rows):
        if row["underruns"] or not row["replies"]:
            break
        best = row["cushion_ms"]
    return best, rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.impair``: every profile, then the cushion search."""
    parser = argparse.ArgumentParser(prog="python -m harness.impair")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated")
    parser.add_argument("--cushions", default="80,120,160,200,240,300", help="ms")
    parser.add_argument("--json", type=Path, default=Path("impairment.json"))
    args = parser.parse_args(argv)

    async def run() -> dict[str, Any]:
        rows = [
            await measure(PROFILES[name], duration_s=args.duration)
            for name in args.profiles.split(",")
        ]
        cushions = [int(c) for c in args.cushions.split(",")]
        best, search = await find_min_cushion(
            PROFILES["moderate"], cushions, duration_s=args.duration
        )
        return {
            "profiles": {name: asdict(p) for name, p in PROFILES.items()},
            "rows": rows,
            "cushion_search": search,
            "min_cushion_ms_moderate": best,
        }

    report = trio.run(run)
    for row in [*report["rows"], *report["cushion_search"]]:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"smallest cushion with zero underruns (moderate): {report['min_cushion_ms_moderate']}")
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
