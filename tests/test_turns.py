"""The turn lifecycle (``TurnMachine``): pure transitions, no Trio, no clock, no network."""

from __future__ import annotations

from voicecore.engine.floor import TurnTaker
from voicecore.engine.stages import SpeechEnded, SpeechStarted
from voicecore.engine.turn_actions import (
    ConfirmReply,
    CutReply,
    DropTurn,
    DuckReply,
    EndTranscription,
    FalseStart,
    FinishReply,
    PredictTurn,
    ReplyAudible,
    ResumeReply,
    SpeechPaused,
    SpeechResumed,
    StartReply,
    StartTranscription,
    StopTranscription,
)
from voicecore.engine.turns import TurnMachine

MS = 16  # samples per ms at 16 kHz


def machine(
    *, duck: bool = False, preemptive: bool = False, predicted: bool = False
) -> TurnMachine:
    silences = {"complete_silence_ms": 200, "incomplete_silence_ms": 1500} if predicted else {}
    return TurnMachine(
        TurnTaker(
            min_speech_ms=200,
            barge_in_min_speech_ms=300,
            end_of_turn_silence_ms=500,
            **silences,  # type: ignore[arg-type]
        ),
        duck=duck,
        duck_timeout_ms=300,
        backchannel_max_ms=1000,
        preemptive=preemptive,
    )


def agent_speaking(m: TurnMachine) -> None:
    """Turn 1 answered; its reply is audible."""
    speak(m, 0, 1000)
    m.stt_final(1, "tell me a story", speech_until=1000 * MS)
    m.reply_started(1)
    m.reply_audible(1)


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


def test_talking_over_the_agent_is_transcribed_and_its_words_interrupt() -> None:
    m = machine()
    agent_speaking(m)
    # 250 ms of speech would open a turn, but not over the agent (300 ms needed).
    m.audio([SpeechStarted(5000 * MS)], speech_until=5250 * MS, stream_end=5250 * MS)
    actions = m.audio([], speech_until=5300 * MS, stream_end=5300 * MS)
    # The utterance contests the reply: transcribed, not yet an interruption.
    assert actions == [StartTranscription(2, 5000 * MS)]
    assert not m.is_cut(1)
    assert m.stt_partial(2, "mm", speculative=False) == []  # feedback so far
    assert m.stt_partial(2, "wait a", speculative=False) == [
        CutReply(1, barge_in=True, started=True)
    ]
    assert m.is_cut(1)
    assert not m.agent_active
    assert m.reply_audible(1) == []  # a frame released just before the cut changes nothing
    assert m.reply_finished(1) == [FinishReply(1, interrupted=True, audible=True)]
    # The interruption is a turn of its own.
    speak_end = m.audio([SpeechEnded(6000 * MS)], speech_until=6000 * MS, stream_end=6000 * MS)
    assert speak_end == [SpeechPaused(6000 * MS)]
    assert m.stt_final(2, "wait a minute", speech_until=6000 * MS) == [
        EndTranscription(2, 6000 * MS, True),
        StartReply(2, "wait a minute"),
    ]


def test_a_long_utterance_interrupts_before_its_words_are_known() -> None:
    m = machine()
    agent_speaking(m)
    m.audio([SpeechStarted(5000 * MS)], speech_until=5400 * MS, stream_end=5400 * MS)
    assert m.audio([], speech_until=5990 * MS, stream_end=5990 * MS) == []
    assert m.audio([], speech_until=6000 * MS, stream_end=6000 * MS) == [
        CutReply(1, barge_in=True, started=True)
    ]


