"""The pipeline's stage interfaces (VAD, STT, LLM, TTS), their events and the turn context.

Every stage is a ``typing.Protocol``, so a provider is any object with the right methods: no
base class to inherit, no registration. All of them stream: the STT yields partial
transcripts while audio still flows, the LLM yields text deltas as they are generated, the TTS
yields audio chunks as they are synthesized. The engine (``voicecore.engine.session``) passes a
``TurnContext`` explicitly to every call; stages keep no module-level state.

Cancellation: the engine runs each agent turn in its own Trio ``CancelScope``. A barge-in
cancels it, which raises ``trio.Cancelled`` at the stage's next checkpoint; the engine closes
the stage's async iterator (``aclose``), so a provider releases its resources (HTTP streams,
sockets) in ``finally`` blocks or ``async with`` bodies. A stage must never swallow
``trio.Cancelled``.

Errors: any ``Exception`` a stage raises ends the current turn only: the engine sends an error
event to the client, logs it, and the next turn starts afresh. A stage that stalls is cut off
by the engine's timeouts (``SessionConfig``), with the same effect.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

import numpy as np
import numpy.typing as npt
import trio

from voicecore._core import EnergyVad
from voicecore.exceptions import StageTimeoutError

if TYPE_CHECKING:
    from voicecore.diagnostics import Timeline
    from voicecore.engine.history import Message
    from voicecore.metrics import SessionMetrics, TurnMetrics

__all__ = [
    "LLM",
    "STT",
    "TTS",
    "VAD",
    "AudioChunk",
    "AudioFrame",
    "EnergyVadStage",
    "Hypothesis",
    "SpeechEnded",
    "SpeechStarted",
    "TurnContext",
    "TurnEndModel",
    "VadEvent",
    "closing",
    "next_within",
]

T = TypeVar("T")

STT_SAMPLE_RATE = 16000
"""The rate (Hz) of the audio the engine gives the VAD and the STT."""


@dataclass(frozen=True, slots=True)
class AudioFrame:
    """A chunk of mono PCM16 audio (typically 20 ms) at a known position in its stream.

    Attributes:
        pcm: PCM16 little-endian samples (2 bytes per sample).
        sample_rate: in Hz.
        start_sample: index of its first sample from the start of the stream.
    """

    pcm: bytes
    sample_rate: int
    start_sample: int

    @property
    def samples(self) -> int:
        """Length in samples."""
        return len(self.pcm) // 2

    @property
    def end_sample(self) -> int:
        """Index one past its last sample."""
        return self.start_sample + self.samples

    @property
    def duration_ms(self) -> float:
        """Duration in ms."""
        return 1000.0 * self.samples / self.sample_rate


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The user started speaking at ``sample`` (index in the 16 kHz VAD stream)."""

    sample: int
    sample_rate: int = STT_SAMPLE_RATE

    @property
    def time_s(self) -> float:
        """``sample / sample_rate``, in seconds from the start of the stream."""
        return self.sample / self.sample_rate


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The user stopped speaking just before ``sample`` (one past the last speech sample)."""

    sample: int
    sample_rate: int = STT_SAMPLE_RATE

    @property
    def time_s(self) -> float:
        """``sample / sample_rate``, in seconds from the start of the stream."""
        return self.sample / self.sample_rate


VadEvent = SpeechStarted | SpeechEnded
"""What a VAD emits: speech boundaries at sample indices of its input stream."""


@dataclass(frozen=True, slots=True)
class Hypothesis:
    """What the STT recognized of the user's current utterance (the engine sends it to the
    client as a ``protocol.Transcript`` of the turn).

    Attributes:
        text: the words so far (partial) or the settled words (final).
        is_final: a final transcript will not be revised; partials replace each other.
        speculative: a partial that decodes all the speech so far, made because the user
            paused: the final will say the same unless they speak on (the engine may start
            the reply on it, ``SessionConfig.preemptive_replies``).
    """

    text: str
    is_final: bool
    speculative: bool = False


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A chunk of synthesized speech.

    Attributes:
        pcm: mono int16 samples.
        sample_rate: their rate in Hz (the engine resamples to the client's rate).
    """

    pcm: npt.NDArray[np.int16]
    sample_rate: int

    @property
    def duration_ms(self) -> float:
        """Duration in ms."""
        return 1000.0 * len(self.pcm) / self.sample_rate


