"""How a session talks to its client: the ``Transport`` protocol, and an in-memory transport
for tests and examples.

A transport carries, from the client: the user's mic audio (``protocol.Audio``, PCM16 at the
client's rate) and playout reports (``protocol.Playout``: how much agent audio the client
holds); to the client: the protocol's server messages (``voicecore.protocol``: transcripts,
agent text, paced ``AgentAudio`` frames unless the pacer writes them to the socket itself,
``Clear`` on barge-in, metrics, errors). One vocabulary from the engine to the wire: a
WebSocket transport only serializes what the session hands it.

Example (a test playing the client)::

    transport, client = memory_transport(16000)
    nursery.start_soon(Session(transport, stt=stt, llm=llm, tts=tts).run)
    await client.stream_audio(pcm16)        # as a live mic: one 20 ms frame per 20 ms
    async for message in client:            # protocol.ServerMessage
        ...
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import trio

from voicecore._core import SocketSink
from voicecore.protocol import (
    SERVER_CAPABILITIES,
    AgentAudio,
    AgentText,
    Audio,
    Clear,
    Playout,
    ServerMessage,
    serialize,
)

__all__ = [
    "EngineInput",
    "MemoryClient",
    "MemoryTransport",
    "Transport",
    "memory_transport",
]

EngineInput = Audio | Playout
"""What a transport hands the session from the client (``hello`` and ``bye`` are the
transport's own business)."""


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
        """The mic audio's rate in Hz (what ``protocol.Audio`` carries)."""
        ...

    @property
    def capabilities(self) -> frozenset[str]:
        """The client's optional features the session may use (``protocol.Ready``'s
        ``capabilities``: e.g. ``"pause"``, it obeys ``Pause``/``Resume``)."""
        ...

    @property
    def audio_sink(self) -> SocketSink | None:
        """Where the pacer writes the agent's audio frames itself, on their deadlines and
        whatever the event loop is doing (the client's socket); None: the session sends
        them as ``protocol.AgentAudio`` messages."""
        ...

    async def receive(self) -> EngineInput:
        """The client's next mic audio or playout report; raises ``trio.EndOfChannel`` when
        the client is gone."""
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
    _incoming: trio.MemoryReceiveChannel[EngineInput]
    _outgoing: trio.MemorySendChannel[ServerMessage]
    capabilities: frozenset[str] = SERVER_CAPABILITIES
    """What the client side obeys (by default everything the server can use)."""
    audio_sink: None = None
    """No socket: agent audio travels as ``protocol.AgentAudio`` messages."""

    async def receive(self) -> EngineInput:
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
    _outgoing: trio.MemorySendChannel[EngineInput]
    _incoming: trio.MemoryReceiveChannel[ServerMessage]
    received: list[tuple[float, ServerMessage]] = field(default_factory=list)

    async def send_audio(self, pcm: bytes) -> None:
        """Sends mic audio (mono PCM16 bytes at ``sample_rate``)."""
        await self._outgoing.send(Audio(pcm))

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
        await self._outgoing.send(Playout(buffered_ms))

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
        """The agent audio frames received so far (of one turn, if given: a turn's frames
        follow its first ``agent_text``, as on the wire, where frames carry no turn id)."""
        frames: list[AgentAudio] = []
        current: int | None = None
        for _, message in self.received:
            if isinstance(message, AgentText):
                current = message.turn_id
            elif isinstance(message, AgentAudio) and (turn_id is None or current == turn_id):
                frames.append(message)
        return frames

    def events(self, type: str | None = None) -> list[dict[str, Any]]:
        """The text messages received so far, as a WebSocket client would read them (the
        JSON objects of ``docs/protocol.md``), of one ``type`` if given."""
        events = [
            json.loads(serialize(message))
            for _, message in self.received
            if not isinstance(message, AgentAudio)
        ]
        return [e for e in events if type is None or e["type"] == type]

    def clears(self) -> list[Clear]:
        """The ``Clear`` messages received so far."""
        return [m for _, m in self.received if isinstance(m, Clear)]


def memory_transport(
    sample_rate: int = 16000,
    *,
    input_rate: int | None = None,
    buffer: int = 1024,
    capabilities: frozenset[str] = SERVER_CAPABILITIES,
) -> tuple[MemoryTransport, MemoryClient]:
    """An in-memory transport: the server side for the session, the client side for a test.

    Args:
        sample_rate: the rate the client plays agent audio at, in Hz.
        input_rate: the client's mic rate in Hz (default: ``sample_rate``).
        buffer: messages each direction holds before ``send`` waits.
        capabilities: what the client side obeys (``frozenset()``: a client of before
            ``pause``).
    """
    mic_rate = sample_rate if input_rate is None else input_rate
    to_server, from_client = trio.open_memory_channel[EngineInput](buffer)
    to_client, from_server = trio.open_memory_channel[ServerMessage](buffer)
    return (
        MemoryTransport(sample_rate, mic_rate, from_client, to_client, capabilities),
        MemoryClient(mic_rate, to_server, from_server),
    )