def test_the_first_sound_ducks_and_a_backchannel_resumes_the_reply() -> None:
    m = machine(duck=True)
    agent_speaking(m)
    assert m.agent_audible
    # The echo-gated mic level rises: duck at once, before the VAD says anything.
    assert m.onset(5000 * MS) == [DuckReply(1)]
    assert not m.agent_audible
    assert m.onset(5010 * MS) == []  # once
    actions = m.audio([SpeechStarted(5000 * MS)], speech_until=5400 * MS, stream_end=5400 * MS)
    assert actions == [StartTranscription(2, 5000 * MS)]
    assert m.audio([SpeechEnded(5450 * MS)], speech_until=5450 * MS, stream_end=5460 * MS) == [
        SpeechPaused(5450 * MS)
    ]
    assert m.stt_final(2, "Mm-hmm.", speech_until=5450 * MS) == [
        EndTranscription(2, 5450 * MS, True),
        ResumeReply(1, "backchannel"),
        DropTurn(2, "backchannel"),
    ]
    assert m.agent_audible
    assert not m.is_cut(1)
    assert m.user_turn is None
    assert m.reply_finished(1) == [FinishReply(1, interrupted=False, audible=True)]


def test_words_after_a_duck_cut_the_reply() -> None:
    m = machine(duck=True)
    agent_speaking(m)
    m.onset(5000 * MS)
    m.audio([SpeechStarted(5000 * MS)], speech_until=5400 * MS, stream_end=5400 * MS)
    assert m.stt_partial(2, "stop", speculative=False) == [CutReply(1, barge_in=True, started=True)]


def test_a_cough_and_a_noise_resume_the_ducked_reply() -> None:
    m = machine(duck=True)
    agent_speaking(m)
    # A cough: the VAD sees 150 ms of "speech", too short.
    assert m.onset(5000 * MS) == [DuckReply(1)]
    assert speak(m, 5000, 5150) == [
        FalseStart(5000 * MS, 5150 * MS, during_agent=True),
        ResumeReply(1, "false_start"),
    ]
    # A door: the level rose, the VAD never confirmed speech.
    assert m.onset(7000 * MS) == [DuckReply(1)]
    assert silence_until(m, 5150, 7290) == []
    assert silence_until(m, 5150, 7300) == [ResumeReply(1, "no_speech")]
    assert not m.is_cut(1)


def test_a_noise_that_contests_the_reply_resumes_it() -> None:
    m = machine(duck=True)
    agent_speaking(m)
    m.onset(5000 * MS)
    speak(m, 5000, 5400)  # long enough to be transcribed
    silence_until(m, 5400, 5900)  # the end of turn
    assert m.stt_final(2, "", speech_until=5400 * MS) == [
        ResumeReply(1, "backchannel"),
        DropTurn(2, "backchannel"),
    ]


def test_without_pause_the_reply_plays_on_and_a_backchannel_gets_no_reply() -> None:
    m = machine(duck=False)
    agent_speaking(m)
    assert m.onset(5000 * MS) == []
    speak(m, 5000, 5400)
    silence_until(m, 5400, 5900)
    assert m.stt_final(2, "yeah okay", speech_until=5400 * MS) == [DropTurn(2, "backchannel")]
    assert not m.is_cut(1)


def test_a_backchannel_after_the_reply_ended_gets_no_reply() -> None:
    m = machine()
    agent_speaking(m)
    speak(m, 5000, 5400)
    assert m.reply_finished(1) == [FinishReply(1, interrupted=False, audible=True)]
    silence_until(m, 5400, 5900)
    assert m.stt_final(2, "okay", speech_until=5400 * MS) == [DropTurn(2, "backchannel")]
    # Words after the reply ended are a turn.
    speak(m, 7000, 7600)
    silence_until(m, 7600, 8100)
    assert m.stt_final(3, "and then?", speech_until=7600 * MS) == [StartReply(3, "and then?")]


