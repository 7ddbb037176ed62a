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
until it proves to be one:

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

import enum
from collections.abc import Sequence
from dataclasses import dataclass, field

from voicecore.engine.backchannel import is_backchannel, words
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
    DuckReply,
    EndTranscription,
    FinishReply,
    PredictTurn,
    ReplyAudible,
    ResumeReply,
    StartReply,
    StartTranscription,
    StopTranscription,
    TurnAction,
)

__all__ = ["TurnMachine"]


# --- state ------------------------------------------------------------------------------------


class _UserPhase(enum.Enum):
    TRANSCRIBING = "transcribing"  # the user holds the floor (speaking or pausing)
    ENDED = "ended"  # their turn is over; waiting for the STT's final(s)
    ANSWERED = "answered"  # handed over (StartReply) or dropped


@dataclass(eq=False, slots=True)
class _UserTurn:
    turn_id: int
    start_sample: int
    carried: str = ""  # the user's earlier words this turn continues (they go on into it)
    end_sample: int | None = None  # where its speech ended (its end of turn)
    answered: str = ""  # the words it was answered with
    over_reply: int | None = None  # the audible reply this utterance contests
    decided: bool = False  # found to be a real turn (it interrupted, or the reply is gone)
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
    text: str
    preemptive: bool = False  # started on a speculative transcript, not confirmed yet
    phase: _ReplyPhase = _ReplyPhase.QUEUED
    audible: bool = False
    ducked: bool = False
    restart_with: str | None = None  # a fresh reply to start once this (cut) one finishes


