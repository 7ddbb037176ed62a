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

With an end-of-turn model (``complete_silence_ms`` and ``incomplete_silence_ms`` given), the
silence each pause needs depends on its verdict (``on_verdict``): a turn the model finds
complete ends after the short ``complete_silence_ms``, an incomplete one (the user is
thinking, mid-sentence) after ``incomplete_silence_ms``; until the verdict comes a pause
needs the long one, so a slow or failed prediction costs latency, never a cut-off user.
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
        end_of_turn_silence_ms: silence (ms) after speech that ends the user's turn (without
            an end-of-turn model).
        complete_silence_ms: with an end-of-turn model, the silence (ms) that ends a turn it
            predicts complete.
        incomplete_silence_ms: with an end-of-turn model, the silence (ms) that ends a turn
            it predicts incomplete, or whose verdict has not come.

    Raises:
        ValueError: a negative duration, a non-positive rate, only one of the two model
            silences, or a complete silence longer than the incomplete one.
    """

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        min_speech_ms: float = 200.0,
        barge_in_min_speech_ms: float = 300.0,
        end_of_turn_silence_ms: float = 500.0,
        complete_silence_ms: float | None = None,
        incomplete_silence_ms: float | None = None,
    ) -> None:
        if sample_rate <= 0:
            raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
        if (complete_silence_ms is None) != (incomplete_silence_ms is None):
            raise ValueError("complete_silence_ms and incomplete_silence_ms go together")
        for name, value in (
            ("min_speech_ms", min_speech_ms),
            ("barge_in_min_speech_ms", barge_in_min_speech_ms),
            ("end_of_turn_silence_ms", end_of_turn_silence_ms),
            ("complete_silence_ms", complete_silence_ms or 0.0),
            ("incomplete_silence_ms", incomplete_silence_ms or 0.0),
        ):
            if not value >= 0:
                raise ValueError(f"{name} must be >= 0 ms, got {value}")
        if (complete_silence_ms or 0.0) > (incomplete_silence_ms or 0.0):
            raise ValueError(
                f"complete_silence_ms ({complete_silence_ms}) must be <= incomplete_silence_ms "
                f"({incomplete_silence_ms})"
            )
        self.sample_rate = sample_rate

        def samples(ms: float) -> int:
            return round(ms * sample_rate / 1000)

        self._min_speech = samples(min_speech_ms)
        self._barge_in_min = samples(barge_in_min_speech_ms)
        self.predicted = complete_silence_ms is not None
        """Pauses wait for an end-of-turn model's verdict (``on_verdict``)."""
        self._complete = samples(complete_silence_ms or 0.0)
        self._incomplete = samples(incomplete_silence_ms or 0.0)
        self._fixed = samples(end_of_turn_silence_ms)
        self._silence = self._incomplete if self.predicted else self._fixed
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
                        self._pause(event.sample)
                        actions.append(SpeechPaused(event.sample))
                    else:
                        actions.append(FalseStart(self._start, event.sample, self._agent_active))
                        self._state = _State.IDLE
                elif self._state is _State.SPEAKING:
                    self._pause(event.sample)
                    actions.append(SpeechPaused(event.sample))
                    final = self._final_until
                    if final is not None and event.sample <= final + self._tolerance:
                        self._state = _State.IDLE
                        actions.append(EndOfTurn(event.sample, by_stt_final=True))
        if self._state is _State.PENDING and speech_until - self._start >= self._threshold():
            self._state = _State.SPEAKING
            actions.append(UtteranceConfirmed(self._start, self._agent_active))
        actions += self._silence_over(speech_until, stream_end)
        return actions

    def _pause(self, end_sample: int) -> None:
        self._state, self._end = _State.PAUSED, end_sample
        self._silence = self._incomplete if self.predicted else self._fixed

    def _silence_over(self, speech_until: int, stream_end: int) -> list[Action]:
        # Speech frames during the pause (a resumption the VAD has not confirmed yet) restart
        # the silence, so the turn does not end under the user's next words.
        silent_since = max(self._end, speech_until)
        if self._state is _State.PAUSED and stream_end - silent_since >= self._silence:
            self._state = _State.IDLE
            return [EndOfTurn(self._end, by_stt_final=False)]
        return []

    def abandon(self) -> None:
        """The utterance under way is over as far as the conversation goes (it was listener
        feedback, settled): speech from now on starts a new one."""
        self._state = _State.IDLE
        self._final_until = None

    @property
    def utterance_start(self) -> int | None:
        """The first sample of the utterance under way (pending, speaking or paused), if any."""
        return None if self._state is _State.IDLE else self._start

    @property
    def pause_sample(self) -> int | None:
        """Where the speech of the pause running now ended (None: no pause is running)."""
        return self._end if self._state is _State.PAUSED else None

    def on_verdict(
        self, end_sample: int, complete: bool, *, speech_until: int, stream_end: int
    ) -> list[Action]:
        """The end-of-turn model's verdict on the pause whose speech ended at ``end_sample``
        (ignored if the user has spoken since): the silence this pause needs is now the
        complete or the incomplete one, and the turn may end at once."""
        if not self.predicted or self._state is not _State.PAUSED or end_sample != self._end:
            return []
        self._silence = self._complete if complete else self._incomplete
        return self._silence_over(speech_until, stream_end)

    def settle_pause_short(self) -> None:
        """The pause running now needs only the short silence (a complete turn's), without
        a verdict: the engine asks the end-of-turn model nothing over a paused agent, where
        the user's silence itself settles whether they are interrupting."""
        if self.predicted and self._state is _State.PAUSED:
            self._silence = self._complete

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
