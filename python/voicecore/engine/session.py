"""The conversation engine: one voice conversation over one transport.

A ``Session`` runs every task of one conversation in one Trio nursery:

* **reader**: the client's messages; playout reports go to the pacer, and mic audio is
  processed as it arrives (``MIC_TO_DSP``): resampled to 16 kHz, through the VAD and
  turn-taking (``TurnTaker``), the speech of a confirmed utterance streamed to its STT task
  (``DSP_TO_STT``);
* **stt** (one per utterance): partial transcripts go to the client as they come; the final
  ends the user's turn (``STT_TO_LLM``);
* **agent loop**: one agent turn at a time, each in its own ``CancelScope``: the LLM's deltas
  go through the ``SentenceChunker`` to the TTS (``LLM_TO_TTS``) as soon as a chunk is
  complete, and the TTS audio, resampled to the client's rate, into a ``PacerStream``
  (``TTS_TO_PLAYOUT``);
* **playout**: the frames the Rust pacer releases on their deadlines (``PLAYOUT_TO_CLIENT``)
  reach the session through a ``PlayoutRouter`` task (its own, or one shared by many
  sessions). When the transport has an ``audio_sink`` (the WebSocket server's), the pacer
  thread has already written each frame to the client and the session only keeps its
  figures; otherwise frames go out as ``AgentAudio`` through the **writer** task
  (``SESSION_TO_TRANSPORT``), which carries every event and ``Clear`` either way.

Barge-in: when user speech is confirmed while the agent is active (thinking or speaking), the
turn's scope is cancelled, its playout stream flushed and a ``Clear`` queued for the client,
in one synchronous step; the history then keeps only what the user heard.

Example::

    session = Session(transport, stt=my_stt, llm=my_llm, tts=my_tts,
                      system_prompt="You are a helpful voice agent.")
    await session.run()          # until the client hangs up
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import trio

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
from voicecore.engine.history import ConversationHistory, Message, SpokenReply
from voicecore.engine.pacing import (
    FlushReportLike,
    Pacer,
    PacerStreamLike,
    ReleasedFrameLike,
    StreamStatsLike,
)
from voicecore.engine.playout import PlayoutRouter
from voicecore.engine.stages import (
    LLM,
    STT,
    STT_SAMPLE_RATE,
    TTS,
    VAD,
    AudioChunk,
    AudioFrame,
    EnergyVadStage,
    StageTimeoutError,
    TurnContext,
)
from voicecore.engine.transport import (
    AgentAudio,
    Clear,
    Event,
    MicAudio,
    PlayoutReport,
    ServerMessage,
    Transport,
)
from voicecore.engine.turns import (
    Action,
    EndOfTurn,
    FalseStart,
    SpeechPaused,
    SpeechResumed,
    TurnTaker,
    UtteranceConfirmed,
)
from voicecore.exceptions import VoicecoreError
from voicecore.metrics import SessionMetrics, TurnMetrics, percentile

__all__ = ["Session", "SessionConfig"]

_log = logging.getLogger("voicecore.engine.session")
T = TypeVar("T")
PREROLL_MS = 2000
"""Recent 16 kHz audio kept to hand an utterance to the STT from its first speech sample."""


@dataclass(frozen=True)
class SessionConfig:
    """A session's settings (durations in ms unless the name says ``_s``: seconds).

    Attributes:
        end_of_turn_silence_ms: silence after the user's speech that ends their turn (an STT
            final during it ends the turn at once).
        min_speech_ms: shorter speech starts nothing (a cough, a click).
        barge_in_min_speech_ms: speech must last this long to interrupt the agent; shorter
            speech during agent audio is a false interruption.
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


class _PlayoutTotals:
    """This session's playout figures over its turns' pacer streams (``PacerStatsLike``):
    counters summed over the streams, lateness of the frames it sent (percentiles over the
    most recent ``LATENESS_WINDOW`` frames, maximum over all)."""

    LATENESS_WINDOW = 10_000

    def __init__(self) -> None:
        self.frames_released = 0
        self.underruns = 0
        self.dropped_samples = 0
        self._lateness: deque[float] = deque(maxlen=self.LATENESS_WINDOW)
        self._max_ms = 0.0

    def add_stream(self, stats: StreamStatsLike) -> None:
        self.underruns += stats.underruns
        self.dropped_samples += stats.dropped_samples

    def observe(self, lateness_ms: float) -> None:
        self.frames_released += 1
        self._lateness.append(lateness_ms)
        self._max_ms = max(self._max_ms, lateness_ms)

    def _quantile(self, q: float) -> float:
        return percentile(sorted(self._lateness), q) if self._lateness else 0.0

    @property
    def lateness_p50_ms(self) -> float:
        return self._quantile(50)

    @property
    def lateness_p99_ms(self) -> float:
        return self._quantile(99)

    @property
    def lateness_max_ms(self) -> float:
        return self._max_ms


