"""The WebSocket transport: one client connection speaking protocol v1 to one engine session."""

from __future__ import annotations

import dataclasses
import logging

import trio
from websockets.exceptions import ConnectionClosed

from voicecore import protocol
from voicecore._core import SocketSink
from voicecore.engine.transport import EngineInput
from voicecore.exceptions import SendBufferFullError
from voicecore.metrics import SessionMetrics
from voicecore.protocol import (
    CloseCode,
    ErrorCode,
    Hello,
    ProtocolSession,
    ServerMessage,
    Step,
)
from voicecore.server.websocket import WebSocket

_log = logging.getLogger("voicecore.server.transport")


class WebSocketTransport:
    """A ``voicecore.engine.transport.Transport`` over one WebSocket connection, protocol v1.

    Receive side: every message goes through the connection's ``ProtocolSession``; errors
    are answered (and, when fatal, end the connection with their close code); mic audio is
    handed to the engine at the client's ``input_rate`` (the engine resamples it to 16 kHz
    once) and playout reports as ``protocol.Playout``.

    Send side: bounded, and it never waits. Agent audio does not pass through here: the
    pacer thread writes each frame into the connection's ``SocketSink`` itself
    (``audio_sink``); ``send`` frames the other messages into the same sink. What the kernel
    does not take waits there, at most ``send_queue_ms`` of agent audio at the client's rate;
    a client that reads too slowly fills it (the sink refuses a write, the pacer's or ours),
    and the transport drops the backlog, tells it ``too_slow`` and closes with 4000, so a
    stalled client costs at most that buffer plus the kernel's.

    Args:
        websocket: the connection.
        session: the connection's protocol state machine.
        send_queue_ms: the send buffer's bound, in ms of agent audio.

    Attributes:
        playout: the client's last playout report (None before the first).
        metrics: the session's metrics, once it exists: the underruns the client reports
            are counted there (``client_underruns``, exported by ``/metrics``).
        peak_queued_bytes: the most bytes the send buffer ever held.
    """

    def __init__(
        self, websocket: WebSocket, session: ProtocolSession, *, send_queue_ms: int
    ) -> None:
        if send_queue_ms < 1:
            raise ValueError(f"send_queue_ms must be >= 1 ms, got {send_queue_ms}")
        self.protocol = session
        self.playout: protocol.Playout | None = None
        self.metrics: SessionMetrics | None = None
        self.peak_queued_bytes = 0
        self._ws = websocket
        self._send_queue_ms = send_queue_ms
        self._close: protocol.Close | None = None
        self._too_slow_decided = False
        self._closing = False
        self._closed = trio.Event()
        self._held: tuple[ServerMessage, ...] = ()

    def __repr__(self) -> str:
        return (
            f"WebSocketTransport({self.protocol.session_id!r}, state={self.protocol.state.value},"
            f" queued={self.queued_bytes} B)"
        )

    @property
    def sample_rate(self) -> int:
        """The agent audio's rate in Hz: the client's ``output_rate``. Raises RuntimeError
        before ``hello``."""
        return self._hello().output_rate

    @property
    def input_rate(self) -> int:
        """The mic audio's rate in Hz: the client's ``input_rate``. Raises RuntimeError
        before ``hello``."""
        return self._hello().input_rate

    @property
    def capabilities(self) -> frozenset[str]:
        """The client's optional features this server uses (those sent in ``ready``)."""
        ready = self.protocol.ready
        return frozenset(ready.capabilities) if ready is not None else frozenset()

    def _hello(self) -> Hello:
        if self.protocol.hello is None:
            raise RuntimeError("no hello yet: the audio format is not known")
        return self.protocol.hello

    @property
    def audio_sink(self) -> SocketSink:
        """The connection's writer: the pacer writes agent audio frames to it itself."""
        return self._ws.sink

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the send buffer."""
        return self._ws.pending_bytes

    @property
    def close_code(self) -> CloseCode | None:
        """The code the connection closes (or closed) with, once decided."""
        return self._close.code if self._close is not None else None

    # receive side

    async def _next_step(self, *, hold_ready: bool = False) -> Step:
        """The protocol's verdict on the client's next message (replies already queued,
        but for the ``ready`` answering ``hello`` when ``hold_ready``: it is kept for
        :meth:`accept`); raises ``trio.EndOfChannel`` once the connection is closing or
        closed."""
        if self._close is not None:
            raise trio.EndOfChannel
        try:
            data = await self._ws.receive()
        except ConnectionClosed:
            self.protocol.closed()
            raise trio.EndOfChannel from None
        self._check_backlog()
        step = self.protocol.receive(data)
        if hold_ready and isinstance(step.message, Hello):
            self._held = step.replies
            step = Step(message=step.message, close=step.close)
        self._apply(step)
        return step

    def _check_backlog(self) -> None:
        """A write the sink refused (the pacer's frame or ours) means the client fell
        ``send_queue_ms`` behind: too slow. Checked on every message either way (~0.1 us)."""
        if self._close is None and self._ws.sink.stats().refused:
            self._too_slow()

    def _apply(self, step: Step) -> None:
        for reply in step.replies:
            self.send_message(reply)
        if step.close is not None and self._close is None:
            # The close frame follows what is queued; a client that does not answer it in
            # close_timeout_s is cut (by the connection's writer), which ends a receive.
            self._close = step.close
            self._ws.start_close(step.close.code, step.close.reason)

    async def handshake(self) -> Hello:
        """Waits for the client's ``hello``; raises ``trio.EndOfChannel`` if the
        connection closes first. Its ``ready`` answer waits for :meth:`accept` (the server
        first finds the conversation a place); :meth:`fail` refuses it instead."""
        while True:
            step = await self._next_step(hold_ready=True)
            if isinstance(step.message, Hello):
                hello = step.message
                # The send bound: send_queue_ms of PCM16 at the client's rate.
                self._ws.max_pending_bytes = 2 * hello.output_rate * self._send_queue_ms // 1000
                return hello

    def accept(
        self,
        *,
        conversation: str | None = None,
        resumed: bool = False,
        history: tuple[dict[str, str], ...] | None = None,
    ) -> None:
        """Sends the ``ready`` answering the client's ``hello``: the conversation starts.
        ``conversation``, ``resumed`` and ``history`` go into it (``protocol.Ready``)."""
        held, self._held = self._held, ()
        held = tuple(
            dataclasses.replace(reply, conversation=conversation, resumed=resumed, history=history)
            if isinstance(reply, protocol.Ready)
            else reply
            for reply in held
        )
        self._apply(Step(replies=held))

    async def receive(self) -> EngineInput:
        """The client's next mic audio or playout report (``Transport.receive``)."""
        while True:
            message = (await self._next_step()).message
            if isinstance(message, protocol.Audio):
                return message
            if isinstance(message, protocol.Playout):
                self._count_underruns(message)
                self.playout = message
                return message

    def _count_underruns(self, report: protocol.Playout) -> None:
        previous = self.playout.underruns if self.playout is not None else None
        if report.underruns is None or self.metrics is None:
            return
        # The client's count is cumulative; a restarted player may report a smaller one.
        new = report.underruns - (previous or 0)
        if new > 0:
            self.metrics.client_underruns += new

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Decides to close with ``code`` (unless a close was already decided): the close
        frame follows what is queued, and the engine's ``receive`` ends once the client
        answers it (or is cut after ``close_timeout_s``)."""
        self._apply(Step(close=self.protocol.close(code, reason)))

    def fail(self, code: ErrorCode, message: str, close: CloseCode) -> None:
        """Tells the client ``code``/``message`` in an ``error``, then closes with ``close``."""
        self._apply(self.protocol.fail(code, message, close))

    # send side

    async def send(self, message: ServerMessage) -> None:
        """Queues one engine message for the client (``Transport.send``; never waits)."""
        self.send_message(message)

    def send_message(self, message: ServerMessage) -> None:
        """Queues one protocol message for the client (never waits)."""
        self._enqueue(protocol.serialize(message))

    def _enqueue(self, data: str | bytes) -> None:
        self._check_backlog()
        if self._close is not None:
            return  # closing: what the engine still sends is not delivered
        try:
            self._ws.send_nowait(data)
        except SendBufferFullError:
            self._too_slow()
        except ConnectionClosed:
            return
        self.peak_queued_bytes = max(self.peak_queued_bytes, self._ws.pending_bytes)

    def _too_slow(self) -> None:
        if self._too_slow_decided:
            return  # the verdict being sent passes through _enqueue too
        self._too_slow_decided = True
        bound_ms = self._send_queue_ms
        self._ws.sink.discard_pending()  # stale audio: the verdict goes out next
        self._apply(
            self.protocol.fail(
                ErrorCode.TOO_SLOW,
                f"the client fell {bound_ms} ms of audio behind; disconnecting",
                CloseCode.TOO_SLOW,
            )
        )

    async def run_writer(self) -> None:
        """Writes what is queued to the socket until the connection ends (run it as a
        task)."""
        await self._ws.run_writer()

    async def aclose(self) -> None:
        """Flushes what is queued, closes with the decided code (1000 if none was), and cuts
        the socket if the client does not complete the closing handshake within the
        connection's ``close_timeout_s`` (idempotent; ``Transport.aclose``)."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_soon(CloseCode.NORMAL, "session ended")
        try:
            await self._ws.aclose()
        finally:
            self.protocol.closed()
            self._closed.set()
