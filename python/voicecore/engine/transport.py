"""How a session talks to its client: the ``Transport`` protocol, its messages, and an
in-memory transport for tests and examples.

A transport carries, from the client: the user's mic audio (PCM16 at the client's rate) and
control messages (playout reports: how much agent audio the client holds); to the client:
paced agent audio frames, ``Clear`` (drop the agent audio you hold: barge-in) and JSON events
(transcripts, agent text, metrics, errors). The message types are plain dataclasses with no
I/O, so a WebSocket transport only maps them to and from frames.

Example (a test playing the client)::

    transport, client = memory_transport(16000)
    nursery.start_soon(Session(transport, stt=stt, llm=llm, tts=tts).run)
    await client.stream_audio(pcm16)        # as a live mic: one 20 ms frame per 20 ms
    async for message in client:            # AgentAudio, Clear, Event
        ...
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import trio

from voicecore._core import SocketSink

__all__ = [
    "AgentAudio",
    "Clear",
    "ClientMessage",
    "Event",
    "MemoryClient",
    "MemoryTransport",
    "MicAudio",
    "PlayoutReport",
    "ServerMessage",
    "Transport",
    "memory_transport",
]


@dataclass(frozen=True, slots=True)
class MicAudio:
    """Client -> server: the user's audio, mono PCM16 little-endian at the client's rate."""

    pcm: bytes


@dataclass(frozen=True, slots=True)
class PlayoutReport:
    """Client -> server: the client holds ``buffered_ms`` ms of agent audio not yet played."""

    buffered_ms: float


ClientMessage = MicAudio | PlayoutReport
"""What a client sends."""


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Server -> client: one paced frame of the agent's voice.

    Attributes:
        pcm: mono PCM16 little-endian, one frame (e.g. 20 ms) at ``sample_rate``.
        sample_rate: Hz (the client's rate).
        turn_id: the turn it belongs to (a ``Clear`` names the turn to drop).
        seq: the frame's position in its turn's stream (0, 1, 2...).
    """

    pcm: bytes
    sample_rate: int
    turn_id: int
    seq: int


@dataclass(frozen=True, slots=True)
class Clear:
    """Server -> client: drop every frame of ``turn_id`` you hold (barge-in)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Event:
    """Server -> client: a JSON event, e.g. ``{"type": "transcript", "text": ..., "final": ...}``.

    Types the engine sends: ``"transcript"``, ``"agent_text"``, ``"turn_end"``, ``"metrics"``,
    ``"error"``; every event carries ``"type"`` and, within a turn, ``"turn_id"``.
    """

    data: dict[str, Any]

    @property
    def type(self) -> str:
        """The event's ``"type"`` field."""
        return str(self.data.get("type", ""))


ServerMessage = AgentAudio | Clear | Event
"""What a session sends."""


@runtime_checkable
class Transport(Protocol):
    """One client connection, as the session sees it.

    Contract:
        * ``receive`` returns the client's next message, waiting for it; it raises
          ``trio.EndOfChannel`` once the client has gone (the session then ends).
        * ``send`` delivers one message in order; it may wait (socket buffers), never for long:
          the session calls it from one writer task fed by a bounded drop-oldest queue
          (``contracts.SESSION_TO_TRANSPORT``), so a slow client loses old messages (counted)
          rather than stalling the session.
        * ``input_rate``: the mic audio's rate in Hz; ``sample_rate``: the rate the client
          plays agent audio at, in Hz (they may differ: each is converted once).
    """

    @property
    def sample_rate(self) -> int:
        """The agent audio's rate in Hz (what the client plays)."""
        ...

    @property
    def input_rate(self) -> int:
        """The mic audio's rate in Hz (what ``MicAudio`` carries)."""
        ...

    @property
    def audio_sink(self) -> SocketSink | None:
        """Where the pacer writes the agent's audio frames itself, on their deadlines and
        whatever the event loop is doing (the client's socket); None: the session sends
        them as ``AgentAudio`` messages."""
        ...

    async def receive(self) -> ClientMessage:
        """The client's next message; raises ``trio.EndOfChannel`` when the client is gone."""
        ...

    async def send(self, message: ServerMessage) -> None:
        """Sends one message to the client."""
        ...

    async def aclose(self) -> None:
        """The session has ended: close the connection (idempotent)."""
        ...


