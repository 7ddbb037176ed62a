"""The server over real loopback connections: ``websockets`` clients and raw HTTP against a
``VoiceServer`` running in the test's Trio run (port 0, scripted providers), plus
``voicecore serve`` in a subprocess for the signal-driven shutdown."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import trio
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.trio.client import ClientConnection, connect
from websockets.typing import Origin

from harness.launcher import ServerProcess
from harness.speech import noise, voice
from voicecore.config import ServerConfig, VoicecoreConfig
from voicecore.engine.session import SessionConfig
from voicecore.engine.stages import EnergyVadStage
from voicecore.engine.transport import Transport
from voicecore.pipeline import Pipeline, scripted_pipeline
from voicecore.protocol import CloseCode
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance
from voicecore.server.app import DRAINING_REASON, VoiceServer
from voicecore.server.cli import main
from voicecore.server.http import default_origins

REPO = Path(__file__).resolve().parent.parent
LONG_REPLY = " ".join(["This sentence is part of a long answer that keeps the agent talking."] * 6)


def hello(input_rate: int = 16000, output_rate: int = 24000, **fields: Any) -> str:
    return json.dumps(
        {
            "type": "hello",
            "protocol": 1,
            "input_rate": input_rate,
            "output_rate": output_rate,
            "frame_ms": 20,
            "client": "test/1",
            **fields,
        }
    )


def pipeline(reply: str = "It is nine o'clock. Anything else?", cushion_ms: int = 120) -> Pipeline:
    return Pipeline(
        VoicecoreConfig(session=SessionConfig(end_of_turn_silence_ms=300, cushion_ms=cushion_ms)),
        vad_kind="energy",
        new_vad=EnergyVadStage,
        new_stt=lambda: ScriptedSTT([Utterance(["what"], "What time is it?")]),
        llm=ScriptedLLM([reply]),
        tts=ScriptedTTS(sample_rate=24000, ms_per_char=40.0),
    )


@pytest.fixture
def web_root(tmp_path: Path) -> Path:
    """A web folder, with a file beside it that must never be served."""
    root = tmp_path / "web"
    (root / "lib").mkdir(parents=True)
    (root / "index.html").write_text("<!doctype html><title>voicecore</title>")
    (root / "app.mjs").write_text("export const x = 1;\n")
    (root / "lib" / "worklet.js").write_text("registerProcessor;\n")
    (root / "lib" / "dsp.wasm").write_bytes(b"\x00asm\x01\x00\x00\x00")
    (root / "style.css").write_text("body{}\n")
    (tmp_path / "pyproject.toml").write_text("secret = true\n")
    (root / "escape").symlink_to(tmp_path)
    return root


@asynccontextmanager
async def running(
    web_root: Path, *, pipe: Pipeline | None = None, **settings: Any
) -> AsyncIterator[VoiceServer]:
    # A fixed capacity (no start-up measurement) unless the test asks for another one.
    settings.setdefault("max_sessions", 20)
    server = VoiceServer(
        pipe or pipeline(),
        ServerConfig(port=0, web_root=web_root, diagnostics=False, **settings),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.shutdown(drain_timeout_s=0)


def client(url: str, **options: Any) -> connect:
    """A websockets client that never stops reading. With its default flow control it stops
    reading the socket once 16 messages are unread, and closing in that state it never sees
    the server's close and hangs (websockets 17's Trio client); tests often leave while the
    agent still talks, with its audio unread."""
    return connect(url, max_queue=None, **options)


def ws_url(server: VoiceServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/ws{query}"


async def recv_json(ws: ClientConnection) -> dict[str, Any]:
    """The next text message (agent audio frames skipped)."""
    while True:
        message = await ws.recv()
        if isinstance(message, str):
            data: dict[str, Any] = json.loads(message)
            return data


async def closed_with(ws: ClientConnection) -> tuple[list[dict[str, Any]], int | None, str]:
    """Every text message until the server closes, then the close code and reason."""
    messages = []
    with trio.fail_after(10):
        try:
            while True:
                message = await ws.recv()
                if isinstance(message, str):
                    messages.append(json.loads(message))
        except ConnectionClosed as closed:
            rcvd = closed.rcvd
            return messages, rcvd.code if rcvd else None, rcvd.reason if rcvd else ""


async def start_turn(ws: ClientConnection, rate: int = 16000) -> None:
    """Speaks one utterance (1 s of voice between noise) in 20 ms frames, at once."""
    pcm = noise(300, rate) + voice(1000, rate) + noise(700, rate)
    frame = 2 * rate // 50
    for offset in range(0, len(pcm), frame):
        await ws.send(pcm[offset : offset + frame])


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


async def http_get(server: VoiceServer, path: str) -> HttpReply:
    """A raw HTTP/1.1 GET (the path is sent exactly as given, unnormalized)."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port or 0)
    async with stream:
        request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        await stream.send_all(request.encode())
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *lines = head.decode().split("\r\n")
    headers = {k.lower(): v.strip() for k, v in (line.split(":", 1) for line in lines)}
    return HttpReply(int(status_line.split()[1]), headers, body)


