"""The turn lifecycle (``TurnMachine``): pure transitions, no Trio, no clock, no network."""

from __future__ import annotations

from voicecore.engine.floor import TurnTaker
from voicecore.engine.stages import SpeechEnded, SpeechStarted
from voicecore.engine.turns import (
    CutReply,
    DropTurn,
    EndTranscription,
    FalseStart,
    FinishReply,
    ReplyAudible,
    SpeechPaused,
    SpeechResumed,
    StartReply,
    StartTranscription,
    StopTranscription,
    TurnMachine,
)

MS = 16  # samples per ms at 16 kHz


def machine() -> TurnMachine:
    return TurnMachine(
        TurnTaker(min_speech_ms=200, barge_in_min_speech_ms=300, end_of_turn_silence_ms=500)
    )


def speak(m: TurnMachine, start_ms: int, end_ms: int) -> list[object]:
    """The user speaks from ``start_ms`` to ``end_ms`` (the VAD reports both edges on time)."""
    actions: list[object] = []
    actions += m.audio(
        [SpeechStarted(start_ms * MS)], speech_until=end_ms * MS, stream_end=end_ms * MS
    )
    actions += m.audio([SpeechEnded(end_ms * MS)], speech_until=end_ms * MS, stream_end=end_ms * MS)
    return actions


def silence_until(m: TurnMachine, speech_until_ms: int, now_ms: int) -> list[object]:
    return m.audio([], speech_until=speech_until_ms * MS, stream_end=now_ms * MS)


def test_a_user_turn_from_speech_to_reply() -> None:
    m = machine()
    actions = speak(m, 1000, 2000)
    assert actions == [StartTranscription(1, 1000 * MS), SpeechPaused(2000 * MS)]
    assert m.user_turn == 1
    assert m.transcribing(1)
    # A final during the end-of-turn silence ends the turn at once.
    actions = m.stt_final(1, "what time is it", speech_until=2000 * MS)
    assert actions == [EndTranscription(1, 2000 * MS, True), StartReply(1, "what time is it")]
    assert m.user_turn is None
    assert not m.transcribing(1)
    assert m.agent_active


def test_the_silence_ends_the_turn_and_the_final_answers_it() -> None:
    m = machine()
    speak(m, 0, 1000)
    assert silence_until(m, 1000, 1400) == []
    assert silence_until(m, 1000, 1500) == [EndTranscription(1, 1000 * MS, False)]
    assert m.transcribing(1)  # the final is still due
    assert m.stt_final(1, "hello", speech_until=1000 * MS) == [StartReply(1, "hello")]


def test_finals_are_joined_and_an_empty_turn_is_dropped() -> None:
    m = machine()
    speak(m, 0, 1000)
    silence_until(m, 1000, 1500)
    assert m.stt_done(1) == [DropTurn(1, "empty")]
    assert not m.agent_active

    speak(m, 3000, 4000)
    m.stt_final(2, " two ", speech_until=4000 * MS)  # ends the turn: answered at once
    assert m.stt_final(2, "late", speech_until=4000 * MS) == []  # ignored: already answered


def test_stt_failure_and_timeout() -> None:
    m = machine()
    speak(m, 0, 1000)
    assert m.stt_done(1, failed=True) == [DropTurn(1, "stt_failed")]
    assert silence_until(m, 1000, 1500) == []  # the floor's end of turn: nothing left to do

    speak(m, 2000, 3000)
    silence_until(m, 3000, 3500)
    assert m.stt_timed_out(2) == [DropTurn(2, "stt_timeout")]

    m.audio([SpeechStarted(5000 * MS)], speech_until=5300 * MS, stream_end=5300 * MS)
    # A final while the user still speaks, and speech after it: the turn goes on...
    assert m.stt_final(3, "partly heard", speech_until=5300 * MS) == []
    m.audio([SpeechEnded(5800 * MS)], speech_until=5800 * MS, stream_end=5800 * MS)
    assert silence_until(m, 5800, 6300) == [EndTranscription(3, 5800 * MS, False)]
    # ...and when no other final comes in time, the one before the deadline still counts.
    assert m.stt_timed_out(3) == [StartReply(3, "partly heard")]


