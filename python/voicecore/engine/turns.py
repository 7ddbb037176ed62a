"""The turn lifecycle as a pure state machine: no Trio, no I/O, no clock.

``TurnMachine`` owns every decision about a conversation's turns, from the user's first
speech sample to the end of the agent's reply, the way websockets' sans-I/O core owns a
connection: the session (its Trio adapter) feeds it what happened and carries out the actions
it returns, in order. Every transition is a unit test without a network or an event loop.

A user turn::

    (VAD) speech confirmed --> TRANSCRIBING --end of turn--> ENDED --final(s) + STT done-->
        StartReply (something was recognized) | DropTurn (nothing, STT failed or timed out)
    a newer utterance confirmed before the reply starts --> StopTranscription (replaced)

An agent reply::

    QUEUED --reply_started--> THINKING --reply_audible--> AUDIBLE --reply_finished--> done
       \\______________________\\_________________________\\--- user speech confirmed ---> CUT
                                                                  (barge-in) or failure

Inputs: ``audio`` (the VAD's events and the stream's progress), ``stt_final``, ``stt_done``,
``reply_started``, ``reply_audible``, ``reply_failed``, ``reply_finished``, ``close``.
Outputs (actions, dataclasses): what the session must do now. Who holds the floor (speech
confirmed, paused, resumed, ended) is decided on the 16 kHz audio clock by ``TurnTaker``
(``voicecore.engine.floor``), which this machine drives.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Sequence
from dataclasses import dataclass, field

from voicecore.engine.floor import (
    EndOfTurn,
    FalseStart,
    SpeechPaused,
    SpeechResumed,
    TurnTaker,
    UtteranceConfirmed,
)
from voicecore.engine.stages import VadEvent

__all__ = [
    "CutReply",
    "DropTurn",
    "EndTranscription",
    "FalseStart",
    "FinishReply",
    "ReplyAudible",
    "SpeechPaused",
    "SpeechResumed",
    "StartReply",
    "StartTranscription",
    "StopTranscription",
    "TurnAction",
    "TurnMachine",
]


# --- actions ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StartTranscription:
    """User speech from ``start_sample`` was confirmed: open user turn ``turn_id`` and stream
    its audio (from ``start_sample``: the pre-roll the VAD confirmed late) to a new STT call."""

    turn_id: int
    start_sample: int


@dataclass(frozen=True, slots=True)
class StopTranscription:
    """User turn ``turn_id`` was replaced by a newer utterance before it was answered: cancel
    its STT call; it gets no reply."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class EndTranscription:
    """The user's turn ``turn_id`` is over (their speech ended at ``end_sample``): no more
    audio for its STT call, whose final is now due (``by_stt_final``: a final ended it)."""

    turn_id: int
    end_sample: int
    by_stt_final: bool


@dataclass(frozen=True, slots=True)
class StartReply:
    """Answer user turn ``turn_id``, whose recognized text is ``text``: queue the reply."""

    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class DropTurn:
    """User turn ``turn_id`` ended with nothing to answer (``reason``: ``"empty"``, nothing
    recognized; ``"stt_failed"``; ``"stt_timeout"``: no final in time)."""

    turn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class CutReply:
    """Stop reply ``turn_id`` now: cancel its work, flush its playout, clear the client.

    ``barge_in``: the user interrupted it (else it failed or the session is ending);
    ``started``: its work had begun (else it was still queued and never ran).
    """

    turn_id: int
    barge_in: bool
    started: bool


