"""``make test-fleet``: a fleet on loopback loses no conversation when a server goes away.

HAProxy (``deploy/haproxy/haproxy.cfg``) in front of three ``voicecore serve`` servers
(``--workers 1`` each: three "machines"), sharing one Redis conversation store; callers
(:func:`harness.caller.call`, each from its own loopback address) talk through HAProxy with
real speech (the shared recordings beside the checkout, else a synthetic voice) for
``--talk-s`` seconds. Mid-call, server A is drained (SIGTERM: its callers are told 1001
after its drain timeout) and server B is killed (SIGKILL: its callers' connections die
with it); server C is left alone. Every caller reconnects through HAProxy by itself and
resumes its conversation on a server that is still there.

The servers run the scripted pipeline (the energy VAD, a scripted recognizer, LLM and
voice): 30 conversations of the offline models would need far more than this machine's two
cores, and what is tested here is the fleet, not the models.

The last line printed is one JSON object: ``clients``, ``reconnects``,
``max_reconnect_s`` and ``p95_reconnect_s`` (a dropped connection to the next ``ready``),
``history_lost`` (entries a caller said or heard that its resumed history lacked: must be
0), ``not_resumed`` (reconnects that got a new conversation: must be 0),
``untouched_underruns`` (player underruns on the connections of server C, the one left
alone: must be 0), ``failures`` (callers that could not get back in: must be 0), the
replies heard, and each server's conversations at the start. The exit status is 1 when a
"must" is broken.

Run ``python -m harness.fleet --help``. Everything listens on and targets 127.0.0.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import sys
import time
from typing import Any

import trio

from harness.burst import healthz, quantile
from harness.caller import CallerResult, call
from harness.haproxy import HAPROXY, HAProxy
from harness.launcher import ServerProcess
from harness.redis_server import RedisServer
from harness.redis_server import available as redis_available
from harness.speech import mic_clips

__all__ = ["main", "run_fleet"]

SERVERS = ("A (drained)", "B (killed)", "C (untouched)")


def _say(line: str) -> None:
    print(f"fleet: {line}", flush=True)


async def _server_of_connection(servers: list[ServerProcess]) -> list[int]:
    """Each server's open conversations now."""
    counts = []
    for server in servers:
        try:
            _, health = await healthz(server.port)
            counts.append(int(health["sessions"]))
        except (OSError, ValueError, trio.BrokenResourceError):
            counts.append(0)
    return counts


async def run_fleet(
    *, clients: int, talk_s: float, drain_at_s: float, kill_at_s: float, drain_timeout_s: float
) -> dict[str, Any]:
    """Runs the fleet (see the module doc) and returns its figures."""
    speech, source = mic_clips()
    _say(f"{clients} callers, {talk_s:g} s each, speech from {source}")
    with contextlib.ExitStack() as stack:
        store = stack.enter_context(RedisServer())
        args = [
            "--providers", "scripted", "--workers", "1",
            "--max-sessions", str(clients),  # one server may end up carrying everybody
            "--server-trusted-proxies", "127.0.0.1",
            "--server-conversation-store", store.url,
            "--server-drain-timeout-s", str(drain_timeout_s),
        ]  # fmt: skip
        servers = [ServerProcess(args, cli=True) for _ in SERVERS]
        for server in servers:
            server.start()
            stack.callback(server.stop, signal.SIGINT)
        proxy = HAProxy([s.port for s in servers]).start()
        stack.callback(proxy.stop)
        _say(f"HAProxy on 127.0.0.1:{proxy.port} in front of ports {[s.port for s in servers]}")
        url = f"ws://127.0.0.1:{proxy.port}/ws"
        results: list[CallerResult] = []
        at_start: list[int] = []
        started = trio.current_time()

        async def caller(index: int) -> None:
            await trio.sleep(index * 0.05)  # not all in the same millisecond
            results.append(
                await call(
                    url,
                    speech,
                    talk_s=talk_s,
                    pause_s=4.0,  # time for a whole reply before the next question
                    seed=index,
                    local_address=f"127.0.0.{10 + index}",
                )
            )

        async def faults() -> None:
            await trio.sleep_until(started + drain_at_s - 0.5)
            at_start.extend(await _server_of_connection(servers))
            _say(f"conversations per server before the faults: {at_start}")
            await trio.sleep_until(started + drain_at_s)
            drained, killed = servers[0], servers[1]
            assert drained.process is not None
            assert killed.process is not None
            _say(f"t={drain_at_s:g} s: SIGTERM to server A (drains for {drain_timeout_s:g} s)")
            os.killpg(drained.process.pid, signal.SIGTERM)
            await trio.sleep_until(started + kill_at_s)
            _say(f"t={kill_at_s:g} s: SIGKILL to server B")
            os.killpg(killed.process.pid, signal.SIGKILL)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(faults)
            for index in range(clients):
                nursery.start_soon(caller, index)
        return _figures(results, at_start)


