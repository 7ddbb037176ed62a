"""Admission (issue 13): the capacity, the books, the client's address, and the real server
refusing what it cannot carry: in process on loopback with the scripted pipeline for the
rules, and ``voicecore serve`` with the offline pipeline for a burst, with its memory."""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.burst import (
    RssSampler,
    burst,
    healthz,
    open_conversation,
    silent_socket,
    summarize,
)
from harness.launcher import ServerProcess
from harness.speech import mic_clips
from voicecore.config import ServerConfig, VoicecoreConfig
from voicecore.exceptions import ConfigError
from voicecore.pipeline import scripted_pipeline
from voicecore.protocol import CloseCode
from voicecore.server.admission import (
    MAX_CAPACITY,
    Admission,
    Capacity,
    Refusal,
    available_cores,
    client_address,
)
from voicecore.server.app import VoiceServer
from voicecore.server.calibration import calibrate

# --- the books ---------------------------------------------------------------------------------


def test_a_slot_is_taken_at_hello_not_at_connection() -> None:
    books = Admission(max_sessions=2, max_pending=10, max_per_address=0)
    waiting = [books.connect() for _ in range(5)]
    assert all(t is not None for t in waiting)
    assert (books.pending, books.sessions) == (5, 0)
    for ticket in waiting:
        assert ticket is not None
        assert books.identify(ticket, "10.0.0.1") is None  # no slot taken yet
    first, second, third = waiting[:3]
    assert first is not None
    assert second is not None
    assert third is not None
    assert books.admit(first) is None
    assert books.admit(second) is None
    assert books.full
    assert books.admit(third) is Refusal.CAPACITY
    assert (books.pending, books.sessions, books.peak_sessions) == (3, 2, 2)
    books.release(first)
    books.release(first)  # idempotent
    assert books.admit(third) is None
    assert books.refused == {Refusal.CAPACITY: 1}


def test_a_full_server_refuses_at_the_door() -> None:
    books = Admission(max_sessions=1, max_pending=10, max_per_address=0)
    ticket = books.connect()
    assert ticket is not None
    books.identify(ticket, "a")
    books.admit(ticket)
    late = books.connect()
    assert late is not None
    assert books.identify(late, "b") is Refusal.CAPACITY


def test_pending_connections_are_bounded() -> None:
    books = Admission(max_sessions=5, max_pending=2, max_per_address=0)
    first, second = books.connect(), books.connect()
    assert books.connect() is None
    assert books.refused[Refusal.PENDING] == 1
    assert first is not None
    assert second is not None
    books.identify(first, "a")
    books.admit(first)  # a conversation is no longer pending
    assert books.connect() is not None


def test_one_address_holds_at_most_its_share() -> None:
    books = Admission(max_sessions=10, max_pending=10, max_per_address=2)
    tickets = [books.connect() for _ in range(4)]
    verdicts = [books.identify(t, "10.0.0.1") for t in tickets[:3] if t is not None]
    assert verdicts == [None, None, Refusal.ADDRESS]
    assert tickets[3] is not None
    assert books.identify(tickets[3], "10.0.0.2") is None
    assert books.connections_from("10.0.0.1") == 2
    assert tickets[0] is not None
    books.release(tickets[0])
    assert books.connections_from("10.0.0.1") == 1
    assert books.to_json()["refused"] == {
        "capacity": 0,
        "address": 1,
        "pending": 0,
        "hello_timeout": 0,
    }


def test_the_books_refuse_nonsense() -> None:
    with pytest.raises(ValueError, match="max_sessions"):
        Admission(max_sessions=0, max_pending=1, max_per_address=0)
    books = Admission(max_sessions=1, max_pending=1, max_per_address=0)
    ticket = books.connect()
    assert ticket is not None
    books.release(ticket)
    with pytest.raises(ValueError, match="cannot be admitted"):
        books.admit(ticket)


# --- the capacity ------------------------------------------------------------------------------


def test_capacity_from_the_settings() -> None:
    assert Capacity.configured(2.0, max_sessions=None, capacity_per_core=None) is None
    outright = Capacity.configured(2.0, max_sessions=7, capacity_per_core=100.0)
    assert outright is not None
    assert (outright.max_sessions, outright.source) == (7, "max_sessions")
    per_core = Capacity.configured(1.5, max_sessions=None, capacity_per_core=3.0)
    assert per_core is not None
    assert (per_core.max_sessions, per_core.source) == (4, "capacity_per_core")  # floor(4.5)
    assert "from server.capacity_per_core" in per_core.describe()