def test_the_end_of_turn_model_decides_the_silence() -> None:
    m = machine(predicted=True)
    assert speak(m, 1000, 2000) == [
        StartTranscription(1, 1000 * MS),
        SpeechPaused(2000 * MS),
        PredictTurn(1, 2000 * MS),
    ]
    # Before the verdict, a pause needs the long silence.
    assert silence_until(m, 2000, 2300) == []
    assert (
        m.turn_verdict(1, 2000 * MS, False, speech_until=2000 * MS, stream_end=2300 * MS) == []
    )  # incomplete: still waiting
    assert silence_until(m, 2000, 3490) == []
    assert silence_until(m, 2000, 3500) == [EndTranscription(1, 2000 * MS, False)]

    speak(m, 5000, 6000)
    # Complete, and the short silence has already passed: the turn ends now.
    assert m.turn_verdict(2, 6000 * MS, True, speech_until=6000 * MS, stream_end=6250 * MS) == [
        EndTranscription(2, 6000 * MS, False)
    ]
    # A verdict on a pause the user spoke after is stale.
    speak(m, 8000, 8500)
    m.audio([SpeechStarted(8600 * MS)], speech_until=8700 * MS, stream_end=8700 * MS)
    assert m.turn_verdict(3, 8500 * MS, True, speech_until=8700 * MS, stream_end=8800 * MS) == []


def test_a_preemptive_reply_is_confirmed_by_the_same_final() -> None:
    m = machine(preemptive=True)
    speak(m, 1000, 2000)
    # A partial while the user still speaks is not speculative: nothing starts.
    assert m.stt_partial(1, "what time", speculative=False) == []
    assert m.stt_partial(1, "What time is it?", speculative=True) == [
        StartReply(1, "What time is it?", preemptive=True)
    ]
    assert not m.agent_active  # not a reply the user waits for yet
    m.reply_started(1)
    assert m.stt_final(1, "what time is it", speech_until=2000 * MS) == [
        EndTranscription(1, 2000 * MS, True),
        ConfirmReply(1),
    ]
    assert m.agent_active
    assert m.reply_audible(1) == [ReplyAudible(1)]


def test_a_preemptive_reply_is_cut_when_the_user_speaks_on() -> None:
    m = machine(preemptive=True)
    speak(m, 1000, 2000)
    m.stt_partial(1, "I would like", speculative=True)
    m.reply_started(1)
    actions = m.audio([SpeechStarted(2150 * MS)], speech_until=2300 * MS, stream_end=2300 * MS)
    assert actions == [SpeechResumed(2150 * MS), CutReply(1, barge_in=False, started=True)]
    # Another speculative transcript waits until the cut reply is gone.
    m.audio([SpeechEnded(3000 * MS)], speech_until=3000 * MS, stream_end=3000 * MS)
    assert m.stt_partial(1, "I would like a coffee", speculative=True) == []
    assert m.reply_finished(1) == [FinishReply(1, interrupted=True, audible=False)]
    assert m.stt_final(1, "I would like a coffee", speech_until=3000 * MS) == [
        EndTranscription(1, 3000 * MS, True),
        StartReply(1, "I would like a coffee"),
    ]


def test_a_preemptive_reply_on_other_words_restarts() -> None:
    m = machine(preemptive=True)
    speak(m, 1000, 2000)
    m.stt_partial(1, "what time is", speculative=True)
    m.reply_started(1)
    assert m.stt_final(1, "what time is it", speech_until=2000 * MS) == [
        EndTranscription(1, 2000 * MS, True),
        CutReply(1, barge_in=False, started=True),
    ]
    assert m.reply_finished(1) == [
        FinishReply(1, interrupted=True, audible=False),
        StartReply(1, "what time is it"),
    ]
    assert m.agent_active


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


def test_a_speculative_backchannel_resumes_at_once_and_the_next_words_are_new() -> None:
    m = machine(duck=True, predicted=True)
    agent_speaking(m)
    m.onset(5000 * MS)
    m.audio([SpeechStarted(5000 * MS)], speech_until=5400 * MS, stream_end=5400 * MS)
    # Over a paused agent the pause needs no verdict: no PredictTurn.
    assert m.audio([SpeechEnded(5450 * MS)], speech_until=5450 * MS, stream_end=5460 * MS) == [
        SpeechPaused(5450 * MS)
    ]
    assert m.stt_partial(2, "Okay.", speculative=True) == [
        ResumeReply(1, "backchannel"),
        DropTurn(2, "backchannel"),
    ]
    assert m.floor.state == "idle"
    # The user goes on: a new utterance, ducking the agent again.
    assert m.onset(5700 * MS) == [DuckReply(1)]
    m.audio([SpeechStarted(5700 * MS)], speech_until=6100 * MS, stream_end=6100 * MS)
    assert m.user_turn == 3