@dataclass(eq=False)
class _Utterance:
    """One user utterance being transcribed."""

    ctx: TurnContext
    audio: EdgeChannel[AudioFrame]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finals: list[str] = field(default_factory=list)
    ended: bool = False
    stt_done: bool = False
    final_at: float | None = None
    submitted: bool = False


@dataclass(eq=False)
class _AgentTurn:
    """One agent reply: from the end of the user's turn until its audio has been played."""

    ctx: TurnContext
    text: str
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    reply: SpokenReply = field(default_factory=SpokenReply)
    stream: PacerStreamLike | None = None
    flushed: FlushReportLike | None = None
    cut: bool = False
    barge_in_t0: float | None = None
    tts_started: float | None = None
    tts_done: bool = False
    drained: trio.Event = field(default_factory=trio.Event)
    speaking: bool = False  # a frame of it has been released
    finished: bool = False


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
        self._playout = _PlayoutTotals()
        self._canary = canary
        self._gc_policy = gc_policy
        self._rate = transport.sample_rate
        self._sink = transport.audio_sink
        self._log = logging.LoggerAdapter(_log, {"session": self.session_id})
        self._turn_taker = TurnTaker(
            sample_rate=STT_SAMPLE_RATE,
            min_speech_ms=self.config.min_speech_ms,
            barge_in_min_speech_ms=self.config.barge_in_min_speech_ms,
            end_of_turn_silence_ms=self.config.end_of_turn_silence_ms,
        )
        mic_rate = transport.input_rate
        self._to_16k = Resampler(mic_rate, STT_SAMPLE_RATE) if mic_rate != STT_SAMPLE_RATE else None
        self._preroll = SampleRing(PREROLL_MS * STT_SAMPLE_RATE // 1000, "overwrite")
        self._samples = 0  # 16 kHz samples processed
        self._audio_now = 0.0  # Trio time of the end of the last processed audio
        self._outbound: EdgeChannel[ServerMessage] = self._channel(SESSION_TO_TRANSPORT)
        self._user_turns: EdgeChannel[_AgentTurn] = self._channel(STT_TO_LLM)
        self._turn_ids = itertools.count(1)
        self._utterance: _Utterance | None = None
        self._turn: _AgentTurn | None = None
        self._nursery: trio.Nursery | None = None

    def __repr__(self) -> str:
        turn = self._turn.ctx.turn_id if self._turn else None
        return f"Session({self.session_id!r}, turn={turn})"

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
        """Whether an agent turn is pending, thinking or speaking (and not cut off)."""
        return self._active_turn() is not None

    def _active_turn(self) -> _AgentTurn | None:
        turn = self._turn
        return turn if turn is not None and not turn.cut else None

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
                if isinstance(message, MicAudio):
                    # MIC_TO_DSP is inline: no queue, no task switch per frame.
                    pcm = message.pcm
                    self._process(self._to_16k.process(pcm) if self._to_16k is not None else pcm)
                elif isinstance(message, PlayoutReport):
                    turn = self._active_turn()
                    self.timeline.record("client_cushion", buffered_ms=message.buffered_ms)
                    if turn is not None and turn.stream is not None:
                        turn.stream.report_playout(message.buffered_ms)
            except (VoicecoreError, ValueError, TypeError) as exc:
                # A malformed message (odd PCM16 length, a bogus report) is the client's
                # mistake: tell it, count it, and keep the conversation going.
                self.metrics.count("client.rejected_messages")
                self._send({"type": "error", "stage": "client", "message": str(exc)})

    async def _write(self) -> None:
        async for message in self._outbound:
            await self._transport.send(message)

    def _send(self, data: dict[str, Any]) -> None:
        self._outbound.send_nowait(Event(data))

    # --- user side: VAD, turn-taking, STT --------------------------------------------------

    def _process(self, pcm: bytes) -> None:
        """VAD and turn-taking over one chunk of 16 kHz audio (synchronous: no await)."""
        frame = AudioFrame(pcm, STT_SAMPLE_RATE, self._samples)
        self._samples = frame.end_sample
        self._audio_now = trio.current_time()
        self._preroll.push(pcm)
        events = self._vad.process(frame)
        utterance = self._utterance
        actions = self._turn_taker.on_audio(
            events,
            speech_until=self._vad.speech_until,
            stream_end=self._samples,
            agent_active=self.agent_active,
        )
        self._apply(actions)
        if utterance is not None and utterance is self._utterance and not utterance.audio.closed:
            utterance.audio.send_nowait(frame)

    def _sample_time(self, sample: int) -> float:
        """Trio time at which 16 kHz sample ``sample`` was spoken (the mic is real time)."""
        return self._audio_now - (self._samples - sample) / STT_SAMPLE_RATE

    def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            if isinstance(action, UtteranceConfirmed):
                active = self._active_turn()
                if active is not None:
                    self._barge_in(active, time.perf_counter())
                self._start_utterance(action.start_sample)
            elif isinstance(action, FalseStart):
                self.timeline.record(
                    "false_interruption" if action.during_agent else "false_start",
                    start_sample=action.start_sample,
                    end_sample=action.end_sample,
                )
                self.metrics.count(
                    "vad.false_interruptions" if action.during_agent else "vad.false_starts"
                )
            elif self._utterance is not None:
                ctx = self._utterance.ctx
                if isinstance(action, SpeechPaused):
                    ctx.speech_end = self._sample_time(action.end_sample)
                    ctx.record("speech_end", sample=action.end_sample)
                elif isinstance(action, SpeechResumed):
                    ctx.speech_end = None
                    ctx.record("speech_resumed", sample=action.sample)
                elif isinstance(action, EndOfTurn):
                    self._end_of_turn(self._utterance, action)

    def _start_utterance(self, start_sample: int) -> None:
        previous = self._utterance
        if previous is not None and not previous.submitted:
            # The user spoke again before the previous utterance's final: a new turn replaces it.
            previous.scope.cancel()
        turn_id = next(self._turn_ids)
        ctx = TurnContext(
            turn_id=turn_id,
            session_id=self.session_id,
            speech_start=self._sample_time(start_sample),
            timeline=self.timeline,
            metrics=TurnMetrics(turn_id),
            session_metrics=self.metrics,
            log=logging.LoggerAdapter(_log, {"session": self.session_id, "turn": turn_id}),
        )
        utterance = _Utterance(ctx, self._channel(DSP_TO_STT))
        # Pre-roll: the speech since its first sample, which the VAD confirmed late.
        held = min(self._samples - start_sample, self._preroll.capacity)
        utterance.audio.send_nowait(
            AudioFrame(self._preroll.peek_last_bytes(held), STT_SAMPLE_RATE, self._samples - held)
        )
        self._utterance = utterance
        ctx.record("speech_start", sample=start_sample)
        assert self._nursery is not None
        self._nursery.start_soon(self._transcribe, utterance)

    def _end_of_turn(self, utterance: _Utterance, action: EndOfTurn) -> None:
        utterance.ended = True
        utterance.ctx.speech_end = self._sample_time(action.end_sample)
        utterance.ctx.record("end_of_turn", by_stt_final=action.by_stt_final)
        utterance.audio.close()
        utterance.scope.deadline = trio.current_time() + self.config.stt_final_timeout_s
        if utterance.stt_done or action.by_stt_final:
            self._submit(utterance)

    async def _transcribe(self, utterance: _Utterance) -> None:
        ctx = utterance.ctx
        with utterance.scope:
            try:
                async with _closing(self._stt.transcribe(utterance.audio, ctx)) as transcripts:
                    async for transcript in transcripts:
                        self._send(
                            {
                                "type": "transcript",
                                "turn_id": ctx.turn_id,
                                "text": transcript.text,
                                "final": transcript.is_final,
                            }
                        )
                        if not transcript.is_final:
                            continue
                        utterance.finals.append(transcript.text)
                        utterance.final_at = trio.current_time()
                        ctx.record("stt_final", text=transcript.text)
                        if not utterance.ended and utterance is self._utterance:
                            speech_until = self._vad.speech_until
                            self._apply(self._turn_taker.on_stt_final(speech_until=speech_until))
                        if utterance.ended:
                            break
            except Exception as exc:
                self._error(ctx, "stt", exc)
                utterance.submitted = True  # dropped: nothing to answer
                utterance.audio.close()
                return
        utterance.stt_done = True
        if utterance.scope.cancelled_caught and not utterance.submitted:
            if utterance.ended:
                self._error(
                    ctx,
                    "stt",
                    StageTimeoutError(f"no final within {self.config.stt_final_timeout_s:g} s"),
                )
            else:
                return  # replaced by a newer utterance
        if utterance.ended:
            self._submit(utterance)

    def _submit(self, utterance: _Utterance) -> None:
        """Hands the finished user turn to the agent loop (synchronous)."""
        if utterance.submitted:
            return
        utterance.submitted = True
        ctx = utterance.ctx
        if ctx.speech_end is not None and utterance.final_at is not None:
            ctx.metrics.stt_final_ms = 1000 * (utterance.final_at - ctx.speech_end)
        text = " ".join(t.strip() for t in utterance.finals if t.strip())
        if not text:
            ctx.log.info("turn %d: nothing recognized, no reply", ctx.turn_id)
            return
        turn = _AgentTurn(ctx, text)
        try:
            self._user_turns.send_nowait(turn)
        except trio.WouldBlock:
            self._error(ctx, "engine", RuntimeError("too many user turns waiting"))
            return
        self._turn = turn

    def _error(self, ctx: TurnContext, stage: str, exc: BaseException) -> None:
        ctx.log.warning("turn %d: %s failed: %r", ctx.turn_id, stage, exc)
        ctx.record("error", stage=stage, error=repr(exc))
        self.metrics.count(f"{stage}.errors")
        self._send(
            {
                "type": "error",
                "turn_id": ctx.turn_id,
                "stage": stage,
                "message": f"{type(exc).__name__}: {exc}",
            }
        )

    # --- agent side: LLM -> chunker -> TTS -> pacer ----------------------------------------

    async def _agent_loop(self) -> None:
        async for turn in self._user_turns:
            try:
                await self._run_turn(turn)
            except BaseException:
                self._cut(turn)  # the session is ending: what was not played is not heard
                raise
            finally:
                self._finish_turn(turn)

    async def _run_turn(self, turn: _AgentTurn) -> None:
        ctx = turn.ctx
        with turn.scope:
            self.history.add_user(turn.text)
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
                functools.partial(self._on_frames, turn),
                cushion_ms=self.config.cushion_ms,
                queue_ms=self.config.queue_ms,
                sink=self._sink,
            )
            turn.stream = stream
            chunks: EdgeChannel[str] = self._channel(LLM_TO_TTS)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._generate, turn, messages, chunks)
                await self._speak(turn, chunks, stream)
            if turn.cut:
                return
            stream.finish()
            turn.tts_done = True
            self._check_drained(turn)
            await turn.drained.wait()
            # The client still holds its cushion: the agent speaks until it has played it.
            await trio.sleep(stream.stats().client_buffered_ms / 1000)

    async def _generate(
        self, turn: _AgentTurn, messages: list[Message], chunks: EdgeChannel[str]
    ) -> None:
        ctx = turn.ctx
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
            self._fail(turn, "llm", exc)
        finally:
            chunks.close()

    async def _speak(
        self, turn: _AgentTurn, chunks: EdgeChannel[str], stream: PacerStreamLike
    ) -> None:
        ctx = turn.ctx
        resampler: Resampler | None = None
        async for text in chunks:
            self._send({"type": "agent_text", "turn_id": ctx.turn_id, "text": text})
            if turn.tts_started is None:
                turn.tts_started = trio.current_time()
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
                                trio.current_time() - turn.tts_started
                            )
                            ctx.record("tts_first_audio")
                        if chunk.sample_rate == self._rate:
                            pcm = chunk.pcm
                        else:
                            if resampler is None or resampler.in_rate != chunk.sample_rate:
                                resampler = Resampler(chunk.sample_rate, self._rate)
                            pcm = resampler.process(chunk.pcm)
                        if turn.scope.cancel_called:
                            return  # resumed after a barge-in: queue nothing more
                        samples += len(pcm)
                        await pacing.push(stream, pcm)
            except Exception as exc:
                self._fail(turn, "tts", exc)
                return
            finally:
                if samples:
                    turn.reply.add(text, samples)
        if resampler is not None and not turn.scope.cancel_called:
            await pacing.push(stream, resampler.flush())

    def _check_drained(self, turn: _AgentTurn) -> None:
        if turn.tts_done and turn.stream is not None and turn.stream.stats().queued_samples == 0:
            turn.drained.set()

    def _on_frames(self, turn: _AgentTurn, frames: list[ReleasedFrameLike]) -> None:
        """The pacer released frames of ``turn``'s stream: to the client, unless the pacer
        wrote them to the transport's sink itself; the turn's figures (synchronous)."""
        if turn.cut:
            # Released just before the flush: never sent, or (with a sink) sent just ahead of
            # the clear that makes the client drop them. Counted either way.
            self.metrics.count(f"{PLAYOUT_TO_CLIENT.name}.stale_frames", len(frames))
            return
        assert self._router is not None
        ctx = turn.ctx
        for frame in frames:
            released = self._router.trio_time(frame.released_ns)
            lateness_ms = frame.lateness_ns / 1e6
            if not turn.speaking:
                turn.speaking = True
                if ctx.speech_end is not None:
                    ctx.metrics.voice_to_voice_ms = 1000 * (released - ctx.speech_end)
                if self._gc_policy is not None:
                    self._gc_policy.agent_speaking(True, who=self)
            self.timeline.record_at(
                released,
                "audio_released",
                turn_id=ctx.turn_id,
                seq=frame.seq,
                lateness_ms=lateness_ms,
            )
            self.metrics.observe_frame(lateness_ms)
            self._playout.observe(lateness_ms)
            if self._sink is None:  # else the pacer already wrote it to the client
                self._outbound.send_nowait(
                    AgentAudio(frame.pcm16, self._rate, ctx.turn_id, frame.seq)
                )
        self._check_drained(turn)
        if self._gc_policy is not None:
            self._gc_policy.tick()  # bounds the garbage deferred while speaking

    # --- ending turns: completion, barge-in, failure ---------------------------------------

    def _cut(self, turn: _AgentTurn) -> None:
        """Cancels the turn, flushes its playout and clears the client: one synchronous step."""
        if turn.cut:
            return
        turn.cut = True
        turn.scope.cancel()
        if turn.stream is not None:
            turn.flushed = turn.stream.flush()
        turn_id = turn.ctx.turn_id
        self._outbound.purge(lambda m: isinstance(m, AgentAudio) and m.turn_id == turn_id)
        self._outbound.push_front(Clear(turn_id))
        if self._user_turns.purge(lambda t: t is turn):
            self._finish_turn(turn)  # never started: nothing else will finish it

    def _barge_in(self, turn: _AgentTurn, t0: float) -> None:
        turn.barge_in_t0 = t0
        self._cut(turn)
        step_ms = 1000 * (time.perf_counter() - t0)  # cancel requested, flushed, clear queued
        flushed = turn.flushed
        # What the user would still have heard without the flush and the clear: the queued
        # audio plus what the client holds.
        stale_ms = flushed.dropped_ms + flushed.released_ms - flushed.heard_ms if flushed else 0.0
        turn.ctx.record("barge_in", step_ms=step_ms, stale_audio_ms=stale_ms)
        self.metrics.count("turns.barge_ins")

    def _fail(self, turn: _AgentTurn, stage: str, exc: Exception) -> None:
        self._error(turn.ctx, stage, exc)
        self._cut(turn)

    def _finish_turn(self, turn: _AgentTurn) -> None:
        """Records what was heard, the metrics, and frees the turn (synchronous)."""
        if turn.finished:
            return
        turn.finished = True
        ctx = turn.ctx
        if turn.cut:
            heard_samples = turn.flushed.heard_samples if turn.flushed is not None else 0
            heard = turn.reply.heard_text(heard_samples)
        else:
            heard = turn.reply.text
        self.history.add_agent(heard, interrupted=turn.cut)
        ctx.metrics.interrupted = turn.cut
        if turn.barge_in_t0 is not None:
            ctx.metrics.barge_in_ms = 1000 * (time.perf_counter() - turn.barge_in_t0)
        if turn.stream is not None:
            self._playout.add_stream(turn.stream.stats())
            assert self._router is not None
            self._router.close_stream(turn.stream)
        if self._turn is turn:
            self._turn = None
        if turn.speaking and self._gc_policy is not None:
            self._gc_policy.agent_speaking(False, who=self)
        self.metrics.add_turn(ctx.metrics)
        self.metrics.update_pacer(self._playout)
        ctx.record("turn_cancelled" if turn.cut else "turn_end")
        self._send({"type": "metrics", **ctx.metrics.to_dict()})
        self._send(
            {"type": "turn_end", "turn_id": ctx.turn_id, "interrupted": turn.cut, "heard": heard}
        )
