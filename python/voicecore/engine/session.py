"""The conversation engine's Trio adapter: one voice conversation over one transport.

A ``Session`` carries out what its ``TurnMachine`` (``voicecore.engine.turns``, no Trio)
decides, and runs every task of the conversation in one Trio nursery:

* **reader**: the client's messages; playout reports go to the pacer, and mic audio is
  processed as it arrives (``MIC_TO_DSP``: inline, no queue): resampled to 16 kHz once, through
  the VAD into the turn machine, the speech of a confirmed utterance (from its pre-roll on)
  streamed to its STT task (``DSP_TO_STT``);
* **stt** (one per user turn): partial transcripts go to the client as they come; finals go
  to the turn machine, which decides when the user's turn is over (``STT_TO_LLM``);
* **agent loop**: one reply at a time, each in its own ``CancelScope``: the LLM's deltas go
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

import contextlib
import functools
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

from voicecore import protocol
from voicecore._core import FramePacer, Resampler, SampleRing
from voicecore.diagnostics import GcPolicy, LoopLagCanary, Timeline
from voicecore.engine import pacing
from voicecore.engine.chunker import SentenceChunker
from voicecore.engine.contracts import (
    DSP_TO_STT,
    LLM_TO_TTS,
    PLAYOUT_TO_CLIENT,
    SESSION_TO_TRANSPORT,
    STT_TO_LLM,
    TTS_TO_PLAYOUT,
    EdgeChannel,
    LatencyBudget,
    latency_budget,
)
from voicecore.engine.floor import TurnTaker
from voicecore.engine.history import ConversationHistory, Message, SpokenReply
from voicecore.engine.pacing import (
    FlushReportLike,
    Pacer,
    PacerStreamLike,
    ReleasedFrameLike,
    StreamEventLike,
)
from voicecore.engine.playout import PlayoutRouter, PlayoutTotals
from voicecore.engine.stages import (
    LLM,
    STT,
    STT_SAMPLE_RATE,
    TTS,
    VAD,
    AudioChunk,
    AudioFrame,
    EnergyVadStage,
    TurnContext,
)
from voicecore.engine.transport import Transport
from voicecore.engine.turns import (
    CutReply,
    DropTurn,
    EndTranscription,
    FalseStart,
    FinishReply,
    ReplyAudible,
    SpeechPaused,
    SpeechResumed,
    StartReply,
    StartTranscription,
    StopTranscription,
    TurnAction,
    TurnMachine,
)
from voicecore.exceptions import StageTimeoutError, VoicecoreError
from voicecore.metrics import SessionMetrics, TurnMetrics

__all__ = ["Session", "SessionConfig"]

_log = logging.getLogger("voicecore.engine.session")
T = TypeVar("T")
PREROLL_MS = 2000
"""Recent 16 kHz audio kept (a ring) to hand an utterance to the STT from before its first
speech sample (``SessionConfig.stt_preroll_ms``)."""


@dataclass(frozen=True)
class SessionConfig:
    """A session's settings (durations in ms unless the name says ``_s``: seconds).

    Attributes:
        end_of_turn_silence_ms: silence after the user's speech that ends their turn (an STT
            final during it ends the turn at once).
        min_speech_ms: shorter speech starts nothing (a cough, a click).
        barge_in_min_speech_ms: speech must last this long to interrupt the agent; shorter
            speech during agent audio is a false interruption.
        stt_preroll_ms: audio from before the VAD's speech start that the STT also gets.
            A VAD reports the start late (its onset criteria, a neural gate's pad: 170-370
            ms after the first word began, measured on real speech), and an STT that
            starts there loses the first word. Longer costs a little more decoding and
            may hand the STT a breath or a click; it is bounded by the 2 s ring.
        stt_final_timeout_s: after the end of turn, the STT's final must come within this.
        llm_first_token_timeout_s: time allowed to the LLM's first delta.
        llm_token_timeout_s: time allowed between LLM deltas.
        tts_first_audio_timeout_s: time allowed to a TTS call's first chunk.
        tts_chunk_timeout_s: time allowed between a TTS call's chunks.
        frame_ms: frame duration of the session's own pacer (10, 20 or 40).
        cushion_ms: target client cushion (``PLAYOUT_TO_CLIENT``'s bound by default).
        queue_ms: playout queue capacity (``TTS_TO_PLAYOUT``'s bound by default).
        first_chunk_min_words: the chunker's first clause needs this many words.
        virtual_tick_ms: step of a virtual pacer clock driven from Trio time.
    """

    end_of_turn_silence_ms: float = 500.0
    min_speech_ms: float = 200.0
    barge_in_min_speech_ms: float = 300.0
    stt_preroll_ms: float = 300.0
    stt_final_timeout_s: float = 3.0
    llm_first_token_timeout_s: float = 10.0
    llm_token_timeout_s: float = 5.0
    tts_first_audio_timeout_s: float = 5.0
    tts_chunk_timeout_s: float = 5.0
    frame_ms: int = 20
    cushion_ms: int = PLAYOUT_TO_CLIENT.bound
    queue_ms: int = TTS_TO_PLAYOUT.bound
    first_chunk_min_words: int = 4
    virtual_tick_ms: float = 1.0

    def __post_init__(self) -> None:
        if not 0 <= self.stt_preroll_ms <= PREROLL_MS:
            raise ValueError(f"stt_preroll_ms must be 0-{PREROLL_MS} ms, got {self.stt_preroll_ms}")
        for name in ("end_of_turn_silence_ms", "min_speech_ms", "barge_in_min_speech_ms"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 ms, got {getattr(self, name)}")
        for name in (
            "stt_final_timeout_s",
            "llm_first_token_timeout_s",
            "llm_token_timeout_s",
            "tts_first_audio_timeout_s",
            "tts_chunk_timeout_s",
            "virtual_tick_ms",
        ):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.frame_ms not in (10, 20, 40):
            raise ValueError(f"frame_ms must be 10, 20 or 40, got {self.frame_ms}")
        for name in ("cushion_ms", "queue_ms"):
            if getattr(self, name) < self.frame_ms:
                raise ValueError(f"{name} must be >= frame_ms ({self.frame_ms} ms)")
        if self.first_chunk_min_words < 1:
            raise ValueError("first_chunk_min_words must be >= 1")

    def latency_budget(self, **provider_ms: float) -> LatencyBudget:
        """The voice-to-voice budget with this configuration (provider figures overridable,
        see ``contracts.latency_budget``)."""
        return latency_budget(
            end_of_turn_silence_ms=self.end_of_turn_silence_ms,
            frame_ms=self.frame_ms,
            **provider_ms,
        )


@contextlib.asynccontextmanager
async def _closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Closes a provider's async iterator on exit, even when cancelled (no stream stays open)."""
    try:
        yield iterator
    finally:
        aclose: Callable[[], Any] | None = getattr(iterator, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


async def _next(iterator: AsyncIterator[T], timeout_s: float, what: str) -> T:
    """The iterator's next item within ``timeout_s``; raises StopAsyncIteration at its end."""
    with trio.move_on_after(timeout_s) as scope:
        return await iterator.__anext__()
    assert scope.cancelled_caught
    raise StageTimeoutError(f"{what} within {timeout_s:g} s")


@dataclass(eq=False)
class _Transcription:
    """The Trio side of one user turn: its STT call's audio, scope and clock."""

    ctx: TurnContext
    audio: EdgeChannel[AudioFrame]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    final_at: float | None = None


@dataclass(eq=False)
class _Reply:
    """The Trio side of one agent reply: its scope, playout stream and what it said."""

    ctx: TurnContext
    text: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    spoken: SpokenReply = field(default_factory=SpokenReply)
    stream: PacerStreamLike | None = None
    flushed: FlushReportLike | None = None
    barge_in_t0: float | None = None
    tts_started: float | None = None
    audible_at: float | None = None
    drained: trio.Event = field(default_factory=trio.Event)


class Session:
    """One voice conversation: providers and a transport, run with ``await session.run()``.

    Args:
        transport: the client connection (e.g. ``transport.memory_transport()`` in tests).
        stt, llm, tts: the providers (see ``voicecore.engine.stages``).
        vad: the VAD; by default ``EnergyVadStage()`` over the Rust energy VAD.
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
        history: ConversationHistory | None = None,
        system_prompt: str = "",
        config: SessionConfig | None = None,
        pacer: Pacer | PlayoutRouter | None = None,
        timeline: Timeline | None = None,
        session_id: str | None = None,
        canary: LoopLagCanary | None = None,
        gc_policy: GcPolicy | None = None,
    ) -> None:
        self.config = config if config is not None else SessionConfig()
        self.session_id = session_id or uuid.uuid4().hex[:12]
        self.metrics = SessionMetrics(self.session_id)
        self.history = history if history is not None else ConversationHistory(system_prompt)
        self.timeline = timeline if timeline is not None else Timeline(clock=trio.current_time)
        self.turns = TurnMachine(
            TurnTaker(
                sample_rate=STT_SAMPLE_RATE,
                min_speech_ms=self.config.min_speech_ms,
                barge_in_min_speech_ms=self.config.barge_in_min_speech_ms,
                end_of_turn_silence_ms=self.config.end_of_turn_silence_ms,
            )
        )
        self._transport = transport
        self._stt, self._llm, self._tts = stt, llm, tts
        self._vad: VAD = vad if vad is not None else EnergyVadStage()
        if isinstance(pacer, PlayoutRouter):
            self._router: PlayoutRouter | None = pacer
            self._owns_router = False
        else:
            self._router = (
                PlayoutRouter(pacer, virtual_tick_ms=self.config.virtual_tick_ms) if pacer else None
            )
            self._owns_router = True
        self._owns_pacer = pacer is None
        self._playout = PlayoutTotals()
        self._canary = canary
        self._gc_policy = gc_policy
        self._rate = transport.sample_rate
        self._sink = transport.audio_sink
        mic_rate = transport.input_rate
        self._to_16k = Resampler(mic_rate, STT_SAMPLE_RATE) if mic_rate != STT_SAMPLE_RATE else None
        self._preroll = SampleRing(PREROLL_MS * STT_SAMPLE_RATE // 1000, "overwrite")
        self._samples = 0  # 16 kHz samples processed
        self._audio_now = 0.0  # Trio time of the end of the last processed audio
        self._outbound: EdgeChannel[protocol.ServerMessage] = self._channel(SESSION_TO_TRANSPORT)
        self._replies_waiting: EdgeChannel[_Reply] = self._channel(STT_TO_LLM)
        self._transcriptions: dict[int, _Transcription] = {}
        self._replies: dict[int, _Reply] = {}
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        return f"Session({self.session_id!r}, {self.turns!r})"

    @property
    def pacer(self) -> Pacer | None:
        """The pacer releasing this session's audio (``run`` creates its own if none given)."""
        return self._router.pacer if self._router is not None else None

    def _channel(self, edge: Any) -> EdgeChannel[Any]:
        # Bound to the metrics, not to the session: a channel must not hold its session in
        # a reference cycle (a finished session is freed at once, not by the GC).
        return EdgeChannel(
            edge, on_drop=functools.partial(self.metrics.count, f"{edge.name}.dropped")
        )

    def latency_budget(self, **provider_ms: float) -> LatencyBudget:
        """The voice-to-voice latency budget with this session's configuration."""
        return self.config.latency_budget(**provider_ms)

    @property
    def agent_active(self) -> bool:
        """Whether an agent reply is queued, thinking or speaking (and not cut off)."""
        return self.turns.agent_active

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Runs the conversation until the client hangs up (its ``receive`` ends).

        Every task of the session lives in one nursery; when this returns, none is left.
        """
        if self._router is None:
            pacer = FramePacer(self.config.frame_ms)
            self._router = PlayoutRouter(pacer, virtual_tick_ms=self.config.virtual_tick_ms)
        router = self._router
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                if self._owns_router:
                    nursery.start_soon(router.run)
                nursery.start_soon(self._write)
                nursery.start_soon(self._agent_loop)
                if self._canary is not None:
                    nursery.start_soon(self._canary.run)
                await self._read()
                nursery.cancel_scope.cancel()
        finally:
            self._nursery = None
            self.metrics.update_pacer(self._playout)
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
                    pcm = message.pcm
                    self._process(self._to_16k.process(pcm) if self._to_16k is not None else pcm)
                elif isinstance(message, protocol.Playout):
                    self.timeline.record("client_cushion", buffered_ms=message.buffered_ms)
                    if self._gc_policy is not None:
                        self._gc_policy.tick()  # bounds the garbage deferred while speaking
                    for reply in self._replies.values():
                        if reply.stream is not None and not self.turns.is_cut(reply.ctx.turn_id):
                            reply.stream.report_playout(message.buffered_ms)
            except (VoicecoreError, ValueError, TypeError) as exc:
                # A malformed message (odd PCM16 length, a bogus report) is the client's
                # mistake: tell it, count it, and keep the conversation going.
                self.metrics.count("client.rejected_messages")
                self._send(
                    protocol.Error(protocol.ErrorCode.INVALID_MESSAGE, str(exc), stage="client")
                )

    async def _write(self) -> None:
        async for message in self._outbound:
            await self._transport.send(message)

    def _send(self, message: protocol.ServerMessage) -> None:
        self._outbound.send_nowait(message)

    # --- the turn machine's actions ----------------------------------------------------------

    def _act(self, actions: Sequence[TurnAction]) -> None:
        """Carries out the turn machine's actions, in order (synchronous: no await)."""
        for action in actions:
            if isinstance(action, StartTranscription):
                self._start_transcription(action)
            elif isinstance(action, StopTranscription):
                stale = self._transcriptions.pop(action.turn_id, None)
                if stale is not None:
                    stale.scope.cancel()
            elif isinstance(action, SpeechPaused | SpeechResumed):
                self._speech_paused_or_resumed(action)
            elif isinstance(action, EndTranscription):
                self._end_transcription(action)
            elif isinstance(action, FalseStart):
                self.timeline.record(
                    "false_interruption" if action.during_agent else "false_start",
                    start_sample=action.start_sample,
                    end_sample=action.end_sample,
                )
                self.metrics.count(
                    "vad.false_interruptions" if action.during_agent else "vad.false_starts"
                )
            elif isinstance(action, StartReply):
                self._start_reply(action)
            elif isinstance(action, DropTurn):
                self._drop_turn(action)
            elif isinstance(action, CutReply):
                self._cut_reply(action)
            elif isinstance(action, ReplyAudible):
                self._reply_audible(action)
            elif isinstance(action, FinishReply):
                self._finish_reply(action)

    # --- user side: VAD, turn-taking, STT --------------------------------------------------

    def _process(self, pcm: bytes) -> None:
        """VAD and turn-taking over one chunk of 16 kHz audio (synchronous: no await)."""
        frame = AudioFrame(pcm, STT_SAMPLE_RATE, self._samples)
        self._samples = frame.end_sample
        self._audio_now = trio.current_time()
        self._preroll.push(pcm)
        user_turn = self.turns.user_turn
        self._act(
            self.turns.audio(
                self._vad.process(frame),
                speech_until=self._vad.speech_until,
                stream_end=self._samples,
            )
        )
        # The frame goes to the utterance it belongs to (not to one confirmed by this frame:
        # that one got it in its pre-roll).
        transcription = self._transcriptions.get(user_turn) if user_turn is not None else None
        if transcription is not None and not transcription.audio.closed:
            transcription.audio.send_nowait(frame)

    def _sample_time(self, sample: int) -> float:
        """Trio time at which 16 kHz sample ``sample`` was spoken (the mic is real time)."""
        return self._audio_now - (self._samples - sample) / STT_SAMPLE_RATE

    def _start_transcription(self, action: StartTranscription) -> None:
        turn_id, start_sample = action.turn_id, action.start_sample
        ctx = TurnContext(
            turn_id=turn_id,
            session_id=self.session_id,
            speech_start=self._sample_time(start_sample),
            timeline=self.timeline,
            metrics=TurnMetrics(turn_id),
            session_metrics=self.metrics,
            log=logging.LoggerAdapter(_log, {"session": self.session_id, "turn": turn_id}),
        )
        transcription = _Transcription(ctx, self._channel(DSP_TO_STT))
        # Pre-roll: the speech since before its first sample (the VAD reports the start late,
        # and confirms it later still), from the ring.
        preroll = round(self.config.stt_preroll_ms * STT_SAMPLE_RATE / 1000)
        held = min(self._samples - max(start_sample - preroll, 0), self._preroll.capacity)
        transcription.audio.send_nowait(
            AudioFrame(self._preroll.peek_last_bytes(held), STT_SAMPLE_RATE, self._samples - held)
        )
        self._transcriptions[turn_id] = transcription
        ctx.record("speech_start", sample=start_sample)
        self._send(protocol.SpeechStart(start_sample / STT_SAMPLE_RATE, turn_id))
        assert self._nursery is not None
        self._nursery.start_soon(self._transcribe, transcription)

    def _speech_paused_or_resumed(self, action: SpeechPaused | SpeechResumed) -> None:
        user_turn = self.turns.user_turn
        transcription = self._transcriptions.get(user_turn) if user_turn is not None else None
        if transcription is None:
            return
        ctx = transcription.ctx
        if isinstance(action, SpeechPaused):
            ctx.speech_end = self._sample_time(action.end_sample)
            ctx.record("speech_end", sample=action.end_sample)
            self._send(protocol.SpeechEnd(action.end_sample / STT_SAMPLE_RATE, ctx.turn_id))
        else:
            ctx.speech_end = None
            ctx.record("speech_resumed", sample=action.sample)

    def _end_transcription(self, action: EndTranscription) -> None:
        transcription = self._transcriptions.get(action.turn_id)
        if transcription is None:
            return
        ctx = transcription.ctx
        ctx.speech_end = self._sample_time(action.end_sample)
        ctx.record("end_of_turn", by_stt_final=action.by_stt_final)
        transcription.audio.close()
        transcription.scope.deadline = trio.current_time() + self.config.stt_final_timeout_s

    async def _transcribe(self, transcription: _Transcription) -> None:
        ctx = transcription.ctx
        turn_id = ctx.turn_id
        with transcription.scope:
            try:
                async with _closing(self._stt.transcribe(transcription.audio, ctx)) as results:
                    async for result in results:
                        if not self.turns.transcribing(turn_id):
                            break  # answered, dropped or replaced: nothing more is wanted
                        self._send(protocol.Transcript(turn_id, result.text, result.is_final))
                        if result.is_final:
                            transcription.final_at = trio.current_time()
                            ctx.record("stt_final", text=result.text)
                            self._act(
                                self.turns.stt_final(
                                    turn_id, result.text, speech_until=self._vad.speech_until
                                )
                            )
            except Exception as exc:
                self._error(ctx, "stt", exc)
                transcription.audio.close()
                self._act(self.turns.stt_done(turn_id, failed=True))
                return
        if transcription.scope.cancelled_caught and self.turns.transcribing(turn_id):
            timeout = self.config.stt_final_timeout_s
            self._error(ctx, "stt", StageTimeoutError(f"no final within {timeout:g} s"))
            self._act(self.turns.stt_timed_out(turn_id))
        else:
            self._act(self.turns.stt_done(turn_id))

    def _start_reply(self, action: StartReply) -> None:
        """Hands the finished user turn to the agent loop (synchronous)."""
        transcription = self._transcriptions.pop(action.turn_id)
        ctx = transcription.ctx
        if ctx.speech_end is not None and transcription.final_at is not None:
            ctx.metrics.stt_final_ms = 1000 * (transcription.final_at - ctx.speech_end)
        reply = _Reply(ctx, action.text)
        self._replies[action.turn_id] = reply
        try:
            self._replies_waiting.send_nowait(reply)
        except trio.WouldBlock:
            self._error(ctx, "engine", RuntimeError("too many user turns waiting"))
            self._act(self.turns.reply_failed(action.turn_id))

    def _drop_turn(self, action: DropTurn) -> None:
        transcription = self._transcriptions.pop(action.turn_id, None)
        if transcription is not None:
            transcription.ctx.log.info("turn %d: no reply (%s)", action.turn_id, action.reason)
            transcription.audio.close()

    def _error(self, ctx: TurnContext, stage: str, exc: BaseException) -> None:
        ctx.log.warning("turn %d: %s failed: %r", ctx.turn_id, stage, exc)
        ctx.record("error", stage=stage, error=repr(exc))
        self.metrics.count(f"{stage}.errors")
        self._send(
            protocol.Error(
                protocol.ErrorCode.PROVIDER,
                f"{type(exc).__name__}: {exc}",
                turn_id=ctx.turn_id,
                stage=stage,
            )
        )

    # --- agent side: LLM -> chunker -> TTS -> pacer ----------------------------------------

    async def _agent_loop(self) -> None:
        try:
            async for reply in self._replies_waiting:
                turn_id = reply.ctx.turn_id
                self._act(self.turns.reply_started(turn_id))
                try:
                    await self._run_reply(reply)
                except BaseException:
                    self._act(self.turns.close())  # ending: what was not played is not heard
                    raise
                finally:
                    self._act(self.turns.reply_finished(turn_id))
        finally:
            self._act(self.turns.close())  # replies still queued are finished unheard

    async def _run_reply(self, reply: _Reply) -> None:
        ctx = reply.ctx
        with reply.scope:
            self.history.add_user(reply.text)
            messages = self.history.messages()
            ctx.metrics.prompt_tokens = self.history.prompt_tokens()
            ctx.log.info(
                "turn %d: prompt %d tokens, %d messages (budget %d, %d oldest turns dropped)",
                ctx.turn_id,
                ctx.metrics.prompt_tokens,
                len(messages),
                self.history.token_budget,
                self.history.dropped_turns,
            )
            ctx.record("turn_start", prompt_tokens=ctx.metrics.prompt_tokens)
            assert self._router is not None
            stream = self._router.open_stream(
                self._rate,
                functools.partial(self._on_stream_event, reply),
                None if self._sink is not None else functools.partial(self._on_frames, reply),
                cushion_ms=self.config.cushion_ms,
                queue_ms=self.config.queue_ms,
                sink=self._sink,
            )
            reply.stream = stream
            chunks: EdgeChannel[str] = self._channel(LLM_TO_TTS)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._generate, reply, messages, chunks)
                await self._speak(reply, chunks, stream)
            if self.turns.is_cut(ctx.turn_id):
                return
            stream.finish()
            await reply.drained.wait()
            # The client still holds its cushion: the agent speaks until it has played it.
            await trio.sleep(stream.stats().client_buffered_ms / 1000)

    async def _generate(
        self, reply: _Reply, messages: list[Message], chunks: EdgeChannel[str]
    ) -> None:
        ctx = reply.ctx
        chunker = SentenceChunker(first_chunk_min_words=self.config.first_chunk_min_words)
        started = trio.current_time()
        timeout = self.config.llm_first_token_timeout_s
        try:
            async with _closing(self._llm.generate(messages, ctx)) as deltas:
                while True:
                    try:
                        delta = await _next(deltas, timeout, "LLM: no text")
                    except StopAsyncIteration:
                        break
                    if ctx.metrics.llm_first_token_ms is None:
                        ctx.metrics.llm_first_token_ms = 1000 * (trio.current_time() - started)
                        ctx.record("llm_first_token")
                        timeout = self.config.llm_token_timeout_s
                    for chunk in chunker.push(delta):
                        await chunks.send(chunk)
            for chunk in chunker.flush():
                await chunks.send(chunk)
        except Exception as exc:
            self._fail(reply, "llm", exc)
        finally:
            chunks.close()

    async def _speak(
        self, reply: _Reply, chunks: EdgeChannel[str], stream: PacerStreamLike
    ) -> None:
        ctx = reply.ctx
        resampler: Resampler | None = None
        async for text in chunks:
            self._send(protocol.AgentText(ctx.turn_id, text))
            if reply.tts_started is None:
                reply.tts_started = trio.current_time()
            samples = 0
            timeout = self.config.tts_first_audio_timeout_s
            try:
                async with _closing(self._tts.synthesize(text, ctx)) as audio:
                    while True:
                        try:
                            chunk: AudioChunk = await _next(audio, timeout, "TTS: no audio")
                        except StopAsyncIteration:
                            break
                        timeout = self.config.tts_chunk_timeout_s
                        if ctx.metrics.tts_first_audio_ms is None:
                            ctx.metrics.tts_first_audio_ms = 1000 * (
                                trio.current_time() - reply.tts_started
                            )
                            ctx.record("tts_first_audio")
                        if chunk.sample_rate == self._rate:
                            pcm = chunk.pcm
                        else:
                            if resampler is None or resampler.in_rate != chunk.sample_rate:
                                resampler = Resampler(chunk.sample_rate, self._rate)
                            pcm = resampler.process(chunk.pcm)
                        if reply.scope.cancel_called:
                            return  # cut: queue nothing more
                        samples += len(pcm)
                        await pacing.push(stream, pcm)
            except Exception as exc:
                self._fail(reply, "tts", exc)
                return
            finally:
                if samples:
                    reply.spoken.add(text, samples)
        if resampler is not None and not reply.scope.cancel_called:
            await pacing.push(stream, resampler.flush())

    def _on_stream_event(self, reply: _Reply, event: StreamEventLike) -> None:
        """The pacer's news of ``reply``'s stream (synchronous, on the router's task)."""
        if event.kind == "started":
            assert self._router is not None
            reply.audible_at = self._router.trio_time(event.at_ns)
            self._act(self.turns.reply_audible(reply.ctx.turn_id))
        elif event.kind == "drained":
            reply.drained.set()
        elif event.kind == "late" and event.lateness_ns is not None:
            assert self._router is not None
            self.metrics.late_frames += 1
            self.timeline.record_at(
                self._router.trio_time(event.at_ns),
                "frame_late",
                turn_id=reply.ctx.turn_id,
                lateness_ms=event.lateness_ns / 1e6,
            )

    def _on_frames(self, reply: _Reply, frames: list[ReleasedFrameLike]) -> None:
        """Frames of ``reply``'s stream released with no socket sink: they go to the client
        as ``AgentAudio`` messages (synchronous, on the router's task)."""
        if self.turns.is_cut(reply.ctx.turn_id):
            # Released just before the flush: never sent. Counted.
            self.metrics.count(f"{PLAYOUT_TO_CLIENT.name}.stale_frames", len(frames))
            return
        for frame in frames:
            self._outbound.send_nowait(protocol.AgentAudio(frame.pcm16))

    def _reply_audible(self, action: ReplyAudible) -> None:
        reply = self._replies[action.turn_id]
        ctx = reply.ctx
        if ctx.speech_end is not None and reply.audible_at is not None:
            ctx.metrics.voice_to_voice_ms = 1000 * (reply.audible_at - ctx.speech_end)
        ctx.record("agent_audible")
        if self._gc_policy is not None:
            self._gc_policy.agent_speaking(True, who=self)

    # --- ending replies: completion, barge-in, failure ---------------------------------------

    def _cut_reply(self, action: CutReply) -> None:
        """Cancels the reply, flushes its playout and clears the client: one synchronous step."""
        reply = self._replies[action.turn_id]
        t0 = time.perf_counter()
        reply.scope.cancel()
        if reply.stream is not None:
            reply.flushed = reply.stream.flush()
        self._outbound.purge(lambda m: isinstance(m, protocol.AgentAudio))
        self._outbound.push_front(protocol.Clear(action.turn_id))
        if not action.started:
            self._replies_waiting.purge(lambda r: r is reply)
        if action.barge_in:
            reply.barge_in_t0 = t0
            step_ms = 1000 * (time.perf_counter() - t0)  # cancelled, flushed, clear queued
            flushed = reply.flushed
            # What the user would still have heard without the flush and the clear: the
            # queued audio plus what the client holds.
            stale_ms = (
                flushed.dropped_ms + flushed.released_ms - flushed.heard_ms if flushed else 0.0
            )
            reply.ctx.record("barge_in", step_ms=step_ms, stale_audio_ms=stale_ms)
            self.metrics.count("turns.barge_ins")

    def _fail(self, reply: _Reply, stage: str, exc: Exception) -> None:
        self._error(reply.ctx, stage, exc)
        self._act(self.turns.reply_failed(reply.ctx.turn_id))

    def _finish_reply(self, action: FinishReply) -> None:
        """Records what was heard, the metrics, and frees the reply (synchronous)."""
        reply = self._replies.pop(action.turn_id)
        ctx = reply.ctx
        if action.interrupted:
            heard_samples = reply.flushed.heard_samples if reply.flushed is not None else 0
            heard = reply.spoken.heard_text(heard_samples)
        else:
            heard = reply.spoken.text
        self.history.add_agent(heard, interrupted=action.interrupted)
        ctx.metrics.interrupted = action.interrupted
        if reply.barge_in_t0 is not None:
            ctx.metrics.barge_in_ms = 1000 * (time.perf_counter() - reply.barge_in_t0)
        if reply.stream is not None:
            self._playout.add_stream(reply.stream.stats())
            assert self._router is not None
            self._router.close_stream(reply.stream)
        if action.audible and self._gc_policy is not None:
            self._gc_policy.agent_speaking(False, who=self)
        self.metrics.add_turn(ctx.metrics)
        self.metrics.update_pacer(self._playout)
        ctx.record("turn_cancelled" if action.interrupted else "turn_end")
        self._send(protocol.Metrics(**ctx.metrics.to_dict()))
        self._send(protocol.AgentDone(ctx.turn_id, action.interrupted, heard))
