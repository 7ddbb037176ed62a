"""WebSocket connections on Trio, lean enough for hundreds of audio streams on one core.

A voice session exchanges fifty small messages a second each way; at a few hundred sessions
the per-message machinery, not the audio work, is what fills the core. ``WebSocket`` drives
websockets' sans-I/O protocol (``websockets.server.ServerProtocol`` /
``websockets.client.ClientProtocol``: framing, masking, the opening and closing handshakes,
ping/pong, size limits) directly over a Trio stream, without the background reader task, the
message assembler and the send lock of ``websockets.trio``:

* **receiving** happens in the task that calls :meth:`WebSocket.receive`: one wake-up per
  socket read, however many messages it carried (under load, reads batch several);
* **sending never waits**: :meth:`WebSocket.send_nowait` frames the message into an outgoing
  buffer at once, and one writer task (:meth:`WebSocket.run_writer`) writes everything
  pending with a single ``send_all``. The buffer is bounded in bytes; a full one raises
  :class:`SendBufferFullError` and the caller's overflow policy decides (the server disconnects a
  client that reads too slowly rather than let its audio go stale).

Pings are answered and close frames echoed by the protocol itself. Errors are websockets'
own: a closed connection raises ``websockets.exceptions.ConnectionClosed`` (``OK`` for a
normal closure) from ``receive`` and ``send_nowait``.

Server side (see ``voicecore.server``)::

    websocket = await accept(stream, respond, max_message_bytes=...)  # None: plain HTTP
    async with trio.open_nursery() as nursery:
        nursery.start_soon(websocket.run_writer)
        message = await websocket.receive()
        websocket.send_nowait(b"...")
        await websocket.aclose(1000, "bye")

Client side (the load generator): ``websocket = await connect("ws://127.0.0.1:8000/ws")``.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable, Callable
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
from websockets.protocol import CLOSED, OPEN
from websockets.server import ServerProtocol
from websockets.uri import parse_uri

from voicecore.exceptions import VoicecoreError

__all__ = ["SendBufferFullError", "WebSocket", "accept", "connect"]

_log = logging.getLogger(__name__)

RECEIVE_BYTES: Final = 65536
"""The most bytes one socket read takes."""

Respond = Callable[[Request], Awaitable[Response | None]]
"""Answers an opening request: a ``Response`` (plain HTTP, or a refusal), or None to accept
the WebSocket handshake."""


class SendBufferFullError(VoicecoreError):
    """The connection's outgoing buffer is over its bound: the peer reads too slowly."""


