"""WebSocket connections on Trio whose agent audio does not wait for the event loop.

A voice session exchanges fifty small messages a second each way; at a few hundred sessions
the per-message machinery, not the audio work, is what fills the core, and every frame that
waits for the event loop is late by as much as the loop is (a GC pause, a blocked callback).
``WebSocket`` drives websockets' sans-I/O protocol (``websockets.server.ServerProtocol`` /
``websockets.client.ClientProtocol``: framing, masking, the opening and closing handshakes,
ping/pong, size limits) directly over a Trio socket stream:

* **receiving** happens in the task that calls :meth:`WebSocket.receive`: one wake-up per
  socket read, however many messages it carried (under load, reads batch several);
* **sending** goes through the connection's Rust ``SocketSink`` (:attr:`WebSocket.sink`): a
  non-blocking ``send`` at once, what the kernel does not take waiting in a bounded buffer.
  The pacer thread writes the agent's audio frames into the same sink itself, on their
  deadlines, whatever Python is doing (``FramePacer.open_stream(..., sink=websocket.sink)``);
  Python's messages and the pacer's frames never interleave. :meth:`WebSocket.send_nowait`
  never waits; past the bound it raises ``SendBufferFullError`` and the caller's overflow
  policy decides (the server disconnects a client that reads too slowly). One writer task
  (:meth:`WebSocket.run_writer`) only finishes what the kernel could not take at once.

Pings are answered and close frames echoed by the protocol itself. A closed connection
raises ``websockets.exceptions.ConnectionClosed`` (``OK`` for a normal closure) from
``receive`` and ``send_nowait``.

Server side (see ``voicecore.server.app``)::

    websocket = await accept(stream, respond, max_message_bytes=...)  # None: plain HTTP
    async with trio.open_nursery() as nursery:
        nursery.start_soon(websocket.run_writer)
        message = await websocket.receive()
        websocket.send_nowait(b"...")
        await websocket.aclose(1000, "bye")

Client side (the load generator): ``websocket = await connect("ws://127.0.0.1:8000/ws")``.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Final

import trio
from websockets.client import ClientProtocol
from websockets.exceptions import (
    ConnectionClosed,
    ConnectionClosedError,
    ConnectionClosedOK,
    InvalidHandshake,
)
from websockets.frames import OK_CLOSE_CODES, Frame, Opcode
from websockets.http11 import Request, Response
from websockets.protocol import CLOSED, CONNECTING, OPEN
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from voicecore._core import SocketSink
from voicecore.exceptions import SendBufferFullError

__all__ = ["WebSocket", "accept", "connect"]

_log = logging.getLogger(__name__)

RECEIVE_BYTES: Final = 65536
"""The most bytes one socket read takes."""

Respond = Callable[[Request], Awaitable[Response | None]]
"""Answers an opening request: a ``Response`` (plain HTTP, or a refusal), or None to accept
the WebSocket handshake."""


class WebSocket:
    """One open WebSocket connection over a Trio socket stream (see the module docstring).

    Build it with :func:`accept` (server) or :func:`connect` (client). One task at a time may
    call :meth:`receive`; :meth:`run_writer` must run as a task.

    Args:
        stream: the connection's socket stream, after the opening handshake.
        protocol: websockets' sans-I/O protocol for it, OPEN.
        max_pending_bytes: how many bytes may wait for the kernel (framing included).
        close_timeout_s: how long the closing handshake may take before the connection is
            cut.
        early_frames: frames that arrived with the handshake.

    Attributes:
        sink: the connection's writer, shared with the pacer thread.
        request: the opening request (server side).
    """

    def __init__(
        self,
        stream: trio.SocketStream,
        protocol: ServerProtocol | ClientProtocol,
        *,
        max_pending_bytes: int = 1 << 20,
        close_timeout_s: float = 2.0,
        early_frames: Iterable[Frame] = (),
    ) -> None:
        if not close_timeout_s >= 0:
            raise ValueError(f"close_timeout_s must be >= 0 s, got {close_timeout_s}")
        self.stream = stream
        self.protocol = protocol
        self.close_timeout_s = close_timeout_s
        self.sink = SocketSink(stream.socket.fileno(), max_pending_bytes=max_pending_bytes)
        self.request: Request | None = None
        self._frames: deque[Frame] = deque(early_frames)
        self._fragments: list[bytes] = []
        self._fragmented: Opcode | None = None
        self._eof_pending = False  # the protocol asked to end the stream once flushed
        self._writer_scope = trio.CancelScope()  # deadline: when to give up on the peer
        self._writer_wakeup = trio.lowlevel.ParkingLot()
        self._stream_closed = False
        self._eof_received = False
        self._ping_payload: bytes | None = None
        self._pong = trio.Event()
        self._pings = 0

    def __repr__(self) -> str:
        return (
            f"WebSocket({self.protocol.side.name.lower()}, {self.protocol.state.name}, "
            f"{self.sink!r})"
        )

    @property
    def max_pending_bytes(self) -> int:
        """How many bytes may wait for the kernel; settable (>= 1)."""
        return self.sink.max_pending_bytes

    @max_pending_bytes.setter
    def max_pending_bytes(self, value: int) -> None:
        self.sink.set_max_pending_bytes(value)

    @property
    def pending_bytes(self) -> int:
        """Bytes the kernel has not taken yet (Python's and the pacer's)."""
        return self.sink.pending_bytes

    @property
    def open(self) -> bool:
        """True while messages can be sent and received (the closing handshake has not
        begun)."""
        return self.protocol.state is OPEN

    # --- receiving ------------------------------------------------------------------------

    async def receive(self) -> str | bytes:
        """The peer's next message: ``str`` for a text message, ``bytes`` for binary.

        Raises:
            websockets.exceptions.ConnectionClosed: the connection is closing or closed
                (``ConnectionClosedOK`` after a normal closure).
        """
        while True:
            while self._frames:
                message = self._assemble(self._frames.popleft())
                if message is not None:
                    return message
            if self.protocol.state is not OPEN or self._eof_received:
                raise self._closed_error()
            await self._read()

    async def _read(self) -> None:
        """One socket read fed to the protocol; its replies (pong, close echo) sent."""
        try:
            data = await self.stream.receive_some(RECEIVE_BYTES)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""  # reset or closed under us: the same as the peer's end of stream
        if data:
            self.protocol.receive_data(data)
        else:
            self._eof_received = True
            self.protocol.receive_eof()
        self._frames.extend(e for e in self.protocol.events_received() if isinstance(e, Frame))
        self._send_control()

    def _closed_error(self) -> ConnectionClosed:
        """What ``receive``/``send_nowait`` raise once the closing handshake has begun: the
        close frames known so far (websockets' ``close_exc`` waits for the very end)."""
        protocol = self.protocol
        if protocol.state is CLOSED:
            return protocol.close_exc
        received, sent = protocol.close_rcvd, protocol.close_sent
        normal = (
            received is not None
            and sent is not None
            and received.code in OK_CLOSE_CODES
            and sent.code in OK_CLOSE_CODES
        )
        kind = ConnectionClosedOK if normal else ConnectionClosedError
        return kind(received, sent, protocol.close_rcvd_then_sent)

    def _assemble(self, frame: Frame) -> str | bytes | None:
        """A whole message once its last fragment is in; None for control frames and the
        fragments before the last."""
        opcode = frame.opcode
        # Unmasking (server side) yields bytes; an unmasked frame (client side) may hold a
        # bytearray slice of the read buffer.
        data = frame.data if type(frame.data) is bytes else bytes(frame.data)
        if opcode is Opcode.TEXT or opcode is Opcode.BINARY:
            if not frame.fin:
                self._fragmented, self._fragments = opcode, [data]
                return None
        elif opcode is Opcode.CONT and self._fragmented is not None:
            self._fragments.append(data)
            if not frame.fin:
                return None
            opcode, data = self._fragmented, b"".join(self._fragments)
            self._fragmented, self._fragments = None, []
        else:
            if opcode is Opcode.PONG and data == self._ping_payload:
                self._pong.set()
            return None  # ping (answered by the protocol), pong, close (handled by state)
        if opcode is Opcode.BINARY:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(1007, "invalid UTF-8 in a text message")
            self._send_control()
            return None

    # --- sending --------------------------------------------------------------------------

    def send_nowait(self, message: str | bytes) -> None:
        """Sends ``message`` (text for ``str``, binary for ``bytes``) at once, or queues what
        the kernel does not take; never waits.

        Raises:
            voicecore.exceptions.SendBufferFullError: the pending bytes would pass
                ``max_pending_bytes``; nothing was queued.
            websockets.exceptions.ConnectionClosed: the closing handshake has begun or the
                connection broke.
        """
        if self.protocol.state is not OPEN:
            raise self._closed_error()
        if isinstance(message, str):
            self.protocol.send_text(message.encode())
        else:
            self.protocol.send_binary(message)
        try:
            for data in self.protocol.data_to_send():  # one frame: nothing else is left over
                if self.sink.write(data):
                    self._writer_wakeup.unpark_all()  # to finish what the kernel did not take
        except ConnectionResetError:
            raise self._closed_error() from None

    def _send_control(self) -> None:
        """Sends what the protocol produced on its own (pong, close frames, end of stream).
        A close frame stops the pacer's frames first: no data frame may follow it."""
        closing = self.protocol.state is not OPEN
        if closing:
            self.sink.stop_audio()
            if self._writer_scope.deadline == math.inf:
                self._writer_scope.deadline = trio.current_time() + self.close_timeout_s
        outgoing = self.protocol.data_to_send()
        if not outgoing:
            return  # the common case: a read that only brought messages
        for data in outgoing:
            if not data:
                self._eof_pending = True
                continue
            try:
                self.sink.write(data)
            except SendBufferFullError:
                # The peer is too far behind for even a control frame: drop its stale
                # backlog (the message in progress stays whole) and try once more.
                self.sink.discard_pending()
                # Still no room is hopeless: the close deadline will cut the connection.
                with contextlib.suppress(SendBufferFullError, ConnectionResetError):
                    self.sink.write(data)
            except ConnectionResetError:
                pass  # the connection is gone: the reader sees its end
        self._writer_wakeup.unpark_all()

    async def run_writer(self) -> None:
        """Finishes the writes the kernel could not take at once, and ends the stream after
        the closing handshake (run it as a task; it returns when the connection ends).

        Once the closing handshake has begun, it gives the peer ``close_timeout_s`` to read
        what is left and answer, then cuts the connection, which also ends a ``receive``
        waiting on the socket: a peer that stopped reading cannot hold a task forever.
        """
        fd = self.sink.fileno()
        try:
            with self._writer_scope:
                while not self._stream_closed:
                    if self.sink.pending_bytes:
                        await trio.lowlevel.wait_writable(fd)
                        self.sink.flush()
                    elif self._eof_pending and not self.sink.closed:
                        # The closing handshake is complete on our side: no more writes.
                        self.sink.close()
                        await self.stream.send_eof()
                    else:
                        await self._writer_wakeup.park()  # also until the socket is closed
                return
            await self._cut()  # the peer did not finish closing in time
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self.sink.close()  # the peer is gone: nothing more to deliver

    async def keepalive(self, interval_s: float = 20.0, timeout_s: float = 20.0) -> None:
        """Pings the peer every ``interval_s``; a peer that has not answered within
        ``timeout_s`` is gone without a word (a killed tab, a dropped network): the
        connection is failed with 1011 and then cut. Run it as a task; it returns once the
        connection is closing. Pongs are seen by whoever calls ``receive``."""
        while self.protocol.state is OPEN:
            await trio.sleep(interval_s)
            if self.protocol.state is not OPEN:
                return
            self._pings += 1
            self._ping_payload = self._pings.to_bytes(4, "big")
            self._pong = trio.Event()
            self.protocol.send_ping(self._ping_payload)
            self._send_control()
            with trio.move_on_after(timeout_s):
                await self._pong.wait()
                continue
            if self.protocol.state is OPEN:
                self.protocol.fail(1011, "keepalive ping timeout")
                self._send_control()
            return

    # --- closing --------------------------------------------------------------------------

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Begins the closing handshake (a close frame after what is pending; the pacer's
        frames stop); no-op once it has begun. ``receive`` then raises ``ConnectionClosed``."""
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self._send_control()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Closes the connection: a close frame after what is pending, then reads and drops
        what the peer still sends until its close frame (or ``close_timeout_s``), then
        closes the socket. Idempotent; needs :meth:`run_writer` running."""
        self.start_close(code, reason)
        try:
            with trio.move_on_after(self.close_timeout_s):
                while self.protocol.state is not CLOSED and not self._eof_received:
                    await self._read()
                    self._frames.clear()  # messages after our close frame are dropped
        finally:
            await self._cut()  # cancelled or not: the socket is never left open

    async def _cut(self) -> None:
        """Closes the socket, the sink first: once the sink is closed, neither Python nor the
        pacer thread touches the descriptor again, so its number cannot be reused under
        them."""
        self.sink.close()
        self._stream_closed = True
        self._writer_wakeup.unpark_all()  # a writer still waiting ends now
        await trio.aclose_forcefully(self.stream)


# --- opening handshakes ---------------------------------------------------------------------


async def accept(
    stream: trio.SocketStream,
    respond: Respond,
    *,
    max_message_bytes: int,
    max_pending_bytes: int = 1 << 20,
    close_timeout_s: float = 2.0,
    handshake_timeout_s: float = 10.0,
) -> WebSocket | None:
    """Reads an HTTP request from ``stream`` and answers it (server side).

    ``respond(request)`` decides: a ``Response`` is sent as it is and the connection closed
    (static files, health checks, refusals); None accepts the WebSocket handshake (websockets
    answers 426/400 itself when the request is not a valid upgrade). An exception in
    ``respond`` is logged and answered with 500.

    Returns:
        The open connection (its ``request`` set), or None when it was not upgraded (no
        request within ``handshake_timeout_s``, plain HTTP, a refusal): the stream is closed
        then.
    """
    protocol = ServerProtocol(max_size=max_message_bytes)
    request: Request | None = None
    early: list[Frame] = []
    with trio.move_on_after(handshake_timeout_s):
        while request is None and protocol.handshake_exc is None:
            try:
                data = await stream.receive_some(RECEIVE_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                protocol.receive_eof()
                break
            protocol.receive_data(data)
            for event in protocol.events_received():
                if isinstance(event, Request):
                    request = event
                elif isinstance(event, Frame):
                    early.append(event)
    if request is not None:
        try:
            response = await respond(request)
        except Exception:
            _log.exception("answering %s %s failed", request.path, request.headers)
            response = protocol.reject(500, "Internal server error.\n")
        protocol.send_response(response if response is not None else protocol.accept(request))
    # The handshake's answer (or websockets' own 400/431) goes out before the connection is
    # handed over.
    answer = [data for data in protocol.data_to_send() if data]
    try:
        if answer:
            await stream.send_all(b"".join(answer))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    else:
        if protocol.state is OPEN:
            websocket = WebSocket(
                stream,
                protocol,
                max_pending_bytes=max_pending_bytes,
                close_timeout_s=close_timeout_s,
                early_frames=early,
            )
            websocket.request = request
            return websocket
    await trio.aclose_forcefully(stream)
    return None


async def connect(
    url: str,
    *,
    max_message_bytes: int = 1 << 20,
    max_pending_bytes: int = 1 << 20,
    close_timeout_s: float = 2.0,
    open_timeout_s: float = 10.0,
    local_address: str | None = None,
) -> WebSocket:
    """Opens a client connection to ``url`` (``ws://host:port/path``); start the returned
    connection's :meth:`WebSocket.run_writer` as a task. ``local_address`` binds its socket
    to that address first (on loopback, ``127.0.0.2``... make distinct clients).

    Raises:
        OSError: the TCP connection failed.
        websockets.exceptions.InvalidHandshake: the server refused the upgrade (its status
            is in the exception), or it did not answer within ``open_timeout_s``.
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_message_bytes)
    with trio.fail_after(open_timeout_s):
        stream = await trio.open_tcp_stream(uri.host, uri.port, local_address=local_address)
    early: list[Frame] = []
    try:
        protocol.send_request(protocol.connect())
        await stream.send_all(b"".join(protocol.data_to_send()))
        with trio.move_on_after(open_timeout_s) as waited:
            while protocol.handshake_exc is None and protocol.state is CONNECTING:
                data = await stream.receive_some(RECEIVE_BYTES)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                early += (e for e in protocol.events_received() if isinstance(e, Frame))
                if not data:
                    break
        # Open, or already closing: a server that refuses at once (busy) may send its close
        # frame in the same read as its handshake response; the caller then reads the
        # refusal from the early frames.
        if protocol.state is CONNECTING or protocol.handshake_exc is not None:
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
            raise InvalidHandshake(
                "no handshake response" if waited.cancelled_caught else "connection closed"
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return WebSocket(
        stream,
        protocol,
        max_pending_bytes=max_pending_bytes,
        close_timeout_s=close_timeout_s,
        early_frames=early,
    )