def server_tasks() -> int:
    """Tasks alive under ``VoiceServer.run`` in this Trio run (the client's not counted)."""

    def find(task: trio.lowlevel.Task) -> trio.lowlevel.Task | None:
        if task.name.endswith("VoiceServer.run"):
            return task
        children = (t for n in task.child_nurseries for t in n.child_tasks)
        return next((found for t in children if (found := find(t)) is not None), None)

    def count(task: trio.lowlevel.Task) -> int:
        return 1 + sum(count(t) for n in task.child_nurseries for t in n.child_tasks)

    root = trio.lowlevel.current_root_task()
    assert root is not None
    server = find(root)
    assert server is not None
    return count(server)


async def settle(predicate: Any, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


# --- sessions --------------------------------------------------------------------------------


async def test_hello_gets_ready(web_root: Path) -> None:
    async with (
        running(web_root, pipe=pipeline(cushion_ms=200)) as server,
        client(ws_url(server)) as ws,
    ):
        await ws.send(hello(48000, 48000))
        ready = await recv_json(ws)
        assert ready["type"] == "ready"
        assert ready["protocol"] == 1
        assert (ready["input_rate"], ready["output_rate"]) == (48000, 48000)
        assert ready["frame_ms"] == 20
        assert ready["cushion_ms"] == 200  # the configured one
        assert len(ready["session_id"]) >= 8
        assert server.sessions == 1
        (transport,) = server.transports()
        assert isinstance(transport, Transport)
        assert transport.sample_rate == 48000


async def test_a_full_turn_with_resampled_mic_and_paced_frames(web_root: Path) -> None:
    async with running(web_root) as server, client(ws_url(server)) as ws:
        # Mic at 48 kHz, playback at 24 kHz: the transport converts the mic to 24 kHz, the
        # engine to 16 kHz.
        await ws.send(hello(48000, 24000))
        assert (await recv_json(ws))["type"] == "ready"
        await start_turn(ws, 48000)
        events: list[dict[str, Any]] = []
        frames: list[bytes] = []
        with trio.fail_after(20):
            while not events or events[-1]["type"] != "agent_done":
                message = await ws.recv()
                if isinstance(message, bytes):
                    frames.append(message)
                else:
                    events.append(json.loads(message))
        kinds = [e["type"] for e in events]
        assert kinds[0] == "speech_start"
        assert 0.2 < events[0]["time_s"] < 0.45  # the voice starts 0.3 s into the mic audio
        assert "speech_end" in kinds
        finals = [e for e in events if e["type"] == "transcript" and e["final"]]
        assert [f["text"] for f in finals] == ["What time is it?"]
        assert [e["text"] for e in events if e["type"] == "agent_text"] == [
            "It is nine o'clock.",
            "Anything else?",
        ]
        metrics = next(e for e in events if e["type"] == "metrics")
        assert metrics["turn_id"] == 1
        assert metrics["voice_to_voice_ms"] > 0
        assert events[-1] == {
            "type": "agent_done",
            "turn_id": 1,
            "interrupted": False,
            "heard": "It is nine o'clock. Anything else?",
        }
        # 20 ms frames at 24 kHz: 480 samples, 960 bytes; as much audio as the TTS made.
        assert {len(f) for f in frames} == {960}
        tts_ms = 40.0 * len("It is nine o'clock. Anything else?")
        assert abs(len(frames) * 20 - tts_ms) <= 40
        for underruns in (1, 3, 3):
            report = {
                "type": "playout",
                "buffered_ms": 0,
                "played_ms": 1360,
                "underruns": underruns,
            }
            await ws.send(json.dumps(report))
        await ws.send(json.dumps({"type": "bye"}))
        _, code, _ = await closed_with(ws)
        assert code == CloseCode.NORMAL
    assert server.recent[-1].turns[0].voice_to_voice_ms is not None
    assert server.recent[-1].client_underruns == 3  # cumulative reports


async def test_barge_in_clears_the_client_and_no_frame_of_the_turn_follows(
    web_root: Path,
) -> None:
    async with (
        running(web_root, pipe=pipeline(LONG_REPLY)) as server,
        client(ws_url(server)) as ws,
    ):
        await ws.send(hello())
        await recv_json(ws)
        await start_turn(ws)
        with trio.fail_after(10):
            while not isinstance(await ws.recv(), bytes):
                pass  # the agent speaks
        # The user talks over it.
        interruption = voice(1000) + noise(700)
        for offset in range(0, len(interruption), 640):
            await ws.send(interruption[offset : offset + 640])
        after_clear: list[str | bytes] = []
        cleared = False
        with trio.fail_after(20):
            while True:
                message = await ws.recv()
                if cleared:
                    after_clear.append(message)
                if isinstance(message, bytes):
                    continue
                data = json.loads(message)
                if data["type"] == "clear":
                    assert data == {"type": "clear", "turn_id": 1}
                    cleared = True
                if data["type"] == "transcript" and data["final"] and data["turn_id"] == 2:
                    break  # the next reply's audio may follow from here on
        assert cleared
        # Between the clear and the next turn's question: not one frame of the interrupted
        # turn.
        assert not any(isinstance(m, bytes) for m in after_clear)
        done = [json.loads(m) for m in after_clear if "agent_done" in str(m)]
        assert done[0]["turn_id"] == 1
        assert done[0]["interrupted"] is True
        assert LONG_REPLY.startswith(done[0]["heard"])
        assert len(done[0]["heard"]) < len(LONG_REPLY)
        metrics = next(json.loads(m) for m in after_clear if '"metrics"' in str(m))
        assert metrics["barge_in_ms"] is not None


@pytest.mark.parametrize(
    ("first", "code", "close"),
    [
        ("{nope", "bad_json", CloseCode.POLICY),
        ('{"type":"dance"}', "unknown_type", CloseCode.POLICY),
        (b"\x00\x00" * 320, "audio_before_hello", CloseCode.POLICY),
        (hello(96000, 48000), "unsupported_rate", CloseCode.UNSUPPORTED_DATA),
        (hello(protocol=2), "protocol_version", CloseCode.POLICY),
        (b"\x00" * 100_000, "audio_before_hello", CloseCode.POLICY),
        (json.dumps({"type": "hello", "pad": "x" * 100_000}), "too_large", CloseCode.TOO_BIG),
    ],
)
async def test_bad_input_before_hello_is_answered_and_closed(
    web_root: Path, first: str | bytes, code: str, close: CloseCode
) -> None:
    async with running(web_root) as server, client(ws_url(server)) as ws:
        await ws.send(first)
        messages, close_code, _ = await closed_with(ws)
        assert messages == [{"type": "error", "code": code, "message": messages[0]["message"]}]
        assert close_code == close
        await settle(lambda: server.sessions == 0)


@pytest.mark.parametrize(
    ("bad", "code"),
    [
        (b"\x00\x00\x00", "odd_length"),
        ("{nope", "bad_json"),
        ('{"type":"dance"}', "unknown_type"),
        ('{"type":"playout","buffered_ms":-3}', "invalid_message"),
        (hello(), "unexpected_message"),
    ],
)
async def test_bad_input_in_a_session_is_answered_and_the_session_goes_on(
    web_root: Path, bad: str | bytes, code: str
) -> None:
    async with running(web_root) as server, client(ws_url(server)) as ws:
        await ws.send(hello())
        await recv_json(ws)
        await ws.send(bad)
        error = await recv_json(ws)
        assert error["type"] == "error"
        assert error["code"] == code
        assert error["message"]
        await ws.send(b"\x00\x00" * 320)  # still a session: audio is accepted
        await ws.send(json.dumps({"type": "bye"}))
        messages, close_code, _ = await closed_with(ws)
        assert messages == []
        assert close_code == CloseCode.NORMAL


async def test_an_oversized_message_closes_with_1009(web_root: Path) -> None:
    async with running(web_root, max_message_bytes=4096) as server:
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)
            await ws.send(b"\x00" * 6000)  # above the limit: told, then closed
            messages, close_code, _ = await closed_with(ws)
            assert [m["code"] for m in messages] == ["too_large"]
            assert close_code == CloseCode.TOO_BIG
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)
            await ws.send(b"\x00" * 100_000)  # far above: refused by the frame parser itself
            messages, close_code, _ = await closed_with(ws)
            assert messages == []
            assert close_code == CloseCode.TOO_BIG


