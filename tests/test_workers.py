"""``voicecore serve --workers N`` (issue 14): the real command, N worker processes on one
port under a supervisor. Their admission is shared (the capacity is the machine's), a
worker that dies is restarted while the others' callers talk on, and SIGTERM drains."""

from __future__ import annotations

import functools
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import trio

from harness.burst import burst, healthz
from harness.caller import call
from harness.launcher import ServerProcess
from harness.speech import noise, voice
from voicecore.server.ledger import Ledger, WorkerState

UTTERANCE = np.frombuffer(noise(300) + voice(1000) + noise(700), dtype=np.int16)
"""One utterance the scripted STT hears as "What can you do?"."""


def _workers(health: dict[str, Any]) -> list[dict[str, Any]]:
    workers: list[dict[str, Any]] = health["server"]["workers"]
    return workers


async def _until(port: int, check: Any, timeout_s: float = 30.0) -> dict[str, Any]:
    with trio.fail_after(timeout_s):
        while True:
            _, health = await healthz(port)
            if check(health):
                return health
            await trio.sleep(0.1)


async def test_two_workers_share_one_port_and_one_capacity() -> None:
    args = ["--providers", "scripted", "--workers", "2", "--max-sessions", "2"]
    async with ServerProcess(args, cli=True) as server:
        _, health = await healthz(server.port)
        assert [w["state"] for w in _workers(health)] == ["serving", "serving"]
        assert len({w["pid"] for w in _workers(health)}) == 2
        outcomes = await burst(server.ws_url, 3, speech=[UTTERANCE], talk_s=2.0)
        # Whichever workers the three landed on, the two of them admit two together.
        assert sorted(o.refused or "ready" for o in outcomes) == ["busy", "ready", "ready"]
        await _until(server.port, lambda h: h["server"]["sessions"] == 0, timeout_s=10)
        text = server.log_text()
        assert "serving on http://127.0.0.1:" in text
        assert "with 2 workers" in text


async def test_connections_go_to_the_least_loaded_worker() -> None:
    """Sixteen callers at once: left to the kernel, one worker took 16 of 18 conversations
    (bench_workers); with the ledger's balance each worker holds half, to within two."""
    args = ["--providers", "scripted", "--workers", "2", "--max-sessions", "40"]
    async with ServerProcess(args, cli=True) as server, trio.open_nursery() as nursery:
        for index in range(16):
            nursery.start_soon(
                functools.partial(
                    call,
                    server.ws_url,
                    [UTTERANCE],
                    talk_s=6,
                    pause_s=3,
                    seed=index,
                    local_address=f"127.0.0.{20 + index}",
                )
            )
        health = await _until(server.port, lambda h: h["server"]["sessions"] == 16)
        split = sorted(w["sessions"] for w in _workers(health))
        assert split[1] - split[0] <= 2, split


async def test_a_dead_worker_is_restarted_and_the_others_callers_hear_nothing() -> None:
    args = ["--providers", "scripted", "--workers", "2", "--max-sessions", "4"]
    async with ServerProcess(args, cli=True) as server:
        results: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                results.append(await call(server.ws_url, [UTTERANCE], talk_s=8, pause_s=3))

            nursery.start_soon(caller)
            health = await _until(server.port, lambda h: h["server"]["sessions"] == 1)
            idle = next(w for w in _workers(health) if w["sessions"] == 0)
            os.kill(idle["pid"], signal.SIGKILL)
            health = await _until(
                server.port,
                lambda h: (
                    all(w["state"] == "serving" for w in _workers(h))
                    and idle["pid"] not in {w["pid"] for w in _workers(h)}
                ),
            )
        (result,) = results
        assert result.reconnects == 0  # its worker was not the one killed
        assert result.failure == ""
        assert result.connections[0].underruns == 0
        assert result.replies >= 1
        assert "died (signal SIGKILL)" in server.log_text()


async def test_sigterm_drains_every_worker() -> None:
    args = ["--providers", "scripted", "--workers", "2", "--max-sessions", "4",
            "--server-drain-timeout-s", "1.5"]  # fmt: skip
    async with ServerProcess(args, cli=True) as server:
        results: list[Any] = []
        async with trio.open_nursery() as nursery:

            async def caller() -> None:
                results.append(await call(server.ws_url, [UTTERANCE], talk_s=3.5, pause_s=3))

            nursery.start_soon(caller)
            await _until(server.port, lambda h: h["server"]["sessions"] == 1)
            assert server.process is not None
            os.kill(server.process.pid, signal.SIGTERM)  # the supervisor only
            # The supervisor passes it on: every worker is draining within moments.
            await _until(server.port, lambda h: h["status"] == "draining", timeout_s=2)
            for _ in range(4):  # whichever worker answers
                status, health = await healthz(server.port)
                assert (status, health["status"]) == (503, "draining")
        (result,) = results
        # The conversation went on (it had 1.5 s) or was told to go with 1001.
        assert result.connections[0].close_code in (1000, 1001)
        with trio.fail_after(15):
            while server.process.poll() is None:
                await trio.sleep(0.1)
        assert server.process.returncode == 0
        assert "draining the workers" in server.log_text()


def test_the_ledger_shares_the_capacity_and_the_balance(tmp_path: Path) -> None:
    """Two workers' views of one ledger file: the slots taken by either count against the
    one capacity; the busier worker is told so; a dead worker's slot is freed."""
    path = tmp_path / "ledger"
    supervisor = Ledger.create(path, 2)
    first, second = Ledger.open(path, 0), Ledger.open(path, 1)
    for worker in (first, second):
        worker.set_state(WorkerState.SERVING)
    supervisor.publish_capacity({"max_sessions": 3})
    assert first.capacity() == {"max_sessions": 3}
    assert [first.take(3), second.take(3), second.take(3), first.take(3)] == [
        True, True, True, False,
    ]  # fmt: skip
    assert supervisor.sessions() == 3
    first.connected(+1)
    assert first.busier_than_another()
    assert not second.busier_than_another()
    supervisor.reset(1)  # the second worker died
    assert supervisor.sessions() == 1
    assert not first.busier_than_another()  # a gone worker is no rival
    assert first.take(3)
    first.give_back()
    assert supervisor.to_json()["workers"][0]["sessions"] == 1
    for ledger in (first, second, supervisor):
        ledger.close()
