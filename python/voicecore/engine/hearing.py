"""The session's user side: mic audio to the VAD and the turn machine, and one STT call per
user turn.

``Hearing`` is one of the two halves the ``Session`` (``voicecore.engine.session``) is made of
(the other is ``Speaking``). It runs on the session's Trio tasks; what a turn should do next
is the ``TurnMachine``'s decision, which it asks and whose actions it hands to ``act`` (the
session's dispatcher) without deciding anything itself.

* ``mic_audio``: each client frame, inline in the reader (``MIC_TO_DSP``: no queue, no task
  switch), resampled once to 16 kHz, measured by the echo gate (the user's voice above the
  agent's own echo is an ``onset``: it ducks the agent, and it is the evidence the turn
  machine wants before letting speech over the agent interrupt it), kept in the pre-roll
  ring, scored by the VAD, fed to the turn machine; during a user turn also to its STT's
  channel (``DSP_TO_STT``, drop-oldest).
* ``start``: a confirmed utterance: its STT call gets ``stt_preroll_ms`` of audio from
  before the VAD's start (VADs report it late), then the live frames; ``speech_start`` goes
  to the client.
* ``end``: the end of the turn: no more audio for the STT, whose final is then due within
  ``stt_final_timeout_s``.
* ``predict``: at each pause, the end-of-turn model (if any) gets the turn's newest audio
  from the ring, off the event loop; its verdict goes to the turn machine.
* Partial transcripts go to the client and to the turn machine (what the user says over the
  agent decides whether it is an interruption; a speculative one may start the reply).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from voicecore import protocol
from voicecore._core import EchoGate, Resampler, SampleRing
from voicecore.diagnostics import Timeline
from voicecore.engine.contracts import DSP_TO_STT, EdgeChannel
from voicecore.engine.settings import RING_MS
from voicecore.engine.stages import (
    MAX_TURN_AUDIO_S,
    STT,
    STT_SAMPLE_RATE,
    VAD,
    AudioFrame,
    TurnContext,
    TurnEndModel,
    closing,
)
from voicecore.engine.turn_actions import (
    DropTurn,
    EndTranscription,
    PredictTurn,
    SpeechPaused,
    SpeechResumed,
    StartTranscription,
    TurnAction,
)
from voicecore.engine.turns import TurnMachine
from voicecore.exceptions import StageTimeoutError
from voicecore.metrics import SessionMetrics, TurnMetrics

__all__ = ["Hearing", "UserTurn"]

_log = logging.getLogger("voicecore.engine.session")

Act = Callable[[Sequence[TurnAction]], None]
"""Carries out the turn machine's actions (the session's dispatcher)."""
Send = Callable[[protocol.ServerMessage], None]
"""Queues a message for the client."""
ReportError = Callable[[TurnContext, str, BaseException], None]
"""Tells the client, the log and the metrics that a stage of a turn failed."""


@dataclass(eq=False)
class UserTurn:
    """The Trio side of one user turn: its context, its STT call's audio, scope and clock.

    Attributes:
        ctx: the turn's context (handed on to its reply).
        audio: the STT call's input.
        first_sample: the first 16 kHz sample it was given (its pre-roll's).
        scope: the STT call's cancel scope (its deadline is the final's).
        final_at: Trio time of the latest final transcript.
    """

    ctx: TurnContext
    audio: EdgeChannel[AudioFrame]
    first_sample: int
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    final_at: float | None = None


class Hearing:
    """The user side of one session (see the module's docstring).

    Args:
        stt: the session's STT.
        vad: the session's VAD.
        turn_model: the end-of-turn model, if any (asked at each ``PredictTurn``).
        echo: the session's echo gate, if any (its far end is fed by ``Speaking``).
        duck_onset_ms: ``SessionConfig.duck_onset_ms``.
        turns: the session's turn machine.
        mic_rate: the client's mic rate, in Hz.
        preroll_ms: ``SessionConfig.stt_preroll_ms``.
        final_timeout_s: ``SessionConfig.stt_final_timeout_s``.
        session_id, timeline, metrics: the session's.
        channel: makes a bounded channel for an edge (counting drops in the metrics).
        send: queues a message for the client.
        report_error: reports a failed stage.
    """

    def __init__(
        self,
        *,
        stt: STT,
        vad: VAD,
        turn_model: TurnEndModel | None,
        echo: EchoGate | None,
        duck_onset_ms: float,
        turns: TurnMachine,
        mic_rate: int,
        preroll_ms: float,
        final_timeout_s: float,
        session_id: str,
        timeline: Timeline,
        metrics: SessionMetrics,
        channel: Callable[[object], EdgeChannel[AudioFrame]],
        send: Send,
        report_error: ReportError,
    ) -> None:
        self.act: Act | None = None
        """The session's dispatcher (connected by the session; None once it has ended)."""
        self.nursery: trio.Nursery | None = None
        """Where STT calls run (the session's, while it runs)."""
        self._stt, self._vad, self._turns = stt, vad, turns
        self._turn_model = turn_model
        self._echo = echo
        self._duck_onset_ms = duck_onset_ms
        self._onset_told = False  # the current run of near-end activity was reported
        self._preroll_samples = round(preroll_ms * STT_SAMPLE_RATE / 1000)
        self._final_timeout_s = final_timeout_s
        self._session_id, self._timeline, self._metrics = session_id, timeline, metrics
        self._channel, self._send, self._report_error = channel, send, report_error
        self._to_16k = Resampler(mic_rate, STT_SAMPLE_RATE) if mic_rate != STT_SAMPLE_RATE else None
        self._ring = SampleRing(RING_MS * STT_SAMPLE_RATE // 1000, "overwrite")
        self._samples = 0  # 16 kHz samples processed
        self._audio_now = 0.0  # Trio time of the end of the last processed audio
        self._turns_open: dict[int, UserTurn] = {}

    def __repr__(self) -> str:
        return f"Hearing(samples={self._samples}, turns={sorted(self._turns_open)})"

    def _act(self, actions: Sequence[TurnAction]) -> None:
        if self.act is not None:
            self.act(actions)

    # --- mic audio ---------------------------------------------------------------------------

    def mic_audio(self, pcm: bytes) -> None:
        """One client frame of mic audio (PCM16 at the mic rate), processed inline."""
        pcm16k = self._to_16k.process(pcm) if self._to_16k is not None else pcm
        frame = AudioFrame(pcm16k, STT_SAMPLE_RATE, self._samples)
        if self._echo is not None:
            # The gate tells the user's voice from the agent's own (its near-end activity);
            # the VAD and the STT get the mic as it is: a gated block would be a hole in the
            # user's words, and the turn machine asks the gate's evidence before acting.
            self._echo.process(pcm16k)
        self._samples = frame.end_sample
        self._audio_now = trio.current_time()
        self._ring.push(pcm16k)
        user_turn = self._turns.user_turn
        if self._echo is not None:
            near_end_ms = self._echo.near_end_ms
            if near_end_ms >= self._duck_onset_ms and not self._onset_told:
                self._onset_told = True
                onset = self._samples - near_end_ms * STT_SAMPLE_RATE // 1000
                self._act(self._turns.onset(onset))
            elif near_end_ms == 0:
                self._onset_told = False
        self._act(
            self._turns.audio(
                self._vad.process(frame),
                speech_until=self._vad.speech_until,
                stream_end=self._samples,
            )
        )
        # The frame goes to the utterance it belongs to (not to one confirmed by this frame:
        # that one got it in its pre-roll).
        turn = self._turns_open.get(user_turn) if user_turn is not None else None
        if turn is not None and not turn.audio.closed:
            turn.audio.send_nowait(frame)

    def _sample_time(self, sample: int) -> float:
        """Trio time at which 16 kHz sample ``sample`` was spoken (the mic is real time)."""
        return self._audio_now - (self._samples - sample) / STT_SAMPLE_RATE

    # --- the turn machine's actions on this side ---------------------------------------------

    def start(self, action: StartTranscription) -> None:
        """Opens a user turn and starts its STT call, from the pre-roll on."""
        turn_id, start_sample = action.turn_id, action.start_sample
        ctx = TurnContext(
            turn_id=turn_id,
            session_id=self._session_id,
            speech_start=self._sample_time(start_sample),
            timeline=self._timeline,
            metrics=TurnMetrics(turn_id),
            session_metrics=self._metrics,
            log=logging.LoggerAdapter(_log, {"session": self._session_id, "turn": turn_id}),
        )
        # Pre-roll: the speech since before its first sample (the VAD reports the start late,
        # and confirms it later still), from the ring.
        first = max(start_sample - self._preroll_samples, 0)
        held = min(self._samples - first, self._ring.capacity)
        turn = UserTurn(ctx, self._channel(DSP_TO_STT), self._samples - held)
        turn.audio.send_nowait(
            AudioFrame(self._ring.peek_last_bytes(held), STT_SAMPLE_RATE, self._samples - held)
        )
        self._turns_open[turn_id] = turn
        ctx.record("speech_start", sample=start_sample)
        self._send(protocol.SpeechStart(start_sample / STT_SAMPLE_RATE, turn_id))
        assert self.nursery is not None
        self.nursery.start_soon(self._transcribe, turn)

    def stop(self, turn_id: int) -> None:
        """A newer utterance replaced user turn ``turn_id``: its STT call is cancelled."""
        stale = self._turns_open.pop(turn_id, None)
        if stale is not None:
            stale.scope.cancel()

    def paused_or_resumed(self, action: SpeechPaused | SpeechResumed) -> None:
        """The user's speech paused (``speech_end`` to the client) or resumed."""
        user_turn = self._turns.user_turn
        turn = self._turns_open.get(user_turn) if user_turn is not None else None
        if turn is None:
            return
        ctx = turn.ctx
        if isinstance(action, SpeechPaused):
            ctx.speech_end = self._sample_time(action.end_sample)
            ctx.record("speech_end", sample=action.end_sample)
            self._send(protocol.SpeechEnd(action.end_sample / STT_SAMPLE_RATE, ctx.turn_id))
        else:
            ctx.speech_end = None
            ctx.record("speech_resumed", sample=action.sample)

    def end(self, action: EndTranscription) -> None:
        """The user's turn is over: no more audio for its STT, whose final is now due."""
        turn = self._turns_open.get(action.turn_id)
        if turn is None:
            return
        ctx = turn.ctx
        ctx.speech_end = self._sample_time(action.end_sample)
        ctx.record("end_of_turn", by_stt_final=action.by_stt_final)
        turn.audio.close()
        turn.scope.deadline = trio.current_time() + self._final_timeout_s

    def drop(self, action: DropTurn) -> None:
        """User turn ``turn_id`` ended with nothing to answer."""
        turn = self._turns_open.pop(action.turn_id, None)
        if turn is not None:
            turn.ctx.log.info("turn %d: no reply (%s)", action.turn_id, action.reason)
            turn.audio.close()

    def context(self, turn_id: int) -> TurnContext:
        """User turn ``turn_id``'s context (the turn is still open: a preemptive reply)."""
        return self._turns_open[turn_id].ctx

    def predict(self, action: PredictTurn) -> None:
        """Asks the end-of-turn model about the pause at ``action.end_sample`` (a task)."""
        turn = self._turns_open.get(action.turn_id)
        if turn is None or self._turn_model is None:
            return
        first = max(turn.first_sample, self._samples - MAX_TURN_AUDIO_S * STT_SAMPLE_RATE)
        held = min(self._samples - first, self._ring.capacity)
        pcm = self._ring.peek_last_bytes(held)
        assert self.nursery is not None
        self.nursery.start_soon(self._predict, turn, action.end_sample, pcm)

    async def _predict(self, turn: UserTurn, end_sample: int, pcm: bytes) -> None:
        ctx = turn.ctx
        started = trio.current_time()
        assert self._turn_model is not None
        try:
            complete = await self._turn_model.is_complete(pcm)
        except Exception as exc:  # the pause then needs the long silence: latency, not loss
            ctx.log.warning("turn %d: end-of-turn model failed: %r", ctx.turn_id, exc)
            self._metrics.count("turn_model.errors")
            return
        ctx.record(
            "turn_verdict",
            complete=complete,
            ms=1000 * (trio.current_time() - started),
            sample=end_sample,
        )
        self._metrics.count("turn_model.complete" if complete else "turn_model.incomplete")
        self._act(
            self._turns.turn_verdict(
                ctx.turn_id,
                end_sample,
                complete,
                speech_until=self._vad.speech_until,
                stream_end=self._samples,
            )
        )

    def answered(self, turn_id: int) -> UserTurn:
        """Hands user turn ``turn_id`` over to its reply (its STT figure recorded)."""
        turn = self._turns_open.pop(turn_id)
        ctx = turn.ctx
        if ctx.speech_end is not None and turn.final_at is not None:
            ctx.metrics.stt_final_ms = 1000 * (turn.final_at - ctx.speech_end)
        return turn

    # --- the STT call ------------------------------------------------------------------------

    async def _transcribe(self, turn: UserTurn) -> None:
        ctx = turn.ctx
        turn_id = ctx.turn_id
        with turn.scope:
            try:
                async with closing(self._stt.transcribe(turn.audio, ctx)) as results:
                    async for result in results:
                        if not self._turns.transcribing(turn_id):
                            break  # answered, dropped or replaced: nothing more is wanted
                        self._send(protocol.Transcript(turn_id, result.text, result.is_final))
                        if not result.is_final:
                            self._act(
                                self._turns.stt_partial(
                                    turn_id, result.text, speculative=result.speculative
                                )
                            )
                        else:
                            turn.final_at = trio.current_time()
                            ctx.record("stt_final", text=result.text)
                            self._act(
                                self._turns.stt_final(
                                    turn_id, result.text, speech_until=self._vad.speech_until
                                )
                            )
            except Exception as exc:
                self._report_error(ctx, "stt", exc)
                turn.audio.close()
                self._act(self._turns.stt_done(turn_id, failed=True))
                return
        if turn.scope.cancelled_caught and self._turns.transcribing(turn_id):
            timeout = self._final_timeout_s
            self._report_error(ctx, "stt", StageTimeoutError(f"no final within {timeout:g} s"))
            self._act(self._turns.stt_timed_out(turn_id))
        else:
            self._act(self._turns.stt_done(turn_id))