VOICE_SLACK_MS = 300
"""An echo gate's onset this long before a VAD utterance's start still counts as its voice
(the VAD pads its start earlier, the gate needs 20 ms of activity, Silero decides late)."""


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
        self.duck = duck
        self.preemptive = preemptive
        self._duck_timeout = round(duck_timeout_ms * rate / 1000)
        self._backchannel_max = round(backchannel_max_ms * rate / 1000)
        self._continuation = round(continuation_ms * rate / 1000)
        self.echo_gated = echo_gated
        self._voice_slack = round(VOICE_SLACK_MS * rate / 1000)
        self._voice_at: int | None = None  # the latest onset the echo gate reported
        self.next_turn_id = first_turn_id
        """The id the next user turn gets (a resumed conversation's continue its numbering)."""
        self._user: _UserTurn | None = None
        self._replies: dict[int, _Reply] = {}
        self._duck_sample = 0

    def __repr__(self) -> str:
        user = f"{self._user.turn_id}:{self._user.phase.value}" if self._user else None
        replies = {r.turn_id: r.phase.value for r in self._replies.values()}
        return f"TurnMachine(user={user}, replies={replies}, floor={self.floor.state})"

    # --- what the session asks -----------------------------------------------------------------

    def _live(self) -> list[_Reply]:
        """Replies not cut and not merely preemptive (those the user hears or waits for)."""
        return [
            r for r in self._replies.values() if r.phase is not _ReplyPhase.CUT and not r.preemptive
        ]

    @property
    def agent_active(self) -> bool:
        """A reply is queued, thinking or audible (and not cut, nor an unconfirmed preemptive
        one): new user speech contests or interrupts it."""
        return bool(self._live())

    @property
    def agent_audible(self) -> bool:
        """A reply not cut has released audio and is not ducked (the client plays it)."""
        return any(r.phase is _ReplyPhase.AUDIBLE and not r.ducked for r in self._live())

    @property
    def user_turn(self) -> int | None:
        """The user turn being transcribed or awaiting its final, if any."""
        user = self._user
        return user.turn_id if user is not None and user.phase is not _UserPhase.ANSWERED else None

    def is_cut(self, turn_id: int) -> bool:
        """Reply ``turn_id`` was cut (or is no longer tracked): its audio must not be sent."""
        reply = self._replies.get(turn_id)
        return reply is None or reply.phase is _ReplyPhase.CUT

    def transcribing(self, turn_id: int) -> bool:
        """User turn ``turn_id`` still wants transcripts (not yet answered, dropped or
        replaced)."""
        user = self._user
        return (
            user is not None and user.turn_id == turn_id and user.phase is not _UserPhase.ANSWERED
        )

    # --- the user side -----------------------------------------------------------------------

    def onset(self, sample: int) -> list[TurnAction]:
        """The user's voice may have begun at ``sample`` (the echo-gated mic level rose):
        duck the audible reply, if the client can pause."""
        self._voice_at = sample
        return self._duck(sample)

    def _voiced(self, user: _UserTurn) -> bool:
        """The echo gate (if any) heard the user's own voice in ``user``'s utterance."""
        if not self.echo_gated:
            return True
        return (
            self._voice_at is not None and self._voice_at >= user.start_sample - self._voice_slack
        )

    def audio(
        self, events: Sequence[VadEvent], *, speech_until: int, stream_end: int
    ) -> list[TurnAction]:
        """The VAD's events for the mic audio up to ``stream_end`` (16 kHz samples), and its
        ``speech_until`` (one past the last speech sample)."""
        actions: list[TurnAction] = []
        for event in events:
            if isinstance(event, SpeechStarted) and not self.echo_gated:
                actions += self._duck(event.sample)  # with a gate, only its onsets duck
        floor_actions = self.floor.on_audio(
            events,
            speech_until=speech_until,
            stream_end=stream_end,
            agent_active=self.agent_active,
        )
        for action in floor_actions:
            actions += self._floor_action(action)
        actions += self._contest(speech_until, stream_end)
        return actions

    def stt_partial(self, turn_id: int, text: str, *, speculative: bool) -> list[TurnAction]:
        """User turn ``turn_id``'s STT gave a partial transcript ``text`` (``speculative``:
        a decode of all the speech so far, made at a pause)."""
        user = self._user
        if user is None or user.turn_id != turn_id or user.phase is not _UserPhase.TRANSCRIBING:
            return []
        actions: list[TurnAction] = []
        contested = self._contested(user)
        if contested is not None and words(text) and not is_backchannel(text):
            if not self._voiced(user):
                return actions  # the agent's own words, heard back: not the user's
            actions += self._interrupt(user, contested)
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
            self._replies[turn_id] = _Reply(turn_id, text, preemptive=True)
            actions.append(StartReply(turn_id, text, preemptive=True))
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
            return self._drop(user, "stt_failed")
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
            return [action, *self._resume_uncontested("false_start")]
        user = self._user
        if user is None or user.phase is not _UserPhase.TRANSCRIBING:
            return []
        if isinstance(action, SpeechPaused):
            actions: list[TurnAction] = [action]
            if self._contested(user) is not None:
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
            user.phase = _UserPhase.ENDED
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
        contested: _Reply | None = None
        carried = ""
        for reply in list(self._replies.values()):
            if reply.phase is _ReplyPhase.CUT:
                continue
            if reply.phase is _ReplyPhase.AUDIBLE and not reply.preemptive:
                contested = reply  # the user talks over the agent: decided by their words
            else:
                # Nothing heard yet (queued, thinking, or preemptive for the previous words):
                # the user spoke again before the answer, which now answers the wrong turn.
                # Their earlier words go on into the new turn (the end of turn was early).
                if not reply.preemptive:
                    carried = f"{carried} {reply.text}".strip()
                actions += self._cut(reply, barge_in=True)
        if previous is not None and previous.phase is not _UserPhase.ANSWERED:
            # The user spoke again before the previous utterance was answered: the new one
            # replaces it (its words are not lost: the floor's utterance spans both).
            previous.phase = _UserPhase.ANSWERED
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
        user = _UserTurn(self.next_turn_id, action.start_sample, carried)
        self.next_turn_id += 1
        if contested is not None:
            user.over_reply = contested.turn_id
            if not self.echo_gated:
                actions += self._duck(action.start_sample)
        self._user = user
        actions.append(StartTranscription(user.turn_id, action.start_sample))
        return actions

    def _contested(self, user: _UserTurn) -> _Reply | None:
        """The live reply ``user`` speaks over and has not decided about yet."""
        if user.over_reply is None or user.decided or user.phase is _UserPhase.ANSWERED:
            return None
        reply = self._replies.get(user.over_reply)
        return reply if reply is not None and reply.phase is not _ReplyPhase.CUT else None

    def _contest(self, speech_until: int, stream_end: int) -> list[TurnAction]:
        """The decisions the audio clock makes: a long utterance over the agent interrupts it;
        a duck that no speech followed ends."""
        user = self._user
        if user is not None and user.phase is _UserPhase.TRANSCRIBING:
            contested = self._contested(user)
            long = speech_until - user.start_sample >= self._backchannel_max
            if contested is not None and long and self._voiced(user):
                return self._interrupt(user, contested)
        if (
            self.floor.utterance_start is None
            and stream_end - self._duck_sample >= self._duck_timeout
        ):
            return self._resume_uncontested("no_speech")
        return []

    def _answer(self, user: _UserTurn) -> list[TurnAction]:
        said = " ".join(t.strip() for t in user.finals if t.strip())
        text = f"{user.carried} {said}".strip()
        if user.over_reply is not None and not user.decided:
            if not self._voiced(user):
                return self._drop(user, "echo")
            if not words(said) or is_backchannel(said):
                return self._drop(user, "backchannel")
            contested = self._contested(user)
            user.decided = True
            interrupted = self._cut(contested, barge_in=True) if contested is not None else []
            return interrupted + self._answer(user)
        user.phase = _UserPhase.ANSWERED
        preempted = self._replies.get(user.turn_id)
        if not words(text):
            cut = self._cut(preempted, barge_in=False) if preempted is not None else []
            return [*cut, DropTurn(user.turn_id, "empty")]
        user.answered = text
        if preempted is None:
            self._replies[user.turn_id] = _Reply(user.turn_id, text)
            return [StartReply(user.turn_id, text)]
        if preempted.phase is not _ReplyPhase.CUT and _same_words(preempted.text, text):
            preempted.preemptive = False
            return [ConfirmReply(user.turn_id)]
        # Started on other words (or cut and still finishing): a fresh reply once it is gone.
        preempted.restart_with = text
        return (
            self._cut(preempted, barge_in=False) if preempted.phase is not _ReplyPhase.CUT else []
        )

    def _drop(self, user: _UserTurn, reason: str) -> list[TurnAction]:
        """``user``'s turn gets no reply; a reply it contested (and ducked) goes on, and a
        preemptive reply to it is cut."""
        contested = self._contested(user)
        user.phase = _UserPhase.ANSWERED
        actions: list[TurnAction] = []
        preempted = self._replies.get(user.turn_id)
        if preempted is not None and preempted.phase is not _ReplyPhase.CUT:
            actions += self._cut(preempted, barge_in=False)
        if contested is not None:
            actions += self._resume(contested, reason)
        return [*actions, DropTurn(user.turn_id, reason)]

    # --- ducking -----------------------------------------------------------------------------

    def _duck(self, sample: int) -> list[TurnAction]:
        if not self.duck:
            return []
        actions: list[TurnAction] = []
        for reply in self._live():
            if reply.phase is _ReplyPhase.AUDIBLE and not reply.ducked:
                reply.ducked = True
                self._duck_sample = sample
                actions.append(DuckReply(reply.turn_id))
        return actions

    def _resume(self, reply: _Reply, reason: str) -> list[TurnAction]:
        if not reply.ducked or reply.phase is _ReplyPhase.CUT:
            return []
        reply.ducked = False
        return [ResumeReply(reply.turn_id, reason)]

    def _resume_uncontested(self, reason: str) -> list[TurnAction]:
        """Resumes ducked replies no user utterance is contesting."""
        user = self._user
        contested = self._contested(user) if user is not None else None
        actions: list[TurnAction] = []
        for reply in self._live():
            if reply.ducked and reply is not contested:
                actions += self._resume(reply, reason)
        return actions

    def _interrupt(self, user: _UserTurn, reply: _Reply) -> list[TurnAction]:
        """``user``'s utterance is an interruption: the reply it contested is cut."""
        user.decided = True
        return self._cut(reply, barge_in=True)

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
        actions: list[TurnAction] = [
            FinishReply(turn_id, reply.phase is _ReplyPhase.CUT, reply.audible)
        ]
        if reply.restart_with is not None:
            self._replies[turn_id] = _Reply(turn_id, reply.restart_with)
            actions.append(StartReply(turn_id, reply.restart_with))
        return actions

    def close(self) -> list[TurnAction]:
        """The session is ending: every reply still running is cut (what was not played is
        not heard) and every queued one finished."""
        actions: list[TurnAction] = []
        for reply in list(self._replies.values()):
            reply.restart_with = None
            if reply.phase is not _ReplyPhase.CUT:
                actions += self._cut(reply, barge_in=False)
        return actions

    def _cut(self, reply: _Reply, *, barge_in: bool) -> list[TurnAction]:
        started = reply.phase is not _ReplyPhase.QUEUED
        reply.phase = _ReplyPhase.CUT
        reply.ducked = False
        actions: list[TurnAction] = [CutReply(reply.turn_id, barge_in, started)]
        if not started:
            # Never started: nothing else will finish it.
            actions += self.reply_finished(reply.turn_id)
        return actions