async def test_no_hello_in_time_closes_with_1008(web_root: Path) -> None:
    async with running(web_root, hello_timeout_s=0.2) as server, client(ws_url(server)) as ws:
        messages, close_code, _ = await closed_with(ws)
        assert [m["code"] for m in messages] == ["hello_timeout"]
        assert close_code == CloseCode.POLICY


# --- safety ----------------------------------------------------------------------------------


async def refused_status(url: str, origin: str) -> int:
    """The HTTP status of a refused WebSocket handshake from a page at ``origin``."""
    with pytest.raises(InvalidStatus) as refused:
        async with client(url, origin=Origin(origin)):
            pass
    return refused.value.response.status_code


async def test_origin_allow_list(web_root: Path) -> None:
    async with running(web_root) as server:
        assert await refused_status(ws_url(server), "http://evil.example") == 403
        # Another port of the same host is another origin.
        other_port = f"http://127.0.0.1:{(server.port or 0) + 1}"
        assert await refused_status(ws_url(server), other_port) == 403
        for origin in (f"http://127.0.0.1:{server.port}", f"http://localhost:{server.port}"):
            async with client(ws_url(server), origin=Origin(origin)) as ws:
                await ws.send(hello())
                assert (await recv_json(ws))["type"] == "ready"
    async with running(web_root, allowed_origins=("https://voice.example.com",)) as server:
        origin = "https://voice.example.com"
        async with client(ws_url(server), origin=Origin(origin)) as ws:
            await ws.send(hello())
            assert (await recv_json(ws))["type"] == "ready"
        assert await refused_status(ws_url(server), f"http://127.0.0.1:{server.port}") == 403