def test_capacity_measured() -> None:
    # A conversation costing 20 % of a core, half of 2 cores budgeted: 5 conversations.
    measured = Capacity.calibrated(2.0, session_cpu=0.2, cpu_budget=0.5)
    assert (measured.max_sessions, measured.per_core) == (5, 2.5)
    assert "one costs 20 % of a core" in measured.describe()
    assert measured.to_json()["source"] == "calibrated"
    assert Capacity.calibrated(1.0, session_cpu=3.0, cpu_budget=0.5).max_sessions == 1
    assert Capacity.calibrated(64.0, session_cpu=1e-6, cpu_budget=1.0).max_sessions == (
        MAX_CAPACITY
    )
    with pytest.raises(ValueError, match="must be > 0"):
        Capacity.calibrated(1.0, session_cpu=0.0, cpu_budget=0.5)


def test_cores_follow_affinity_and_the_cgroup_quota(tmp_path: Path) -> None:
    affinity = available_cores(tmp_path)  # no cgroup files: the affinity alone
    assert affinity >= 1
    (tmp_path / "cpu.max").write_text("50000 100000\n")  # half a core: at least 1
    assert available_cores(tmp_path) == 1.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert available_cores(tmp_path) == affinity
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert available_cores(tmp_path) == 1.0


def test_the_client_address_behind_a_trusted_proxy() -> None:
    assert client_address("10.0.0.9", "1.2.3.4") == "10.0.0.9"  # no proxy trusted
    trusted = ["10.0.0.0/8"]
    assert client_address("10.0.0.9", "1.2.3.4", trusted) == "1.2.3.4"
    # The left of the header is the client's own word: the right-most untrusted hop counts.
    assert client_address("10.0.0.9", "6.6.6.6, 1.2.3.4, 10.1.1.1", trusted) == "1.2.3.4"
    assert client_address("8.8.8.8", "1.2.3.4", trusted) == "8.8.8.8"  # not from the proxy
    assert client_address("10.0.0.9", None, trusted) == "10.0.0.9"


def test_the_settings_check_their_values() -> None:
    with pytest.raises(ConfigError, match=r"server\.trusted_proxies"):
        ServerConfig(trusted_proxies=("not-an-address",))
    with pytest.raises(ConfigError, match=r"server\.cpu_budget"):
        ServerConfig(cpu_budget=0.0)
    with pytest.raises(ConfigError, match=r"server\.capacity_per_core"):
        ServerConfig(capacity_per_core=0.0)


async def test_calibration_measures_one_real_conversation() -> None:
    measured = await calibrate(scripted_pipeline())
    assert measured.speech_s > 1.0  # the question, spoken by espeak-ng
    # Noise, the question, the end-of-turn pause, the reply played out at the cushion.
    assert measured.speech_s + 0.5 < measured.conversation_s < 20.0
    assert 0 < measured.session_cpu == pytest.approx(measured.cpu_s / measured.conversation_s)
    assert measured.stand_ins == ()


async def test_a_failing_measurement_is_a_clear_error_and_frees_the_port(tmp_path: Path) -> None:
    from voicecore.engine.stages import EnergyVadStage
    from voicecore.exceptions import CalibrationError, SynthesisError
    from voicecore.pipeline import Pipeline
    from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance

    broken = Pipeline(
        VoicecoreConfig(),
        vad_kind="energy",
        new_vad=EnergyVadStage,
        new_stt=lambda: ScriptedSTT([Utterance(["what"], "What time is it?")]),
        llm=ScriptedLLM(["It is nine."]),
        tts=ScriptedTTS(error=SynthesisError("the voice is broken"), fail_call=0),
    )
    server = VoiceServer(broken, ServerConfig(port=0, web_root=tmp_path, diagnostics=False))
    with pytest.raises(CalibrationError, match="the voice is broken"):
        await server.run()
    assert server.port is not None
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", server.port))  # the port was given back
    listener.close()
    assert server.pacer.stopped


# --- the server, in process ----------------------------------------------------------------------


