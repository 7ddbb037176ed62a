"""Talking over the agent, end to end through a ``Session`` (scripted providers, in-memory
transport, MockClock): the duck at the first sound, the reply resumed from the exact sample
after a cough or a backchannel, cut by words, and the same decisions for a client that cannot
pause."""

from __future__ import annotations

import trio

from harness.speech import noise, voice
from session_helpers import is_event, make_session, receive_until, start
from voicecore import FramePacer
from voicecore.engine.session import Session
from voicecore.engine.transport import MemoryClient, memory_transport
from voicecore.protocol import Clear, Pause, Resume
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance

STORY = "Once upon a time there was a bug. It hid in the pacer. Nobody found it for years."


def kinds(client: MemoryClient) -> list[str]:
    return [e["type"] for e in client.events() if e["type"] in ("pause", "resume", "clear")]


async def talk_over(
    second: Utterance, speech: bytes, *, capabilities: frozenset[str] | None = None
) -> tuple[Session, MemoryClient]:
    """Turn 1 asks for the story; at 3.5 s (1.5 s into the reply) the user makes ``speech``,
    which the STT hears as ``second``; runs until the story's reply is over."""
    stt = ScriptedSTT([Utterance([], "Tell me a story."), second, Utterance([], "Thanks.")])
    llm = ScriptedLLM([STORY, "You are welcome."])
    if capabilities is None:
        session, client, _ = make_session(stt=stt, llm=llm, tts=ScriptedTTS())
    else:
        transport, client = memory_transport(16000, capabilities=capabilities)
        session = Session(
            transport, stt=stt, llm=llm, tts=ScriptedTTS(), pacer=FramePacer(clock="virtual")
        )
    mic = noise(500) + voice(1000) + noise(2000) + speech + noise(9000)
    async with trio.open_nursery() as nursery:
        await start(nursery, session, client, mic)
        await receive_until(client, is_event("agent_done", turn_id=1))
        await trio.sleep(2.0)  # anything that would follow: a reply to the utterance
        nursery.cancel_scope.cancel()
    return session, client


async def test_a_backchannel_pauses_and_resumes_the_reply_heard_whole(
    autojump_clock: trio.abc.Clock,
) -> None:
    session, client = await talk_over(Utterance(["mm"], "Mm-hmm."), voice(450))
    assert kinds(client) == ["pause", "resume"]
    (done,) = client.events("agent_done")
    assert done["interrupted"] is False
    assert done["heard"] == STORY  # every word, none lost to the pause
    # The backchannel is not a turn: no reply to it, nothing of it in the history.
    assert [(m.role, m.content) for m in session.history.messages()] == [
        ("user", "Tell me a story."),
        ("assistant", STORY),
    ]
    assert session.metrics.edge_counters["turns.resumed.backchannel"] == 1
    # The pause came at the first sound, long before the words were known.
    pause_t = next(t for t, m in client.received if isinstance(m, Pause))
    resume_t = next(t for t, m in client.received if isinstance(m, Resume))
    assert 3.5 < pause_t < 3.5 + 0.15
    assert resume_t > 3.5 + 0.45


async def test_a_cough_resumes_the_reply(autojump_clock: trio.abc.Clock) -> None:
    session, client = await talk_over(Utterance([], "Stop."), voice(150))
    assert kinds(client) == ["pause", "resume"]
    assert client.events("agent_done")[0]["interrupted"] is False
    assert session.metrics.edge_counters["turns.resumed.false_start"] == 1


async def test_words_over_the_agent_cut_it(autojump_clock: trio.abc.Clock) -> None:
    session, client = await talk_over(Utterance(["wait", "wait a"], "Wait a minute."), voice(900))
    assert kinds(client) == ["pause", "clear"]
    done = client.events("agent_done")[0]
    assert done["interrupted"] is True
    assert STORY.startswith(done["heard"])
    assert done["heard"] != STORY
    # Cut at the first partial with a word that is not feedback (200 ms of speech).
    pause_t = next(t for t, m in client.received if isinstance(m, Pause))
    clear_t = next(t for t, m in client.received if isinstance(m, Clear))
    assert 0.15 < clear_t - pause_t < 0.4
    assert ("user", "Wait a minute.") in [(m.role, m.content) for m in session.history.messages()]


async def test_an_older_client_is_not_paused_but_not_cut_by_feedback(
    autojump_clock: trio.abc.Clock,
) -> None:
    session, client = await talk_over(
        Utterance(["yeah"], "Yeah."), voice(450), capabilities=frozenset()
    )
    assert kinds(client) == []
    done = client.events("agent_done")[0]
    assert done["interrupted"] is False
    assert done["heard"] == STORY
    assert session.history.turns == 1