def test_default_origins() -> None:
    assert "http://localhost:8000" in default_origins("127.0.0.1", 8000)
    assert "http://[::1]:8000" in default_origins("::1", 8000)
    assert "http://10.0.0.5:8000" in default_origins("10.0.0.5", 8000)
    assert "http://localhost:8000" not in default_origins("10.0.0.5", 8000)
    assert "http://127.0.0.1:9000" not in default_origins("127.0.0.1", 8000)


async def test_token_required(web_root: Path) -> None:
    async with running(web_root, token="s3cret") as server:
        for query, headers in (
            ("", {}),
            ("?token=wrong", {}),
            ("", {"Authorization": "Bearer no"}),
        ):
            async with client(ws_url(server, query), additional_headers=headers) as ws:
                messages, close_code, _ = await closed_with(ws)
                assert [m["code"] for m in messages] == ["unauthorized"]
                assert close_code == CloseCode.POLICY
        for query, headers in (("?token=s3cret", {}), ("", {"Authorization": "Bearer s3cret"})):
            async with client(ws_url(server, query), additional_headers=headers) as ws:
                await ws.send(hello())
                assert (await recv_json(ws))["type"] == "ready"


async def test_session_limit_refuses_with_1013_then_admits_again(web_root: Path) -> None:
    async with (
        running(web_root, max_sessions=2) as server,
        client(ws_url(server)) as first,
        client(ws_url(server)) as second,
    ):
        for ws in (first, second):
            await ws.send(hello())
            await recv_json(ws)
        async with client(ws_url(server)) as third:
            messages, close_code, _ = await closed_with(third)
            assert [m["code"] for m in messages] == ["busy"]
            assert "try again" in messages[0]["message"]
            assert close_code == CloseCode.TRY_AGAIN_LATER
        assert server.sessions == 2
        await first.send(json.dumps({"type": "bye"}))
        await closed_with(first)
        await settle(lambda: server.sessions == 1)
        async with client(ws_url(server)) as fourth:
            await fourth.send(hello())
            assert (await recv_json(fourth))["type"] == "ready"