@asynccontextmanager
async def running(web_root: Path, **settings: Any) -> AsyncIterator[VoiceServer]:
    settings.setdefault("max_sessions", 20)  # no start-up measurement unless asked for
    server = VoiceServer(
        scripted_pipeline(VoicecoreConfig()),
        ServerConfig(port=0, web_root=web_root, diagnostics=False, **settings),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.shutdown(drain_timeout_s=0)


async def test_sockets_that_say_nothing_hold_no_slot_and_are_cut(tmp_path: Path) -> None:
    async with running(tmp_path, max_sessions=2, hello_timeout_s=1.0) as server:
        assert server.port is not None
        url = f"ws://127.0.0.1:{server.port}/ws"
        cut: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(6):
                nursery.start_soon(silent_socket, server.port, cut)
            await trio.sleep(0.2)
            status, health = await healthz(server.port)
            assert (status, health["pending"], health["sessions"]) == (200, 7, 0)  # + healthz
            # Six silent sockets, and both conversation slots are still free.
            outcomes = await burst(url, 3, speech=[], addresses=("127.0.0.2", "127.0.0.3"))
        assert sorted(o.refused or "ready" for o in outcomes) == ["busy", "ready", "ready"]
        assert [o.close_code for o in outcomes if o.refused] == [CloseCode.TRY_AGAIN_LATER]
        assert len(cut) == 6
        assert all(0.9 < seconds < 3.0 for seconds in cut), cut
        _, health = await healthz(server.port)
        assert health["admission"]["refused"]["capacity"] == 1


async def test_a_websocket_without_hello_is_told_and_counted(tmp_path: Path) -> None:
    async with running(tmp_path, max_sessions=2, hello_timeout_s=0.5) as server:
        assert server.port is not None
        outcome = await open_conversation(f"ws://127.0.0.1:{server.port}/ws", speech=[])
        assert outcome.ready_s is not None  # a caller that says hello gets in
        from voicecore.server.websocket import connect

        ws = await connect(f"ws://127.0.0.1:{server.port}/ws")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.run_writer)
            with trio.fail_after(5):
                error = json.loads(await ws.receive())
            await ws.aclose()
            nursery.cancel_scope.cancel()
        assert error["code"] == "hello_timeout"
        _, health = await healthz(server.port)
        assert health["admission"]["refused"]["hello_timeout"] == 1


async def test_one_address_cannot_take_the_server(tmp_path: Path) -> None:
    async with running(tmp_path, max_sessions=10, max_connections_per_address=2) as server:
        assert server.port is not None
        url = f"ws://127.0.0.1:{server.port}/ws"
        talk = {"speech": mic_clips()[0][:1], "talk_s": 1.5}
        outcomes = await burst(url, 3, addresses=("127.0.0.5",), **talk)
        assert sorted(o.refused or "ready" for o in outcomes) == ["busy", "ready", "ready"]
        refused = next(o for o in outcomes if o.refused)
        assert refused.close_code == CloseCode.TRY_AGAIN_LATER
        others = await burst(url, 2, addresses=("127.0.0.6",), speech=[])
        assert all(o.ready_s is not None for o in others)
        _, health = await healthz(server.port)
        assert health["admission"]["refused"]["address"] == 1


async def test_too_many_pending_connections_are_closed_at_once(tmp_path: Path) -> None:
    async with running(tmp_path, max_pending=3, hello_timeout_s=2.0) as server:
        assert server.port is not None
        cut: list[float] = []
        async with trio.open_nursery() as nursery:
            for _ in range(3):
                nursery.start_soon(silent_socket, server.port, cut)
            await trio.sleep(0.2)
            with trio.fail_after(1):  # the fourth is closed unread, at once
                await silent_socket(server.port, cut)
        assert cut[0] < 0.5
        _, health = await healthz(server.port)
        assert health["admission"]["refused"]["pending"] == 1


async def test_healthz_says_full_with_503(tmp_path: Path) -> None:
    async with running(tmp_path, max_sessions=1) as server:
        assert server.port is not None
        status, health = await healthz(server.port)
        assert (status, health["status"], health["ready"]) == (200, "ok", True)
        assert health["schema"] == 1
        assert health["capacity"]["source"] == "max_sessions"
        assert health["memory"]["start_rss_bytes"] > 0
        from voicecore.server.websocket import connect

        ws = await connect(f"ws://127.0.0.1:{server.port}/ws")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.run_writer)
            ws.send_nowait(json.dumps({"type": "hello", "protocol": 1, "input_rate": 16000,
                                       "output_rate": 24000}))  # fmt: skip
            assert json.loads(await ws.receive())["type"] == "ready"
            status, health = await healthz(server.port)
            assert (status, health["status"], health["available"]) == (503, "full", 0)
            await ws.aclose()
            nursery.cancel_scope.cancel()


