"""Turn-taking decisions on the audio clock (pure state machine, no Trio)."""

from __future__ import annotations

import pytest

from voicecore.engine.floor import (
    EndOfTurn,
    FalseStart,
    SpeechPaused,
    SpeechResumed,
    TurnTaker,
    UtteranceConfirmed,
)
from voicecore.engine.stages import SpeechEnded, SpeechStarted

MS = 16  # samples per ms at 16 kHz


def taker() -> TurnTaker:
    return TurnTaker(min_speech_ms=200, barge_in_min_speech_ms=300, end_of_turn_silence_ms=500)


def test_an_utterance_is_confirmed_after_the_minimum_speech() -> None:
    tt = taker()
    start = SpeechStarted(1000 * MS)
    # The VAD confirms its start 90 ms late; 150 ms of speech is not enough yet.
    assert (
        tt.on_audio([start], speech_until=1150 * MS, stream_end=1150 * MS, agent_active=False) == []
    )
    assert tt.state == "pending"
    actions = tt.on_audio([], speech_until=1200 * MS, stream_end=1200 * MS, agent_active=False)
    assert actions == [UtteranceConfirmed(1000 * MS, barge_in=False)]
    assert tt.state == "speaking"


def test_a_cough_is_a_false_start() -> None:
    tt = taker()
    tt.on_audio([SpeechStarted(0)], speech_until=100 * MS, stream_end=100 * MS, agent_active=False)
    # The VAD's hangover keeps its segment open, but no speech frame came after 100 ms.
    actions = tt.on_audio(
        [SpeechEnded(100 * MS)], speech_until=100 * MS, stream_end=450 * MS, agent_active=False
    )
    assert actions == [FalseStart(0, 100 * MS, during_agent=False)]
    assert tt.state == "idle"


def test_barge_in_needs_longer_speech_while_the_agent_is_active() -> None:
    tt = taker()
    tt.on_audio([SpeechStarted(0)], speech_until=250 * MS, stream_end=250 * MS, agent_active=True)
    assert tt.state == "pending"  # 250 ms would start a turn, not interrupt one
    actions = tt.on_audio([], speech_until=300 * MS, stream_end=300 * MS, agent_active=True)
    assert actions == [UtteranceConfirmed(0, barge_in=True)]


def test_false_interruption_during_agent_audio() -> None:
    tt = taker()
    tt.on_audio([SpeechStarted(0)], speech_until=250 * MS, stream_end=250 * MS, agent_active=True)
    actions = tt.on_audio(
        [SpeechEnded(250 * MS)], speech_until=250 * MS, stream_end=600 * MS, agent_active=True
    )
    assert actions == [FalseStart(0, 250 * MS, during_agent=True)]


def speaking() -> TurnTaker:
    tt = taker()
    tt.on_audio(
        [SpeechStarted(0)], speech_until=1000 * MS, stream_end=1000 * MS, agent_active=False
    )
    return tt


def test_end_of_turn_after_the_silence() -> None:
    tt = speaking()
    actions = tt.on_audio(
        [SpeechEnded(1000 * MS)], speech_until=1000 * MS, stream_end=1350 * MS, agent_active=False
    )
    assert actions == [SpeechPaused(1000 * MS)]
    assert tt.on_audio([], speech_until=1000 * MS, stream_end=1499 * MS, agent_active=False) == []
    actions = tt.on_audio([], speech_until=1000 * MS, stream_end=1500 * MS, agent_active=False)
    assert actions == [EndOfTurn(1000 * MS, by_stt_final=False)]
    assert tt.state == "idle"


def test_speech_in_the_pause_restarts_the_silence_and_resumes() -> None:
    tt = speaking()
    tt.on_audio(
        [SpeechEnded(1000 * MS)], speech_until=1000 * MS, stream_end=1350 * MS, agent_active=False
    )
    # Speech frames at 1450 ms, not yet confirmed by the VAD: no end of turn at 1500 ms.
    assert tt.on_audio([], speech_until=1470 * MS, stream_end=1500 * MS, agent_active=False) == []
    actions = tt.on_audio(
        [SpeechStarted(1450 * MS)], speech_until=1560 * MS, stream_end=1560 * MS, agent_active=False
    )
    assert actions == [SpeechResumed(1450 * MS)]
    assert tt.state == "speaking"


def test_an_stt_final_in_the_silence_ends_the_turn_at_once() -> None:
    tt = speaking()
    tt.on_audio(
        [SpeechEnded(1000 * MS)], speech_until=1000 * MS, stream_end=1350 * MS, agent_active=False
    )
    assert tt.on_stt_final(speech_until=1000 * MS) == [EndOfTurn(1000 * MS, by_stt_final=True)]
    assert tt.state == "idle"


def test_an_stt_final_before_the_vad_end_counts_when_the_end_comes() -> None:
    tt = speaking()
    assert tt.on_stt_final(speech_until=1000 * MS) == []
    actions = tt.on_audio(
        [SpeechEnded(1000 * MS)], speech_until=1000 * MS, stream_end=1350 * MS, agent_active=False
    )
    assert actions == [SpeechPaused(1000 * MS), EndOfTurn(1000 * MS, by_stt_final=True)]


def test_speech_after_an_early_final_voids_it() -> None:
    tt = speaking()
    tt.on_stt_final(speech_until=1000 * MS)
    # The user went on speaking for another second before the VAD saw the end.
    actions = tt.on_audio(
        [SpeechEnded(2000 * MS)], speech_until=2000 * MS, stream_end=2350 * MS, agent_active=False
    )
    assert actions == [SpeechPaused(2000 * MS)]


def test_stt_final_while_idle_does_nothing() -> None:
    assert taker().on_stt_final(speech_until=0) == []


@pytest.mark.parametrize(
    "kwargs",
    [{"sample_rate": 0}, {"min_speech_ms": -1}, {"end_of_turn_silence_ms": float("nan")}],
)
def test_rejects_bad_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="must be"):
        TurnTaker(**kwargs)  # type: ignore[arg-type]
