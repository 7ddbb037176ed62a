"""What the turn machine (``voicecore.engine.turns.TurnMachine``) asks the session to do:
one frozen dataclass per action, and ``TurnAction``, their union. The session's dispatcher
(``voicecore.engine.session``) carries each out; the floor's own reports (``SpeechPaused``,
``SpeechResumed``, ``FalseStart``, from ``voicecore.engine.floor``) pass through as they are.
"""

from __future__ import annotations

from dataclasses import dataclass

from voicecore.engine.floor import FalseStart, SpeechPaused, SpeechResumed

__all__ = [
    "ConfirmReply",
    "CutReply",
    "DropTurn",
    "DuckReply",
    "EndTranscription",
    "FalseStart",
    "FinishReply",
    "PredictTurn",
    "ReplyAudible",
    "ResumeReply",
    "SpeechPaused",
    "SpeechResumed",
    "StartReply",
    "StartTranscription",
    "StopTranscription",
    "TurnAction",
]


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
class PredictTurn:
    """The user paused at ``end_sample``: ask the end-of-turn model whether user turn
    ``turn_id`` is complete, and report with ``TurnMachine.turn_verdict``."""

    turn_id: int
    end_sample: int


@dataclass(frozen=True, slots=True)
class StartReply:
    """Answer user turn ``turn_id``, whose recognized text is ``text``: queue the reply.

    ``preemptive``: the turn has not ended yet (``text`` is a speculative transcript): run
    the reply into a held stream, show the client nothing, and wait for ``ConfirmReply`` or
    ``CutReply``.
    """

    turn_id: int
    text: str
    preemptive: bool = False


@dataclass(frozen=True, slots=True)
class ConfirmReply:
    """The turn a preemptive reply answers ended with the words it was started on: the reply
    is real now (release its audio, record the user's words)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class DropTurn:
    """User turn ``turn_id`` ended with nothing to answer (``reason``: ``"empty"``, nothing
    recognized; ``"backchannel"``, listener feedback over the agent, or a noise that
    contested it; ``"echo"``, speech over the agent in which the echo gate heard no voice
    but the agent's own; ``"stt_failed"``; ``"stt_timeout"``: no final in time)."""

    turn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class DuckReply:
    """The user may be speaking over reply ``turn_id``: pause it now (the client stops playing
    and keeps what it holds, the pacer holds the stream) until ``ResumeReply`` or
    ``CutReply``."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class ResumeReply:
    """The ducked reply ``turn_id`` goes on from the exact sample where it paused (``reason``:
    ``"false_start"``, speech too short; ``"no_speech"``, the VAD confirmed none;
    ``"backchannel"``, feedback or nothing recognized; ``"stt_failed"``)."""

    turn_id: int
    reason: str


@dataclass(frozen=True, slots=True)
class CutReply:
    """Stop reply ``turn_id`` now: cancel its work, flush its playout, clear the client.

    ``barge_in``: the user interrupted it (else it failed, was a preemptive reply the turn
    did not confirm, or the session is ending); ``started``: its work had begun (else it was
    still queued and never ran).
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
    | PredictTurn
    | StartReply
    | ConfirmReply
    | DropTurn
    | DuckReply
    | ResumeReply
    | CutReply
    | ReplyAudible
    | FinishReply
)
"""What ``TurnMachine`` asks the session to do (``SpeechPaused``, ``SpeechResumed`` and
``FalseStart`` come from the floor, ``voicecore.engine.floor``)."""
