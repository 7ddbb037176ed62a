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
       \\______________________\\_________________________\\--- interruption ---> CUT
                                                                  or failure

Talking over the agent (the user speaks while a reply is audible) is not an interruption
until it proves to be one: duck at once, then resume or cut as the utterance's length and
words decide. The machine hands those decisions to its ``Contest``
(``voicecore.engine.contest``, where they are described).

The user speaking again before a reply is heard (queued or thinking) is no contest: that
reply now answers the wrong turn and is cut unheard, its words carried into the new turn.
Speech within ``continuation_ms`` of the end of the user's previous turn carries that turn's
words on too (the end of turn came too early): if it interrupts, both are answered together.

Ending the user's turn: ``TurnTaker`` (``voicecore.engine.floor``) decides on the audio
clock; with an end-of-turn model it asks (``PredictTurn``) at each pause and waits the short
silence after a complete turn, the long one otherwise (``turn_verdict``).

Preemptive replies: a speculative transcript (the STT's decode of all the speech so far,
made at a pause) starts the reply before the turn has ended (``StartReply(preemptive=True)``:
LLM and TTS run into a held stream). When the turn ends with the same words the reply is
confirmed (``ConfirmReply``: released at once); if the user speaks on, or the final differs,
it is cut unheard and (for a different final) a fresh reply starts.

