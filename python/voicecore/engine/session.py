"""The conversation engine's Trio adapter: one voice conversation over one transport.

A ``Session`` carries out what its ``TurnMachine`` (``voicecore.engine.turns``, no Trio)
decides, and runs every task of the conversation in one Trio nursery:

* **reader**: the client's messages; playout reports go to the pacer, and mic audio is
  processed as it arrives (``MIC_TO_DSP``: inline, no queue) by the session's ``Hearing``
  (``voicecore.engine.hearing``): resampled to 16 kHz once, through the VAD into the turn
  machine, the speech of a confirmed utterance (from its pre-roll on) streamed to its STT task
  (``DSP_TO_STT``);
* **stt** (one per user turn, ``Hearing``'s): partial transcripts go to the client as they
  come; finals go to the turn machine, which decides when the user's turn is over
  (``STT_TO_LLM``);
* **agent loop** (``Speaking``, ``voicecore.engine.speaking``): one reply at a time, each in
  its own ``CancelScope``: the LLM's deltas go
  through the ``SentenceChunker`` to the TTS (``LLM_TO_TTS``) as soon as a chunk is complete,
  and the TTS audio, resampled to the client's rate, into a ``PacerStream``
  (``TTS_TO_PLAYOUT``);
* **playout**: the Rust pacer releases the frames on their deadlines (``PLAYOUT_TO_CLIENT``).
  When the transport has an ``audio_sink`` (the WebSocket server's), the pacer thread writes
  each frame to the client itself and the session hears only the stream's lifecycle (its first
  frame released, drained, late frames) through a ``PlayoutRouter``; otherwise (the in-memory
  transport) frames come back to the session and go out as ``AgentAudio`` through the
  **writer** task (``SESSION_TO_TRANSPORT``), which carries every other message either way.

Everything the session sends is a ``voicecore.protocol`` message: one vocabulary from the
engine to the wire.

Example::

    session = Session(transport, stt=my_stt, llm=my_llm, tts=my_tts,
                      system_prompt="You are a helpful voice agent.")
    await session.run()          # until the client hangs up
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import trio

from voicecore import protocol
from voicecore._core import EchoGate, FramePacer
from voicecore.diagnostics import GcPolicy, LoopLagCanary, Timeline
from voicecore.engine.contracts import SESSION_TO_TRANSPORT, EdgeChannel, LatencyBudget
from voicecore.engine.conversation import ConversationRecord
from voicecore.engine.floor import TurnTaker
from voicecore.engine.hearing import Hearing
from voicecore.engine.history import ConversationHistory
from voicecore.engine.pacing import Pacer
from voicecore.engine.playout import PlayoutRouter
from voicecore.engine.settings import SessionConfig
from voicecore.engine.speaking import Speaking
from voicecore.engine.stages import (
    LLM,
    STT,
    STT_SAMPLE_RATE,
    TTS,
    VAD,
    EnergyVadStage,
    TurnContext,
    TurnEndModel,
)
from voicecore.engine.transport import Transport
from voicecore.engine.turn_actions import (
    ConfirmReply,
    CutReply,
    DropTurn,
    DuckReply,
    EndTranscription,
    FalseStart,
    FinishReply,
    PredictTurn,
    ReplyAudible,
    ResumeReply,
    SpeechPaused,
    SpeechResumed,
    StartReply,
    StartTranscription,
    StopTranscription,
    TurnAction,
)
from voicecore.engine.turns import TurnMachine
from voicecore.exceptions import VoicecoreError
from voicecore.metrics import SessionMetrics

__all__ = ["Session", "SessionConfig"]

_log = logging.getLogger("voicecore.engine.session")


def _edge_channel(metrics: SessionMetrics, edge: Any) -> EdgeChannel[Any]:
    """A bounded channel for ``edge`` that counts its drops in ``metrics``."""
    return EdgeChannel(edge, on_drop=functools.partial(metrics.count, f"{edge.name}.dropped"))


def _report_error(
    metrics: SessionMetrics,
    outbound: EdgeChannel[protocol.ServerMessage],
    ctx: TurnContext,
    stage: str,
    exc: BaseException,
) -> None:
    """A stage of turn ``ctx`` failed: to the log, the timeline, the metrics and the client."""
    ctx.log.warning("turn %d: %s failed: %r", ctx.turn_id, stage, exc)
    ctx.record("error", stage=stage, error=repr(exc))
    metrics.count(f"{stage}.errors")
    outbound.send_nowait(
        protocol.Error(
            protocol.ErrorCode.PROVIDER,
            f"{type(exc).__name__}: {exc}",
            turn_id=ctx.turn_id,
            stage=stage,
        )
    )


class Session:
    """One voice conversation: providers and a transport, run with ``await session.run()``.

    Args:
        transport: the client connection (e.g. ``transport.memory_transport()`` in tests).
        stt, llm, tts: the providers (see ``voicecore.engine.stages``).
        vad: the VAD; by default ``EnergyVadStage()`` over the Rust energy VAD.
        turn_model: an end-of-turn model (``TurnEndModel``, e.g. Smart Turn); None: a fixed
            silence ends the turn (``config.end_of_turn_silence_ms``).
        history: the conversation; by default a ``ConversationHistory(system_prompt)``.
        system_prompt: the LLM's instructions (when ``history`` is not given).
        config: timings and thresholds.
        pacer: what releases the agent's audio: a ``PlayoutRouter`` shared with other sessions
            (its owner runs ``router.run()``), or a ``FramePacer`` for this session alone (the
            session routes its frames), or None: the session runs its own real-clock pacer.
            A ``clock="virtual"`` pacer moves with Trio's clock (deterministic tests).
        timeline: where stage events go; by default one on the Trio clock.
        session_id: by default a random one.
        canary: an event-loop lag canary to run alongside (its lags go to its timeline).
        gc_policy: told when the agent speaks (an entered ``GcPolicy``), to defer
            collections to silences.

    Attributes:
        metrics: the session's ``SessionMetrics`` (per-turn latencies, counters).
        history: the conversation history (what the user said and heard).
        timeline: the diagnostics timeline.
        turns: the turn machine (its state: who holds the floor, which reply runs).
    """

    def __init__(
        self,
        transport: Transport,
        *,
        stt: STT,
        llm: LLM,
        tts: TTS,
        vad: VAD | None = None,
        turn_model: TurnEndModel | None = None,
        history: ConversationHistory | None = None,
        system_prompt: str = "",
        config: SessionConfig | None = None,
        pacer: Pacer | PlayoutRouter | None = None,
        timeline: Timeline | None = None,
        session_id: str | None = None,
        canary: LoopLagCanary | None = None,
        gc_policy: GcPolicy | None = None,
        conversation: ConversationRecord | None = None,
    ) -> None:
        self.config = config if config is not None else SessionConfig()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.metrics = SessionMetrics(self.session_id)
        self.history = history if history is not None else ConversationHistory(system_prompt)
        if conversation is not None:
            conversation.restore(self.history)
        # A store saves the conversation after each change (``conversation_changed``).
        self._changed = trio.Event()
        self.history.on_change = self._changed.set
        self.timeline = timeline if timeline is not None else Timeline(clock=trio.current_time)
        config = self.config
        predicted = turn_model is not None
        self.turns = TurnMachine(
            TurnTaker(
                sample_rate=STT_SAMPLE_RATE,
                min_speech_ms=config.min_speech_ms,
                barge_in_min_speech_ms=config.barge_in_min_speech_ms,
                end_of_turn_silence_ms=config.end_of_turn_silence_ms,
                complete_silence_ms=config.turn_complete_silence_ms if predicted else None,
                incomplete_silence_ms=config.turn_incomplete_silence_ms if predicted else None,
            ),
            duck=config.duck and "pause" in transport.capabilities,
            duck_timeout_ms=config.duck_timeout_ms,
            backchannel_max_ms=config.backchannel_max_ms,
            preemptive=config.preemptive_replies,
            continuation_ms=config.continuation_ms,
            echo_gated=config.echo_gate,
            first_turn_id=1 if conversation is None else conversation.next_turn_id,
        )
        self._transport = transport
        if isinstance(pacer, PlayoutRouter):
            self._router: PlayoutRouter | None = pacer
            self._owns_router = False
        else:
            self._router = (
                PlayoutRouter(pacer, virtual_tick_ms=self.config.virtual_tick_ms) if pacer else None
            )
            self._owns_router = True
        self._owns_pacer = pacer is None
        self._canary = canary
        self._gc_policy = gc_policy
        # Neither half holds the session (no reference cycle: a finished session is freed at
        # once, not by the GC): they get its channels and these functions of its metrics.
        channel = functools.partial(_edge_channel, self.metrics)
        self._outbound: EdgeChannel[protocol.ServerMessage] = channel(SESSION_TO_TRANSPORT)
        report_error = functools.partial(_report_error, self.metrics, self._outbound)
        # One gate per conversation: the agent's audio (the far end) meets the mic here.
        echo = EchoGate(transport.sample_rate) if config.echo_gate else None
        self._echo = echo
        self._client_underruns = 0
        self._hearing = Hearing(
            stt=stt,
            vad=vad if vad is not None else EnergyVadStage(),
            turn_model=turn_model,
            echo=echo,
            duck_onset_ms=config.duck_onset_ms,
            turns=self.turns,
            mic_rate=transport.input_rate,
            preroll_ms=self.config.stt_preroll_ms,
            final_timeout_s=self.config.stt_final_timeout_s,
            session_id=self.session_id,
            timeline=self.timeline,
            metrics=self.metrics,
            channel=channel,
            send=self._outbound.send_nowait,
            report_error=report_error,
        )
        self._speaking = Speaking(
            llm=llm,
            tts=tts,
            turns=self.turns,
            history=self.history,
            config=self.config,
            rate=transport.sample_rate,
            sink=transport.audio_sink,
            outbound=self._outbound,
            channel=channel,
            metrics=self.metrics,
            timeline=self.timeline,
            gc_policy=gc_policy,
            report_error=report_error,
            echo=echo,
        )
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"Session({self.session_id!r}, {self.turns!r})"

    @property
    def pacer(self) -> Pacer | None:
        """The pacer releasing this session's audio (``run`` creates its own if none given)."""
        return self._router.pacer if self._router is not None else None

    @property
    def router(self) -> PlayoutRouter | None:
        """The router of this session's pacer (``run`` creates one if none was given)."""
        return self._router

    def latency_budget(self, **provider_ms: float) -> LatencyBudget:
        """The voice-to-voice latency budget with this session's configuration."""
        return self.config.latency_budget(**provider_ms)

    @property
    def agent_active(self) -> bool:
        """Whether an agent reply is queued, thinking or speaking (and not cut off)."""
        return self.turns.agent_active

    @property
    def quiet(self) -> bool:
        """Neither party is mid-turn: no user turn open, no reply queued or speaking (a
        moment to close the connection without cutting anyone off)."""
        return self.turns.user_turn is None and not self.turns.agent_active

    # --- running ---------------------------------------------------------------------------

    def conversation(self) -> ConversationRecord:
        """The conversation as a store keeps it: the history, what the reply playing now
        has said so far, the next turn's id (``voicecore.engine.conversation``)."""
        return ConversationRecord.of(
            self.history,
            next_turn_id=self.turns.next_turn_id,
            speaking=self._speaking.speaking_text(),
            owner=self.session_id,
        )

    async def conversation_changed(self) -> None:
        """Returns once the conversation changed since the last call returned (one waiter:
        the server's keeper, which then saves :meth:`conversation`)."""
        await self._changed.wait()
        self._changed = trio.Event()
        self.history.on_change = self._changed.set

    async def run(self) -> None:
        """Runs the conversation until the client hangs up (its ``receive`` ends).

        Every task of the session lives in one nursery; when this returns, none is left.
        """
        if self._router is None:
            pacer = FramePacer(self.config.frame_ms)
            self._router = PlayoutRouter(pacer, virtual_tick_ms=self.config.virtual_tick_ms)
        router = self._router
        # The two halves hand the turn machine's actions back here; the links are cut when
        # the session ends, so nothing keeps a finished session alive in a reference cycle.
        self._hearing.act = self._speaking.act = self._act
        self._speaking.router = router
        try:
            async with trio.open_nursery() as nursery:
                self._hearing.nursery = nursery
                if self._owns_router:
                    nursery.start_soon(router.run)
                nursery.start_soon(self._write)
                nursery.start_soon(self._speaking.run)
                if self._canary is not None:
                    nursery.start_soon(self._canary.run)
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self._hearing.nursery = None
            self._hearing.act = self._speaking.act = None
            self.metrics.update_pacer(self._speaking.playout)
            if self._owns_pacer:
                router.pacer.stop()
            with trio.CancelScope(shield=True):
                await self._transport.aclose()

    async def _read(self) -> None:
        while True:
            try:
                message = await self._transport.receive()
            except (trio.EndOfChannel, trio.ClosedResourceError, trio.BrokenResourceError):
                return
            try:
                if isinstance(message, protocol.Audio):
                    # MIC_TO_DSP is inline: no queue, no task switch per frame.
                    self._hearing.mic_audio(message.pcm)
                elif isinstance(message, protocol.Playout):
                    self.timeline.record("client_cushion", buffered_ms=message.buffered_ms)
                    if self._gc_policy is not None:
                        self._gc_policy.tick()  # bounds the garbage deferred while speaking
                    self._speaking.playout_report(message.buffered_ms)
                    underruns = message.underruns
                    if underruns is not None and underruns > self._client_underruns:
                        # The player ran dry: its timeline moved against the echo's.
                        self._client_underruns = underruns
                        if self._echo is not None:
                            self._echo.realign()
            except (VoicecoreError, ValueError, TypeError) as exc:
                # A malformed message (odd PCM16 length, a bogus report) is the client's
                # mistake: tell it, count it, and keep the conversation going.
                self.metrics.count("client.rejected_messages")
                self._outbound.send_nowait(
                    protocol.Error(protocol.ErrorCode.INVALID_MESSAGE, str(exc), stage="client")
                )

    async def _write(self) -> None:
        async for message in self._outbound:
            await self._transport.send(message)
            if isinstance(message, protocol.AgentText):
                self._speaking.text_sent(message)
                self._changed.set()  # the user hears it now: the record says so

    # --- the turn machine's actions ----------------------------------------------------------

    def _act(self, actions: Sequence[TurnAction]) -> None:
        """Carries out the turn machine's actions, in order (synchronous: no await)."""
        hearing, speaking = self._hearing, self._speaking
        for action in actions:
            if isinstance(action, StartTranscription):
                hearing.start(action)
            elif isinstance(action, StopTranscription):
                hearing.stop(action.turn_id)
            elif isinstance(action, SpeechPaused | SpeechResumed):
                hearing.paused_or_resumed(action)
            elif isinstance(action, EndTranscription):
                hearing.end(action)
            elif isinstance(action, DropTurn):
                hearing.drop(action)
            elif isinstance(action, FalseStart):
                self.timeline.record(
                    "false_interruption" if action.during_agent else "false_start",
                    start_sample=action.start_sample,
                    end_sample=action.end_sample,
                )
                self.metrics.count(
                    "vad.false_interruptions" if action.during_agent else "vad.false_starts"
                )
            elif isinstance(action, PredictTurn):
                hearing.predict(action)
            elif isinstance(action, StartReply):
                if action.preemptive:
                    ctx = hearing.context(action.turn_id)
                else:
                    ctx = hearing.answered(action.turn_id).ctx
                speaking.start(ctx, action.text, preemptive=action.preemptive)
            elif isinstance(action, ConfirmReply):
                hearing.answered(action.turn_id)
                speaking.confirm(action.turn_id)
            elif isinstance(action, DuckReply):
                speaking.duck(action.turn_id)
            elif isinstance(action, ResumeReply):
                speaking.resume(action)
            elif isinstance(action, CutReply):
                speaking.cut(action)
            elif isinstance(action, ReplyAudible):
                speaking.audible(action)
            elif isinstance(action, FinishReply):
                speaking.finish(action)
