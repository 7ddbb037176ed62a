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

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import trio

from voicecore._core import FramePacer, PacerStream, ReleasedFrame
from voicecore.exceptions import PacerStoppedError

if TYPE_CHECKING:
    from voicecore._typing import AudioIn

__all__ = ["push", "receive_released", "released_frames"]


async def receive_released(pacer: FramePacer) -> list[ReleasedFrame]:
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


async def released_frames(pacer: FramePacer) -> AsyncIterator[list[ReleasedFrame]]:
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


async def push(stream: PacerStream, audio: AudioIn) -> None:
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
