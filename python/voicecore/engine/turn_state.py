"""What the turn machine knows of each turn: the records ``TurnMachine``
(``voicecore.engine.turns``) and its ``Contest`` (``voicecore.engine.contest``) share.

Plain data, no logic: a user turn (``UserTurnRecord``) and an agent reply (``ReplyRecord``),
each with its phase. The session never sees them; it sees the actions of
``voicecore.engine.turn_actions``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["ReplyPhase", "ReplyRecord", "UserPhase", "UserTurnRecord", "live_replies"]


class UserPhase(enum.Enum):
    """Where a user turn is in its lifecycle."""

    TRANSCRIBING = "transcribing"  # the user holds the floor (speaking or pausing)
    ENDED = "ended"  # their turn is over; waiting for the STT's final(s)
    ANSWERED = "answered"  # handed over (StartReply) or dropped


@dataclass(eq=False, slots=True)
class UserTurnRecord:
    """One user turn, from its confirmed speech to its answer (or drop)."""

    turn_id: int
    start_sample: int
    carried: str = ""  # the user's earlier words this turn continues (they go on into it)
    end_sample: int | None = None  # where its speech ended (its end of turn)
    answered: str = ""  # the words it was answered with
    over_reply: int | None = None  # the audible reply this utterance contests
    decided: bool = False  # found to be a real turn (it interrupted, or the reply is gone)
    phase: UserPhase = UserPhase.TRANSCRIBING
    finals: list[str] = field(default_factory=list)
    stt_done: bool = False


class ReplyPhase(enum.Enum):
    """Where an agent reply is in its lifecycle."""

    QUEUED = "queued"
    THINKING = "thinking"  # LLM/TTS running, nothing audible yet
    AUDIBLE = "audible"  # a frame has been released
    CUT = "cut"  # barge-in or failure; finishing


@dataclass(eq=False, slots=True)
class ReplyRecord:
    """One agent reply, from ``StartReply`` to ``FinishReply``."""

    turn_id: int
    text: str
    preemptive: bool = False  # started on a speculative transcript, not confirmed yet
    phase: ReplyPhase = ReplyPhase.QUEUED
    audible: bool = False
    ducked: bool = False
    restart_with: str | None = None  # a fresh reply to start once this (cut) one finishes


def live_replies(replies: Iterable[ReplyRecord]) -> list[ReplyRecord]:
    """Replies not cut and not merely preemptive (those the user hears or waits for)."""
    return [r for r in replies if r.phase is not ReplyPhase.CUT and not r.preemptive]