class WebSocket:
    """One WebSocket connection over a Trio stream (see the module docstring).

    Build it with :func:`accept` (server) or :func:`connect` (client). One task at a time may
    call :meth:`receive`; :meth:`run_writer` must run as a task for anything to be sent.

    Args:
        stream: the connection's byte stream.
        protocol: websockets' sans-I/O protocol for it (server or client side).
        max_pending_bytes: the outgoing buffer's bound, in bytes of framed data.
        close_timeout_s: how long :meth:`aclose` waits for the peer's part of the closing
            handshake before cutting the connection.

    Attributes:
        request: the opening request (server side, once accepted).
        bytes_sent: bytes written to the stream (framing included).
        writes: ``send_all`` calls made (each writes every message pending at the time).
    """

    def __init__(
        self,
        stream: trio.abc.HalfCloseableStream,
        protocol: ServerProtocol | ClientProtocol,
        *,
        max_pending_bytes: int = 1 << 20,
        close_timeout_s: float = 2.0,
    ) -> None:
        if max_pending_bytes < 1:
            raise ValueError(f"max_pending_bytes must be >= 1, got {max_pending_bytes}")
        if not close_timeout_s >= 0:
            raise ValueError(f"close_timeout_s must be >= 0 s, got {close_timeout_s}")
        self.stream = stream
        self.protocol = protocol
        self.max_pending_bytes = max_pending_bytes
        self.close_timeout_s = close_timeout_s
        self.request: Request | None = None
        self.bytes_sent = 0
        self.writes = 0
        self._frames: deque[Frame] = deque()
        self._fragments: list[bytes] = []
        self._fragmented: Opcode | None = None
        self._pending: list[bytes] = []
        self._pending_bytes = 0
        self._eof_pending = False  # the protocol asked to end the stream once flushed
        self._writer_scope = trio.CancelScope()  # deadline: when to give up on the peer
        self._stream_closed = False
        self._writer_wakeup = trio.lowlevel.ParkingLot()
        self._writer_done = trio.Event()
        self._eof_received = False

    def __repr__(self) -> str:
        return (
            f"WebSocket({self.protocol.side.name.lower()}, {self.protocol.state.name}, "
            f"pending={self._pending_bytes} B, sent={self.bytes_sent} B)"
        )

    @property
    def pending_bytes(self) -> int:
        """Framed bytes waiting for the writer."""
        return self._pending_bytes

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
        """One socket read fed to the protocol; its replies (pong, close echo) queued."""
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
        self._flush_protocol()

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
            return None  # ping (answered by the protocol), pong, close (handled by state)
        if opcode is Opcode.BINARY:
            return data
        try:
            return data.decode()
        except UnicodeDecodeError:
            self.protocol.fail(1007, "invalid UTF-8 in a text message")
            self._flush_protocol()
            return None

    # --- sending --------------------------------------------------------------------------

    def send_nowait(self, message: str | bytes) -> None:
        """Frames ``message`` (text for ``str``, binary for ``bytes``) for the writer; never
        waits.

        Raises:
            SendBufferFullError: the pending bytes would exceed ``max_pending_bytes``; nothing was
                queued.
            websockets.exceptions.ConnectionClosed: the closing handshake has begun.
        """
        if self.protocol.state is not OPEN:
            raise self._closed_error()
        data = message.encode() if isinstance(message, str) else message
        if self._pending_bytes + len(data) > self.max_pending_bytes:
            raise SendBufferFullError(
                f"{self._pending_bytes} bytes are still unsent (bound {self.max_pending_bytes})"
            )
        if isinstance(message, str):
            self.protocol.send_text(data)
        else:
            self.protocol.send_binary(data)
        self._flush_protocol()

    def discard_pending(self) -> int:
        """Drops every message not yet handed to the socket (whole frames: the writer takes
        the buffer at once) and returns the bytes dropped. Control frames go too, so call it
        before ``start_close``, not after."""
        dropped, self._pending, self._pending_bytes = self._pending_bytes, [], 0
        return dropped

    def _flush_protocol(self) -> None:
        """Moves the protocol's output into the writer's buffer and wakes the writer."""
        for data in self.protocol.data_to_send():
            if data:
                self._pending.append(data)
                self._pending_bytes += len(data)
            else:
                self._eof_pending = True
        if self._writer_scope.deadline == math.inf and self.protocol.state is not OPEN:
            self._writer_scope.deadline = trio.current_time() + self.close_timeout_s
        self._writer_wakeup.unpark_all()

    async def run_writer(self) -> None:
        """Writes the outgoing buffer to the stream until the connection ends (run it as a
        task; it returns then).

        Once the closing handshake has begun, it gives the peer ``close_timeout_s`` to read
        what is left and answer, then cuts the connection, which also ends a ``receive``
        waiting on the socket: a peer that stopped reading cannot hold a task forever.
        """
        try:
            with self._writer_scope:  # its deadline is set when the closing handshake begins
                while True:
                    if self._pending:
                        chunks, self._pending, self._pending_bytes = self._pending, [], 0
                        data = chunks[0] if len(chunks) == 1 else b"".join(chunks)
                        await self.stream.send_all(data)
                        self.bytes_sent += len(data)
                        self.writes += 1
                    elif self._stream_closed:
                        return
                    elif self._eof_pending:
                        await self.stream.send_eof()  # the closing handshake is complete
                        return
                    else:
                        await self._writer_wakeup.park()
            await trio.aclose_forcefully(self.stream)  # out of time to close politely
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._pending, self._pending_bytes = [], 0  # the peer is gone: nothing to deliver
        finally:
            self._writer_done.set()

    # --- closing --------------------------------------------------------------------------

    def start_close(self, code: int = 1000, reason: str = "") -> None:
        """Begins the closing handshake (a close frame after what is pending); no-op once it
        has begun. ``receive`` then raises ``ConnectionClosed``."""
        if self.protocol.state is OPEN:
            self.protocol.send_close(code, reason)
            self._flush_protocol()

    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Closes the connection: sends what is pending and a close frame, reads and drops
        what the peer still sends until its close frame (or ``close_timeout_s``), then closes
        the stream. Idempotent; needs :meth:`run_writer` running (or finished)."""
        self.start_close(code, reason)
        with trio.move_on_after(self.close_timeout_s):
            while self.protocol.state is not CLOSED and not self._eof_received:
                await self._read()
                self._frames.clear()  # messages after our close frame are dropped
            await self._writer_done.wait()
        self._stream_closed = True
        self._writer_wakeup.unpark_all()  # a writer still waiting ends now
        await trio.aclose_forcefully(self.stream)


# --- opening handshakes ---------------------------------------------------------------------


async def accept(
    stream: trio.abc.HalfCloseableStream,
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
    websocket = WebSocket(
        stream, protocol, max_pending_bytes=max_pending_bytes, close_timeout_s=close_timeout_s
    )
    request: Request | None = None
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
    if request is not None:
        try:
            response = await respond(request)
        except Exception:
            _log.exception("answering %s %s failed", request.path, request.headers)
            response = protocol.reject(500, "Internal server error.\n")
        protocol.send_response(response if response is not None else protocol.accept(request))
    # The handshake's answer (or websockets' own 400/431) goes out before any writer runs.
    answer = [data for data in protocol.data_to_send() if data]
    try:
        if answer:
            await stream.send_all(b"".join(answer))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    else:
        if protocol.state is OPEN:
            websocket._frames.extend(e for e in protocol.events_received() if isinstance(e, Frame))
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
) -> WebSocket:
    """Opens a client connection to ``url`` (``ws://host:port/path``); start the returned
    connection's :meth:`WebSocket.run_writer` as a task before sending.

    Raises:
        OSError: the TCP connection failed.
        websockets.exceptions.InvalidHandshake: the server refused the upgrade (its status
            is in the exception), or it did not answer within ``open_timeout_s``.
    """
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, max_size=max_message_bytes)
    with trio.fail_after(open_timeout_s):
        stream = await trio.open_tcp_stream(uri.host, uri.port)
    websocket = WebSocket(
        stream, protocol, max_pending_bytes=max_pending_bytes, close_timeout_s=close_timeout_s
    )
    try:
        protocol.send_request(protocol.connect())
        await stream.send_all(b"".join(protocol.data_to_send()))
        with trio.move_on_after(open_timeout_s) as waited:
            while protocol.handshake_exc is None and protocol.state is not OPEN:
                data = await stream.receive_some(RECEIVE_BYTES)
                if data:
                    protocol.receive_data(data)
                else:
                    protocol.receive_eof()
                events = protocol.events_received()
                websocket._frames.extend(e for e in events if isinstance(e, Frame))
                if not data:
                    break
        if protocol.state is not OPEN:
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
            raise InvalidHandshake(
                "no handshake response" if waited.cancelled_caught else "connection closed"
            )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return websocket