async def stalled_client(server: VoiceServer) -> connect:
    """A client with tiny socket buffers: when it stops reading, the server soon sees it."""
    sock = trio.socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    await sock.connect(("127.0.0.1", server.port))
    return connect(ws_url(server), stream=trio.SocketStream(sock), max_queue=4)


async def test_a_client_that_stops_reading_is_disconnected_with_4000(web_root: Path) -> None:
    async with running(
        web_root, pipe=pipeline(LONG_REPLY), send_queue_ms=400, send_buffer_bytes=4096
    ) as server:
        async with await stalled_client(server) as ws:
            await ws.send(hello(16000, 48000))
            await recv_json(ws)
            await start_turn(ws)
            # The client reads nothing now; the server's send buffer (400 ms of audio) fills.
            transport = server.transports()[0]
            await settle(lambda: transport.close_code == CloseCode.TOO_SLOW, timeout=30)
            assert transport.peak_queued_bytes <= 2 * 48000 * 400 // 1000
            # Reading again, the client gets what was in flight, then the verdict and 4000.
            messages, close_code, _ = await closed_with(ws)
            assert messages[-1]["code"] == "too_slow"
            assert close_code == CloseCode.TOO_SLOW
        await settle(lambda: server.sessions == 0)
        assert server.pacer.stats().open_streams == 0


async def test_a_stalled_reader_still_streaming_its_mic_leaves_nothing_behind(
    web_root: Path,
) -> None:
    async with running(
        web_root, pipe=pipeline(LONG_REPLY), send_queue_ms=400, send_buffer_bytes=4096
    ) as server:
        await trio.sleep(0.1)
        baseline = server_tasks()
        async with trio.open_nursery() as nursery, await stalled_client(server) as ws:
            await ws.send(hello(16000, 48000))
            await recv_json(ws)
            await start_turn(ws)

            async def mic() -> None:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await ws.send(noise(20))
                        await trio.sleep(0.02)

            nursery.start_soon(mic)
            transport = server.transports()[0]
            await settle(lambda: transport.close_code == CloseCode.TOO_SLOW, timeout=30)
            # The server gives up on the close handshake and cuts the connection; every
            # task of the connection ends although the client never reads again.
            await settle(lambda: server.sessions == 0)
            await settle(lambda: server_tasks() == baseline, timeout=10)
            nursery.cancel_scope.cancel()
            await trio.aclose_forcefully(ws.stream)


async def test_a_client_that_vanishes_mid_turn_frees_everything(web_root: Path) -> None:
    async with running(web_root, pipe=pipeline(LONG_REPLY)) as server:
        await trio.sleep(0.1)
        baseline = server_tasks()
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)
            await start_turn(ws)
            with trio.fail_after(10):
                while not isinstance(await ws.recv(), bytes):
                    pass  # until the agent speaks
            assert server.pacer.stats().open_streams == 1
            assert server_tasks() > baseline
            (transport,) = server.transports()
            session = weakref.ref(server.live_sessions()[0])
            transport_ref = weakref.ref(transport)
            del transport
            # Gone without a closing handshake: a reset connection.
            raw = ws.stream
            assert isinstance(raw, trio.SocketStream)
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
            await trio.aclose_forcefully(raw)
        await settle(lambda: server.sessions == 0)
        await settle(lambda: server_tasks() == baseline)
        assert server.pacer.stats().open_streams == 0
        # Nothing holds the session or its transport any more (their channels, rings and
        # resamplers go with them): only its metrics are kept, for /metrics.
        gc.collect()
        assert session() is None
        assert transport_ref() is None
        turn = server.recent[-1].turns[0]
        assert turn.interrupted  # cut when the session ended: only what was heard is kept