@dataclass(eq=False)
class TurnContext:
    """What every stage call of one turn receives: identity, clock times and handles.

    A turn begins when the user's speech is confirmed and ends when the agent's reply has
    been played (or cut off). Times are on the Trio clock (``trio.current_time()``, seconds).

    Attributes:
        turn_id: 1, 2, 3... within the session.
        session_id: the session's id (for logs and metrics).
        speech_start: when the user started speaking.
        speech_end: when the user stopped speaking (None while they speak).
        timeline: the session's diagnostics timeline (record stage events into it).
        metrics: this turn's latency record (the engine fills it; stages may read it).
        session_metrics: the session's counters (e.g. ``count("stt.retries")``).
        log: a logger whose records carry the session and turn ids.
        extra: per-turn scratch space for providers (e.g. a request id), instead of state
            kept on the provider object across turns.
    """

    turn_id: int
    session_id: str
    speech_start: float
    timeline: Timeline
    metrics: TurnMetrics
    session_metrics: SessionMetrics
    log: logging.LoggerAdapter[logging.Logger]
    speech_end: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def standalone(
        cls,
        session_id: str = "standalone",
        *,
        turn_id: int = 1,
        clock: Callable[[], float] | None = None,
    ) -> TurnContext:
        """A context for calling a stage outside a ``Session`` (scripts, tests, benchmarks):
        a fresh timeline (on ``clock``, default ``time.monotonic``), fresh metrics, and a
        logger named after ``session_id``."""
        from voicecore.diagnostics import Timeline
        from voicecore.metrics import SessionMetrics, TurnMetrics

        return cls(
            turn_id=turn_id,
            session_id=session_id,
            speech_start=0.0,
            timeline=Timeline() if clock is None else Timeline(clock=clock),
            metrics=TurnMetrics(turn_id),
            session_metrics=SessionMetrics(session_id),
            log=logging.LoggerAdapter(logging.getLogger(f"voicecore.{session_id}"), {}),
        )

    def record(self, kind: str, **fields: Any) -> None:
        """Records a stage event of this turn on the session timeline (now, Trio clock)."""
        self.timeline.record(kind, turn_id=self.turn_id, **fields)


@runtime_checkable
class VAD(Protocol):
    """Voice activity detection over the user's audio, frame by frame.

    Contract:
        * input: 16 kHz mono PCM16 ``AudioFrame``s in stream order, of any length (the engine
          sends what the mic delivered, typically 20 ms); ``start_sample`` is contiguous.
        * output: the ``SpeechStarted``/``SpeechEnded`` events the frame completes, with
          sample-accurate indices in the same stream (an event may refer to earlier samples:
          a VAD confirms speech some ms after it began).
        * ``speech_until``: one past the last sample judged speech so far. The engine measures
          the duration of ongoing speech with it (minimum speech duration, false
          interruptions) without waiting for the end event, whose hangover would inflate a
          cough into an utterance.
        * cost: it runs on the event loop; keep it well under a millisecond per frame (the
          default adapter over the Rust ``EnergyVad`` takes ~1 µs per 20 ms frame).
        * errors: an exception here ends the session (a VAD has no per-turn fallback).
    """

    def process(self, frame: AudioFrame) -> Sequence[VadEvent]:
        """Feeds one frame; returns the events it completes, oldest first."""
        ...

    @property
    def speech_until(self) -> int:
        """One past the last sample judged speech so far (0 before any)."""
        ...


@runtime_checkable
class STT(Protocol):
    """Streaming speech-to-text for one user utterance.

    Contract:
        * input: ``audio``, 16 kHz mono PCM16 ``AudioFrame``s of the utterance from its first
          speech sample (pre-roll included), in order, as the user speaks. The iterator ends
          when the engine has decided the turn is over.
        * output: ``Hypothesis``es; partials (``is_final=False``) as soon as words are
          recognized, then at least one final. A final may come early (the STT's own
          endpointing): the engine then ends the turn at once instead of waiting out its
          silence timer. After the input ends, the STT must yield its final within
          ``SessionConfig.stt_final_timeout_s``.
        * rate: partials as often as useful; the engine forwards each to the client.
        * errors: raise any ``Exception``; the utterance is dropped and the user gets an error
          event. Never swallow ``trio.Cancelled``.
    """

    def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        """Transcribes one utterance as it streams in."""
        ...


@runtime_checkable
class LLM(Protocol):
    """Streaming text generation.

    Contract:
        * input: the conversation (``history.Message`` list: the system prompt first, then
          the newest turns that fit the token budget, the user's last turn at the end).
        * output: text deltas (any size: tokens, words) as they are generated. The engine cuts
          them into sentences and synthesizes each as soon as it is complete.
        * timing: the first delta within ``SessionConfig.llm_first_token_timeout_s``, the next
          ones within ``llm_token_timeout_s`` of each other, or the turn fails.
        * cancellation: on barge-in the iterator is closed; stop the request at once.
        * errors: raise any ``Exception``; the turn ends with an error event.
    """

    def generate(self, messages: Sequence[Message], ctx: TurnContext) -> AsyncIterator[str]:
        """Generates the agent's reply to ``messages``, delta by delta."""
        ...


