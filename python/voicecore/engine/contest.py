"""Talking over the agent: what the user's speech does to an audible reply.

The user speaking while a reply is audible is not an interruption until it proves to be one.
``TurnMachine`` (``voicecore.engine.turns``) owns a ``Contest`` and hands it that decision;
like the machine it is pure (no Trio, no I/O, no clock) and returns the actions to carry out:

* **Duck.** The first sign of the user's voice (``onset``: the echo-gated mic level, or the
  VAD's start) pauses the reply at once when the client can pause (``DuckReply``: the
  client stops playing, keeping what it holds, and the pacer holds the stream).
* **Decide.** Speech shorter than the barge-in minimum (a cough, a click), or no speech the
  VAD confirms within ``duck_timeout_ms`` (a door, a breath), resumes the reply from the
  exact sample (``ResumeReply``). A longer utterance contests the reply: it is transcribed,
  and it interrupts (``CutReply``: cancelled, flushed, cleared) as soon as its words are not
  listener feedback (``voicecore.engine.backchannel``), or once it has lasted
  ``backchannel_max_ms`` (backchannels are short). If its final words are feedback ("mm-hm",
  "yeah", "okay") or nothing, the reply resumes, heard whole, and the utterance gets no
  reply. A client that cannot pause keeps playing meanwhile; the decision is the same.
* **Echo.** Behind an echo gate (``echo_gated``) only the gate's onsets duck, and speech over
  the agent decides nothing unless the gate heard the user's voice in it (``voiced``): the
  VAD alone cannot tell the user from the agent's own voice coming back through the mic.

The machine calls in at each of its inputs: ``onset``; ``speech_started`` for the VAD's
starts; ``begin`` when an utterance over an audible reply is confirmed; ``outlasted`` and
``duck_expired`` after each block of audio (the backchannel limit, the duck timeout);
``interrupts`` and ``dismissal`` when the utterance's words come in; ``interruption`` once
they interrupt (the machine cuts the reply: starting, cutting and finishing replies is its
job); ``resume`` when the utterance is dropped; ``resume_uncontested`` after a false start.
Who holds the floor is not decided here but by ``TurnTaker`` (``voicecore.engine.floor``).
"""

from __future__ import annotations

from collections.abc import Mapping

from voicecore.engine.backchannel import is_backchannel, words
from voicecore.engine.turn_actions import DuckReply, ResumeReply, TurnAction
from voicecore.engine.turn_state import (
    ReplyPhase,
    ReplyRecord,
    UserPhase,
    UserTurnRecord,
    live_replies,
)

__all__ = ["VOICE_SLACK_MS", "Contest", "interrupts"]


VOICE_SLACK_MS = 300
"""An echo gate's onset this long before a VAD utterance's start still counts as its voice
(the VAD pads its start earlier, the gate needs 20 ms of activity, Silero decides late)."""


def interrupts(text: str) -> bool:
    """Whether ``text``, said over the agent, interrupts it: it holds a word that is not
    listener feedback (nothing recognized, or only "mm-hm", "yeah", "okay", does not)."""
    return bool(words(text)) and not is_backchannel(text)


