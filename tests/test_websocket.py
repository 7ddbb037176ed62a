"""voicecore.server.websocket: the lean WebSocket connection, over real loopback sockets, against
websockets' own client (interoperability) and against itself."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed, ConnectionClosedOK, InvalidStatus
from websockets.http11 import Request, Response
from websockets.server import ServerProtocol
from websockets.trio.client import connect as websockets_connect

from voicecore.exceptions import ConfigError, SendBufferFullError
from voicecore.server.websocket import WebSocket, accept, connect

Handler = Callable[[WebSocket], Awaitable[None]]


async def upgrade(request: Request) -> Response | None:
    return None


@asynccontextmanager
async def serving(
    handler: Handler,
    respond: Callable[[Request], Awaitable[Response | None]] = upgrade,
    close_timeout_s: float = 2.0,
) -> AsyncIterator[str]:
    """A server on 127.0.0.1 running ``handler`` for every upgraded connection (with its
    writer); yields its ws:// URL."""

    async def serve_one(stream: trio.SocketStream) -> None:
        websocket = await accept(
            stream, respond, max_message_bytes=1 << 16, close_timeout_s=close_timeout_s
        )
        if websocket is None:
            return
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.run_writer)
            try:
                await handler(websocket)
            finally:
                await websocket.aclose()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, serve_one, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        yield f"ws://127.0.0.1:{port}/ws"
        nursery.cancel_scope.cancel()


async def echo(websocket: WebSocket) -> None:
    while True:
        websocket.send_nowait(await websocket.receive())


async def test_text_and_binary_messages_round_trip_with_the_websockets_client() -> None:
    async with serving(echo) as url, websockets_connect(url) as client:
        await client.send("héllo")
        assert await client.recv() == "héllo"
        await client.send(b"\x00\x01" * 1000)
        assert await client.recv() == b"\x00\x01" * 1000


async def test_fragmented_messages_are_reassembled() -> None:
    async with serving(echo) as url, websockets_connect(url) as client:
        await client.send([b"ab", b"cd", b"ef"])
        assert await client.recv() == b"abcdef"
        await client.send(["wo", "rld"])
        assert await client.recv() == "world"


async def test_pings_are_answered() -> None:
    async with serving(echo) as url, websockets_connect(url) as client:
        with trio.fail_after(5):
            pong = await client.ping(b"are you there")
            await pong.wait()


async def test_a_client_close_ends_receive_with_connection_closed_ok() -> None:
    ended: list[BaseException] = []

    async def record(websocket: WebSocket) -> None:
        try:
            while True:
                await websocket.receive()
        except ConnectionClosed as exc:
            ended.append(exc)

    async with serving(record) as url:
        async with websockets_connect(url) as client:
            await client.send("x")
            await client.send("y")  # then the client closes
        with trio.fail_after(5):
            while not ended:
                await trio.sleep(0.01)
    assert isinstance(ended[0], ConnectionClosedOK)


async def test_the_server_closes_with_its_code_and_reason() -> None:
    async def close(websocket: WebSocket) -> None:
        websocket.send_nowait("bye soon")
        await websocket.aclose(4000, "too slow")

    async with serving(close) as url, websockets_connect(url) as client:
        assert await client.recv() == "bye soon"
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None
    assert (closed.value.rcvd.code, closed.value.rcvd.reason) == (4000, "too slow")


async def test_invalid_utf8_in_a_text_message_closes_with_1007() -> None:
    async def receive(websocket: WebSocket) -> None:
        with pytest.raises(ConnectionClosed):
            await websocket.receive()

    async with serving(receive) as url, websockets_connect(url) as client:
        await client.send(b"\xff\xfe", text=True)
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv()
    assert closed.value.rcvd is not None
    assert closed.value.rcvd.code == 1007


async def raw_upgrade(url: str, receive_buffer: int | None = None) -> trio.SocketStream:
    """A client that completes the opening handshake by hand and then does nothing unless
    told (reads nothing, answers nothing)."""
    sock = trio.socket.socket()
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    await sock.connect(("127.0.0.1", int(url.rsplit(":", 1)[1].split("/")[0])))
    stream = trio.SocketStream(sock)
    request = (
        "GET /ws HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        "Sec-WebSocket-Version: 13\r\n\r\n"
    )
    await stream.send_all(request.encode())
    assert b" 101 " in await stream.receive_some(4096)
    return stream