# --- the real server: a burst on the offline pipeline -------------------------------------------


BURST = 30


async def test_a_burst_is_refused_cleanly_and_the_memory_comes_back() -> None:
    """The issue's burst: 30 callers at once (from 30 addresses) and 10 sockets that never
    say hello, against ``voicecore serve`` with its defaults but short deadlines: exactly
    the measured capacity is admitted, promptly; the others are told ``busy`` (1013); the
    admitted ones converse without a provider missing its deadline; after they leave, the
    server's memory returns within 1.3x of where it started."""
    speech, _ = mic_clips()
    args = ["--server-hello-timeout-s", "2", "--server-memory-release-s", "1"]
    async with ServerProcess(args, start_timeout_s=120) as server:
        _, health = await healthz(server.port)
        capacity = health["capacity"]["max_sessions"]
        assert health["capacity"]["source"] == "calibrated"
        assert 1 <= capacity < BURST
        start_mb = server.rss_kb() * 1024 / 1e6
        sampler = RssSampler(server)
        cut: list[float] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sampler.run)
            for _ in range(10):
                nursery.start_soon(silent_socket, server.port, cut)
            outcomes = await burst(
                server.ws_url,
                BURST,
                addresses=tuple(f"127.0.0.{10 + i}" for i in range(BURST)),
                speech=speech,
                talk_s=8.0,
                pause_s=2.0,
            )
            nursery.cancel_scope.cancel()
        figures = summarize(outcomes)
        assert figures["admitted"] == capacity, figures
        assert figures["failures"] == 0, [o.failure for o in outcomes if o.failure]
        assert figures["refused"] == {"busy": BURST - capacity}, figures
        assert all(o.close_code == CloseCode.TRY_AGAIN_LATER for o in outcomes if o.refused)
        assert figures["ready_max_ms"] < 3000, figures  # generous: a shared, noisy machine
        assert figures["replies"] >= capacity, figures  # every admitted caller was answered
        assert figures["provider_errors"] == 0, figures
        assert len(cut) == 10
        assert max(cut) < 4.0, cut
        with trio.fail_after(20):  # the release follows the last conversation by ~1 s
            while (await healthz(server.port))[1]["memory"]["releases"] < 2:
                await trio.sleep(0.2)
        after_mb = sampler.now_mb()
        _, health = await healthz(server.port)
        assert health["admission"]["refused"]["capacity"] == BURST - capacity
        assert health["sessions"] == 0
        print(
            f"capacity {capacity}; ready p50/max {figures['ready_p50_ms']}/"
            f"{figures['ready_max_ms']} ms; RSS start/peak/after {start_mb:.0f}/"
            f"{sampler.peak_mb:.0f}/{after_mb:.0f} MB"
        )
        assert after_mb <= 1.3 * start_mb, (start_mb, sampler.peak_mb, after_mb)
        assert not math.isnan(after_mb)


async def test_healthz_counts_the_underruns_clients_report(tmp_path: Path) -> None:
    """``clients.underruns`` is what the clients' players counted (cumulative reports, live
    and finished conversations); the pacer's own figure is ``pacer.starved_frames``."""
    from voicecore.server.websocket import connect

    async with running(tmp_path, max_sessions=2) as server:
        assert server.port is not None
        ws = await connect(f"ws://127.0.0.1:{server.port}/ws")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.run_writer)
            ws.send_nowait(json.dumps({"type": "hello", "protocol": 1, "input_rate": 16000,
                                       "output_rate": 24000}))  # fmt: skip
            assert json.loads(await ws.receive())["type"] == "ready"
            for underruns in (2, 5):
                ws.send_nowait(
                    json.dumps({"type": "playout", "buffered_ms": 0, "underruns": underruns})
                )
            with trio.fail_after(5):
                while (await healthz(server.port))[1]["clients"]["underruns"] != 5:
                    await trio.sleep(0.02)
            ws.send_nowait(json.dumps({"type": "bye"}))
            with trio.fail_after(5):
                while server.sessions:
                    await trio.sleep(0.02)
            await ws.aclose()
            nursery.cancel_scope.cancel()
        _, health = await healthz(server.port)
        assert health["clients"]["underruns"] == 5  # the finished conversation still counts
        assert health["pacer"]["starved_frames"] == 0  # the agent never spoke
