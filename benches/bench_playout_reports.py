"""What the frame pacer costs the Python side per second of agent audio: streams whose frames
the pacer thread writes to a socket itself, beside streams whose frames come back to Python.

N streams (50 at 48 kHz in the full run) on one real-clock ``FramePacer``, each fed a few
seconds of audio and then ``finish()``-ed, with one ``PlayoutRouter.run()`` consuming what the
pacer reports under ``trio.run`` until every stream has reported ``"drained"``. Two modes,
one after the other in the same run, each on a pacer of its own:

* ``voicecore``: every stream has a ``SocketSink`` over a ``socket.socketpair()``; the pacer
  thread writes each frame to it as one WebSocket binary message, and Python hears only the
  streams' lifecycle events. The other ends are drained by one plain reader thread (a
  selector over every peer), so the kernel never blocks a sink; it stands in for the
  clients and is not part of what is measured.
* ``baseline`` (what every stream did before sinks): no sink, so each released frame comes
  back to Python with a copy of its audio and goes to an ``on_frames`` callback that, like
  the in-memory transport, keeps the bytes (in a bounded deque).

Per mode: objects delivered to Python (frames + events), router wake-ups (iterations of the
router's loop: returns of ``pacing.receive_reports``), callback batches, CPU seconds of the
Trio (main) thread around ``PlayoutRouter.run()`` (``time.thread_time()``), audio bytes copied
to Python, and the pacer's lateness p99 (``FramePacer.stats()``); each also per second of
agent audio (stream-seconds: streams x seconds of audio each), then the ratios
baseline/voicecore. Only what must hold is asserted (every stream drained, no frame handed to
Python in the sink mode, every frame's bytes received by the peers); timing never is.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import trio

from voicecore import FramePacer, SocketSink
from voicecore.engine import pacing
from voicecore.engine.pacing import ReleasedFrameLike, StreamEventLike
from voicecore.engine.playout import OnFrames, PlayoutRouter

RATE = 48_000
FRAME_MS = 20
FRAME_SAMPLES = RATE * FRAME_MS // 1000
FRAME_BYTES = 2 * FRAME_SAMPLES
# A server-to-client (unmasked) binary message of 126..65535 bytes: 0x82, 126, 16-bit length.
WS_HEADER_BYTES = 4
KEEP_FRAMES = 50  # the baseline's bounded deque per stream (1 s of audio)


@dataclass
class ModeResult:
    """What one mode cost the Python side."""

    streams: int
    audio_s: float  # seconds of agent audio, summed over the streams
    frames_to_python: int
    events_to_python: int
    late_events: int
    router_wakeups: int
    callback_batches: int
    main_cpu_s: float
    wall_s: float
    bytes_to_python: int
    lateness_p99_ms: float
    frames_released: int
    drained: int
    scheduling: str
    peer_bytes: int = 0  # read by the reader thread (sink mode)
    sink_bytes_written: int = 0
    sink_pending_at_drain: int = 0  # waiting in the sinks when the last stream drained

    @property
    def objects_to_python(self) -> int:
        return self.frames_to_python + self.events_to_python


class PeerReader:
    """One thread reading every peer socket until stopped, counting the bytes of each."""

    def __init__(self, peers: Sequence[socket.socket]) -> None:
        self.counts = [0] * len(peers)
        self._peers = peers
        self._wake_r, self._wake_w = socket.socketpair()
        self._stop = False
        self._thread = threading.Thread(target=self._read, name="peer-reader", daemon=True)

    def __enter__(self) -> PeerReader:
        self._thread.start()
        return self

    def __exit__(self, *_exc_info: object) -> None:
        self._stop = True
        self._wake_w.send(b"x")
        self._thread.join()
        self._wake_r.close()
        self._wake_w.close()

    @property
    def total(self) -> int:
        return sum(self.counts)

    def wait_for(self, expected: int, timeout_s: float) -> None:
        """Waits (a little) until `expected` bytes have been read, or the timeout."""
        end = time.monotonic() + timeout_s
        while self.total < expected and time.monotonic() < end:
            time.sleep(0.01)

    def _read(self) -> None:
        buffer = bytearray(1 << 20)
        with selectors.DefaultSelector() as selector:
            selector.register(self._wake_r, selectors.EVENT_READ, -1)
            for index, peer in enumerate(self._peers):
                peer.setblocking(False)
                selector.register(peer, selectors.EVENT_READ, index)
            while True:
                for key, _ in selector.select():
                    index = key.data
                    if index == -1:
                        if self._stop:
                            return
                        continue
                    with contextlib.suppress(BlockingIOError):
                        self.counts[index] += self._peers[index].recv_into(buffer)


async def _serve(
    pacer: FramePacer,
    streams: int,
    audio_s: float,
    sinks: Sequence[SocketSink] | None,
    result: dict[str, Any],
) -> None:
    """Opens the streams, feeds and finishes them, routes until all have drained."""
    router = PlayoutRouter(pacer)
    counts = {"frames": 0, "events": 0, "late": 0, "batches": 0, "bytes": 0, "drained": 0}
    all_drained = trio.Event()

    def on_event(event: StreamEventLike) -> None:
        counts["events"] += 1
        counts["batches"] += 1
        if event.kind == "late":
            counts["late"] += 1
        elif event.kind == "drained":
            counts["drained"] += 1
            if counts["drained"] == streams:
                all_drained.set()

    def keeper(keep: deque[bytes]) -> OnFrames:
        def on_frames(frames: list[ReleasedFrameLike]) -> None:
            counts["batches"] += 1
            counts["frames"] += len(frames)
            for frame in frames:
                pcm = frame.pcm16
                counts["bytes"] += len(pcm)
                keep.append(pcm)

        return on_frames

    audio = (np.sin(np.arange(round(audio_s * RATE)) * 0.05) * 8000).astype(np.int16)
    opened = []
    for index in range(streams):
        if sinks is None:
            keep: deque[bytes] = deque(maxlen=KEEP_FRAMES)
            stream = router.open_stream(
                RATE, on_event, keeper(keep), queue_ms=round(audio_s * 1000) + 1000
            )
        else:
            stream = router.open_stream(
                RATE, on_event, queue_ms=round(audio_s * 1000) + 1000, sink=sinks[index]
            )
        assert stream.push(audio) == len(audio)
        stream.finish()
        opened.append(stream)

    wakeups = 0
    receive_reports = pacing.receive_reports

    async def counting_receive_reports(
        pacer_: pacing.Pacer,
    ) -> tuple[Sequence[ReleasedFrameLike], Sequence[StreamEventLike]]:
        nonlocal wakeups
        reports = await receive_reports(pacer_)
        wakeups += 1
        return reports

    pacing.receive_reports = counting_receive_reports  # type: ignore[assignment]
    try:
        wall0, cpu0 = time.perf_counter(), time.thread_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.run)
            await all_drained.wait()
            result["sink_pending_at_drain"] = sum(s.pending_bytes for s in sinks or ())
            result["stats"] = pacer.stats()
            result["released"] = sum(stream.stats().frames_released for stream in opened)
            pacer.stop()  # the router takes what is left, then returns
        cpu1, wall1 = time.thread_time(), time.perf_counter()
    finally:
        pacing.receive_reports = receive_reports
    result.update(counts)
    result["wakeups"] = wakeups
    result["main_cpu_s"] = cpu1 - cpu0
    result["wall_s"] = wall1 - wall0


def _mode(streams: int, audio_s: float, with_sinks: bool) -> ModeResult:
    result: dict[str, Any] = {}
    pairs = [socket.socketpair() for _ in range(streams)] if with_sinks else []
    sinks = [SocketSink(ours.fileno()) for ours, _ in pairs] if with_sinks else None
    try:
        with FramePacer(FRAME_MS) as pacer, PeerReader([peer for _, peer in pairs]) as reader:
            scheduling = pacer.scheduling
            trio.run(_serve, pacer, streams, audio_s, sinks, result)
            for sink in sinks or ():
                sink.flush()  # nothing should wait: the reader kept every socket empty
            expected = result["released"] * (FRAME_BYTES + WS_HEADER_BYTES)
            if with_sinks:
                reader.wait_for(expected, timeout_s=5.0)
            peer_bytes = reader.total
    finally:
        written = 0
        for sink in sinks or ():
            written += sink.stats().bytes_written
            sink.close()
        for ours, peer in pairs:
            ours.close()
            peer.close()
    stats = result["stats"]
    return ModeResult(
        streams=streams,
        audio_s=streams * audio_s,
        frames_to_python=result["frames"],
        events_to_python=result["events"],
        late_events=result["late"],
        router_wakeups=result["wakeups"],
        callback_batches=result["batches"],
        main_cpu_s=result["main_cpu_s"],
        wall_s=result["wall_s"],
        bytes_to_python=result["bytes"],
        lateness_p99_ms=stats.lateness_p99_ms,
        frames_released=result["released"],
        drained=result["drained"],
        scheduling=scheduling,
        peer_bytes=peer_bytes,
        sink_bytes_written=written,
        sink_pending_at_drain=result["sink_pending_at_drain"],
    )


def _both(streams: int, audio_s: float) -> tuple[ModeResult, ModeResult]:
    # One after the other, each on a pacer of its own, so neither carries the other's work.
    return _mode(streams, audio_s, with_sinks=True), _mode(streams, audio_s, with_sinks=False)


def _ratio(baseline: float, ours: float) -> float | None:
    """baseline / voicecore; None when voicecore's figure is zero (bytes copied: none at all),
    so the JSON stays standard (no Infinity); the absolute figures are in the rows."""
    return baseline / ours if ours else None


@pytest.mark.timeout(120)
def test_python_cost_of_playout_reports(benchmark: Any, report: Any, quick: bool) -> None:
    """50 streams x 3 s at 48 kHz per mode (10 x 1 s in quick mode), real clock."""
    streams, audio_s = (10, 1.0) if quick else (50, 3.0)
    frames_per_stream = -(-round(audio_s * RATE) // FRAME_SAMPLES)
    ours, baseline = benchmark.pedantic(_both, args=(streams, audio_s), rounds=1, iterations=1)

    for name, mode in (("voicecore (SocketSink)", ours), ("baseline (frames to Python)", baseline)):
        per_s = 1 / mode.audio_s
        report.row(
            mode=name,
            streams=mode.streams,
            audio_s=mode.audio_s,
            objects=mode.objects_to_python,
            frames=mode.frames_to_python,
            events=mode.events_to_python,
            late=mode.late_events,
            wakeups=mode.router_wakeups,
            batches=mode.callback_batches,
            main_cpu_s=mode.main_cpu_s,
            bytes_to_py=mode.bytes_to_python,
            objects_per_s=mode.objects_to_python * per_s,
            wakeups_per_s=mode.router_wakeups * per_s,
            cpu_ms_per_s=mode.main_cpu_s * 1e3 * per_s,
            bytes_per_s=mode.bytes_to_python * per_s,
            lateness_p99_ms=mode.lateness_p99_ms,
            wall_s=mode.wall_s,
            peer_bytes=mode.peer_bytes,
            scheduling=mode.scheduling,
        )
    ratios = {
        "objects to Python": _ratio(baseline.objects_to_python, ours.objects_to_python),
        "router wake-ups": _ratio(baseline.router_wakeups, ours.router_wakeups),
        "callback batches": _ratio(baseline.callback_batches, ours.callback_batches),
        "main-thread CPU": _ratio(baseline.main_cpu_s, ours.main_cpu_s),
        "bytes copied to Python": _ratio(baseline.bytes_to_python, ours.bytes_to_python),
        "lateness p99": _ratio(baseline.lateness_p99_ms, ours.lateness_p99_ms),
    }
    for what, value in ratios.items():
        report.figure(f"{what}: baseline/voicecore", value)
    report.figure(
        "voicecore: main-thread CPU ms per s of agent audio", ours.main_cpu_s * 1e3 / ours.audio_s
    )
    report.figure(
        "baseline: main-thread CPU ms per s of agent audio",
        baseline.main_cpu_s * 1e3 / baseline.audio_s,
    )
    report.figure(
        "voicecore: sink bytes waiting when the last stream drained", ours.sink_pending_at_drain
    )

    for mode in (ours, baseline):
        assert mode.drained == streams, "a stream never reported drained"
        assert mode.frames_released == streams * frames_per_stream
    assert ours.frames_to_python == 0, "a sink stream's frame was handed to Python"
    assert ours.bytes_to_python == 0
    assert baseline.frames_to_python == baseline.frames_released
    wire_bytes = ours.frames_released * (FRAME_BYTES + WS_HEADER_BYTES)
    assert ours.sink_bytes_written == wire_bytes
    assert ours.peer_bytes == wire_bytes, "the peers did not receive every frame's bytes"