@dataclass(frozen=True, slots=True)
class ReplyAudible:
    """The first frame of reply ``turn_id`` was released: the agent is speaking."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class FinishReply:
    """Reply ``turn_id`` is over (``interrupted``: it was cut): record what was heard."""

    turn_id: int
    interrupted: bool
    audible: bool


TurnAction = (
    StartTranscription
    | StopTranscription
    | EndTranscription
    | SpeechPaused
    | SpeechResumed
    | FalseStart
    | StartReply
    | DropTurn
    | CutReply
    | ReplyAudible
    | FinishReply
)
"""What ``TurnMachine`` asks the session to do (``SpeechPaused``, ``SpeechResumed`` and
``FalseStart`` come from the floor, ``voicecore.engine.floor``)."""


# --- state ------------------------------------------------------------------------------------


class _UserPhase(enum.Enum):
    TRANSCRIBING = "transcribing"  # the user holds the floor (speaking or pausing)
    ENDED = "ended"  # their turn is over; waiting for the STT's final(s)
    ANSWERED = "answered"  # handed over (StartReply) or dropped


@dataclass(eq=False, slots=True)
class _UserTurn:
    turn_id: int
    phase: _UserPhase = _UserPhase.TRANSCRIBING
    finals: list[str] = field(default_factory=list)
    stt_done: bool = False


class _ReplyPhase(enum.Enum):
    QUEUED = "queued"
    THINKING = "thinking"  # LLM/TTS running, nothing audible yet
    AUDIBLE = "audible"  # a frame has been released
    CUT = "cut"  # barge-in or failure; finishing


@dataclass(eq=False, slots=True)
class _Reply:
    turn_id: int
    phase: _ReplyPhase = _ReplyPhase.QUEUED
    audible: bool = False


class TurnMachine:
    """The turn lifecycle of one conversation (see the module's docstring).

    Args:
        floor: who holds the floor, on the 16 kHz audio clock (a ``TurnTaker``).

    Every method returns the actions to carry out now, in order; none blocks or reads a clock.
    Inputs about turns the machine no longer tracks (a late final of a replaced utterance, a
    frame released just before a cut) are ignored: the session may report them without
    checking.
    """

    def __init__(self, floor: TurnTaker | None = None) -> None:
        self.floor = floor if floor is not None else TurnTaker()
        self._turn_ids = itertools.count(1)
        self._user: _UserTurn | None = None
        self._replies: dict[int, _Reply] = {}

    def __repr__(self) -> str:
        user = f"{self._user.turn_id}:{self._user.phase.value}" if self._user else None
        replies = {r.turn_id: r.phase.value for r in self._replies.values()}
        return f"TurnMachine(user={user}, replies={replies}, floor={self.floor.state})"

    # --- what the session asks -----------------------------------------------------------------

    @property
    def agent_active(self) -> bool:
        """A reply is queued, thinking or audible (and not cut): user speech interrupts it."""
        return any(r.phase is not _ReplyPhase.CUT for r in self._replies.values())

    @property
    def agent_audible(self) -> bool:
        """A reply not cut has released audio (the client plays, or will play, the agent)."""
        return any(r.phase is _ReplyPhase.AUDIBLE for r in self._replies.values())

    @property
    def user_turn(self) -> int | None:
        """The user turn being transcribed or awaiting its final, if any."""
        user = self._user
        return user.turn_id if user is not None and user.phase is not _UserPhase.ANSWERED else None

    def is_cut(self, turn_id: int) -> bool:
        """Reply ``turn_id`` was cut (or is no longer tracked): its audio must not be sent."""
        reply = self._replies.get(turn_id)
        return reply is None or reply.phase is _ReplyPhase.CUT

    # --- the user side -----------------------------------------------------------------------

    def audio(
        self, events: Sequence[VadEvent], *, speech_until: int, stream_end: int
    ) -> list[TurnAction]:
        """The VAD's events for the mic audio up to ``stream_end`` (16 kHz samples), and its
        ``speech_until`` (one past the last speech sample)."""
        floor_actions = self.floor.on_audio(
            events,
            speech_until=speech_until,
            stream_end=stream_end,
            agent_active=self.agent_active,
        )
        actions: list[TurnAction] = []
        for action in floor_actions:
            actions += self._floor_action(action)
        return actions

    def stt_final(self, turn_id: int, text: str, *, speech_until: int) -> list[TurnAction]:
        """User turn ``turn_id``'s STT gave a final transcript ``text`` (the VAD's
        ``speech_until`` now). During the end-of-turn silence a final ends the turn at once;
        after the end of turn it is the awaited final: the turn is answered."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is _UserPhase.ANSWERED:
            return []
        user.finals.append(text)
        if user.phase is _UserPhase.ENDED:
            return self._answer(user)
        actions: list[TurnAction] = []
        for action in self.floor.on_stt_final(speech_until=speech_until):
            actions += self._floor_action(action)
        return actions

    def stt_done(self, turn_id: int, *, failed: bool = False) -> list[TurnAction]:
        """User turn ``turn_id``'s STT call is over: its transcripts ran out, or it raised
        (``failed``: the turn is dropped)."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is _UserPhase.ANSWERED:
            return []
        user.stt_done = True
        if failed:
            user.phase = _UserPhase.ANSWERED
            return [DropTurn(turn_id, "stt_failed")]
        if user.phase is _UserPhase.ENDED:
            return self._answer(user)
        return []

    def stt_timed_out(self, turn_id: int) -> list[TurnAction]:
        """User turn ``turn_id``'s final did not come within the deadline after its end: the
        finals that came before it are answered, else the turn is dropped."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is not _UserPhase.ENDED:
            return []
        if user.finals:
            return self._answer(user)
        user.phase = _UserPhase.ANSWERED
        return [DropTurn(turn_id, "stt_timeout")]

    def transcribing(self, turn_id: int) -> bool:
        """User turn ``turn_id`` still wants transcripts (not yet answered, dropped or
        replaced)."""
        user = self._user
        return (
            user is not None and user.turn_id == turn_id and user.phase is not _UserPhase.ANSWERED
        )

    def _floor_action(self, action: object) -> list[TurnAction]:
        if isinstance(action, UtteranceConfirmed):
            return self._confirmed(action)
        if isinstance(action, FalseStart):
            return [action]
        user = self._user
        if user is None or user.phase is not _UserPhase.TRANSCRIBING:
            return []
        if isinstance(action, SpeechPaused | SpeechResumed):
            return [action]
        if isinstance(action, EndOfTurn):
            user.phase = _UserPhase.ENDED
            actions: list[TurnAction] = [
                EndTranscription(user.turn_id, action.end_sample, action.by_stt_final)
            ]
            if user.stt_done or action.by_stt_final:
                actions += self._answer(user)
            return actions
        raise TypeError(f"unknown floor action {action!r}")

    def _confirmed(self, action: UtteranceConfirmed) -> list[TurnAction]:
        actions: list[TurnAction] = []
        for reply in list(self._replies.values()):
            if reply.phase is not _ReplyPhase.CUT:
                actions += self._cut(reply, barge_in=True)
        previous = self._user
        if previous is not None and previous.phase is not _UserPhase.ANSWERED:
            # The user spoke again before the previous utterance was answered: the new one
            # replaces it (its words are not lost: the floor's utterance spans both).
            previous.phase = _UserPhase.ANSWERED
            actions.append(StopTranscription(previous.turn_id))
        user = _UserTurn(next(self._turn_ids))
        self._user = user
        actions.append(StartTranscription(user.turn_id, action.start_sample))
        return actions

    def _answer(self, user: _UserTurn) -> list[TurnAction]:
        user.phase = _UserPhase.ANSWERED
        text = " ".join(t.strip() for t in user.finals if t.strip())
        if not text:
            return [DropTurn(user.turn_id, "empty")]
        self._replies[user.turn_id] = _Reply(user.turn_id)
        return [StartReply(user.turn_id, text)]

    # --- the agent side ----------------------------------------------------------------------

    def reply_started(self, turn_id: int) -> list[TurnAction]:
        """The agent began reply ``turn_id`` (its LLM call)."""
        reply = self._replies.get(turn_id)
        if reply is not None and reply.phase is _ReplyPhase.QUEUED:
            reply.phase = _ReplyPhase.THINKING
        return []

    def reply_audible(self, turn_id: int) -> list[TurnAction]:
        """The pacer released reply ``turn_id``'s first frame."""
        reply = self._replies.get(turn_id)
        if reply is None or reply.audible or reply.phase is _ReplyPhase.CUT:
            return []
        reply.audible = True
        reply.phase = _ReplyPhase.AUDIBLE
        return [ReplyAudible(turn_id)]

    def reply_failed(self, turn_id: int) -> list[TurnAction]:
        """A stage of reply ``turn_id`` failed: cut it (what was heard stays heard)."""
        reply = self._replies.get(turn_id)
        if reply is None or reply.phase is _ReplyPhase.CUT:
            return []
        return self._cut(reply, barge_in=False)

    def reply_finished(self, turn_id: int) -> list[TurnAction]:
        """Reply ``turn_id``'s work is over: played out, or ended after a cut."""
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return []
        return [FinishReply(turn_id, reply.phase is _ReplyPhase.CUT, reply.audible)]

    def close(self) -> list[TurnAction]:
        """The session is ending: every reply still running is cut (what was not played is
        not heard) and every queued one finished."""
        actions: list[TurnAction] = []
        for reply in list(self._replies.values()):
            if reply.phase is not _ReplyPhase.CUT:
                actions += self._cut(reply, barge_in=False)
        return actions

    def _cut(self, reply: _Reply, *, barge_in: bool) -> list[TurnAction]:
        started = reply.phase is not _ReplyPhase.QUEUED
        reply.phase = _ReplyPhase.CUT
        actions: list[TurnAction] = [CutReply(reply.turn_id, barge_in, started)]
        if not started:
            # Never started: nothing else will finish it.
            actions += self.reply_finished(reply.turn_id)
        return actions