async def test_a_drain_lets_conversations_go_on_then_closes_them_with_1001(
    web_root: Path,
) -> None:
    """SIGTERM's path: at once not ready (503 draining) and no new conversation (1001), the
    running ones go on (audio keeps coming) for the drain timeout, then 1001 with the
    reason a client acts on."""
    server = VoiceServer(
        pipeline(LONG_REPLY),
        ServerConfig(port=0, web_root=web_root, diagnostics=False, drain_timeout_s=1.0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with client(ws_url(server)) as talking, client(ws_url(server)) as idle:
            for ws in (talking, idle):
                await ws.send(hello())
                await recv_json(ws)
            await start_turn(talking)
            with trio.fail_after(10):
                while not isinstance(await talking.recv(), bytes):
                    pass
            server.shutdown()
            reply = await http_get(server, "/healthz")
            assert reply.status == 503
            assert json.loads(reply.body)["status"] == "draining"
            assert (await http_get(server, "/livez")).status == 200
            async with client(ws_url(server)) as late:  # told before its hello
                _, code, reason = await closed_with(late)
                assert (code, reason) == (CloseCode.GOING_AWAY, DRAINING_REASON)
            drained_at = trio.current_time()
            frames = 0
            with trio.move_on_after(0.5):  # the conversation goes on meanwhile
                while True:
                    frames += isinstance(await talking.recv(), bytes)
            assert frames >= 10
            for ws in (talking, idle):
                _, code, reason = await closed_with(ws)
                assert code == CloseCode.GOING_AWAY
                assert reason == DRAINING_REASON
            assert trio.current_time() - drained_at >= 0.5
    # run() returned: the nursery is empty, the pacer stopped.
    assert server.sessions == 0
    assert server.pacer.stopped


async def test_a_drained_reply_is_heard_to_its_end_before_the_close(web_root: Path) -> None:
    """When the drain timeout passes in the middle of a reply, the conversation is closed
    at its next quiet moment (here: the reply played out), not in the middle of a word."""
    server = VoiceServer(
        pipeline("It is nine o'clock. Anything else?"),  # ~1.4 s of voice
        ServerConfig(port=0, web_root=web_root, diagnostics=False, drain_timeout_s=0.1),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)
            await start_turn(ws)
            with trio.fail_after(10):
                while not isinstance(await ws.recv(), bytes):
                    pass
            server.shutdown()
            messages, code, reason = await closed_with(ws)
            assert (code, reason) == (CloseCode.GOING_AWAY, DRAINING_REASON)
            done = [m for m in messages if m["type"] == "agent_done"]
            assert len(done) == 1
            assert done[0]["interrupted"] is False


async def test_shutdown_does_not_wait_for_a_client_that_stopped_reading(web_root: Path) -> None:
    server = VoiceServer(
        pipeline(LONG_REPLY),
        ServerConfig(port=0, web_root=web_root, diagnostics=False, send_buffer_bytes=4096),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with await stalled_client(server) as ws:
            await ws.send(hello(16000, 48000))
            await recv_json(ws)
            await start_turn(ws)
            await trio.sleep(1.0)  # agent audio piles up in the kernel buffers
            assert server.transports()[0].queued_bytes > 0
            started = trio.current_time()
            server.shutdown(drain_timeout_s=0)
            with trio.fail_after(server.settings.close_timeout_s + 2):
                await settle(lambda: server.pacer.stopped, timeout=10)
            assert trio.current_time() - started < server.settings.shutdown_timeout_s
            # Reading again, the client finds the frames in flight, then a cut connection.
            await closed_with(ws)
    assert server.sessions == 0


async def test_a_client_still_streaming_its_mic_is_closed_promptly(web_root: Path) -> None:
    """A browser keeps sending 20 ms frames until it sees the close: the server must keep
    reading (and discarding) them to complete the closing handshake."""
    server = VoiceServer(pipeline(), ServerConfig(port=0, web_root=web_root, diagnostics=False))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)

            async def mic() -> None:
                with contextlib.suppress(ConnectionClosed):
                    while True:
                        await ws.send(noise(20))
                        await trio.sleep(0.02)

            nursery.start_soon(mic)
            await trio.sleep(0.5)
            started = trio.current_time()
            server.shutdown(drain_timeout_s=0)
            _, code, _ = await closed_with(ws)
            assert code == CloseCode.GOING_AWAY
            await settle(lambda: server.pacer.stopped)
            # Well within the closing handshake's timeout: the client's close was read.
            assert trio.current_time() - started < server.settings.close_timeout_s


# --- HTTP ------------------------------------------------------------------------------------


async def test_static_files_have_their_mime_type_and_isolation_headers(web_root: Path) -> None:
    async with running(web_root) as server:
        for path, mime, body in (
            ("/", "text/html; charset=utf-8", b"<!doctype html><title>voicecore</title>"),
            ("/index.html", "text/html; charset=utf-8", None),
            ("/app.mjs", "text/javascript; charset=utf-8", b"export const x = 1;\n"),
            ("/lib/worklet.js", "text/javascript; charset=utf-8", None),
            ("/lib/dsp.wasm", "application/wasm", b"\x00asm\x01\x00\x00\x00"),
            ("/style.css?v=2", "text/css; charset=utf-8", None),
        ):
            reply = await http_get(server, path)
            assert reply.status == 200, path
            assert reply.headers["content-type"] == mime
            assert reply.headers["cross-origin-opener-policy"] == "same-origin"
            assert reply.headers["cross-origin-embedder-policy"] == "require-corp"
            assert int(reply.headers["content-length"]) == len(reply.body)
            if body is not None:
                assert reply.body == body
        missing = await http_get(server, "/nope.js")
        assert missing.status == 404
        assert missing.headers["cross-origin-embedder-policy"] == "require-corp"


@pytest.mark.parametrize(
    "path",
    [
        "/../pyproject.toml",
        "/%2e%2e/pyproject.toml",
        "/%2E%2E%2Fpyproject.toml",
        "/lib/../../pyproject.toml",
        "/lib/%2e%2e/%2e%2e/pyproject.toml",
        "/..%5cpyproject.toml",
        "/escape/pyproject.toml",  # a symlink leading out of the folder
        "/%00index.html",
        "/%ff",
    ],
)
async def test_no_path_leaves_the_web_folder(web_root: Path, path: str) -> None:
    async with running(web_root) as server:
        reply = await http_get(server, path)
        assert reply.status in (400, 404)
        assert b"secret" not in reply.body


async def test_plain_get_on_the_websocket_path_asks_for_an_upgrade(web_root: Path) -> None:
    async with running(web_root) as server:
        assert (await http_get(server, "/ws")).status == 426


async def test_healthz_counts_sessions(web_root: Path) -> None:
    async with running(web_root) as server:
        reply = await http_get(server, "/healthz")
        assert reply.status == 200
        assert reply.headers["content-type"] == "application/json"
        health = json.loads(reply.body)
        assert health["status"] == "ok"
        assert health["sessions"] == 0
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)
            health = json.loads((await http_get(server, "/healthz")).body)
            assert health["sessions"] == 1
            assert health["max_sessions"] == 20
            assert health["pacer"]["open_streams"] == 0


_SAMPLE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[^}]*\})? -?([0-9.e+-]+|\+Inf|NaN)$")


