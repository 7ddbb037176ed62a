"""Shared pieces of the engine tests: a session on scripted providers over the in-memory
transport, and predicates on what it sends. The synthetic mic audio they feed it is
``harness.speech``'s (the benchmarks use it too)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import trio

from harness.speech import RATE
from voicecore import FramePacer
from voicecore.engine.session import Session, SessionConfig
from voicecore.engine.stages import STT
from voicecore.engine.transport import MemoryClient, memory_transport
from voicecore.protocol import AgentAudio, ServerMessage, serialize
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance


def make_session(
    *,
    stt: STT | None = None,
    llm: ScriptedLLM | None = None,
    tts: ScriptedTTS | None = None,
    config: SessionConfig | None = None,
    rate: int = RATE,
    **kwargs: Any,
) -> tuple[Session, MemoryClient, FramePacer]:
    """A session over an in-memory transport and a virtual-clock pacer."""
    transport, client = memory_transport(rate)
    pacer = FramePacer(clock="virtual")
    session = Session(
        transport,
        stt=stt or ScriptedSTT([Utterance(["what"], "What time is it?")]),
        llm=llm or ScriptedLLM(["It is nine. Anything else?"]),
        tts=tts or ScriptedTTS(),
        pacer=pacer,
        config=config,
        **kwargs,
    )
    return session, client, pacer


async def receive_until(
    client: MemoryClient, predicate: Callable[[ServerMessage], bool]
) -> ServerMessage:
    """Reads server messages until one matches ``predicate``; returns it."""
    while True:
        message = await client.receive()
        if predicate(message):
            return message


def wire(message: ServerMessage) -> dict[str, Any]:
    """A text message as a WebSocket client reads it (``docs/protocol.md``'s JSON object)."""
    if isinstance(message, AgentAudio):
        raise TypeError("agent audio is a binary message, not a JSON object")
    data: dict[str, Any] = json.loads(serialize(message))
    return data


def is_event(type_: str, **fields: Any) -> Callable[[ServerMessage], bool]:
    """A predicate matching a text message of wire ``type_`` whose JSON has ``fields``."""

    def match(message: ServerMessage) -> bool:
        if isinstance(message, AgentAudio):
            return False
        data = wire(message)
        return data["type"] == type_ and all(data.get(k) == v for k, v in fields.items())

    return match


async def start(nursery: trio.Nursery, session: Session, client: MemoryClient, pcm: bytes) -> None:
    """Starts the session and a task streaming ``pcm`` as a live mic."""
    nursery.start_soon(session.run)
    nursery.start_soon(client.stream_audio, pcm)