def test_a_cough_starts_nothing() -> None:
    m = machine()
    actions = speak(m, 0, 100)
    assert actions == [FalseStart(0, 100 * MS, during_agent=False)]
    assert m.user_turn is None


def test_speech_pause_and_resume_keep_the_same_turn() -> None:
    m = machine()
    speak(m, 0, 1000)
    actions = m.audio([SpeechStarted(1200 * MS)], speech_until=1300 * MS, stream_end=1300 * MS)
    assert actions == [SpeechResumed(1200 * MS)]
    assert m.user_turn == 1


def test_a_reply_lifecycle() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "hi", speech_until=1000 * MS)
    assert m.reply_started(1) == []
    assert not m.agent_audible
    assert m.reply_audible(1) == [ReplyAudible(1)]
    assert m.reply_audible(1) == []  # once
    assert m.agent_audible
    assert not m.is_cut(1)
    assert m.reply_finished(1) == [FinishReply(1, interrupted=False, audible=True)]
    assert not m.agent_active
    assert m.is_cut(1)  # no longer tracked: nothing of it may be sent


def test_barge_in_cuts_the_reply_and_opens_a_new_turn() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "tell me a story", speech_until=1000 * MS)
    m.reply_started(1)
    m.reply_audible(1)
    # 250 ms of speech would open a turn, but not interrupt the agent (300 ms needed).
    m.audio([SpeechStarted(5000 * MS)], speech_until=5250 * MS, stream_end=5250 * MS)
    assert m.agent_active
    actions = m.audio([], speech_until=5300 * MS, stream_end=5300 * MS)
    assert actions == [CutReply(1, barge_in=True, started=True), StartTranscription(2, 5000 * MS)]
    assert m.is_cut(1)
    assert not m.agent_active
    assert m.reply_audible(1) == []  # a frame released just before the cut changes nothing
    assert m.reply_finished(1) == [FinishReply(1, interrupted=True, audible=True)]


def test_a_false_interruption_leaves_the_reply_alone() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "hi", speech_until=1000 * MS)
    m.reply_started(1)
    actions = speak(m, 5000, 5200)
    assert actions == [FalseStart(5000 * MS, 5200 * MS, during_agent=True)]
    assert not m.is_cut(1)


def test_a_queued_reply_cut_is_finished_at_once() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "hi", speech_until=1000 * MS)  # queued, not started
    m.audio([SpeechStarted(2000 * MS)], speech_until=2300 * MS, stream_end=2300 * MS)
    actions = m.audio([], speech_until=2300 * MS, stream_end=2300 * MS)
    assert actions == []  # already confirmed by the first call
    assert m.is_cut(1)
    assert not m.agent_active
    assert m.reply_started(1) == []


def test_a_newer_utterance_replaces_one_not_answered() -> None:
    m = machine()
    speak(m, 0, 1000)
    silence_until(m, 1000, 1500)  # ended, final not in yet
    actions = m.audio([SpeechStarted(2000 * MS)], speech_until=2200 * MS, stream_end=2200 * MS)
    assert actions == [StopTranscription(1), StartTranscription(2, 2000 * MS)]
    assert m.stt_final(1, "stale", speech_until=2200 * MS) == []
    assert m.stt_done(1) == []


def test_failure_and_close_cut_replies() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "hi", speech_until=1000 * MS)
    m.reply_started(1)
    assert m.reply_failed(1) == [CutReply(1, barge_in=False, started=True)]
    assert m.reply_failed(1) == []
    assert m.reply_finished(1) == [FinishReply(1, interrupted=True, audible=False)]

    speak(m, 3000, 4000)
    m.stt_final(2, "again", speech_until=4000 * MS)
    assert m.close() == [
        CutReply(2, barge_in=False, started=False),
        FinishReply(2, interrupted=True, audible=False),
    ]
    assert not m.agent_active