async def test_send_never_waits_and_refuses_past_its_bound() -> None:
    """A peer that stops reading: the writer blocks on the socket, ``send_nowait`` keeps
    framing into the buffer until the bound, then raises (nothing half-queued)."""
    full: list[int] = []

    async def flood(websocket: WebSocket) -> None:
        websocket.max_pending_bytes = 64 * 1024
        frame = b"\x00" * 1920
        while True:
            try:
                websocket.send_nowait(frame)
            except SendBufferFullError:
                full.append(websocket.pending_bytes)
                return
            await trio.sleep(0)

    async with serving(flood, close_timeout_s=0.2) as url:
        stream = await raw_upgrade(url, receive_buffer=4096)
        with trio.fail_after(10):
            while not full:
                await trio.sleep(0.01)
        await trio.aclose_forcefully(stream)
    assert 64 * 1024 - 1924 < full[0] <= 64 * 1024


async def test_a_peer_that_never_answers_the_close_is_cut_after_the_timeout() -> None:
    """The server closes while the peer reads nothing: after ``close_timeout_s`` the
    writer cuts the connection and ``aclose`` returns."""
    closed_after: list[float] = []

    async def close(websocket: WebSocket) -> None:
        start = trio.current_time()
        await websocket.aclose(1001, "going away")
        closed_after.append(trio.current_time() - start)

    async with serving(close, close_timeout_s=0.3) as url:
        stream = await raw_upgrade(url)
        with trio.fail_after(5):
            while not closed_after:
                await trio.sleep(0.01)
        await stream.aclose()
    assert 0.25 < closed_after[0] < 2.0


async def test_plain_http_is_answered_and_errors_become_500() -> None:
    async def respond(request: Request) -> Response | None:
        if request.path == "/boom":
            raise RuntimeError("a bug")
        if request.path == "/hello":
            return Response(200, "OK", Headers([("Content-Length", "2")]), b"hi")
        return None

    async def nothing(websocket: WebSocket) -> None:
        pass

    async with serving(nothing, respond) as url:
        port = int(url.rsplit(":", 1)[1].split("/")[0])
        for path, status in (("/hello", b"200"), ("/boom", b"500")):
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
            reply = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(4096):
                    reply += chunk
            assert reply.split(b" ")[1] == status
            await stream.aclose()
        with pytest.raises(InvalidStatus):
            await websockets_connect(url.replace("/ws", "/hello")).__aenter__()


async def test_our_client_against_our_server() -> None:
    async with serving(echo) as url:
        client = await connect(url)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.run_writer)
            for message in ("one", b"two", "three" * 1000):
                client.send_nowait(message)
            received = [await client.receive() for _ in range(3)]
            assert received == ["one", b"two", "three" * 1000]
            client.send_nowait(b"\x01" * 70000)
            # Past the server's 64 KiB limit: it closes with 1009.
            with pytest.raises(ConnectionClosed) as closed:
                await client.receive()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == 1009
            await client.aclose()
    stats = client.sink.stats()
    assert stats.messages >= 5  # four messages and the close frame
    assert stats.bytes_written > 70000


async def test_bad_arguments_are_refused() -> None:
    left, right = socket.socketpair()
    with left, right:
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(left))
        with pytest.raises(ConfigError, match="max_pending_bytes"):
            WebSocket(stream, ServerProtocol(), max_pending_bytes=0)
        with pytest.raises(ValueError, match="close_timeout_s"):
            WebSocket(stream, ServerProtocol(), close_timeout_s=-1)


async def test_keepalive_cuts_a_peer_that_stops_answering_and_spares_one_that_answers() -> None:
    outcomes: list[str] = []

    async def pinged(websocket: WebSocket) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(websocket.keepalive, 0.05, 0.2)
            try:
                while True:
                    await websocket.receive()
            except ConnectionClosed as exc:
                outcomes.append("closed" if exc.sent and exc.sent.code == 1011 else "other")
            nursery.cancel_scope.cancel()

    async with serving(pinged, close_timeout_s=0.2) as url:
        # websockets' client answers pings: after a dozen of them it is still connected.
        async with websockets_connect(url) as client:
            await trio.sleep(0.6)
            await client.send("still here")
            assert not outcomes
        with trio.fail_after(5):
            while not outcomes:
                await trio.sleep(0.01)
        outcomes.clear()
        # A peer that reads nothing answers nothing: failed with 1011, then cut.
        stream = await raw_upgrade(url)
        with trio.fail_after(5):
            while not outcomes:
                await trio.sleep(0.01)
        await stream.aclose()
    assert outcomes == ["closed"]
