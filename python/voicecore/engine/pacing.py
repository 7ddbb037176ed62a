"""Trio side of the frame pacer: await released frames and queue space, never poll.

The pacer's thread signals Python through file descriptors (Linux eventfds):
``FramePacer.fileno()`` is readable while released frames wait, and each stream's
``writable_fileno()`` becomes readable when a full playout queue has drained to half its
capacity. These helpers wait on them with ``trio.lowlevel.wait_readable``, so a session costs
no wake-ups between events and no ``trio.from_thread`` call per frame.

Trio lets one task at a time wait on a descriptor: run one consumer task per pacer (it can
route frames to sessions by ``ReleasedFrame.stream_id``) and one producer task per stream.

Example::

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_frames, pacer)  # async for batch in released_frames(pacer)
        await push(stream, tts_pcm)
        stream.finish()
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar, runtime_checkable

import trio

from voicecore.exceptions import PacerStoppedError

if TYPE_CHECKING:
    from voicecore._core import SocketSink
    from voicecore._typing import AudioIn

__all__ = [
    "FlushReportLike",
    "Pacer",
    "PacerStreamLike",
    "ReleasedFrameLike",
    "ReleasingPacer",
    "StreamEventLike",
    "StreamStatsLike",
    "TaskPacer",
    "push",
    "receive_released",
    "receive_reports",
    "released_frames",
]

# --- the pacer's interface, structurally ----------------------------------------------------
# The Rust ``FramePacer`` and the benchmark's pure-Python ``TrioFramePacer``
# (``harness.trio_pacer``) both satisfy these, so the router and sessions can take
# either.

Frame = TypeVar("Frame")
Frame_co = TypeVar("Frame_co", covariant=True)


class ReleasedFrameLike(Protocol):
    """A released frame (``voicecore.ReleasedFrame``): ids, PCM16 bytes, times in ns."""

    @property
    def stream_id(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def pcm16(self) -> bytes: ...
    @property
    def deadline_ns(self) -> int: ...
    @property
    def released_ns(self) -> int: ...
    @property
    def lateness_ns(self) -> int: ...


class StreamEventLike(Protocol):
    """A stream's lifecycle event (``StreamEvent``): ``kind`` is ``"started"`` (its first
    frame was released: the agent is audible), ``"drained"`` (after ``finish``, its last
    sample was released) or ``"late"`` (a frame was released more than the pacer's late
    threshold after its deadline); ``at_ns`` on the pacer's clock; ``lateness_ns`` of the
    frame concerned (None for ``"drained"``)."""

    @property
    def stream_id(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def at_ns(self) -> int: ...
    @property
    def lateness_ns(self) -> int | None: ...


class FlushReportLike(Protocol):
    """What a flush dropped and what had gone out (``voicecore.FlushReport``)."""

    @property
    def dropped_samples(self) -> int: ...
    @property
    def released_samples(self) -> int: ...
    @property
    def client_buffered_samples(self) -> int: ...
    @property
    def heard_samples(self) -> int: ...
    @property
    def dropped_ms(self) -> float: ...
    @property
    def released_ms(self) -> float: ...
    @property
    def heard_ms(self) -> float: ...


class StreamStatsLike(Protocol):
    """One stream's statistics (``voicecore.StreamStats``)."""

    @property
    def frames_released(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def flushes(self) -> int: ...
    @property
    def dropped_samples(self) -> int: ...
    @property
    def queued_samples(self) -> int: ...
    @property
    def queued_ms(self) -> float: ...
    @property
    def released_samples(self) -> int: ...
    @property
    def client_buffered_ms(self) -> float: ...
    @property
    def client_rate_ppm(self) -> int: ...
    @property
    def playing(self) -> bool: ...
    @property
    def holds(self) -> int: ...
    @property
    def held_ms(self) -> float: ...
    @property
    def lateness_p50_ms(self) -> float: ...
    @property
    def lateness_p99_ms(self) -> float: ...
    @property
    def lateness_max_ms(self) -> float: ...


class PacerTotalsLike(Protocol):
    """A pacer's statistics over its life (``voicecore.PacerStats``)."""

    @property
    def scheduling(self) -> str: ...
    @property
    def open_streams(self) -> int: ...
    @property
    def frames_released(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def flushes(self) -> int: ...
    @property
    def dropped_samples(self) -> int: ...
    @property
    def lateness_p50_ms(self) -> float: ...
    @property
    def lateness_p99_ms(self) -> float: ...
    @property
    def lateness_max_ms(self) -> float: ...


class PacerStreamLike(Protocol):
    """A playout stream (``voicecore.PacerStream``); rates in Hz, durations in ms.

    ``hold()`` pauses it where it is (the client paused its playout, keeping what it holds):
    nothing is released, ``push`` still queues; ``resume()`` goes on from the exact paused
    sample. ``hold()`` returns ``False`` when already held, ``resume()`` ``False`` when not
    held; ``held`` says which.
    """

    @property
    def id(self) -> int: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def frame_samples(self) -> int: ...
    @property
    def cushion_ms(self) -> int: ...
    def push(self, audio: AudioIn) -> int: ...
    def finish(self) -> int: ...
    def flush(self) -> FlushReportLike: ...
    def report_playout(self, buffered_ms: float) -> None: ...
    def hold(self) -> bool: ...
    def resume(self) -> bool: ...
    @property
    def held(self) -> bool: ...
    def close(self) -> None: ...
    def writable_fileno(self) -> int: ...
    def stats(self) -> StreamStatsLike: ...


class ReleasingPacer(Protocol[Frame_co]):
    """What the consumer helpers below need of a pacer: its released frames (of type
    ``Frame_co``), its "released" descriptor and whether it has stopped."""

    @property
    def stopped(self) -> bool: ...
    def fileno(self) -> int: ...
    def take_released(self) -> Sequence[Frame_co]: ...


class Pacer(Protocol):
    """A frame pacer as ``PlayoutRouter``, ``Session`` and the server use it: the Rust
    ``FramePacer``, or the benchmark baseline ``TrioFramePacer``."""

    @property
    def frame_ms(self) -> int: ...
    @property
    def clock(self) -> str: ...
    @property
    def scheduling(self) -> str: ...
    @property
    def stopped(self) -> bool: ...
    def open_stream(
        self,
        sample_rate: int,
        *,
        channels: int = 1,
        cushion_ms: int = 120,
        max_lead_ms: int | None = None,
        queue_ms: int = 2000,
        sink: SocketSink | None = None,
        held: bool = False,
    ) -> PacerStreamLike: ...
    def fileno(self) -> int: ...
    def take_released(self) -> Sequence[ReleasedFrameLike]: ...
    def take_events(self) -> Sequence[StreamEventLike]: ...
    def now_ns(self) -> int: ...
    def stats(self) -> PacerTotalsLike: ...
    def stop(self) -> None: ...


@runtime_checkable
class TaskPacer(Protocol):
    """A pacer run by a Trio task instead of a thread of its own (the benchmark baseline
    ``TrioFramePacer``): whoever consumes its frames starts ``run`` (``PlayoutRouter.run``
    does)."""

    async def run(self) -> None: ...


class _Pushable(Protocol):
    def push(self, audio: AudioIn) -> int: ...
    def writable_fileno(self) -> int: ...


# --- consuming released frames, producing audio ---------------------------------------------


async def receive_released(pacer: ReleasingPacer[Frame]) -> Sequence[Frame]:
    """Waits for the pacer to release frames and returns them (never an empty list).

    Frames released before ``pacer.stop()`` are still returned; after them it raises.

    Raises:
        PacerStoppedError: the pacer has stopped and every released frame has been taken.
    """
    while True:
        frames = pacer.take_released()
        if frames:
            await trio.lowlevel.checkpoint()
            return frames
        if pacer.stopped:
            raise PacerStoppedError("the pacer has been stopped")
        await trio.lowlevel.wait_readable(pacer.fileno())


async def receive_reports(
    pacer: Pacer,
) -> tuple[Sequence[ReleasedFrameLike], Sequence[StreamEventLike]]:
    """Waits until the pacer has something to report and returns it: the frames released for
    streams without a sink, and the streams' lifecycle events (one of the two may be empty,
    never both).

    Raises:
        PacerStoppedError: the pacer has stopped and everything it reported has been taken.
    """
    while True:
        frames = pacer.take_released()
        events = pacer.take_events()
        if frames or events:
            await trio.lowlevel.checkpoint()
            return frames, events
        if pacer.stopped:
            raise PacerStoppedError("the pacer has been stopped")
        await trio.lowlevel.wait_readable(pacer.fileno())


async def released_frames(pacer: ReleasingPacer[Frame]) -> AsyncIterator[Sequence[Frame]]:
    """Yields batches of released frames, oldest first, until the pacer stops.

    A batch holds every frame released since the previous one: one per stream per frame
    period normally, more after a burst or when the event loop was held up.
    """
    while True:
        try:
            frames = await receive_released(pacer)
        except PacerStoppedError:
            return
        yield frames


def _samples(audio: AudioIn) -> tuple[int, int]:
    """(length in samples, elements per sample when slicing) of accepted audio."""
    if isinstance(audio, bytes | bytearray | memoryview):
        view = memoryview(audio)
        per_sample = 2 if view.itemsize == 1 else 1
        return view.nbytes // (view.itemsize * per_sample), per_sample
    return len(audio), 1


async def push(stream: _Pushable, audio: AudioIn) -> None:
    """Queues all of ``audio`` into ``stream``, waiting for queue space when it is full.

    The wait is on the stream's writable descriptor (no polling): a full queue holds the
    producer back (backpressure on TTS) until the pacer has released half of it. Cancelling
    the call leaves the audio pushed so far in the queue.

    Raises:
        AudioTypeError, AudioFormatError: audio the stream cannot take (before any is queued).
        UnknownStreamError: the stream is closed (also while waiting).
        PacerStoppedError: the pacer stopped (also while waiting).
    """
    total, per_sample = _samples(audio)
    # A memoryview slices bytes without copying them.
    view: AudioIn = memoryview(audio) if isinstance(audio, bytes | bytearray) else audio
    done = stream.push(view)
    waited = False
    while done < total:
        await trio.lowlevel.wait_readable(stream.writable_fileno())
        waited = True
        done += stream.push(view[done * per_sample :])
    if not waited:
        # Every Trio async call is a checkpoint, even when the queue had room at once.
        await trio.lowlevel.checkpoint()
