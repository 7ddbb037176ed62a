"""One frame pacer shared by many sessions: ``PlayoutRouter``.

The Rust ``FramePacer`` serves any number of streams from one OS thread, and Trio lets one
task at a time wait on its file descriptor; so one task per pacer takes every released
frame and hands each stream's frames to the session that owns it. A server with 100
sessions has one pacer thread and one router task, not 100 of each.

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

import trio

from voicecore._core import FramePacer, SocketSink
from voicecore.engine import pacing
from voicecore.engine.pacing import Pacer, PacerStreamLike, ReleasedFrameLike

__all__ = ["PlayoutRouter", "drive_virtual_pacer"]

Deliver = Callable[[list[ReleasedFrameLike]], None]
"""Receives, synchronously, the frames of one stream released in one batch (oldest first)."""


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


class PlayoutRouter:
    """Routes a pacer's released frames to the owners of its streams.

    Args:
        pacer: the pacer; the router must be its only consumer of released frames.
        virtual_tick_ms: with a virtual-clock pacer, the step (ms of Trio time) at which
            ``run`` advances it.

    Attributes:
        unrouted: frames released for a stream nobody owns any more (closed while they were
            in flight); dropped and counted.
    """

    def __init__(self, pacer: Pacer, *, virtual_tick_ms: float = 1.0) -> None:
        if not virtual_tick_ms > 0:
            raise ValueError(f"virtual_tick_ms must be > 0 ms, got {virtual_tick_ms}")
        self.pacer = pacer
        self.virtual_tick_ms = virtual_tick_ms
        self.unrouted = 0
        self._routes: dict[int, Deliver] = {}
        self._origin_ns = pacer.now_ns()
        self._origin_s: float | None = None

    def __repr__(self) -> str:
        return f"PlayoutRouter({self.pacer!r}, streams={len(self._routes)})"

    def open_stream(
        self,
        sample_rate: int,
        deliver: Deliver,
        *,
        cushion_ms: int = 120,
        queue_ms: int = 2000,
        sink: SocketSink | None = None,
    ) -> PacerStreamLike:
        """Opens a pacer stream whose released frames go to ``deliver`` (rates in Hz,
        durations in ms; see ``FramePacer.open_stream``). With a ``sink``, the pacer writes
        each frame to the client itself and ``deliver`` only learns that it went."""
        stream = self.pacer.open_stream(
            sample_rate, cushion_ms=cushion_ms, queue_ms=queue_ms, sink=sink
        )
        self._routes[stream.id] = deliver
        return stream

    def close_stream(self, stream: PacerStreamLike) -> None:
        """Closes ``stream`` (dropping its queued audio) and stops routing its frames."""
        self._routes.pop(stream.id, None)
        stream.close()

    def trio_time(self, pacer_ns: int) -> float:
        """A pacer time (ns, e.g. ``ReleasedFrame.released_ns``) on Trio's clock (s).

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
        """Takes every released frame and delivers it, batch by batch, until the pacer stops.

        Deliveries are synchronous calls on this task: keep them short (queue the frame).
        """
        self._origin_ns, self._origin_s = self.pacer.now_ns(), trio.current_time()
        async with trio.open_nursery() as nursery:
            if self.pacer.clock == "virtual":
                nursery.start_soon(self._drive)
            if isinstance(self.pacer, pacing.TaskPacer):
                # A pacer run by a Trio task (the benchmark baseline): it paces while we route.
                nursery.start_soon(self.pacer.run)
            async for batch in pacing.released_frames(self.pacer):
                self._deliver(batch)
            nursery.cancel_scope.cancel()

    async def _drive(self) -> None:
        assert self._origin_s is not None
        assert isinstance(self.pacer, FramePacer)  # only the Rust pacer has a virtual clock
        await drive_virtual_pacer(
            self.pacer, self._origin_ns, self._origin_s, tick_ms=self.virtual_tick_ms
        )

    def _deliver(self, batch: Sequence[ReleasedFrameLike]) -> None:
        by_stream: dict[int, list[ReleasedFrameLike]] = {}
        for frame in batch:
            by_stream.setdefault(frame.stream_id, []).append(frame)
        for stream_id, frames in by_stream.items():
            deliver = self._routes.get(stream_id)
            if deliver is None:
                self.unrouted += len(frames)
            else:
                deliver(frames)
