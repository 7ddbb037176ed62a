"""One frame pacer shared by many sessions: ``PlayoutRouter``; a session's playout figures:
``PlayoutTotals``.

The Rust ``FramePacer`` serves any number of streams from one OS thread, and Trio lets one
task at a time wait on its file descriptor; so one task per pacer takes what the pacer reports
and hands each stream's news to the session that owns it. A server with 100 sessions has one
pacer thread and one router task, not 100 of each.

Rust owns the audio it sends: a stream with a socket sink is written to the client by the
pacer thread, and Python hears only its lifecycle (``StreamEvent``: its first frame released,
drained, a frame released late), never a frame. A stream without a sink (the in-memory
transport) also hands its released frames back, for the session to send.

A session given no router builds and runs its own; several sessions share one like this::

    with voicecore.FramePacer() as pacer:
        router = PlayoutRouter(pacer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.run)
            nursery.start_soon(Session(transport_a, ..., pacer=router).run)
            nursery.start_soon(Session(transport_b, ..., pacer=router).run)

With a ``clock="virtual"`` pacer, ``run`` also moves the pacer's clock with Trio's clock
(``drive_virtual_pacer``), so tests under a ``MockClock`` stay deterministic. A pacer that
runs as a Trio task (``pacing.TaskPacer``: the benchmark baseline
``harness.trio_pacer.TrioFramePacer``) is started by ``run`` too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import trio

from voicecore._core import FramePacer, SocketSink
from voicecore.engine import pacing
from voicecore.engine.pacing import (
    Pacer,
    PacerStreamLike,
    ReleasedFrameLike,
    StreamEventLike,
    StreamStatsLike,
)
from voicecore.exceptions import PacerStoppedError

__all__ = ["OnEvent", "OnFrames", "PlayoutRouter", "PlayoutTotals", "drive_virtual_pacer"]

OnEvent = Callable[[StreamEventLike], None]
"""Receives, synchronously, one lifecycle event of a stream."""

OnFrames = Callable[[list[ReleasedFrameLike]], None]
"""Receives, synchronously, the frames of one stream (without a sink) released in one batch
(oldest first)."""


async def drive_virtual_pacer(
    pacer: FramePacer, origin_ns: int, origin_s: float, *, tick_ms: float = 1.0
) -> None:
    """Keeps a virtual-clock pacer in step with Trio's clock (run it as a task).

    Every ``tick_ms`` of Trio time, the pacer's clock is moved to
    ``origin_ns + (trio.current_time() - origin_s)``, so frames fall due as Trio time passes
    (under a ``MockClock`` too: the test stays deterministic). A frame is released at most
    ``tick_ms`` after its deadline.
    """
    while True:
        await trio.sleep(tick_ms / 1000)
        pacer.advance_to(origin_ns + round((trio.current_time() - origin_s) * 1e9))


@dataclass(frozen=True)
class _Route:
    on_event: OnEvent
    on_frames: OnFrames | None


class PlayoutRouter:
    """Routes a pacer's stream events (and, for streams without a sink, released frames) to
    the owners of its streams.

    Args:
        pacer: the pacer; the router must be its only consumer of events and frames.
        virtual_tick_ms: with a virtual-clock pacer, the step (ms of Trio time) at which
            ``run`` advances it.

    Attributes:
        unrouted: events and frames of a stream nobody owns any more (closed while they were
            in flight); dropped and counted.
    """

    def __init__(self, pacer: Pacer, *, virtual_tick_ms: float = 1.0) -> None:
        if not virtual_tick_ms > 0:
            raise ValueError(f"virtual_tick_ms must be > 0 ms, got {virtual_tick_ms}")
        self.pacer = pacer
        self.virtual_tick_ms = virtual_tick_ms
        self.unrouted = 0
        self._routes: dict[int, _Route] = {}
        self._origin_ns = pacer.now_ns()
        self._origin_s: float | None = None

    def __repr__(self) -> str:
        return f"PlayoutRouter({self.pacer!r}, streams={len(self._routes)})"

    def open_stream(
        self,
        sample_rate: int,
        on_event: OnEvent,
        on_frames: OnFrames | None = None,
        *,
        cushion_ms: int = 120,
        queue_ms: int = 2000,
        sink: SocketSink | None = None,
        held: bool = False,
    ) -> PacerStreamLike:
        """Opens a pacer stream (rates in Hz, durations in ms; see ``FramePacer.open_stream``)
        whose lifecycle events go to ``on_event``.

        With a ``sink``, the pacer writes each frame to the client itself and no frame comes
        back; without one, ``on_frames`` receives them (required then). ``held=True`` opens
        it held: it queues audio (a reply prepared before the user's turn is confirmed) and
        releases nothing until ``stream.resume()``, which sends the cushion at once.
        """
        if sink is None and on_frames is None:
            raise ValueError("a stream without a sink needs on_frames: its audio goes nowhere")
        stream = self.pacer.open_stream(
            sample_rate, cushion_ms=cushion_ms, queue_ms=queue_ms, sink=sink, held=held
        )
        self._routes[stream.id] = _Route(on_event, on_frames if sink is None else None)
        return stream

    def close_stream(self, stream: PacerStreamLike) -> None:
        """Closes ``stream`` (dropping its queued audio) and stops routing its news."""
        self._routes.pop(stream.id, None)
        stream.close()

    def trio_time(self, pacer_ns: int) -> float:
        """A pacer time (ns, e.g. ``StreamEvent.at_ns``) on Trio's clock (s).

        Raises:
            RuntimeError: ``run`` has not started (the two clocks are paired there).
        """
        if self._origin_s is None:
            raise RuntimeError("the router is not running: start PlayoutRouter.run first")
        return self._origin_s + (pacer_ns - self._origin_ns) / 1e9

    @property
    def running(self) -> bool:
        """Whether ``run`` has started."""
        return self._origin_s is not None

    async def run(self) -> None:
        """Delivers every released frame and stream event, batch by batch, until the pacer
        stops.

        Deliveries are synchronous calls on this task: keep them short (queue the frame).
        """
        self._origin_ns, self._origin_s = self.pacer.now_ns(), trio.current_time()
        async with trio.open_nursery() as nursery:
            if self.pacer.clock == "virtual":
                nursery.start_soon(self._drive)
            if isinstance(self.pacer, pacing.TaskPacer):
                # A pacer run by a Trio task (the benchmark baseline): it paces while we route.
                nursery.start_soon(self.pacer.run)
            while True:
                try:
                    frames, events = await pacing.receive_reports(self.pacer)
                except PacerStoppedError:
                    break
                # Frames first: a stream's "drained" follows its last frame.
                self._deliver_frames(frames)
                self._deliver_events(events)
            nursery.cancel_scope.cancel()

    async def _drive(self) -> None:
        assert self._origin_s is not None
        assert isinstance(self.pacer, FramePacer)  # only the Rust pacer has a virtual clock
        await drive_virtual_pacer(
            self.pacer, self._origin_ns, self._origin_s, tick_ms=self.virtual_tick_ms
        )

    def _deliver_frames(self, batch: Sequence[ReleasedFrameLike]) -> None:
        by_stream: dict[int, list[ReleasedFrameLike]] = {}
        for frame in batch:
            by_stream.setdefault(frame.stream_id, []).append(frame)
        for stream_id, frames in by_stream.items():
            route = self._routes.get(stream_id)
            if route is None or route.on_frames is None:
                self.unrouted += len(frames)
            else:
                route.on_frames(frames)

    def _deliver_events(self, events: Sequence[StreamEventLike]) -> None:
        for event in events:
            route = self._routes.get(event.stream_id)
            if route is None:
                self.unrouted += 1
            else:
                route.on_event(event)


class PlayoutTotals:
    """A session's playout figures over its replies' pacer streams (``PacerStatsLike``), read
    from each stream's own statistics when it closes: counters are summed; lateness comes
    from the Rust per-stream histograms: ``lateness_p50_ms`` is the frame-weighted mean of
    the streams' medians, ``lateness_p99_ms`` the worst stream's p99 (an upper bound of the
    session's), ``lateness_max_ms`` the maximum."""

    def __init__(self) -> None:
        self.frames_released = 0
        self.underruns = 0
        self.dropped_samples = 0
        self.lateness_p99_ms = 0.0
        self.lateness_max_ms = 0.0
        self._p50_weighted = 0.0

    def __repr__(self) -> str:
        return (
            f"PlayoutTotals(frames={self.frames_released}, underruns={self.underruns}, "
            f"p99={self.lateness_p99_ms:.3f} ms)"
        )

    def add_stream(self, stats: StreamStatsLike) -> None:
        """Adds a closed stream's statistics."""
        self.frames_released += stats.frames_released
        self.underruns += stats.underruns
        self.dropped_samples += stats.dropped_samples
        self._p50_weighted += stats.lateness_p50_ms * stats.frames_released
        self.lateness_p99_ms = max(self.lateness_p99_ms, stats.lateness_p99_ms)
        self.lateness_max_ms = max(self.lateness_max_ms, stats.lateness_max_ms)

    @property
    def lateness_p50_ms(self) -> float:
        """The frame-weighted mean of the streams' median lateness, ms."""
        return self._p50_weighted / self.frames_released if self.frames_released else 0.0