@runtime_checkable
class TTS(Protocol):
    """Streaming text-to-speech for one sentence (or clause) of the agent's reply.

    Contract:
        * input: ``text``, one chunk of the reply (the engine calls it once per chunk, in
          order, while the previous chunk's audio still plays).
        * output: ``AudioChunk``s of mono int16 PCM at any one rate the pacer accepts
          (8000-48000 Hz); the engine resamples them to the client's rate. Yield the first
          chunk as soon as it exists: time to first audio is on the critical path.
        * timing: first chunk within ``SessionConfig.tts_first_audio_timeout_s``, the next ones
          within ``tts_chunk_timeout_s``.
        * cancellation and errors: as for ``LLM``.
    """

    def synthesize(self, text: str, ctx: TurnContext) -> AsyncIterator[AudioChunk]:
        """Synthesizes ``text``, chunk by chunk."""
        ...


@runtime_checkable
class TurnEndModel(Protocol):
    """Decides from the user's voice whether their turn is complete (a semantic end of turn:
    "I'd like a..." is not, "I'd like a coffee." is), so the engine waits a short silence
    after a complete turn and a long one after an incomplete one.

    Contract:
        * input: ``pcm``, 16 kHz mono PCM16 of the user's turn up to now (its pause
          included), at most ``MAX_TURN_AUDIO_S`` seconds (the newest).
        * output: whether the turn is complete.
        * timing: asked at every pause of the user, while they are silent; run heavy work off
          the event loop (``trio.to_thread``) and share one model across sessions. A slow
          answer costs latency only: until it comes the pause needs the long silence.
        * errors: raise any ``Exception``; the pause is then treated as incomplete.
    """

    async def is_complete(self, pcm: bytes) -> bool:
        """Whether the turn whose audio is ``pcm`` is complete."""
        ...


MAX_TURN_AUDIO_S = 8
"""The most recent audio (seconds) a ``TurnEndModel`` is given."""


class EnergyVadStage:
    """The default VAD: an adapter over the Rust ``voicecore.EnergyVad``.

    ``SpeechEnded`` is reported at the true end of speech (the Rust VAD's end event includes
    its hangover, which is removed here), so the engine's end-of-turn silence and the
    voice-to-voice latency are measured from the last speech sample.

    Args:
        vad: a configured ``EnergyVad`` at 16 kHz; by default ``EnergyVad(16000, 20)``.

    Raises:
        ValueError: a VAD at another sample rate.
    """

    def __init__(self, vad: EnergyVad | None = None) -> None:
        self._vad = vad if vad is not None else EnergyVad(STT_SAMPLE_RATE, 20)
        if self._vad.sample_rate != STT_SAMPLE_RATE:
            raise ValueError(
                f"the engine feeds the VAD {STT_SAMPLE_RATE} Hz audio, "
                f"got an EnergyVad at {self._vad.sample_rate} Hz"
            )
        self._hangover = round(self._vad.hangover_ms * STT_SAMPLE_RATE / 1000)
        self._speech_until = 0
        self._start = 0

    def __repr__(self) -> str:
        return f"EnergyVadStage({self._vad!r}, speech_until={self._speech_until})"

    @property
    def speech_until(self) -> int:
        """One past the last sample of the last frame the VAD judged speech."""
        return self._speech_until

    def process(self, frame: AudioFrame) -> list[VadEvent]:
        """Feeds one 16 kHz frame; returns the speech events it completes."""
        if frame.sample_rate != STT_SAMPLE_RATE:
            raise ValueError(f"expected {STT_SAMPLE_RATE} Hz audio, got {frame.sample_rate} Hz")
        vad = self._vad
        completed = vad.process(frame.pcm)
        self._speech_until = vad.speech_until
        events: list[VadEvent] = []
        for event in completed:
            if event.kind == "start":
                self._start = event.sample
                events.append(SpeechStarted(event.sample))
            else:
                events.append(SpeechEnded(max(self._start, event.sample - self._hangover)))
        return events


# --- calling a stage --------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def closing(iterator: AsyncIterator[T]) -> AsyncIterator[AsyncIterator[T]]:
    """Closes a stage's async iterator on exit, even when cancelled (no stream stays open:
    a barge-in closes the LLM's HTTP stream in the same step)."""
    try:
        yield iterator
    finally:
        aclose: Callable[[], Any] | None = getattr(iterator, "aclose", None)
        if aclose is not None:
            with trio.CancelScope(shield=True):
                await aclose()


async def next_within(iterator: AsyncIterator[T], timeout_s: float, what: str) -> T:
    """The iterator's next item within ``timeout_s``; raises ``StopAsyncIteration`` at its
    end and ``StageTimeoutError`` ("``what`` within N s") when it stalls."""
    with trio.move_on_after(timeout_s) as scope:
        return await iterator.__anext__()
    assert scope.cancelled_caught
    raise StageTimeoutError(f"{what} within {timeout_s:g} s")