async def test_metrics_are_prometheus_text(web_root: Path) -> None:
    async with running(web_root) as server:
        async with client(ws_url(server)) as ws:
            await ws.send(hello())
            await recv_json(ws)
            await start_turn(ws)
            with trio.fail_after(20):
                while (await recv_json(ws))["type"] != "agent_done":
                    pass
            reply = await http_get(server, "/metrics")
        assert reply.status == 200
        assert reply.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
        samples = {}
        for line in reply.body.decode().splitlines():
            if line.startswith("#") or not line:
                continue
            assert _SAMPLE.match(line), line
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
        assert samples["voicecore_sessions"] == 1
        assert samples["voicecore_sessions_exported"] == 1
        assert samples["voicecore_turns_total"] == 1
        # Once the client has gone, the session is not open any more; its figures stay.
        with trio.fail_after(10):
            while server.live_sessions():
                await trio.sleep(0.01)
        after = (await http_get(server, "/metrics")).body.decode()
        assert "\nvoicecore_sessions 0.0\n" in after
        assert "\nvoicecore_sessions_exported 1.0\n" in after
        assert "\nvoicecore_turns_total 1.0\n" in after


# --- voicecore serve -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "problem"),
    [
        (["--port", "http"], "server.port (from flag --port): expected an integer, got 'http'"),
        (
            ["--server-port", "70000"],
            "server.port (from flag --server-port): must be in [0, 65535]",
        ),
        (["--max-sessions", "0"], "server.max_sessions (from flag --max-sessions): must be >= 1"),
        (["--max-message-bytes", "10"], "server.max_message_bytes (from flag --max-message-bytes)"),
        (
            ["--web-root", "/nonexistent/web"],
            "server.web_root (from flag --web-root): no web folder at /nonexistent/web",
        ),
        (["--session-cushion-ms", "5"], "session.cushion_ms (from flag --session-cushion-ms)"),
    ],
)
def test_voicecore_serve_refuses_bad_settings_with_status_2(
    args: list[str],
    problem: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in [name for name in os.environ if name.startswith("VOICECORE_")]:
        monkeypatch.delenv(name)
    assert main(["serve", "--providers", "scripted", *args]) == 2
    assert problem in capsys.readouterr().err


def test_voicecore_serve_names_the_variable_or_file_of_a_bad_server_setting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    config_file = tmp_path / "voicecore.toml"
    config_file.write_text('[server]\nallowed_origins = "https://a.example"\n')
    monkeypatch.setenv("VOICECORE_SERVER_MAX_SESSIONS", "many")
    assert main(["serve", "--providers", "scripted", "--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert (
        "server.max_sessions (from env VOICECORE_SERVER_MAX_SESSIONS): expected an integer" in err
    )
    assert f"server.allowed_origins (from file {config_file}): expected a list of strings" in err


def test_the_server_takes_its_settings_from_the_pipelines_configuration(web_root: Path) -> None:
    settings = ServerConfig(port=0, web_root=web_root, max_sessions=3, diagnostics=False)
    server = VoiceServer(scripted_pipeline(VoicecoreConfig(server=settings)))
    try:
        assert server.settings is settings
    finally:
        server.pacer.stop()


async def test_a_taken_port_fails_run_and_stops_the_pacer(web_root: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        server = VoiceServer(
            pipeline(),
            ServerConfig(port=taken.getsockname()[1], web_root=web_root, diagnostics=False),
        )
        with pytest.raises(OSError, match="in use"):
            await server.run()
    assert server.pacer.stopped


def test_voicecore_serve_says_when_its_port_is_taken() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "voicecore", "serve", "--providers", "scripted"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "VOICECORE_SERVER_PORT": str(port)},
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_voicecore_serve_exits_0_on_a_signal_and_clients_get_1001(
    tmp_path: Path, signum: signal.Signals
) -> None:
    async with ServerProcess(["--providers", "scripted"], cli=True, cwd=tmp_path) as server:
        async with client(server.ws_url) as first, client(server.ws_url) as second:
            for ws in (first, second):
                await ws.send(hello())
                assert (await recv_json(ws))["type"] == "ready"
            await start_turn(first)
            server.process.send_signal(signum)
            for ws in (first, second):
                _, code, _ = await closed_with(ws)
                assert code == CloseCode.GOING_AWAY
        with trio.fail_after(15):
            while server.process.poll() is None:
                await trio.sleep(0.05)
        status = await server.astop()  # it has exited: this only collects the status
        assert status == 0, server.log_text()
        assert "stopped" in server.log_text()
