"""Admission, memory and a caller under attack (issue 13), against ``voicecore serve`` with the
offline pipeline (Silero, Moonshine, the responder, Piper) in a subprocess, over real
WebSockets on loopback (``harness.burst``).

``test_burst``: 30 callers at once (from 30 loopback addresses), each talking real speech for
a while, plus 10 sockets that never say ``hello``. Two servers, one after the other:

* ``admission``: the defaults: the capacity measured at start-up; the rest refused with
  ``busy``;
* ``baseline``: what the server did before: everyone admitted (``--max-sessions 30``).

Per server: the capacity, callers admitted and refused, ``hello`` to ``ready`` (p50, max),
the replies and the provider errors (an STT final past its deadline...), the server's
voice-to-voice p50, and its RSS: at start (models loaded, start-up garbage given back), at
its peak, once the callers have left (before the release), and after the release
(``server.memory_release_s`` later: the voice's arena shrunk, the heap trimmed). Target:
after/start <= 1.3 with admission.

``test_caller_under_attack``: one caller (``harness.client.run_client`` on ``127.0.0.1``:
short questions in real speech, the replies heard to their end) talks to a default server
alone (``quiet``), then while 30 hostile connections come and go from three other addresses
(``harness.burst.attack``: silent sockets, WebSockets without ``hello``, garbage, ``hello``
then gone, loud noise for 3 s then gone; it begins once the caller is in its conversation),
then alone again. Its voice-to-voice (client side:
end of its speech to the reply's first frame) p50/p95, quiet (both quiet runs) against under
attack. Target: p95 under attack within 20 % of quiet.

``test_conversations_at_capacity``: what the capacity promises, that nobody degrades: the
same caller alone, then as many callers as the measured capacity at once (each asking its
questions and listening to the replies, their starts staggered by 1.3 s), then (full mode)
twice as many on a server told to take them (``--max-sessions``). Voice-to-voice p50/p95 of
each; target: p95 at capacity within 20 % of alone.

Full mode: 20 s of talk per burst caller, 90 s per caller run, 60 s per capacity run. Quick
mode (CI): 5 s, 12 s with one quiet run, 12 s without the twice-as-many run; it asserts only
what must hold (clean refusals, the harness worked); the figures of a shared 2-core machine
are noisy, the ratios in the same run are what count.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio

from harness.burst import (
    RssSampler,
    attack,
    burst,
    healthz,
    quantile,
    silent_socket,
    summarize,
)
from harness.client import run_client
from harness.launcher import ServerProcess
from harness.speech import mic_clips, one_utterance
from voicecore.protocol import CloseCode

CALLERS = 30
SILENT = 10
HOSTILE = 30
RELEASE_S = 3.0


async def _health(server: ServerProcess) -> dict[str, Any]:
    return (await healthz(server.port))[1]


async def _one_burst(args: list[str], talk_s: float) -> dict[str, Any]:
    speech, _ = mic_clips()
    release = ["--server-memory-release-s", str(RELEASE_S)]
    async with ServerProcess([*args, *release], start_timeout_s=180) as server:
        health = await _health(server)
        sampler = RssSampler(server)
        start_mb = sampler.now_mb()
        sampler.peak_mb = start_mb
        cut: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            for _ in range(SILENT):
                nursery.start_soon(silent_socket, server.port, cut)
            outcomes = await burst(
                server.ws_url,
                CALLERS,
                addresses=tuple(f"127.0.0.{10 + i}" for i in range(CALLERS)),
                speech=speech,
                talk_s=talk_s,
                pause_s=2.0,
            )
            left_mb = sampler.now_mb()  # everyone gone, nothing released yet
            with trio.fail_after(60):
                while (await _health(server))["memory"]["releases"] < 2:
                    await trio.sleep(0.2)
            nursery.cancel_scope.cancel()
        after_mb = sampler.now_mb()
        figures = summarize(outcomes)
        refused_ok = all(o.close_code == CloseCode.TRY_AGAIN_LATER for o in outcomes if o.refused)
        return {
            "capacity": health["capacity"]["max_sessions"],
            "session_cpu": health["capacity"]["session_cpu"],
            **{k: v for k, v in figures.items() if k != "callers"},
            "refusals_1013": refused_ok,
            "silent_cut_max_s": round(max(cut), 2) if cut else None,
            "rss_start_mb": round(start_mb),
            "rss_peak_mb": round(sampler.peak_mb),
            "rss_left_mb": round(left_mb),
            "rss_after_mb": round(after_mb),
            "after_vs_start": round(after_mb / start_mb, 3),
        }


@pytest.mark.timeout(900)
def test_burst(benchmark: Any, report: Any, quick: bool) -> None:
    talk_s = 5.0 if quick else 20.0
    rows: dict[str, dict[str, Any]] = {}

    def run() -> None:
        rows["admission"] = trio.run(_one_burst, [], talk_s)
        rows["baseline"] = trio.run(_one_burst, ["--max-sessions", str(CALLERS)], talk_s)

    benchmark.pedantic(run, rounds=1, iterations=1)
    for server, row in rows.items():
        report.row(server=server, **row)
    ours, before = rows["admission"], rows["baseline"]
    report.figure("ready_max_ms", ours["ready_max_ms"])
    report.figure("ready_max_ms_baseline", before["ready_max_ms"])
    report.figure("rss_after_vs_start", ours["after_vs_start"])
    report.figure("rss_after_vs_start_baseline", before["after_vs_start"])
    report.figure("target_rss_after_le_1_3x", ours["after_vs_start"] <= 1.3)
    report.figure("provider_errors", ours["provider_errors"])
    report.figure("provider_errors_baseline", before["provider_errors"])
    # What must hold on any machine: the measured capacity admitted, the rest refused cleanly.
    assert ours["admitted"] == ours["capacity"]
    assert ours["refused"] == {"busy": CALLERS - ours["capacity"]}
    assert ours["refusals_1013"]
    assert ours["failures"] == 0
    assert before["admitted"] == CALLERS


async def _caller_runs(duration_s: float, twice: bool) -> dict[str, Any]:
    question = one_utterance(max_s=2.0)
    async with ServerProcess([], start_timeout_s=180) as server:
        health = await _health(server)
        quiet = await run_client(server.port, duration_s, speech=question, barge_in=False)
        stats: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def hostile() -> None:
                # The caller is talking already (admitted) when the attack begins.
                await trio.sleep(2.0)
                stats.append(await attack(server, connections=HOSTILE, duration_s=duration_s - 4))

            nursery.start_soon(hostile)
            attacked = await run_client(server.port, duration_s, speech=question, barge_in=False)
        # Quiet again (full mode): the machine's own drift is part of "quiet".
        quiet_again = (
            await run_client(server.port, duration_s, speech=question, barge_in=False)
            if twice
            else None
        )
        after = await _health(server)
    calm = quiet.v2v_client_ms + (quiet_again.v2v_client_ms if quiet_again else [])
    return {
        "capacity": health["capacity"]["max_sessions"],
        "quiet_replies": len(calm),
        "quiet_v2v_p50_ms": round(quantile(calm, 0.5)),
        "quiet_v2v_p95_ms": round(quantile(calm, 0.95)),
        "attack_replies": len(attacked.v2v_client_ms),
        "attack_v2v_p50_ms": round(quantile(attacked.v2v_client_ms, 0.5)),
        "attack_v2v_p95_ms": round(quantile(attacked.v2v_client_ms, 0.95)),
        "attack_underruns": attacked.underruns,
        "caller_errors": attacked.errors
        + quiet.errors
        + (quiet_again.errors if quiet_again else []),
        **stats[0].summary(),
        "server_refused": after["admission"]["refused"],
    }


@pytest.mark.timeout(900)
def test_caller_under_attack(benchmark: Any, report: Any, quick: bool) -> None:
    duration_s = 12.0 if quick else 90.0
    rows: list[dict[str, Any]] = []

    def run() -> None:
        rows.append(trio.run(_caller_runs, duration_s, not quick))

    benchmark.pedantic(run, rounds=1, iterations=1)
    row = rows[0]
    report.row(**row)
    ratio = row["attack_v2v_p95_ms"] / row["quiet_v2v_p95_ms"]
    report.figure("v2v_p95_attack_vs_quiet", round(ratio, 3))
    report.figure("target_v2v_p95_within_20_percent", ratio <= 1.2)
    # What must hold: the caller was answered in every run, the attack was refused at the
    # door (busy, hello timeouts, pending), and nobody was let in beyond the capacity.
    assert row["quiet_replies"] > 0
    assert row["attack_replies"] > 0
    assert row["hostile_connections"] >= HOSTILE
    assert sum(row["server_refused"].values()) > 0


async def _callers(port: int, n: int, duration_s: float, question: Any) -> list[float]:
    """``n`` callers at once (starts staggered by 1.3 s): their voice-to-voice figures."""
    results: list[list[float]] = [[] for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for index in range(n):

            async def one(index: int = index) -> None:
                await trio.sleep(index * 1.3)  # callers do not arrive in lockstep
                result = await run_client(port, duration_s, speech=question, barge_in=False)
                results[index] = result.v2v_client_ms

            nursery.start_soon(one)
    return [v for r in results for v in r]


async def _capacity_runs(duration_s: float, beyond: bool) -> list[dict[str, Any]]:
    question = one_utterance(max_s=2.0)
    rows = []
    # Every caller on 127.0.0.1 here: the per-address limit is not what is measured.
    unlimited = ["--server-max-connections-per-address", "0"]
    async with ServerProcess(unlimited, start_timeout_s=180) as server:
        capacity = (await _health(server))["capacity"]["max_sessions"]
        for label, n in (("alone", 1), ("at capacity", capacity)):
            v2v = await _callers(server.port, n, duration_s, question)
            rows.append({"callers": label, "n": n, "v2v": v2v})
    if beyond:
        args = [*unlimited, "--max-sessions", str(2 * capacity)]
        async with ServerProcess(args, start_timeout_s=180) as server:
            v2v = await _callers(server.port, 2 * capacity, duration_s, question)
            rows.append({"callers": "twice the capacity", "n": 2 * capacity, "v2v": v2v})
    return rows


@pytest.mark.timeout(900)
def test_conversations_at_capacity(benchmark: Any, report: Any, quick: bool) -> None:
    duration_s = 12.0 if quick else 60.0
    runs: list[list[dict[str, Any]]] = []

    def run() -> None:
        runs.append(trio.run(_capacity_runs, duration_s, not quick))

    benchmark.pedantic(run, rounds=1, iterations=1)
    rows = runs[0]
    alone_p95 = quantile(rows[0]["v2v"], 0.95)
    for row in rows:
        v2v = row["v2v"]
        report.row(
            callers=row["callers"],
            n=row["n"],
            replies=len(v2v),
            v2v_p50_ms=round(quantile(v2v, 0.5)),
            v2v_p95_ms=round(quantile(v2v, 0.95)),
            p95_vs_alone=round(quantile(v2v, 0.95) / alone_p95, 3),
        )
    ratio = quantile(rows[1]["v2v"], 0.95) / alone_p95
    report.figure("v2v_p95_at_capacity_vs_alone", round(ratio, 3))
    report.figure("target_within_20_percent", ratio <= 1.2)
    assert all(row["v2v"] for row in rows)  # every caller was answered
