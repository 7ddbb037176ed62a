"""The conversation engine end to end: scripted providers, in-memory transport, MockClock.

Trio's autojump clock runs every delay instantly and deterministically; the session drives
the pacer's virtual clock from Trio's clock, so frames fall due as Trio time passes.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterable, AsyncIterator

import pytest
import trio

from harness.speech import RATE, noise, voice
from session_helpers import is_event, make_session, receive_until, start, wire
from voicecore import FramePacer
from voicecore.diagnostics import GcPolicy, LoopLagCanary
from voicecore.engine.history import ConversationHistory
from voicecore.engine.session import Session, SessionConfig
from voicecore.engine.stages import AudioFrame, Hypothesis, TurnContext
from voicecore.engine.transport import MemoryClient, memory_transport
from voicecore.protocol import AgentAudio, AgentText, Clear, Pause
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance


def after(client: MemoryClient, message: object) -> list[object]:
    """The messages the client received after ``message``."""
    messages = [m for _, m in client.received]
    return messages[messages.index(message) + 1 :]


def time_of(client: MemoryClient, message: object) -> float:
    return next(t for t, m in client.received if m is message)


async def test_full_turn_streams_every_stage(autojump_clock: trio.abc.Clock) -> None:
    stt = ScriptedSTT([Utterance(["what", "what time"], "What time is it?")])
    llm = ScriptedLLM(["It is nine o'clock. Anything else?"], first_token_delay_s=0.3)
    tts = ScriptedTTS(sample_rate=24000, first_audio_delay_s=0.1)
    session, client, _ = make_session(stt=stt, llm=llm, tts=tts, system_prompt="Be brief.")
    async with trio.open_nursery() as nursery:
        # 0.5 s of room noise, 1 s of speech (0.5-1.5 s), then silence.
        await start(nursery, session, client, noise(500) + voice(1000) + noise(3000))
        end = await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    assert wire(end) == {
        "type": "agent_done",
        "turn_id": 1,
        "interrupted": False,
        "heard": "It is nine o'clock. Anything else?",
    }
    transcripts = client.events("transcript")
    assert [(t["text"], t["final"]) for t in transcripts] == [
        ("what", False),
        ("what time", False),
        ("What time is it?", True),
    ]
    # Partials flow while the user speaks (speech ends at 1.5 s).
    first_partial = next(m for _, m in client.received if is_event("transcript")(m))
    assert time_of(client, first_partial) < 1.5
    # The chunker fed the TTS clause by clause, and the LLM saw the system prompt.
    assert tts.texts == ["It is nine o'clock.", "Anything else?"]
    assert [m.role for m in llm.calls[0]] == ["system", "user"]
    # Every frame is the client's rate (resampled from 24 kHz), 20 ms, in order.
    frames = client.audio(1)
    assert frames
    assert all(len(f.pcm) == 2 * RATE // 50 for f in frames)
    expected = sum(tts.samples_for(t) for t in tts.texts) * RATE // 24000
    assert abs(len(frames) * RATE // 50 - expected) <= 2 * RATE // 50
    # Metrics: end of speech -> final (500 ms silence), then 300 ms LLM, 100 ms TTS.
    (turn,) = session.metrics.turns
    assert turn.stt_final_ms == pytest.approx(500, abs=25)
    assert turn.llm_first_token_ms == pytest.approx(300, abs=1)
    assert turn.tts_first_audio_ms == pytest.approx(100, abs=1)
    assert turn.voice_to_voice_ms == pytest.approx(500 + 300 + 100, abs=30)
    assert turn.barge_in_ms is None
    assert not turn.interrupted
    assert client.events("metrics")[0]["voice_to_voice_ms"] == turn.voice_to_voice_ms
    assert [(m.role, m.content) for m in session.history.messages()] == [
        ("system", "Be brief."),
        ("user", "What time is it?"),
        ("assistant", "It is nine o'clock. Anything else?"),
    ]
    kinds = [e["kind"] for e in session.timeline.events()]
    for kind in ("speech_start", "speech_end", "stt_final", "turn_start", "llm_first_token"):
        assert kind in kinds
    assert kinds.count("agent_audible") == 1
    assert llm.closed == 1
    assert tts.closed == 2


async def test_client_at_48k_is_resampled_both_ways(autojump_clock: trio.abc.Clock) -> None:
    session, client, _ = make_session(rate=48000)
    async with trio.open_nursery() as nursery:
        await start(
            nursery, session, client, noise(500, 48000) + voice(800, 48000) + noise(2000, 48000)
        )
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    frames = client.audio(1)
    assert frames
    assert all(len(f.pcm) == 2 * 960 for f in frames)
    assert session.metrics.turns[0].voice_to_voice_ms == pytest.approx(500, abs=30)


async def test_early_stt_final_cuts_the_silence_short(autojump_clock: trio.abc.Clock) -> None:
    # The STT's own endpointing finalises after 200 ms of silence: the engine does not wait
    # for its 500 ms end-of-turn silence.
    stt = ScriptedSTT([Utterance([], "Hello.")], endpoint_silence_ms=200)
    session, client, _ = make_session(stt=stt)
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, noise(500) + voice(1000) + noise(2000))
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    # The final came 200 ms after the speech; the VAD confirmed the end 350 ms after it
    # (150 ms hangover + 200 ms minimum silence), and the turn ended then.
    turn = session.metrics.turns[0]
    assert turn.stt_final_ms == pytest.approx(200, abs=25)
    assert turn.voice_to_voice_ms == pytest.approx(350, abs=30)
    end_of_turn = session.timeline.events("end_of_turn")
    assert end_of_turn[0]["by_stt_final"] is True


async def test_too_short_speech_triggers_nothing(autojump_clock: trio.abc.Clock) -> None:
    stt = ScriptedSTT([Utterance(["cough"], "Cough.")])
    session, client, _ = make_session(stt=stt)
    async with trio.open_nursery() as nursery:
        # A 100 ms click: the VAD sees it, but it is below min_speech_ms (200 ms).
        nursery.start_soon(session.run)
        await client.stream_audio(noise(500) + voice(100) + noise(2000))
        nursery.cancel_scope.cancel()
    assert stt.calls == []
    assert client.received == []
    assert session.metrics.edge_counters == {"vad.false_starts": 1}


async def test_pause_shorter_than_the_silence_continues_the_turn(
    autojump_clock: trio.abc.Clock,
) -> None:
    session, client, _ = make_session()
    async with trio.open_nursery() as nursery:
        # A 450 ms pause: the VAD reports its end (after 350 ms) and the restart, which it
        # confirms 90 ms after it began, i.e. after the 500 ms silence would have run out.
        speech = voice(600) + noise(450) + voice(600)
        await start(nursery, session, client, noise(500) + speech + noise(2000))
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    assert len(session.metrics.turns) == 1
    assert [e["kind"] for e in session.timeline.events("speech_resumed")] == ["speech_resumed"]
    # The user turn ended 500 ms after the end of the second half of the speech (~2.15 s).
    speech_end = session.timeline.events("speech_end")[-1]["sample"] / RATE
    assert speech_end == pytest.approx(2.15, abs=0.05)
    assert session.timeline.events("end_of_turn")[0]["t"] == pytest.approx(
        speech_end + 0.5, abs=0.025
    )


async def barge_in(
    *,
    llm: ScriptedLLM,
    tts: ScriptedTTS,
    interrupt_at: float,
    speech_ms: float = 600,
    config: SessionConfig | None = None,
) -> tuple[MemoryClient, Clear, list[object], object]:
    """Turn 1, then the user speaks again at ``interrupt_at`` s; returns the client, the
    clear, every message after it and the session."""
    stt = ScriptedSTT([Utterance([], "Tell me a story."), Utterance(["stop"], "Stop.")])
    session, client, _ = make_session(stt=stt, llm=llm, tts=tts, config=config)
    first = noise(500) + voice(1000)
    gap = noise(interrupt_at * 1000 - 1500)
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, first + gap + voice(speech_ms) + noise(6000))
        clear = await receive_until(client, lambda m: isinstance(m, Clear))
        await receive_until(client, is_event("agent_done", turn_id=2))
        nursery.cancel_scope.cancel()
    assert isinstance(clear, Clear)
    return client, clear, after(client, clear), session


def assert_no_audio_of(turn_id: int, messages: list[object]) -> None:
    """No frame of ``turn_id`` among ``messages`` (those after its clear): frames carry no
    turn id on the wire, they belong to the turn of the latest ``agent_text``."""
    current = turn_id
    for message in messages:
        if isinstance(message, AgentText):
            current = message.turn_id
        elif isinstance(message, AgentAudio):
            assert current != turn_id


async def test_barge_in_during_llm_generation(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["Once upon a time there was a bug.", "Okay."], first_token_delay_s=2.0)
    tts = ScriptedTTS()
    # Turn 1 ends at 2.0 s; the LLM would answer at 4.0 s; the user speaks at 2.5 s.
    client, clear, later, session = await barge_in(llm=llm, tts=tts, interrupt_at=2.5)
    assert clear.turn_id == 1
    assert client.audio(1) == []
    assert_no_audio_of(1, later)
    assert tts.texts == ["Okay."]  # turn 1 never reached the TTS
    assert llm.closed == 2  # turn 1's stream was closed, not left open
    turn1, turn2 = session.metrics.turns
    assert turn1.interrupted
    assert turn1.barge_in_ms is not None
    assert turn1.llm_first_token_ms is None
    assert not turn2.interrupted
    assert client.audio(2)
    # Nothing of turn 1 was heard: the user's words of both turns are one turn, answered.
    assert [(m.role, m.content) for m in session.history.messages()] == [
        ("user", "Tell me a story. Stop."),
        ("assistant", "Okay."),
    ]


async def test_barge_in_during_tts_synthesis(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["Once upon a time there was a bug.", "Okay."])
    tts = ScriptedTTS(first_audio_delay_s=1.5)
    # Turn 1's first audio would come at 3.5 s; the user speaks at 2.5 s.
    client, clear, later, session = await barge_in(llm=llm, tts=tts, interrupt_at=2.5)
    assert clear.turn_id == 1
    assert client.audio(1) == []
    assert_no_audio_of(1, later)
    assert tts.texts[0] == "Once upon a time there was a bug."
    assert tts.closed == len(tts.texts)  # the interrupted synthesis was closed
    assert session.metrics.turns[0].tts_first_audio_ms is None
    assert session.metrics.turns[0].interrupted


async def test_barge_in_during_playout_keeps_only_what_was_heard(
    autojump_clock: trio.abc.Clock,
) -> None:
    story = "Once upon a time there was a bug. It hid in the pacer. Nobody found it for years."
    llm = ScriptedLLM([story, "Okay."])
    tts = ScriptedTTS()  # 60 ms per character: about 5 s of audio
    # Turn 1's audio starts at 2.0 s; the user speaks at 3.5 s and is confirmed 300 ms later.
    client, clear, later, session = await barge_in(llm=llm, tts=tts, interrupt_at=3.5)
    assert clear.turn_id == 1
    assert_no_audio_of(1, later)
    sent = client.audio(1)
    assert 0 < len(sent) < sum(tts.samples_for(t) for t in tts.texts[:3]) * RATE // 24000 // 320
    # Sent frames: the cushion ahead of the playback until the pause (the reply was ducked
    # at the user's first sound, then cut by their words); heard = sent - cushion.
    cushion = SessionConfig().cushion_ms
    paused_at = next(t for t, m in client.received if isinstance(m, Pause))
    assert 3.5 <= paused_at < 3.75
    assert len(sent) * 20 == pytest.approx(1000 * (paused_at - 2.0) + cushion, abs=40)
    turn1 = session.metrics.turns[0]
    assert turn1.interrupted
    assert turn1.barge_in_ms is not None
    end1 = client.events("agent_done")[0]
    assert end1["interrupted"] is True
    heard = end1["heard"]
    # 1.5-1.75 s at 60 ms per character: about 25-30 characters of the first sentence.
    assert story.startswith(heard)
    assert 20 <= len(heard) <= 35
    messages = [(m.role, m.content) for m in session.history.messages()]
    assert messages[1] == ("assistant", heard + "…")
    # Without the flush and the clear, the queued audio (1-2 s: a full 2 s playout queue
    # holds the TTS back until it has drained to half) and the client's cushion would
    # still have played.
    (event,) = session.timeline.events("barge_in")
    assert 1000 + cushion <= event["stale_audio_ms"] <= 2000 + cushion
    assert messages[2:] == [("user", "Stop."), ("assistant", "Okay.")]


async def test_false_interruption_does_not_cancel(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["Once upon a time there was a bug. It hid in the pacer."])
    session, client, _ = make_session(llm=llm)
    async with trio.open_nursery() as nursery:
        # 250 ms of speech during playout: a real utterance when idle (> 200 ms), but below
        # the barge-in minimum (300 ms) while the agent speaks.
        speech = noise(500) + voice(1000) + noise(1000) + voice(250) + noise(4000)
        await start(nursery, session, client, speech)
        end = await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    assert wire(end)["interrupted"] is False
    assert client.clears() == []
    assert session.metrics.edge_counters["vad.false_interruptions"] == 1
    assert session.timeline.events("false_interruption")


async def test_barge_in_threshold_is_configurable(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["Once upon a time there was a bug. It hid in the pacer.", "Okay."])
    config = SessionConfig(barge_in_min_speech_ms=200)
    _, clear, later, _ = await barge_in(
        llm=llm, tts=ScriptedTTS(), interrupt_at=3.0, speech_ms=250, config=config
    )
    assert clear.turn_id == 1
    assert_no_audio_of(1, later)


async def test_playout_reports_reach_the_pacer(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["Once upon a time there was a bug. It hid in the pacer."])
    session, client, _ = make_session(llm=llm)
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, noise(500) + voice(1000) + noise(5000))
        await receive_until(
            client, lambda m: isinstance(m, AgentAudio) and len(client.audio()) > 30
        )
        await client.report_playout(80.0)
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    assert session.timeline.events("client_cushion")[0]["buffered_ms"] == 80.0


async def test_token_budget_truncates_the_prompt(
    autojump_clock: trio.abc.Clock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="voicecore.engine.session")
    utterances = [Utterance([], f"Question number {i} about the weather today?") for i in range(3)]
    llm = ScriptedLLM([f"Answer {i} is sunny." for i in range(3)])
    # System prompt (~6 tokens + 4) and one turn (~11 + 4 and ~5 + 4) fit; two turns do not.
    history = ConversationHistory("You are a weather bot.", token_budget=45)
    session, client, _ = make_session(stt=ScriptedSTT(utterances), llm=llm, history=history)
    speech = noise(500) + (voice(800) + noise(2500)) * 3
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, speech)
        await receive_until(client, is_event("agent_done", turn_id=3))
        nursery.cancel_scope.cancel()
    last_prompt = [m.content for m in llm.calls[2]]
    assert last_prompt[0] == "You are a weather bot."
    assert last_prompt[-1] == "Question number 2 about the weather today?"
    assert "Question number 0 about the weather today?" not in last_prompt
    assert history.dropped_turns >= 1
    tokens = [t.prompt_tokens for t in session.metrics.turns]
    assert all(t is not None and t <= 45 for t in tokens)
    assert (
        sum("prompt" in r.getMessage() and "tokens" in r.getMessage() for r in caplog.records) == 3
    )


@pytest.mark.parametrize("stage", ["llm", "tts", "stt"])
async def test_a_failing_provider_ends_the_turn_not_the_session(
    autojump_clock: trio.abc.Clock, stage: str
) -> None:
    stt = ScriptedSTT(
        [
            Utterance([], "First.", error=RuntimeError("stt down") if stage == "stt" else None),
            Utterance([], "Second."),
        ]
    )
    llm = ScriptedLLM(["Reply one is here.", "Reply two is here."])
    tts = ScriptedTTS()
    if stage == "llm":
        llm.fail(0, RuntimeError("llm down"), after_deltas=2)
    if stage == "tts":
        tts.error, tts.fail_call = RuntimeError("tts down"), 0
    session, client, _ = make_session(stt=stt, llm=llm, tts=tts)
    speech = noise(500) + voice(800) + noise(3000) + voice(800) + noise(3000)
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, speech)
        error = await receive_until(client, is_event("error"))
        await receive_until(client, is_event("agent_done", turn_id=2))
        nursery.cancel_scope.cancel()
    assert wire(error)["stage"] == stage
    assert wire(error)["turn_id"] == 1
    assert f"{stage} down" in wire(error)["message"]
    assert client.audio(2)
    assert not client.events("agent_done")[-1]["interrupted"]
    assert session.metrics.edge_counters[f"{stage}.errors"] == 1
    assert llm.closed == len(llm.calls)
    assert tts.closed == len(tts.texts)


@pytest.mark.parametrize("stage", ["llm", "tts", "stt"])
async def test_a_stalling_provider_times_out(autojump_clock: trio.abc.Clock, stage: str) -> None:
    stt = ScriptedSTT([Utterance([], "First.", stall=stage == "stt"), Utterance([], "Second.")])
    llm = ScriptedLLM(["Reply one is here.", "Reply two is here."])
    tts = ScriptedTTS(stall_call=0 if stage == "tts" else None)
    if stage == "llm":
        llm.stall(0, after_deltas=1)
    config = SessionConfig(
        stt_final_timeout_s=1.0, llm_token_timeout_s=1.0, tts_first_audio_timeout_s=1.0
    )
    session, client, _ = make_session(stt=stt, llm=llm, tts=tts, config=config)
    speech = noise(500) + voice(800) + noise(3000) + voice(800) + noise(3000)
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, speech)
        error = await receive_until(client, is_event("error"))
        await receive_until(client, is_event("agent_done", turn_id=2))
        nursery.cancel_scope.cancel()
    assert wire(error)["stage"] == stage
    assert "StageTimeoutError" in wire(error)["message"]
    # The stage was due when the user's turn ended (1.8 s) and was given up 1 s later.
    assert time_of(client, error) == pytest.approx(1.8 + 1.0, abs=0.1)
    assert client.audio(2)


async def test_no_task_of_a_cancelled_turn_survives(autojump_clock: trio.abc.Clock) -> None:
    story = "Once upon a time there was a bug. It hid in the pacer. Nobody found it for years."
    llm = ScriptedLLM([story, "Okay."], token_delay_s=0.1)  # generates until ~3.7 s
    tts = ScriptedTTS()
    stt = ScriptedSTT([Utterance([], "Tell me a story."), Utterance(["stop"], "Stop.")])
    session, client, pacer = make_session(stt=stt, llm=llm, tts=tts)

    def task_names() -> list[str]:
        names: list[str] = []

        def walk(task: trio.lowlevel.Task) -> None:
            names.append(task.name)
            for nursery in task.child_nurseries:
                for child in nursery.child_tasks:
                    walk(child)

        walk(trio.lowlevel.current_root_task())
        return names

    async with trio.open_nursery() as nursery:
        # The reply's audio starts at ~2.7 s; the user interrupts at 3.0 s (confirmed at 3.3 s).
        await start(nursery, session, client, noise(500) + voice(1000) + noise(1500) + voice(600))
        await receive_until(client, lambda m: isinstance(m, AgentAudio))
        assert any(name.endswith("_generate") for name in task_names())
        await receive_until(client, lambda m: isinstance(m, Clear))
        await receive_until(client, is_event("agent_done", turn_id=1))
        assert not any(name.endswith("_generate") for name in task_names())
        assert pacer.stats().open_streams == 0  # the turn's playout stream is closed
        nursery.cancel_scope.cancel()
    assert llm.closed == len(llm.calls)
    assert tts.closed == len(tts.texts)


class SlowReadingSTT:
    """An STT that reads its audio far slower than real time (a stalled upstream)."""

    async def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        async for _ in audio:
            await trio.sleep(1.0)
        yield Hypothesis("Slow.", is_final=True)


async def test_overflow_on_the_drop_oldest_edge_is_counted(autojump_clock: trio.abc.Clock) -> None:
    session, client, _ = make_session(stt=SlowReadingSTT())
    async with trio.open_nursery() as nursery:
        # 4 s of speech: 200 frames into a 100-frame dsp->stt channel read once a second.
        nursery.start_soon(session.run)
        await client.stream_audio(noise(500) + voice(4000) + noise(200))
        nursery.cancel_scope.cancel()
    dropped = session.metrics.edge_counters["dsp->stt.dropped"]
    assert 80 <= dropped <= 200


async def test_session_ends_when_the_client_hangs_up(autojump_clock: trio.abc.Clock) -> None:
    session, client, pacer = make_session()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await client.stream_audio(noise(200))
        await client.close()
    # run() returned: the server side is closed and nothing is left running.
    with pytest.raises(trio.EndOfChannel):
        await client.receive()
    assert not pacer.stopped  # a pacer given to the session stays the caller's


def test_config_rejects_bad_values() -> None:
    with pytest.raises(ValueError, match="end_of_turn_silence_ms"):
        SessionConfig(end_of_turn_silence_ms=-1)
    with pytest.raises(ValueError, match="llm_token_timeout_s"):
        SessionConfig(llm_token_timeout_s=0)
    with pytest.raises(ValueError, match="frame_ms"):
        SessionConfig(frame_ms=25)
    with pytest.raises(ValueError, match="cushion_ms"):
        SessionConfig(cushion_ms=10)


def test_latency_budget_uses_the_configuration() -> None:
    budget = SessionConfig(end_of_turn_silence_ms=300).latency_budget(llm_first_token_ms=200)
    lines = {line.stage: line.budget_ms for line in budget.lines}
    assert lines["end-of-turn silence"] == 300
    assert lines["LLM first token"] == 200
    assert budget.total_ms == sum(lines.values())
    assert "end-of-turn silence" in str(budget)
    assert "total" in str(budget)


async def test_a_slow_client_loses_old_messages_counted(autojump_clock: trio.abc.Clock) -> None:
    # A client that reads nothing while a 20 s reply plays: the session never waits for it;
    # the session->transport queue drops its oldest messages and counts them.
    transport, client = memory_transport(RATE, buffer=0)
    llm = ScriptedLLM(["word " * 60 + "end."])
    session = Session(
        transport,
        stt=ScriptedSTT([Utterance([], "Talk.")]),
        llm=llm,
        tts=ScriptedTTS(),
        pacer=FramePacer(clock="virtual"),
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await client.stream_audio(noise(500) + voice(800) + noise(25000))
        nursery.cancel_scope.cancel()
    assert session.metrics.turns  # the turn completed although nobody listened
    assert session.metrics.edge_counters["session->transport.dropped"] > 500


async def test_gc_policy_defers_collections_while_the_agent_speaks(
    autojump_clock: trio.abc.Clock,
) -> None:
    speaking: list[bool] = []
    with GcPolicy() as policy:
        canary = LoopLagCanary(None, interval_s=0.05)
        session, client, _ = make_session(gc_policy=policy, canary=canary)
        async with trio.open_nursery() as nursery:
            await start(nursery, session, client, noise(500) + voice(1000) + noise(4000))
            await receive_until(
                client, lambda m: isinstance(m, AgentAudio) and len(client.audio()) > 10
            )
            speaking.append(policy.speaking)
            await receive_until(client, is_event("agent_done"))
            speaking.append(policy.speaking)
            nursery.cancel_scope.cancel()
    assert speaking == [True, False]
    assert canary.stats.count > 10  # the canary ran beside the session


async def test_the_session_stops_the_pacer_it_created(autojump_clock: trio.abc.Clock) -> None:
    transport, client = memory_transport(RATE)
    session = Session(
        transport, stt=ScriptedSTT([Utterance()]), llm=ScriptedLLM(["Hi."]), tts=ScriptedTTS()
    )
    assert session.pacer is None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await client.close()
    assert session.pacer is not None
    assert session.pacer.stopped


async def test_a_malformed_client_message_is_rejected_not_fatal(
    autojump_clock: trio.abc.Clock,
) -> None:
    session, client, _ = make_session()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(session.run)
        await client.send_audio(b"\x00\x01\x02")  # not whole PCM16 samples
        error = await receive_until(client, is_event("error"))
        # The session goes on: a whole turn still works.
        await client.stream_audio(noise(500) + voice(800) + noise(2000))
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    assert wire(error)["stage"] == "client"
    assert session.metrics.edge_counters["client.rejected_messages"] == 1


class RecordingSTT:
    """An STT that keeps the audio it is given and answers with a fixed final."""

    def __init__(self) -> None:
        self.frames: list[AudioFrame] = []

    async def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        async for frame in audio:
            self.frames.append(frame)
        yield Hypothesis("Hello.", is_final=True)


@pytest.mark.parametrize("preroll_ms", [0.0, 300.0])
async def test_the_stt_gets_the_pre_roll_before_the_vad_start(
    autojump_clock: trio.abc.Clock, preroll_ms: float
) -> None:
    stt = RecordingSTT()
    session, client, _ = make_session(stt=stt, config=SessionConfig(stt_preroll_ms=preroll_ms))
    async with trio.open_nursery() as nursery:
        # 1 s of room noise, then speech: the VAD reports the start near 1.0 s.
        await start(nursery, session, client, noise(1000) + voice(800) + noise(1500))
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    (speech_start,) = session.timeline.events("speech_start")
    vad_start = speech_start["sample"]
    first = stt.frames[0].start_sample
    assert first == max(vad_start - round(preroll_ms * RATE / 1000), 0)
    # Contiguous from there on: nothing lost between the pre-roll and the live frames.
    for previous, frame in zip(stt.frames, stt.frames[1:], strict=False):
        assert frame.start_sample == previous.end_sample


async def test_same_audio_in_same_audio_to_the_stt(autojump_clock: trio.abc.Clock) -> None:
    heard = []
    mic = noise(700) + voice(900) + noise(1500)
    for _ in range(2):
        stt = RecordingSTT()
        session, client, _ = make_session(stt=stt)
        async with trio.open_nursery() as nursery:
            await start(nursery, session, client, mic)
            await receive_until(client, is_event("agent_done"))
            nursery.cancel_scope.cancel()
        heard.append(b"".join(f.pcm for f in stt.frames))
    assert heard[0] == heard[1]


def test_the_pre_roll_is_bounded_by_the_ring() -> None:
    with pytest.raises(ValueError, match="stt_preroll_ms"):
        SessionConfig(stt_preroll_ms=1500)
    with pytest.raises(ValueError, match="stt_preroll_ms"):
        SessionConfig(stt_preroll_ms=-1)
