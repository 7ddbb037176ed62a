"""PlayoutRouter: one pacer (one thread, one Trio consumer) shared by many sessions."""

from __future__ import annotations

import numpy as np
import pytest
import trio

from harness.speech import RATE, noise, voice
from session_helpers import is_event, receive_until
from voicecore import FramePacer, ReleasedFrame, StreamEvent
from voicecore.engine.playout import PlayoutRouter
from voicecore.engine.session import Session
from voicecore.engine.transport import memory_transport
from voicecore.protocol import AgentAudio
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance


async def test_frames_go_to_their_stream_owner(autojump_clock: trio.abc.Clock) -> None:
    got: dict[str, list[ReleasedFrame]] = {"a": [], "b": []}
    events: list[StreamEvent] = []
    with FramePacer(clock="virtual") as pacer:
        router = PlayoutRouter(pacer)
        a = router.open_stream(16000, events.append, got["a"].extend)
        b = router.open_stream(48000, events.append, got["b"].extend)
        a.push(np.zeros(3200, dtype=np.int16))  # 200 ms
        b.push(np.zeros(4800, dtype=np.int16))  # 100 ms
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.run)
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
    assert [f.seq for f in got["a"]] == list(range(10))
    assert [f.seq for f in got["b"]] == list(range(5))
    assert {f.stream_id for f in got["a"]} == {a.id}
    assert sorted((e.stream_id, e.kind) for e in events) == [(a.id, "started"), (b.id, "started")]
    assert router.unrouted == 0


async def test_frames_of_a_closed_stream_are_counted_not_delivered(
    autojump_clock: trio.abc.Clock,
) -> None:
    delivered: list[ReleasedFrame] = []
    events: list[StreamEvent] = []
    with FramePacer(clock="virtual") as pacer:
        router = PlayoutRouter(pacer)
        stream = router.open_stream(16000, events.append, delivered.extend, cushion_ms=120)
        stream.push(np.zeros(16000, dtype=np.int16))
        pacer.advance(0)  # the cushion's burst (6 frames) is released, not yet taken
        router.close_stream(stream)  # its owner goes away while they are in flight
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.run)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()
    assert delivered == []
    assert events == []
    assert router.unrouted == 6 + 1  # the frames and the stream's "started"


def test_a_stream_without_a_sink_needs_a_frame_receiver() -> None:
    with FramePacer(clock="virtual") as pacer:
        router = PlayoutRouter(pacer)
        with pytest.raises(ValueError, match="on_frames"):
            router.open_stream(16000, print)


def test_trio_time_needs_a_running_router() -> None:
    with FramePacer(clock="virtual") as pacer:
        router = PlayoutRouter(pacer)
        assert not router.running
        with pytest.raises(RuntimeError, match="not running"):
            router.trio_time(0)
    with pytest.raises(ValueError, match="virtual_tick_ms"):
        PlayoutRouter(pacer, virtual_tick_ms=0)


async def test_two_sessions_share_one_pacer(autojump_clock: trio.abc.Clock) -> None:
    with FramePacer(clock="virtual") as pacer:
        router = PlayoutRouter(pacer)
        pairs = [memory_transport(RATE) for _ in range(2)]
        sessions = [
            Session(
                transport,
                stt=ScriptedSTT([Utterance([], f"Question {i}.")]),
                llm=ScriptedLLM([f"Answer number {i} is here."]),
                tts=ScriptedTTS(),
                pacer=router,
            )
            for i, (transport, _) in enumerate(pairs)
        ]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.run)
            for session in sessions:
                nursery.start_soon(session.run)
            # The second user starts speaking 300 ms after the first: their replies overlap.
            nursery.start_soon(pairs[0][1].stream_audio, noise(500) + voice(800) + noise(3000))
            nursery.start_soon(pairs[1][1].stream_audio, noise(800) + voice(800) + noise(3000))
            for _, client in pairs:
                await receive_until(client, is_event("agent_done"))
            nursery.cancel_scope.cancel()
        assert pacer.stats().open_streams == 0
    for i, (_, client) in enumerate(pairs):
        frames = [m for _, m in client.received if isinstance(m, AgentAudio)]
        assert len(frames) * 20 == pytest.approx(60 * len(f"Answer number {i} is here."), abs=40)
        assert sessions[i].metrics.turns[0].voice_to_voice_ms == pytest.approx(500, abs=30)
    assert router.unrouted == 0