class Contest:
    """The user's speech against the agent's audible replies (see the module's docstring).

    Args:
        replies: the machine's replies by turn id (only ducked and resumed here: the machine
            starts, finishes and cuts them).
        sample_rate: the audio clock's rate (samples per second).
        duck: the client can pause (``DuckReply``/``ResumeReply`` are wanted).
        duck_timeout_ms: a duck with no speech the VAD confirms within this (ms) resumes.
        backchannel_max_ms: an utterance over the agent that lasts this long (ms, from its
            start) interrupts even before any word is recognized.
        echo_gated: ``onset`` comes from an echo gate (see the module's docstring).
    """

    def __init__(
        self,
        replies: Mapping[int, ReplyRecord],
        *,
        sample_rate: int,
        duck: bool,
        duck_timeout_ms: float,
        backchannel_max_ms: float,
        echo_gated: bool,
    ) -> None:
        self._replies = replies
        self.duck = duck
        self._duck_timeout = round(duck_timeout_ms * sample_rate / 1000)
        self._backchannel_max = round(backchannel_max_ms * sample_rate / 1000)
        self.echo_gated = echo_gated
        self._voice_slack = round(VOICE_SLACK_MS * sample_rate / 1000)
        self._voice_at: int | None = None  # the latest onset the echo gate reported
        self._duck_sample = 0

    # --- what is contested -----------------------------------------------------------------

    def contested(self, user: UserTurnRecord) -> ReplyRecord | None:
        """The live reply ``user`` speaks over and has not decided about yet."""
        if user.over_reply is None or user.decided or user.phase is UserPhase.ANSWERED:
            return None
        reply = self._replies.get(user.over_reply)
        return reply if reply is not None and reply.phase is not ReplyPhase.CUT else None

    def voiced(self, user: UserTurnRecord) -> bool:
        """The echo gate (if any) heard the user's own voice in ``user``'s utterance."""
        if not self.echo_gated:
            return True
        return (
            self._voice_at is not None and self._voice_at >= user.start_sample - self._voice_slack
        )

    # --- duck ------------------------------------------------------------------------------

    def onset(self, sample: int) -> list[TurnAction]:
        """The user's voice may have begun at ``sample``: duck the audible reply."""
        self._voice_at = sample
        return self._duck(sample)

    def speech_started(self, sample: int) -> list[TurnAction]:
        """The VAD heard speech start at ``sample``: duck the audible reply, unless an echo
        gate decides (then only its onsets duck)."""
        return [] if self.echo_gated else self._duck(sample)

    def begin(self, user: UserTurnRecord, reply: ReplyRecord) -> list[TurnAction]:
        """``user``'s utterance, just confirmed, speaks over the audible ``reply``: it is
        contested until the utterance's words or length decide, and ducked from the
        utterance's start (unless an echo gate decides)."""
        user.over_reply = reply.turn_id
        return self.speech_started(user.start_sample)

    def _duck(self, sample: int) -> list[TurnAction]:
        """Pauses every audible reply, if the client can pause; the duck timeout runs from
        ``sample``."""
        if not self.duck:
            return []
        actions: list[TurnAction] = []
        for reply in live_replies(self._replies.values()):
            if reply.phase is ReplyPhase.AUDIBLE and not reply.ducked:
                reply.ducked = True
                self._duck_sample = sample
                actions.append(DuckReply(reply.turn_id))
        return actions

    # --- decide ----------------------------------------------------------------------------

    def outlasted(self, user: UserTurnRecord, speech_until: int) -> bool:
        """``user``'s utterance, still under way over the agent, has lasted
        ``backchannel_max_ms`` by ``speech_until`` (one past its last speech sample), and the
        echo gate (if any) heard the user's voice in it: an interruption, words or not."""
        if user.phase is not UserPhase.TRANSCRIBING or self.contested(user) is None:
            return False
        return speech_until - user.start_sample >= self._backchannel_max and self.voiced(user)

    def interruption(self, user: UserTurnRecord) -> ReplyRecord | None:
        """``user``'s utterance is an interruption (a turn of its own): decided. Returns the
        reply it contested, if still live, for the machine to cut."""
        contested = self.contested(user)
        user.decided = True
        return contested

    def dismissal(self, user: UserTurnRecord, said: str) -> str | None:
        """Why ``user``'s utterance over the agent, with final words ``said``, gets no reply
        of its own (the ``DropTurn`` reason): ``"echo"`` (the echo gate did not hear the
        user's voice in it), ``"backchannel"`` (only listener feedback, or nothing); ``None``
        if it is a turn of its own."""
        if not self.voiced(user):
            return "echo"
        if not interrupts(said):
            return "backchannel"
        return None

    # --- resume ----------------------------------------------------------------------------

    def resume(self, reply: ReplyRecord, reason: str) -> list[TurnAction]:
        """``reply`` goes on, if it was ducked (``reason``: why, for ``ResumeReply``)."""
        if not reply.ducked or reply.phase is ReplyPhase.CUT:
            return []
        reply.ducked = False
        return [ResumeReply(reply.turn_id, reason)]

    def duck_expired(
        self, user: UserTurnRecord | None, stream_end: int, *, utterance_open: bool
    ) -> list[TurnAction]:
        """The audio clock is at ``stream_end``: a duck that no speech followed
        (``utterance_open``: the floor has an utterance under way) within ``duck_timeout_ms``
        ends (``user``: the machine's latest user turn, whose contested reply stays ducked)."""
        if not utterance_open and stream_end - self._duck_sample >= self._duck_timeout:
            return self.resume_uncontested(user, "no_speech")
        return []

    def resume_uncontested(self, user: UserTurnRecord | None, reason: str) -> list[TurnAction]:
        """Resumes ducked replies no user utterance (``user``, the machine's latest) is
        contesting."""
        contested = self.contested(user) if user is not None else None
        actions: list[TurnAction] = []
        for reply in live_replies(self._replies.values()):
            if reply.ducked and reply is not contested:
                actions += self.resume(reply, reason)
        return actions
