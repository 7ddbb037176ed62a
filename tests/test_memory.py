"""What a finished conversation leaves behind: nothing, and without the cycle collector.

A session that ends must be freed by reference counting alone, the moment its last task
returns. If it sits in a reference cycle, everything it holds (its timeline of thousands
of events, its rings, channels and queued audio, its transport and socket objects) waits
for a full collection of the oldest generation, which a busy server runs rarely: the soak
(``harness.soak``) measured some fifty dead sessions piling up between two such
collections, and the heap's high-water mark ratcheting up with every pile (RSS growth of
2-3 MB per 1,000 turns while the live heap stayed flat).

The session tests run with the collector disabled and check, through weak references, that
the objects died as soon as the last reference went. The scripted providers, which one
``voicecore serve --providers scripted`` shares among all its sessions, must keep bounded
records of their calls.
"""

from __future__ import annotations

import gc
import json
import weakref
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
from websockets.trio.client import connect

from harness.speech import noise, voice
from session_helpers import is_event, make_session, receive_until
from voicecore.config import ServerConfig, VoicecoreConfig
from voicecore.engine.history import Message
from voicecore.engine.session import SessionConfig
from voicecore.engine.stages import AudioFrame, EnergyVadStage, TurnContext
from voicecore.pipeline import Pipeline
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance
from voicecore.providers.scripted import RECORDED_CALLS
from voicecore.server.app import VoiceServer

LONG_REPLY = " ".join(["This sentence is part of a long answer that keeps the agent talking."] * 6)


@pytest.fixture
def no_cycle_collector() -> Iterator[None]:
    """Disables the cycle collector for the test (objects die by reference counting only)."""
    gc.collect()  # what earlier tests left: not this test's business
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


async def test_a_finished_session_is_freed_by_reference_counting(
    autojump_clock: trio.abc.Clock, no_cycle_collector: None
) -> None:
    stt = ScriptedSTT([Utterance([], "Tell me a story."), Utterance(["stop"], "Stop.")])
    llm = ScriptedLLM([LONG_REPLY, "Okay."], token_delay_s=0.05)
    session, client, _ = make_session(stt=stt, llm=llm)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        # A turn, then a barge-in over its reply (every edge channel and the turn's
        # cancellation are exercised), then the client hangs up.
        await client.stream_audio(noise(500) + voice(1000) + noise(1500) + voice(600))
        await receive_until(client, is_event("agent_done", turn_id=1, interrupted=True))
        await client.close()
    session_ref = weakref.ref(session)
    del session
    assert session_ref() is None


def _pipeline() -> Pipeline:
    return Pipeline(
        VoicecoreConfig(session=SessionConfig(end_of_turn_silence_ms=300)),
        vad_kind="energy",
        new_vad=EnergyVadStage,
        new_stt=lambda: ScriptedSTT([Utterance(["what"], "What time is it?")]),
        llm=ScriptedLLM([LONG_REPLY]),
        tts=ScriptedTTS(sample_rate=24000, ms_per_char=40.0),
    )


async def _settle(predicate: object, timeout: float = 10.0) -> None:
    assert callable(predicate)
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.01)


@pytest.mark.parametrize("leave", ["bye", "abrupt"])
async def test_a_closed_connection_frees_its_session_and_transport_by_reference_counting(
    tmp_path: Path, no_cycle_collector: None, leave: str
) -> None:
    web_root = tmp_path / "web"
    web_root.mkdir()
    server = VoiceServer(_pipeline(), ServerConfig(port=0, web_root=web_root, diagnostics=False))
    hello = {"type": "hello", "protocol": 1, "input_rate": 16000, "output_rate": 24000}
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        url = f"ws://127.0.0.1:{server.port}/ws"
        async with connect(url, max_queue=None) as ws:
            await ws.send(json.dumps(hello))
            assert json.loads(await ws.recv())["type"] == "ready"
            pcm = noise(300) + voice(1000) + noise(700)
            for offset in range(0, len(pcm), 640):
                await ws.send(pcm[offset : offset + 640])
            with trio.fail_after(10):
                while not isinstance(await ws.recv(), bytes):
                    pass  # until the agent speaks: a turn with a pacer stream is open
            (session,) = server.live_sessions()
            (transport,) = server.transports()
            session_ref, transport_ref = weakref.ref(session), weakref.ref(transport)
            del session, transport
            if leave == "bye":
                await ws.send(json.dumps({"type": "bye"}))
            else:
                await trio.aclose_forcefully(ws.stream)
        await _settle(lambda: server.sessions == 0 and server.pacer.stats().open_streams == 0)
        # The connection's own tasks return after its session: give them a moment (on a
        # loaded machine too); objects in a cycle would never die.
        with trio.move_on_after(5):
            while session_ref() is not None or transport_ref() is not None:
                await trio.sleep(0.01)
        assert session_ref() is None
        assert transport_ref() is None
        server.shutdown(drain_timeout_s=0)


async def test_scripted_providers_keep_bounded_records_of_their_calls() -> None:
    calls = 3 * RECORDED_CALLS
    stt = ScriptedSTT([Utterance([], "One."), Utterance([], "Two.")])
    llm = ScriptedLLM(["First.", "Then this."])
    tts = ScriptedTTS(ms_per_char=1.0)
    frame = AudioFrame(bytes(640), 16000, 0)
    finals, replies = [], []
    for turn_id in range(1, calls + 1):
        ctx = TurnContext.standalone(turn_id=turn_id)

        async def one_frame() -> AsyncIterator[AudioFrame]:
            yield frame

        finals += [t.text async for t in stt.transcribe(one_frame(), ctx) if t.is_final]
        prompt = [Message("user", f"Question {turn_id}?")]
        replies.append("".join([d async for d in llm.generate(prompt, ctx)]))
        assert [c async for c in tts.synthesize(f"Reply {turn_id}.", ctx)]
    # The script advanced with every call, the last entry repeating...
    assert finals[:3] == ["One.", "Two.", "Two."]
    assert replies[:3] == ["First.", "Then this.", "Then this."]
    assert stt.call_count == llm.call_count == tts.call_count == calls
    assert tts.closed == llm.closed == calls
    # ...but only the most recent calls are remembered.
    assert len(stt.calls) == len(stt.audio_ms) == RECORDED_CALLS
    assert stt.calls[-1].turn_id == calls
    assert len(llm.calls) == RECORDED_CALLS
    assert llm.calls[0] == [Message("user", f"Question {calls - RECORDED_CALLS + 1}?")]
    assert tts.texts == [f"Reply {n}." for n in range(calls - RECORDED_CALLS + 1, calls + 1)]