def _figures(results: list[CallerResult], at_start: list[int]) -> dict[str, Any]:
    outages = [s for r in results for s in r.reconnect_s]
    # Connections that ended with the caller's own bye: on server C (A and B ended theirs).
    untouched = [c for r in results for c in r.connections if c.close_code == 1000]
    return {
        "clients": len(results),
        "reconnects": sum(r.reconnects for r in results),
        "max_reconnect_s": round(max(outages), 3) if outages else None,
        "p95_reconnect_s": round(quantile(outages, 0.95), 3) if outages else None,
        "p50_reconnect_s": round(quantile(outages, 0.5), 3) if outages else None,
        "history_lost": sum(r.history_lost for r in results),
        "not_resumed": sum(r.not_resumed for r in results),
        "untouched_connections": len(untouched),
        "untouched_underruns": sum(c.underruns for c in untouched),
        "failures": sum(bool(r.failure) for r in results),
        "replies": sum(r.replies for r in results),
        "record_entries": sum(len(r.record) for r in results),
        "sessions_per_server_before": at_start,
    }


def broken(figures: dict[str, Any], clients: int) -> list[str]:
    """The invariants the figures break (empty: none)."""
    problems = [
        f"{name} is {figures[name]}, not 0"
        for name in ("history_lost", "not_resumed", "untouched_underruns", "failures")
        if figures[name]
    ]
    if figures["clients"] != clients:
        problems.append(f"{figures['clients']} of {clients} callers finished")
    if not figures["reconnects"]:
        problems.append("nobody reconnected: the faults did not happen")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.fleet``: runs the fleet, prints its figures (the last line is
    JSON), returns 1 when an invariant is broken, 2 when HAProxy or Redis is missing."""
    parser = argparse.ArgumentParser(prog="python -m harness.fleet", description=__doc__)
    parser.add_argument("--clients", type=int, default=30)
    parser.add_argument("--talk-s", type=float, default=24.0)
    parser.add_argument("--drain-at-s", type=float, default=6.0)
    parser.add_argument("--kill-at-s", type=float, default=12.0)
    parser.add_argument("--drain-timeout-s", type=float, default=3.0)
    args = parser.parse_args(argv)
    if HAPROXY is None or not redis_available():
        print("fleet: needs Debian's haproxy and redis-server (make fleet-deps)", file=sys.stderr)
        return 2
    began = time.monotonic()
    figures = trio.run(
        lambda: run_fleet(
            clients=args.clients,
            talk_s=args.talk_s,
            drain_at_s=args.drain_at_s,
            kill_at_s=args.kill_at_s,
            drain_timeout_s=args.drain_timeout_s,
        )
    )
    figures["seconds"] = round(time.monotonic() - began, 1)
    problems = broken(figures, args.clients)
    for problem in problems:
        _say(f"BROKEN: {problem}")
    p95 = figures["p95_reconnect_s"]
    if p95 is not None and not math.isnan(p95):
        _say(f"reconnect p95 {p95:.3f} s (target 1 s: {'met' if p95 <= 1 else 'MISSED'})")
    print(json.dumps(figures), flush=True)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