Inputs: ``audio`` (the VAD's events and the stream's progress), ``onset``,
``stt_partial``, ``stt_final``, ``stt_done``, ``stt_timed_out``, ``turn_verdict``,
``reply_started``, ``reply_audible``, ``reply_failed``, ``reply_finished``, ``close``.
Outputs: the actions of ``voicecore.engine.turn_actions``, what the session must do now.
"""

from __future__ import annotations

from collections.abc import Sequence

from voicecore.engine.backchannel import words
from voicecore.engine.contest import Contest, interrupts
from voicecore.engine.floor import (
    EndOfTurn,
    FalseStart,
    SpeechPaused,
    SpeechResumed,
    TurnTaker,
    UtteranceConfirmed,
)
from voicecore.engine.stages import SpeechStarted, VadEvent
from voicecore.engine.turn_actions import (
    ConfirmReply,
    CutReply,
    DropTurn,
    EndTranscription,
    FinishReply,
    PredictTurn,
    ReplyAudible,
    StartReply,
    StartTranscription,
    StopTranscription,
    TurnAction,
)
from voicecore.engine.turn_state import (
    ReplyPhase,
    ReplyRecord,
    UserPhase,
    UserTurnRecord,
    live_replies,
)

__all__ = ["TurnMachine"]


def _same_words(a: str, b: str) -> bool:
    return words(a) == words(b)


class TurnMachine:
    """The turn lifecycle of one conversation (see the module's docstring).

    Args:
        floor: who holds the floor, on the 16 kHz audio clock (a ``TurnTaker``).
        duck: the client can pause (``DuckReply``/``ResumeReply`` are wanted).
        duck_timeout_ms: a duck with no speech the VAD confirms within this (ms) resumes.
        backchannel_max_ms: an utterance over the agent that lasts this long (ms, from its
            start) interrupts even before any word is recognized.
        preemptive: start replies on speculative transcripts.
        echo_gated: ``onset`` comes from an echo gate: speech over the agent decides nothing
            (it neither ducks nor interrupts the agent) unless the gate heard the user's
            voice in it; the VAD alone cannot tell the user from the agent's echo.
        continuation_ms: speech that starts within this (ms) of the end of the user's
            previous turn continues it: its words are answered together with the previous
            ones (the end of turn came too early).
        first_turn_id: the first user turn's id (a resumed conversation goes on numbering).

    Every method returns the actions to carry out now, in order; none blocks or reads a clock.
    Inputs about turns the machine no longer tracks (a late final of a replaced utterance, a
    frame released just before a cut) are ignored: the session may report them without
    checking.
    """

    def __init__(
        self,
        floor: TurnTaker | None = None,
        *,
        duck: bool = False,
        duck_timeout_ms: float = 300.0,
        backchannel_max_ms: float = 1000.0,
        preemptive: bool = False,
        continuation_ms: float = 1000.0,
        echo_gated: bool = False,
        first_turn_id: int = 1,
    ) -> None:
        if first_turn_id < 1:
            raise ValueError(f"first_turn_id must be >= 1, got {first_turn_id}")
        self.floor = floor if floor is not None else TurnTaker()
        rate = self.floor.sample_rate
        self.preemptive = preemptive
        self._continuation = round(continuation_ms * rate / 1000)
        self.next_turn_id = first_turn_id
        """The id the next user turn gets (a resumed conversation's continue its numbering)."""
        self._user: UserTurnRecord | None = None
        self._replies: dict[int, ReplyRecord] = {}
        self._contest = Contest(
            self._replies,
            sample_rate=rate,
            duck=duck,
            duck_timeout_ms=duck_timeout_ms,
            backchannel_max_ms=backchannel_max_ms,
            echo_gated=echo_gated,
        )

    def __repr__(self) -> str:
        user = f"{self._user.turn_id}:{self._user.phase.value}" if self._user else None
        replies = {r.turn_id: r.phase.value for r in self._replies.values()}
        return f"TurnMachine(user={user}, replies={replies}, floor={self.floor.state})"

    # --- what the session asks -----------------------------------------------------------------

    @property
    def duck(self) -> bool:
        """The client can pause (``DuckReply``/``ResumeReply`` are wanted)."""
        return self._contest.duck

    @property
    def echo_gated(self) -> bool:
        """``onset`` comes from an echo gate (see the class's docstring)."""
        return self._contest.echo_gated

    @property
    def agent_active(self) -> bool:
        """A reply is queued, thinking or audible (and not cut, nor an unconfirmed preemptive
        one): new user speech contests or interrupts it."""
        return bool(live_replies(self._replies.values()))

    @property
    def agent_audible(self) -> bool:
        """A reply not cut has released audio and is not ducked (the client plays it)."""
        return any(
            r.phase is ReplyPhase.AUDIBLE and not r.ducked
            for r in live_replies(self._replies.values())
        )

    @property
    def user_turn(self) -> int | None:
        """The user turn being transcribed or awaiting its final, if any."""
        user = self._user
        return user.turn_id if user is not None and user.phase is not UserPhase.ANSWERED else None

    def is_cut(self, turn_id: int) -> bool:
        """Reply ``turn_id`` was cut (or is no longer tracked): its audio must not be sent."""
        reply = self._replies.get(turn_id)
        return reply is None or reply.phase is ReplyPhase.CUT

    def transcribing(self, turn_id: int) -> bool:
        """User turn ``turn_id`` still wants transcripts (not yet answered, dropped or
        replaced)."""
        user = self._user
        return user is not None and user.turn_id == turn_id and user.phase is not UserPhase.ANSWERED

    # --- the user side -----------------------------------------------------------------------

    def onset(self, sample: int) -> list[TurnAction]:
        """The user's voice may have begun at ``sample`` (the echo-gated mic level rose):
        duck the audible reply, if the client can pause."""
        return self._contest.onset(sample)

    def audio(
        self, events: Sequence[VadEvent], *, speech_until: int, stream_end: int
    ) -> list[TurnAction]:
        """The VAD's events for the mic audio up to ``stream_end`` (16 kHz samples), and its
        ``speech_until`` (one past the last speech sample)."""
        actions: list[TurnAction] = []
        for event in events:
            if isinstance(event, SpeechStarted):
                actions += self._contest.speech_started(event.sample)
        floor_actions = self.floor.on_audio(
            events,
            speech_until=speech_until,
            stream_end=stream_end,
            agent_active=self.agent_active,
        )
        for action in floor_actions:
            actions += self._floor_action(action)
        # The audio clock's decisions: a long utterance over the agent interrupts it; a duck
        # that no speech followed ends.
        user = self._user
        if user is not None and self._contest.outlasted(user, speech_until):
            return actions + self._interrupt(user)
        utterance_open = self.floor.utterance_start is not None
        return actions + self._contest.duck_expired(user, stream_end, utterance_open=utterance_open)

    def stt_partial(self, turn_id: int, text: str, *, speculative: bool) -> list[TurnAction]:
        """User turn ``turn_id``'s STT gave a partial transcript ``text`` (``speculative``:
        a decode of all the speech so far, made at a pause)."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is not UserPhase.TRANSCRIBING:
            return []
        actions: list[TurnAction] = []
        contested = self._contest.contested(user)
        if contested is not None and interrupts(text):
            if not self._contest.voiced(user):
                return actions  # the agent's own words, heard back: not the user's
            actions += self._interrupt(user)
            contested = None
        elif contested is not None and speculative and self.floor.pause_sample is not None:
            # All the speech so far, at a pause, is feedback (or nothing): settled now, not
            # after the end-of-turn silence; whatever the user says next is a new utterance.
            self.floor.abandon()
            return self._drop(user, "backchannel")
        if (
            speculative
            and self.preemptive
            and contested is None
            and self.floor.pause_sample is not None
            and words(text)
            and turn_id not in self._replies
        ):
            text = f"{user.carried} {text}".strip()
            self._replies[turn_id] = ReplyRecord(turn_id, text, preemptive=True)
            actions.append(StartReply(turn_id, text, preemptive=True))
        return actions

    def stt_final(self, turn_id: int, text: str, *, speech_until: int) -> list[TurnAction]:
        """User turn ``turn_id``'s STT gave a final transcript ``text`` (the VAD's
        ``speech_until`` now). During the end-of-turn silence a final ends the turn at once;
        after the end of turn it is the awaited final: the turn is answered."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is UserPhase.ANSWERED:
            return []
        user.finals.append(text)
        if user.phase is UserPhase.ENDED:
            return self._answer(user)
        actions: list[TurnAction] = []
        for action in self.floor.on_stt_final(speech_until=speech_until):
            actions += self._floor_action(action)
        return actions

    def stt_done(self, turn_id: int, *, failed: bool = False) -> list[TurnAction]:
        """User turn ``turn_id``'s STT call is over: its transcripts ran out, or it raised
        (``failed``: the turn is dropped)."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is UserPhase.ANSWERED:
            return []
        user.stt_done = True
        if failed:
            return self._drop(user, "stt_failed")
        if user.phase is UserPhase.ENDED:
            return self._answer(user)
        return []

    def stt_timed_out(self, turn_id: int) -> list[TurnAction]:
        """User turn ``turn_id``'s final did not come within the deadline after its end: the
        finals that came before it are answered, else the turn is dropped."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is not UserPhase.ENDED:
            return []
        if user.finals:
            return self._answer(user)
        return self._drop(user, "stt_timeout")

    def turn_verdict(
        self, turn_id: int, end_sample: int, complete: bool, *, speech_until: int, stream_end: int
    ) -> list[TurnAction]:
        """The end-of-turn model's verdict on user turn ``turn_id``'s pause at ``end_sample``
        (see ``PredictTurn``); stale verdicts are ignored."""
        if self.user_turn != turn_id:
            return []
        actions: list[TurnAction] = []
        verdict = self.floor.on_verdict(
            end_sample, complete, speech_until=speech_until, stream_end=stream_end
        )
        for action in verdict:
            actions += self._floor_action(action)
        return actions

    def _floor_action(self, action: object) -> list[TurnAction]:
        if isinstance(action, UtteranceConfirmed):
            return self._confirmed(action)
        if isinstance(action, FalseStart):
            # Too short to be anything: a ducked reply nobody contests goes on.
            return [action, *self._contest.resume_uncontested(self._user, "false_start")]
        user = self._user
        if user is None or user.phase is not UserPhase.TRANSCRIBING:
            return []
        if isinstance(action, SpeechPaused):
            actions: list[TurnAction] = [action]
            if self._contest.contested(user) is not None:
                # Over a paused agent, no semantic wait: the short silence settles it.
                self.floor.settle_pause_short()
            elif self.floor.predicted:
                actions.append(PredictTurn(user.turn_id, action.end_sample))
            return actions
        if isinstance(action, SpeechResumed):
            # The user spoke on: a reply started on their words so far answers the wrong turn.
            preempted = self._replies.get(user.turn_id)
            cut = self._cut(preempted, barge_in=False) if preempted and preempted.preemptive else []
            return [action, *cut]
        if isinstance(action, EndOfTurn):
            user.phase = UserPhase.ENDED
            user.end_sample = action.end_sample
            ended: list[TurnAction] = [
                EndTranscription(user.turn_id, action.end_sample, action.by_stt_final)
            ]
            if user.stt_done or action.by_stt_final:
                ended += self._answer(user)
            return ended
        raise TypeError(f"unknown floor action {action!r}")

    def _confirmed(self, action: UtteranceConfirmed) -> list[TurnAction]:
        actions: list[TurnAction] = []
        previous = self._user
        contested: ReplyRecord | None = None
        carried = ""
        for reply in list(self._replies.values()):
            if reply.phase is ReplyPhase.CUT:
                continue
            if reply.phase is ReplyPhase.AUDIBLE and not reply.preemptive:
                contested = reply  # the user talks over the agent: decided by their words
            else:
                # Nothing heard yet (queued, thinking, or preemptive for the previous words):
                # the user spoke again before the answer, which now answers the wrong turn.
                # Their earlier words go on into the new turn (the end of turn was early).
                if not reply.preemptive:
                    carried = f"{carried} {reply.text}".strip()
                actions += self._cut(reply, barge_in=True)
        if previous is not None and previous.phase is not UserPhase.ANSWERED:
            # The user spoke again before the previous utterance was answered: the new one
            # replaces it (its words are not lost: the floor's utterance spans both).
            previous.phase = UserPhase.ANSWERED
            actions.append(StopTranscription(previous.turn_id))
        if (
            not carried
            and previous is not None
            and previous.answered
            and previous.end_sample is not None
            and action.start_sample - previous.end_sample < self._continuation
        ):
            # The user went on after a short pause that ended their turn too early: this is
            # the same turn, and its words include the earlier ones (if it interrupts).
            carried = previous.answered
        user = UserTurnRecord(self.next_turn_id, action.start_sample, carried)
        self.next_turn_id += 1
        if contested is not None:
            actions += self._contest.begin(user, contested)
        self._user = user
        actions.append(StartTranscription(user.turn_id, action.start_sample))
        return actions

    def _answer(self, user: UserTurnRecord) -> list[TurnAction]:
        said = " ".join(t.strip() for t in user.finals if t.strip())
        text = f"{user.carried} {said}".strip()
        if user.over_reply is not None and not user.decided:
            # Its words decide the reply it talked over: no reply of its own, or a barge-in.
            reason = self._contest.dismissal(user, said)
            if reason is not None:
                return self._drop(user, reason)
            return self._interrupt(user) + self._answer(user)
        user.phase = UserPhase.ANSWERED
        preempted = self._replies.get(user.turn_id)
        if not words(text):
            cut = self._cut(preempted, barge_in=False) if preempted is not None else []
            return [*cut, DropTurn(user.turn_id, "empty")]
        user.answered = text
        if preempted is None:
            self._replies[user.turn_id] = ReplyRecord(user.turn_id, text)
            return [StartReply(user.turn_id, text)]
        if preempted.phase is not ReplyPhase.CUT and _same_words(preempted.text, text):
            preempted.preemptive = False
            return [ConfirmReply(user.turn_id)]
        # Started on other words (or cut and still finishing): a fresh reply once it is gone.
        preempted.restart_with = text
        return self._cut(preempted, barge_in=False) if preempted.phase is not ReplyPhase.CUT else []

    def _drop(self, user: UserTurnRecord, reason: str) -> list[TurnAction]:
        """``user``'s turn gets no reply; a reply it contested (and ducked) goes on, and a
        preemptive reply to it is cut."""
        contested = self._contest.contested(user)
        user.phase = UserPhase.ANSWERED
        actions: list[TurnAction] = []
        preempted = self._replies.get(user.turn_id)
        if preempted is not None and preempted.phase is not ReplyPhase.CUT:
            actions += self._cut(preempted, barge_in=False)
        if contested is not None:
            actions += self._contest.resume(contested, reason)
        return [*actions, DropTurn(user.turn_id, reason)]

    def _interrupt(self, user: UserTurnRecord) -> list[TurnAction]:
        """``user``'s utterance is an interruption: the reply it contested (if live) is cut."""
        contested = self._contest.interruption(user)
        return self._cut(contested, barge_in=True) if contested is not None else []

    # --- the agent side ----------------------------------------------------------------------

    def reply_started(self, turn_id: int) -> list[TurnAction]:
        """The agent began reply ``turn_id`` (its LLM call)."""
        reply = self._replies.get(turn_id)
        if reply is not None and reply.phase is ReplyPhase.QUEUED:
            reply.phase = ReplyPhase.THINKING
        return []

    def reply_audible(self, turn_id: int) -> list[TurnAction]:
        """The pacer released reply ``turn_id``'s first frame."""
        reply = self._replies.get(turn_id)
        if reply is None or reply.audible or reply.phase is ReplyPhase.CUT:
            return []
        reply.audible = True
        reply.phase = ReplyPhase.AUDIBLE
        return [ReplyAudible(turn_id)]

    def reply_failed(self, turn_id: int) -> list[TurnAction]:
        """A stage of reply ``turn_id`` failed: cut it (what was heard stays heard)."""
        reply = self._replies.get(turn_id)
        if reply is None or reply.phase is ReplyPhase.CUT:
            return []
        return self._cut(reply, barge_in=False)

    def reply_finished(self, turn_id: int) -> list[TurnAction]:
        """Reply ``turn_id``'s work is over: played out, or ended after a cut."""
        reply = self._replies.pop(turn_id, None)
        if reply is None:
            return []
        actions: list[TurnAction] = [
            FinishReply(turn_id, reply.phase is ReplyPhase.CUT, reply.audible)
        ]
        if reply.restart_with is not None:
            self._replies[turn_id] = ReplyRecord(turn_id, reply.restart_with)
            actions.append(StartReply(turn_id, reply.restart_with))
        return actions

    def close(self) -> list[TurnAction]:
        """The session is ending: every reply still running is cut (what was not played is
        not heard) and every queued one finished."""
        actions: list[TurnAction] = []
        for reply in list(self._replies.values()):
            reply.restart_with = None
            if reply.phase is not ReplyPhase.CUT:
                actions += self._cut(reply, barge_in=False)
        return actions

    def _cut(self, reply: ReplyRecord, *, barge_in: bool) -> list[TurnAction]:
        started = reply.phase is not ReplyPhase.QUEUED
        reply.phase = ReplyPhase.CUT
        reply.ducked = False
        actions: list[TurnAction] = [CutReply(reply.turn_id, barge_in, started)]
        if not started:
            # Never started: nothing else will finish it.
            actions += self.reply_finished(reply.turn_id)
        return actions