def test_a_contest_ends_after_the_short_silence() -> None:
    m = machine(duck=True, predicted=True)
    agent_speaking(m)
    m.onset(5000 * MS)
    speak(m, 5000, 5400)
    assert silence_until(m, 5400, 5590) == []
    assert silence_until(m, 5400, 5600) == [EndTranscription(2, 5400 * MS, False)]


def test_words_the_agent_had_not_answered_yet_go_on_into_the_next_turn() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "what is twenty", speech_until=1000 * MS)
    m.reply_started(1)  # thinking: nothing heard yet
    actions = m.audio([SpeechStarted(1400 * MS)], speech_until=1700 * MS, stream_end=1700 * MS)
    assert actions == [CutReply(1, barge_in=True, started=True), StartTranscription(2, 1400 * MS)]
    m.reply_finished(1)
    m.audio([SpeechEnded(2200 * MS)], speech_until=2200 * MS, stream_end=2200 * MS)
    assert m.stt_final(2, "plus thirty one", speech_until=2200 * MS) == [
        EndTranscription(2, 2200 * MS, True),
        StartReply(2, "what is twenty plus thirty one"),
    ]


def test_speech_soon_after_the_end_of_turn_continues_it() -> None:
    m = machine()
    speak(m, 0, 1000)
    m.stt_final(1, "what is twenty", speech_until=1000 * MS)
    m.reply_started(1)
    m.reply_audible(1)  # the agent already answers the first half
    # 700 ms after the end of the turn the user goes on: a continuation over the agent.
    m.audio([SpeechStarted(1700 * MS)], speech_until=2100 * MS, stream_end=2100 * MS)
    assert m.stt_partial(2, "plus thirty", speculative=False) == [
        CutReply(1, barge_in=True, started=True)
    ]
    m.audio([SpeechEnded(2400 * MS)], speech_until=2400 * MS, stream_end=2400 * MS)
    assert m.stt_final(2, "plus thirty one", speech_until=2400 * MS) == [
        EndTranscription(2, 2400 * MS, True),
        StartReply(2, "what is twenty plus thirty one"),
    ]
    # Feedback soon after is still feedback, not a continuation.
    m2 = machine()
    speak(m2, 0, 1000)
    m2.stt_final(1, "tell me a story", speech_until=1000 * MS)
    m2.reply_started(1)
    m2.reply_audible(1)
    speak(m2, 1700, 2100)
    assert m2.stt_final(2, "okay", speech_until=2100 * MS)[-1] == DropTurn(2, "backchannel")


def test_with_an_echo_gate_only_the_users_voice_ducks_or_interrupts() -> None:
    m = TurnMachine(TurnTaker(barge_in_min_speech_ms=300), duck=True, echo_gated=True)
    agent_speaking(m)
    # The agent's own voice, back through the mic: the VAD hears speech, the gate no voice.
    actions = m.audio([SpeechStarted(5000 * MS)], speech_until=5400 * MS, stream_end=5400 * MS)
    assert actions == [StartTranscription(2, 5000 * MS)]  # transcribed, nothing more
    assert m.stt_partial(2, "once upon a time", speculative=False) == []
    assert m.audio([], speech_until=6500 * MS, stream_end=6500 * MS) == []  # long: still no
    m.audio([SpeechEnded(6500 * MS)], speech_until=6500 * MS, stream_end=6500 * MS)
    assert m.stt_final(2, "once upon a time", speech_until=6500 * MS) == [
        EndTranscription(2, 6500 * MS, True),
        DropTurn(2, "echo"),
    ]
    assert not m.is_cut(1)
    # The user's voice: the gate's onset ducks, and their words interrupt.
    assert m.onset(8000 * MS) == [DuckReply(1)]
    m.audio([SpeechStarted(7980 * MS)], speech_until=8400 * MS, stream_end=8400 * MS)
    assert m.stt_partial(3, "stop", speculative=False) == [CutReply(1, barge_in=True, started=True)]
