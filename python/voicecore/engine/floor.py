"""Turn-taking as a pure state machine (no Trio, no I/O): who holds the floor, and when.

``TurnTaker`` reads the VAD's events and the progress of the audio stream (sample indices of
the 16 kHz stream) and says what happened: an utterance is confirmed (it lasted the minimum
speech duration; while the agent is active, the longer barge-in minimum), discarded (a cough
or a click), paused, resumed, or ended. It measures durations on the audio clock (samples),
so its decisions do not depend on scheduling jitter and are exact in tests.

End of turn: ``end_of_turn_silence_ms`` of silence after the speech ended, or at once when an
STT final arrives during that silence (``on_stt_final``). A final that arrives before the VAD
has reported the end (its hangover delays the end event) counts as soon as the end comes,
provided no speech followed the final.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass

from voicecore.engine.stages import SpeechEnded, SpeechStarted, VadEvent

__all__ = [
    "Action",
    "EndOfTurn",
    "FalseStart",
    "SpeechPaused",
    "SpeechResumed",
    "TurnTaker",
    "UtteranceConfirmed",
]


@dataclass(frozen=True, slots=True)
class UtteranceConfirmed:
    """Speech from ``start_sample`` lasted the minimum: a real utterance (a barge-in if the
    agent was active)."""

    start_sample: int
    barge_in: bool


@dataclass(frozen=True, slots=True)
class FalseStart:
    """Speech from ``start_sample`` to ``end_sample`` was too short: ignored (a cough, a click;
    during agent audio, a false interruption)."""

    start_sample: int
    end_sample: int
    during_agent: bool


@dataclass(frozen=True, slots=True)
class SpeechPaused:
    """The confirmed utterance's speech stopped at ``end_sample``; the end-of-turn silence runs."""

    end_sample: int


@dataclass(frozen=True, slots=True)
class SpeechResumed:
    """The user spoke again before the end of turn: the same utterance goes on."""

    sample: int


@dataclass(frozen=True, slots=True)
class EndOfTurn:
    """The user's turn is over; their speech ended at ``end_sample``."""

    end_sample: int
    by_stt_final: bool


Action = UtteranceConfirmed | FalseStart | SpeechPaused | SpeechResumed | EndOfTurn
"""What ``TurnTaker`` reports."""


class _State(enum.Enum):
    IDLE = "idle"
    PENDING = "pending"  # speech started, not yet long enough
    SPEAKING = "speaking"  # confirmed utterance, speech ongoing
    PAUSED = "paused"  # confirmed utterance, silence running


class TurnTaker:
    """Turn-taking decisions on the 16 kHz audio clock.

    Args:
        sample_rate: rate of the VAD stream, in Hz.
        min_speech_ms: speech shorter than this (ms) starts no utterance.
        barge_in_min_speech_ms: while the agent is active, speech must last this long (ms) to
            interrupt it; shorter speech is a false interruption.
        end_of_turn_silence_ms: silence (ms) after speech that ends the user's turn.

    Raises:
        ValueError: a negative duration or a non-positive rate.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        min_speech_ms: float = 200.0,
        barge_in_min_speech_ms: float = 300.0,
        end_of_turn_silence_ms: float = 500.0,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        for name, value in (
            ("min_speech_ms", min_speech_ms),
            ("barge_in_min_speech_ms", barge_in_min_speech_ms),
            ("end_of_turn_silence_ms", end_of_turn_silence_ms),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 ms, got {value}")
        self.sample_rate = sample_rate
        self._min_speech = round(min_speech_ms * sample_rate / 1000)
        self._barge_in_min = round(barge_in_min_speech_ms * sample_rate / 1000)
        self._silence = round(end_of_turn_silence_ms * sample_rate / 1000)
        self._tolerance = sample_rate // 50  # one 20 ms frame of VAD resolution
        self._final_until: int | None = None
        self._state = _State.IDLE
        self._start = 0
        self._end = 0
        self._agent_active = False

    def __repr__(self) -> str:
        return f"TurnTaker(state={self._state.value}, start={self._start}, end={self._end})"

    @property
    def state(self) -> str:
        """``"idle"``, ``"pending"``, ``"speaking"`` or ``"paused"``."""
        return self._state.value

    def _threshold(self) -> int:
        return max(self._min_speech, self._barge_in_min) if self._agent_active else self._min_speech

    def on_audio(
        self,
        events: Sequence[VadEvent],
        *,
        speech_until: int,
        stream_end: int,
        agent_active: bool,
    ) -> list[Action]:
        """Takes the VAD's events for the audio up to ``stream_end`` (samples received).

        Args:
            events: the VAD's events completed by this audio, oldest first.
            speech_until: the VAD's ``speech_until`` (one past the last speech sample).
            stream_end: samples of the stream received so far.
            agent_active: the agent is replying (thinking or speaking) now.
        """
        actions: list[Action] = []
        for event in events:
            if isinstance(event, SpeechStarted):
                if self._state is _State.IDLE:
                    self._state, self._start = _State.PENDING, event.sample
                    self._agent_active = agent_active
                    self._final_until = None
                elif self._state is _State.PAUSED:
                    self._state = _State.SPEAKING
                    self._final_until = None
                    actions.append(SpeechResumed(event.sample))
            elif isinstance(event, SpeechEnded):
                if self._state is _State.PENDING:
                    if event.sample - self._start >= self._threshold():
                        actions.append(UtteranceConfirmed(self._start, self._agent_active))
                        self._state, self._end = _State.PAUSED, event.sample
                        actions.append(SpeechPaused(event.sample))
                    else:
                        actions.append(FalseStart(self._start, event.sample, self._agent_active))
                        self._state = _State.IDLE
                elif self._state is _State.SPEAKING:
                    self._state, self._end = _State.PAUSED, event.sample
                    actions.append(SpeechPaused(event.sample))
                    final = self._final_until
                    if final is not None and event.sample <= final + self._tolerance:
                        self._state = _State.IDLE
                        actions.append(EndOfTurn(event.sample, by_stt_final=True))
        if self._state is _State.PENDING and speech_until - self._start >= self._threshold():
            self._state = _State.SPEAKING
            actions.append(UtteranceConfirmed(self._start, self._agent_active))
        # Speech frames during the pause (a resumption the VAD has not confirmed yet) restart
        # the silence, so the turn does not end under the user's next words.
        silent_since = max(self._end, speech_until)
        if self._state is _State.PAUSED and stream_end - silent_since >= self._silence:
            self._state = _State.IDLE
            actions.append(EndOfTurn(self._end, by_stt_final=False))
        return actions

    def on_stt_final(self, *, speech_until: int) -> list[Action]:
        """An STT final arrived (``speech_until``: the VAD's, now).

        During the end-of-turn silence, the turn ends now. While the VAD still reports speech
        (its end event lags the speech by its hangover), the turn ends when that end comes,
        unless the user spoke on after the final.
        """
        if self._state is _State.PAUSED:
            self._state = _State.IDLE
            return [EndOfTurn(self._end, by_stt_final=True)]
        if self._state is _State.SPEAKING:
            self._final_until = speech_until
        return []