@dataclass(eq=False)
class MemoryTransport:
    """The server side of an in-memory transport (a pair of Trio memory channels).

    Build it with ``memory_transport()``, which also returns the client side.
    """

    sample_rate: int
    input_rate: int
    _incoming: trio.MemoryReceiveChannel[ClientMessage]
    _outgoing: trio.MemorySendChannel[ServerMessage]
    audio_sink: None = None
    """No socket: agent audio travels as ``AgentAudio`` messages."""

    async def receive(self) -> ClientMessage:
        """The client's next message; ``trio.EndOfChannel`` once the client closed."""
        return await self._incoming.receive()

    async def send(self, message: ServerMessage) -> None:
        """Delivers a message to the client side (``trio.BrokenResourceError`` if it closed)."""
        await self._outgoing.send(message)

    async def aclose(self) -> None:
        """Closes the server side: the client's ``receive`` ends with ``trio.EndOfChannel``."""
        await self._outgoing.aclose()
        await self._incoming.aclose()


@dataclass(eq=False)
class MemoryClient:
    """The test (client) side of an in-memory transport.

    It feeds mic audio (at ``sample_rate`` Hz, the transport's ``input_rate``) and playout
    reports, and reads what the server sent. ``received`` keeps every server message with
    the Trio time it was read, for assertions.
    """

    sample_rate: int
    _outgoing: trio.MemorySendChannel[ClientMessage]
    _incoming: trio.MemoryReceiveChannel[ServerMessage]
    received: list[tuple[float, ServerMessage]] = field(default_factory=list)

    async def send_audio(self, pcm: bytes) -> None:
        """Sends mic audio (mono PCM16 bytes at ``sample_rate``)."""
        await self._outgoing.send(MicAudio(pcm))

    async def stream_audio(self, pcm: bytes, *, frame_ms: int = 20) -> None:
        """Sends ``pcm`` as a live mic would: one ``frame_ms`` frame per ``frame_ms`` of Trio time.

        Each frame goes out once it has been "recorded", so the server never sees audio before
        its time (under a ``MockClock`` this runs instantly and deterministically).
        """
        frame_bytes = 2 * self.sample_rate * frame_ms // 1000
        start = trio.current_time()
        for index, offset in enumerate(range(0, len(pcm), frame_bytes)):
            await trio.sleep_until(start + (index + 1) * frame_ms / 1000)
            await self.send_audio(pcm[offset : offset + frame_bytes])

    async def report_playout(self, buffered_ms: float) -> None:
        """Tells the server how much agent audio the client holds, in ms."""
        if not math.isfinite(buffered_ms) or buffered_ms < 0:
            raise ValueError(f"buffered_ms must be a finite number >= 0, got {buffered_ms}")
        await self._outgoing.send(PlayoutReport(buffered_ms))

    async def receive(self) -> ServerMessage:
        """The server's next message (also appended to ``received``)."""
        message = await self._incoming.receive()
        self.received.append((trio.current_time(), message))
        return message

    def __aiter__(self) -> MemoryClient:
        """``async for message in client``: every server message until the server closes."""
        return self

    async def __anext__(self) -> ServerMessage:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    async def collect(self) -> None:
        """Reads every server message into ``received`` until the server closes (a task)."""
        async for _ in self:
            pass

    async def close(self) -> None:
        """Hangs up: the server's ``receive`` raises ``trio.EndOfChannel``."""
        await self._outgoing.aclose()

    def audio(self, turn_id: int | None = None) -> list[AgentAudio]:
        """The agent audio frames received so far (of one turn, if given)."""
        return [
            m
            for _, m in self.received
            if isinstance(m, AgentAudio) and (turn_id is None or m.turn_id == turn_id)
        ]

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """The JSON events received so far (of one ``type``, if given)."""
        return [
            m.data
            for _, m in self.received
            if isinstance(m, Event) and (type is None or m.type == type)
        ]

    def clears(self) -> list[Clear]:
        """The ``Clear`` messages received so far."""
        return [m for _, m in self.received if isinstance(m, Clear)]


def memory_transport(
    sample_rate: int = 16000, *, input_rate: int | None = None, buffer: int = 1024
) -> tuple[MemoryTransport, MemoryClient]:
    """An in-memory transport: the server side for the session, the client side for a test.

    Args:
        sample_rate: the rate the client plays agent audio at, in Hz.
        input_rate: the client's mic rate in Hz (default: ``sample_rate``).
        buffer: messages each direction holds before ``send`` waits.
    """
    mic_rate = sample_rate if input_rate is None else input_rate
    to_server, from_client = trio.open_memory_channel[ClientMessage](buffer)
    to_client, from_server = trio.open_memory_channel[ServerMessage](buffer)
    return (
        MemoryTransport(sample_rate, mic_rate, from_client, to_client),
        MemoryClient(mic_rate, to_server, from_server),
    )
