"""The session's agent side: one reply at a time, LLM -> chunker -> TTS -> the Rust pacer.

``Speaking`` is one of the two halves the ``Session`` (``voicecore.engine.session``) is made of
(the other is ``Hearing``). Whether a reply starts, is cut or is over is the
``TurnMachine``'s decision; this side runs the reply and tells the machine what happened
(started, audible, failed, finished), handing its actions to ``act``.

* The agent loop takes one answered user turn at a time (``STT_TO_LLM``) and runs its reply
  in its own ``CancelScope``: the LLM's deltas go through the ``SentenceChunker`` to the TTS
  (``LLM_TO_TTS``) as soon as a clause is complete, and the TTS audio, resampled to the
  client's rate, into a Rust ``PacerStream`` (``TTS_TO_PLAYOUT``, backpressure).
* The pacer releases the frames on their deadlines. With a socket sink it writes them to the
  client itself and this side hears only the stream's events (audible, drained, late);
  without one (the in-memory transport) the frames come back and go out as ``AgentAudio``.
* ``cut`` is the barge-in step, synchronous: the reply's scope cancelled, its stream flushed,
  queued agent audio purged and ``clear`` put first in the send queue. ``finish`` records
  what the user heard (the flush report's heard samples, mapped back to words).
* ``duck`` / ``resume``: the user may be talking over the reply: its stream is held and the
  client told to ``pause`` (first in the send queue), until the reply resumes from the exact
  sample or is cut.
* A *preemptive* reply (started on a speculative transcript before the turn ended) runs into
  a held stream and shows the client nothing until ``confirm``: then the user's words enter
  the history, its ``agent_text`` goes out and its audio is released. Cut unconfirmed, it
  leaves no trace but a counter.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import trio

from voicecore import protocol
from voicecore._core import EchoGate, Resampler, SocketSink
from voicecore.diagnostics import GcPolicy, Timeline
from voicecore.engine import pacing
from voicecore.engine.chunker import SentenceChunker
from voicecore.engine.contracts import LLM_TO_TTS, PLAYOUT_TO_CLIENT, STT_TO_LLM, EdgeChannel
from voicecore.engine.history import ConversationHistory, Message, SpokenReply
from voicecore.engine.pacing import (
    FlushReportLike,
    PacerStreamLike,
    ReleasedFrameLike,
    StreamEventLike,
)
from voicecore.engine.playout import PlayoutRouter, PlayoutTotals
from voicecore.engine.settings import SessionConfig
from voicecore.engine.stages import LLM, TTS, AudioChunk, TurnContext, closing, next_within
from voicecore.engine.turn_actions import (
    CutReply,
    FinishReply,
    ReplyAudible,
    ResumeReply,
    TurnAction,
)
from voicecore.engine.turns import TurnMachine
from voicecore.metrics import SessionMetrics

__all__ = ["Reply", "Speaking"]

Act = Callable[[Sequence[TurnAction]], None]
"""Carries out the turn machine's actions (the session's dispatcher)."""
ReportError = Callable[[TurnContext, str, BaseException], None]
"""Tells the client, the log and the metrics that a stage of a turn failed."""


@dataclass(eq=False)
class Reply:
    """The Trio side of one agent reply: its scope, playout stream and what it said.

    Attributes:
        ctx: the turn's context (from its user turn).
        text: what the user said (the prompt's last message).
        scope: the reply's cancel scope (a cut cancels it).
        spoken: the text handed to the TTS with the audio it made (heard-text bookkeeping).
        stream: its pacer stream, once opened.
        flushed: the flush report of a cut.
        barge_in_t0: ``perf_counter`` at the cut of a barge-in.
        tts_started: Trio time of the first TTS call.
        audible_at: Trio time the first frame was released.
        drained: set when the stream has released its last frame after ``finish``.
        preemptive: started before its turn ended and not confirmed yet (held, silent).
        held_texts: its ``agent_text`` messages, kept until it is confirmed.
        ducked: held because the user may be talking over it.
        words_pending: its prompt ends with the user's words, which the history does not
            hold yet (a preemptive reply that started).
        release_after: a confirmed preemptive reply's stream is released once this message
            has gone out.
        sent: the texts of its ``agent_text`` messages that have gone out.
    """

    ctx: TurnContext
    text: str
    preemptive: bool = False
    held_texts: list[protocol.AgentText] = field(default_factory=list)
    ducked: bool = False
    words_pending: bool = False
    release_after: protocol.AgentText | None = None
    sent: list[str] = field(default_factory=list)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    spoken: SpokenReply = field(default_factory=SpokenReply)
    stream: PacerStreamLike | None = None
    flushed: FlushReportLike | None = None
    barge_in_t0: float | None = None
    tts_started: float | None = None
    audible_at: float | None = None
    drained: trio.Event = field(default_factory=trio.Event)


class Speaking:
    """The agent side of one session (see the module's docstring).

    Args:
        llm, tts: the session's providers.
        turns: the session's turn machine.
        history: the conversation history (what the user said and heard).
        config: the session's settings.
        rate: the client's playback rate, in Hz.
        sink: the client's socket, written by the pacer thread itself (None: frames come
            back as ``AgentAudio`` messages).
        outbound: the session's send queue (``SESSION_TO_TRANSPORT``).
        channel: makes a bounded channel for an edge (counting drops in the metrics).
        metrics, timeline: the session's.
        gc_policy: told when the agent speaks.
        report_error: reports a failed stage.
        echo: the session's echo gate, if any: it gets the agent's audio and when it plays.
    """

    def __init__(
        self,
        *,
        llm: LLM,
        tts: TTS,
        turns: TurnMachine,
        history: ConversationHistory,
        config: SessionConfig,
        rate: int,
        sink: SocketSink | None,
        outbound: EdgeChannel[protocol.ServerMessage],
        channel: Callable[[object], EdgeChannel[object]],
        metrics: SessionMetrics,
        timeline: Timeline,
        gc_policy: GcPolicy | None,
        report_error: ReportError,
        echo: EchoGate | None = None,
    ) -> None:
        self.act: Act | None = None
        """The session's dispatcher (connected by the session; None once it has ended)."""
        self.router: PlayoutRouter | None = None
        """The pacer's router (set by the session before it runs)."""
        self.playout = PlayoutTotals()
        """This session's playout figures, over its replies' streams."""
        self._llm, self._tts, self._turns, self._history = llm, tts, turns, history
        self._config, self._rate, self._sink = config, rate, sink
        self._outbound, self._channel = outbound, channel
        self._metrics, self._timeline, self._gc_policy = metrics, timeline, gc_policy
        self._report_error = report_error
        self._echo = echo
        self._replies: dict[int, Reply] = {}
        self._waiting: EdgeChannel[Reply] = channel(STT_TO_LLM)  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Speaking(replies={sorted(self._replies)})"

    def _act(self, actions: Sequence[TurnAction]) -> None:
        if self.act is not None:
            self.act(actions)

    def _send(self, message: protocol.ServerMessage) -> None:
        self._outbound.send_nowait(message)

    def playout_report(self, buffered_ms: float) -> None:
        """The client holds ``buffered_ms`` of agent audio: to the running reply's stream."""
        for reply in self._replies.values():
            if reply.stream is not None and not self._turns.is_cut(reply.ctx.turn_id):
                reply.stream.report_playout(buffered_ms)

    # --- the turn machine's actions on this side ---------------------------------------------

    def start(self, ctx: TurnContext, text: str, *, preemptive: bool = False) -> None:
        """Queues the reply to user turn ``ctx.turn_id``, who said ``text`` (synchronous;
        ``preemptive``: the turn has not ended, hold everything until ``confirm``)."""
        reply = Reply(ctx, text, preemptive)
        if preemptive:
            self._metrics.count("turns.preemptive_started")
            ctx.record("preemptive_start", text=text)
        self._replies[ctx.turn_id] = reply
        try:
            self._waiting.send_nowait(reply)
        except trio.WouldBlock:
            self._report_error(ctx, "engine", RuntimeError("too many user turns waiting"))
            self._act(self._turns.reply_failed(ctx.turn_id))

    def confirm(self, turn_id: int) -> None:
        """The turn ended with the words preemptive reply ``turn_id`` was started on: it is
        the reply now (the user's words recorded, its text shown, its audio released)."""
        reply = self._replies[turn_id]
        reply.preemptive = False
        self._metrics.count("turns.preemptive_confirmed")
        reply.ctx.record("preemptive_confirmed")
        if reply.words_pending:
            # Its prompt already ends with the user's words; the history gets them now.
            self._history.add_user(reply.text)
            reply.words_pending = False
        for message in reply.held_texts:
            self._send(message)
        if reply.held_texts:
            # Released once its text is out (``text_sent``): the pacer thread writes frames to
            # the socket itself, and a frame before the ``agent_text`` naming its turn would
            # be taken for the previous turn's.
            reply.release_after = reply.held_texts[-1]
            reply.held_texts = []
        elif reply.stream is not None and not reply.ducked:
            reply.stream.resume()

    def text_sent(self, message: protocol.AgentText) -> None:
        """``message`` reached the transport: a confirmed reply waiting for it is released."""
        reply = self._replies.get(message.turn_id)
        if reply is None:
            return
        reply.sent.append(message.text)
        if reply.release_after is not message:
            return
        reply.release_after = None
        if reply.stream is not None and not reply.ducked and not reply.preemptive:
            reply.stream.resume()

    def speaking_text(self) -> str:
        """What the reply playing now has said so far (its ``agent_text`` that went out),
        or "" between replies."""
        return " ".join(text for reply in self._replies.values() for text in reply.sent)

    def duck(self, turn_id: int) -> None:
        """The user may be talking over reply ``turn_id``: hold its stream and pause the
        client now (a ``resume`` of it still queued is withdrawn instead: the client has not
        resumed yet)."""
        reply = self._replies[turn_id]
        reply.ducked = True
        if reply.stream is not None:
            reply.stream.hold()
        if self._echo is not None:
            self._echo.set_playing(False)  # its queue waits: the reply may resume
        withdrawn = self._outbound.purge(
            lambda m: isinstance(m, protocol.Resume) and m.turn_id == turn_id
        )
        if not withdrawn:
            self._outbound.push_front(protocol.Pause(turn_id))
        self._metrics.count("turns.ducks")
        reply.ctx.record("duck")

    def resume(self, action: ResumeReply) -> None:
        """Reply ``turn_id`` goes on from the exact sample where it paused."""
        reply = self._replies[action.turn_id]
        reply.ducked = False
        if reply.stream is not None and not reply.preemptive and reply.release_after is None:
            reply.stream.resume()
            if self._echo is not None and reply.audible_at is not None:
                self._echo.set_playing(True)
        self._send(protocol.Resume(action.turn_id))
        self._metrics.count(f"turns.resumed.{action.reason}")
        reply.ctx.record("resume", reason=action.reason)

    def audible(self, action: ReplyAudible) -> None:
        """The reply's first frame was released: voice-to-voice, and the GC policy told."""
        reply = self._replies[action.turn_id]
        ctx = reply.ctx
        if ctx.speech_end is not None and reply.audible_at is not None:
            ctx.metrics.voice_to_voice_ms = 1000 * (reply.audible_at - ctx.speech_end)
        ctx.record("agent_audible")
        if self._gc_policy is not None:
            self._gc_policy.agent_speaking(True, who=self)

    def cut(self, action: CutReply) -> None:
        """Cancels the reply, flushes its playout and clears the client: one synchronous step."""
        reply = self._replies[action.turn_id]
        t0 = time.perf_counter()
        reply.scope.cancel()
        if reply.stream is not None:
            reply.flushed = reply.stream.flush()
        if self._echo is not None and not reply.preemptive:
            self._echo.set_playing(False)
            self._echo.clear_far()  # none of it will play
        if not action.started:
            self._waiting.purge(lambda r: r is reply)
        if reply.preemptive:
            return  # the client never heard of it
        self._outbound.purge(lambda m: isinstance(m, protocol.AgentAudio))
        self._outbound.push_front(protocol.Clear(action.turn_id))
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
            self._metrics.count("turns.barge_ins")

    def finish(self, action: FinishReply) -> None:
        """Records what was heard, the metrics, and frees the reply (synchronous)."""
        reply = self._replies.pop(action.turn_id)
        ctx = reply.ctx
        if reply.preemptive:
            # Started on words the user went on from: wasted work, counted, never heard.
            self._metrics.count("turns.preemptive_cancelled")
            ctx.record("preemptive_cancelled")
            if reply.stream is not None:
                assert self.router is not None
                self.router.close_stream(reply.stream)
            return
        if action.interrupted and reply.barge_in_t0 is not None:
            heard_samples = reply.flushed.heard_samples if reply.flushed is not None else 0
            heard = reply.spoken.heard_text(heard_samples)
        elif action.interrupted:
            # Cut by something else than the user (a failed provider, the connection gone):
            # the client plays out what it was sent, which its texts name.
            heard = " ".join(reply.sent)
        else:
            heard = reply.spoken.text
        if action.interrupted and not action.audible and reply.barge_in_t0 is not None:
            # The user spoke on before a word of it was heard: their words go on into their
            # next turn (the turn machine carries them), not twice into the history.
            self._history.retract_user(reply.text)
        self._history.add_agent(heard, interrupted=action.interrupted)
        ctx.metrics.interrupted = action.interrupted
        if reply.barge_in_t0 is not None:
            ctx.metrics.barge_in_ms = 1000 * (time.perf_counter() - reply.barge_in_t0)
        if reply.stream is not None:
            self.playout.add_stream(reply.stream.stats())
            assert self.router is not None
            self.router.close_stream(reply.stream)
        if action.audible and self._gc_policy is not None:
            self._gc_policy.agent_speaking(False, who=self)
        if self._echo is not None and action.audible:
            self._echo.set_playing(False)  # played out: what is queued (nothing) is dropped
            self._echo.clear_far()
        self._metrics.add_turn(ctx.metrics)
        self._metrics.update_pacer(self.playout)
        ctx.record("turn_cancelled" if action.interrupted else "turn_end")
        self._send(protocol.Metrics(**ctx.metrics.to_dict()))
        self._send(protocol.AgentDone(ctx.turn_id, action.interrupted, heard))

    # --- running replies ---------------------------------------------------------------------

    async def run(self) -> None:
        """The agent loop: one reply at a time until cancelled (run it as a task)."""
        try:
            async for reply in self._waiting:
                turn_id = reply.ctx.turn_id
                self._act(self._turns.reply_started(turn_id))
                try:
                    await self._run_reply(reply)
                except BaseException:
                    self._act(self._turns.close())  # ending: what was not played is not heard
                    raise
                finally:
                    self._act(self._turns.reply_finished(turn_id))
        finally:
            self._act(self._turns.close())  # replies still queued are finished unheard

    async def _run_reply(self, reply: Reply) -> None:
        ctx = reply.ctx
        history, config = self._history, self._config
        with reply.scope:
            if reply.preemptive:
                # The user's words join the history only if the turn confirms them.
                messages = [*history.messages(), Message("user", reply.text)]
                reply.words_pending = True
            else:
                history.add_user(reply.text)
                messages = history.messages()
            ctx.metrics.prompt_tokens = history.prompt_tokens()
            ctx.log.info(
                "turn %d: prompt %d tokens, %d messages (budget %d, %d oldest turns dropped)",
                ctx.turn_id,
                ctx.metrics.prompt_tokens,
                len(messages),
                history.token_budget,
                history.dropped_turns,
            )
            ctx.record("turn_start", prompt_tokens=ctx.metrics.prompt_tokens)
            assert self.router is not None
            stream = self.router.open_stream(
                self._rate,
                functools.partial(self._on_stream_event, reply),
                None if self._sink is not None else functools.partial(self._on_frames, reply),
                cushion_ms=config.cushion_ms,
                queue_ms=config.queue_ms,
                sink=self._sink,
                held=reply.preemptive or reply.ducked,
            )
            reply.stream = stream
            chunks: EdgeChannel[str] = self._channel(LLM_TO_TTS)  # type: ignore[assignment]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._generate, reply, messages, chunks)
                await self._speak(reply, chunks, stream)
            if self._turns.is_cut(ctx.turn_id):
                return
            stream.finish()
            await reply.drained.wait()
            # The client still holds its cushion: the agent speaks until it has played it.
            await trio.sleep(stream.stats().client_buffered_ms / 1000)

    async def _generate(
        self, reply: Reply, messages: list[Message], chunks: EdgeChannel[str]
    ) -> None:
        ctx, config = reply.ctx, self._config
        chunker = SentenceChunker(first_chunk_min_words=config.first_chunk_min_words)
        started = trio.current_time()
        timeout = config.llm_first_token_timeout_s
        try:
            async with closing(self._llm.generate(messages, ctx)) as deltas:
                while True:
                    try:
                        delta = await next_within(deltas, timeout, "LLM: no text")
                    except StopAsyncIteration:
                        break
                    if ctx.metrics.llm_first_token_ms is None:
                        ctx.metrics.llm_first_token_ms = 1000 * (trio.current_time() - started)
                        ctx.record("llm_first_token")
                        timeout = config.llm_token_timeout_s
                    for chunk in chunker.push(delta):
                        await chunks.send(chunk)
            for chunk in chunker.flush():
                await chunks.send(chunk)
        except Exception as exc:
            self._fail(reply, "llm", exc)
        finally:
            chunks.close()

    async def _speak(self, reply: Reply, chunks: EdgeChannel[str], stream: PacerStreamLike) -> None:
        ctx, config = reply.ctx, self._config
        resampler: Resampler | None = None
        async for text in chunks:
            message = protocol.AgentText(ctx.turn_id, text)
            if reply.preemptive:
                reply.held_texts.append(message)
            else:
                self._send(message)
            if reply.tts_started is None:
                reply.tts_started = trio.current_time()
            samples = 0
            timeout = config.tts_first_audio_timeout_s
            try:
                async with closing(self._tts.synthesize(text, ctx)) as audio:
                    while True:
                        try:
                            chunk: AudioChunk = await next_within(audio, timeout, "TTS: no audio")
                        except StopAsyncIteration:
                            break
                        timeout = config.tts_chunk_timeout_s
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
                        if self._echo is not None:
                            self._echo.far_audio(pcm)  # in play order, played from 'started'
                        await pacing.push(stream, pcm)
            except Exception as exc:
                self._fail(reply, "tts", exc)
                return
            finally:
                if samples:
                    reply.spoken.add(text, samples)
        if resampler is not None and not reply.scope.cancel_called:
            tail = resampler.flush()
            if self._echo is not None:
                self._echo.far_audio(tail)
            await pacing.push(stream, tail)

    def _fail(self, reply: Reply, stage: str, exc: Exception) -> None:
        self._report_error(reply.ctx, stage, exc)
        self._act(self._turns.reply_failed(reply.ctx.turn_id))

    # --- the pacer's news (synchronous, on the router's task) --------------------------------

    def _on_stream_event(self, reply: Reply, event: StreamEventLike) -> None:
        if event.kind == "started":
            assert self.router is not None
            reply.audible_at = self.router.trio_time(event.at_ns)
            if self._echo is not None:
                self._echo.set_playing(True)
            self._act(self._turns.reply_audible(reply.ctx.turn_id))
        elif event.kind == "drained":
            reply.drained.set()
        elif event.kind == "late" and event.lateness_ns is not None:
            assert self.router is not None
            self._metrics.late_frames += 1
            self._timeline.record_at(
                self.router.trio_time(event.at_ns),
                "frame_late",
                turn_id=reply.ctx.turn_id,
                lateness_ms=event.lateness_ns / 1e6,
            )

    def _on_frames(self, reply: Reply, frames: list[ReleasedFrameLike]) -> None:
        """Frames of a stream without a socket sink: to the client as ``AgentAudio``."""
        if self._turns.is_cut(reply.ctx.turn_id):
            # Released just before the flush: never sent. Counted.
            self._metrics.count(f"{PLAYOUT_TO_CLIENT.name}.stale_frames", len(frames))
            return
        for frame in frames:
            self._outbound.send_nowait(protocol.AgentAudio(frame.pcm16))
