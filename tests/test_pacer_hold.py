"""Holding a pacer stream (the client paused its playout) and resuming it where it paused.

The scenarios run on both pacers with the same API: the Rust ``FramePacer`` on its virtual
clock, and the pure-Trio baseline ``TrioFramePacer`` on Trio's ``MockClock``. Then the Rust
pacer on the real clock: a ``SocketSink`` whose peer receives nothing while the stream is
held, and a pacer thread that does not wake for a held stream.
"""

from __future__ import annotations

import os
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pytest
import trio
import trio.testing

from harness.trio_pacer import TrioFramePacer
from voicecore import FramePacer, PacerStoppedError, SocketSink, UnknownStreamError
from voicecore.engine.pacing import Pacer, ReleasedFrameLike, StreamEventLike
from voicecore.engine.playout import PlayoutRouter

MS = 1_000_000  # ns
FRAME = 320  # samples of 20 ms at 16 kHz


def ramp(start: int, count: int) -> npt.NDArray[np.int16]:
    """Samples that say where they come from: sample i is i % 30000."""
    return (np.arange(start, start + count) % 30_000).astype(np.int16)


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


def pcm_of(frames: list[ReleasedFrameLike]) -> bytes:
    return b"".join(frame.pcm16 for frame in frames)


@dataclass
class Clocked:
    """A pacer and the way to move its clock: ``advance`` moves the Rust pacer's virtual
    clock, or sleeps on Trio's mock clock while the baseline's task paces. Times in the
    assertions are ms since ``origin_ns``, the pacer's clock when the test started."""

    pacer: Pacer
    origin_ns: int
    elapsed_ns: int = 0

    async def advance(self, ms: float) -> None:
        self.elapsed_ns += round(ms * MS)
        if isinstance(self.pacer, FramePacer):
            self.pacer.advance_to(self.origin_ns + self.elapsed_ns)
        else:
            await trio.sleep_until((self.origin_ns + self.elapsed_ns) / 1e9)
        # The baseline's task has served this instant.
        await trio.testing.wait_all_tasks_blocked()

    def ms(self, ns: int) -> float:
        return (ns - self.origin_ns) / MS

    def frames(self) -> list[ReleasedFrameLike]:
        return list(self.pacer.take_released())

    def events(self) -> list[tuple[str, float, int | None]]:
        return [(e.kind, self.ms(e.at_ns), e.lateness_ns) for e in self.pacer.take_events()]


@pytest.fixture(params=["rust", "trio"])
async def clocked(request: pytest.FixtureRequest, nursery: trio.Nursery) -> AsyncIterator[Clocked]:
    """Each pacer in turn. The tests ask for ``autojump_clock`` themselves: pytest-trio runs
    a test on the clock its own arguments name."""
    if request.param == "rust":
        with FramePacer(20, clock="virtual") as rust:
            yield Clocked(rust, rust.now_ns())
    else:
        baseline = TrioFramePacer(20)
        nursery.start_soon(baseline.run)
        await trio.testing.wait_all_tasks_blocked()
        yield Clocked(baseline, baseline.now_ns())
        baseline.stop()


async def test_a_held_stream_releases_nothing_then_goes_on_from_the_paused_sample(
    clocked: Clocked,
    autojump_clock: trio.abc.Clock,
) -> None:
    stream = clocked.pacer.open_stream(16_000, cushion_ms=120)
    assert stream.push(ramp(0, 16_000)) == 16_000
    await clocked.advance(110)  # frames 0-5 at once, 6-10 every 20 ms to 100 ms
    frames = clocked.frames()
    assert len(frames) == 11
    assert stream.hold() is True
    assert stream.held
    assert stream.hold() is False, "two holds make one"
    for _ in range(100):
        await clocked.advance(100)
        assert clocked.frames() == []
    stats = stream.stats()
    assert (stats.underruns, stats.frames_released, stats.holds) == (0, 11, 1)
    assert stats.held_ms == pytest.approx(10_000)
    assert stats.playing, "held mid-utterance: it plays on at the resume"
    # 220 ms sent, 110 ms played when the client paused: the model is frozen there.
    assert stats.client_buffered_ms == pytest.approx(110)
    assert stream.resume() is True
    assert not stream.held
    assert stream.resume() is False, "not held any more"
    await clocked.advance(10 - 0.001)
    assert clocked.frames() == [], "the client still holds its cushion: no burst"
    await clocked.advance(0.001)
    (frame,) = clocked.frames()
    assert (frame.seq, clocked.ms(frame.deadline_ns), frame.lateness_ns) == (11, 10_120, 0)
    await clocked.advance(200)
    frames += [frame, *clocked.frames()]
    assert [f.seq for f in frames] == list(range(22))
    assert pcm_of(frames) == ramp(0, 22 * FRAME).tobytes(), "not a sample lost or repeated"
    assert clocked.events() == [("started", 0, 0)]
    assert stream.stats().underruns == 0


async def test_a_stream_opened_held_sends_its_cushion_and_starts_at_the_resume(
    clocked: Clocked,
    autojump_clock: trio.abc.Clock,
) -> None:
    stream = clocked.pacer.open_stream(16_000, cushion_ms=120, held=True)
    assert stream.held
    assert stream.push(ramp(0, 16_000)) == 16_000  # the reply, synthesized ahead
    await clocked.advance(5000)
    assert clocked.frames() == []
    assert clocked.events() == [], "not audible before the turn is confirmed"
    assert stream.resume() is True
    await clocked.advance(0)
    burst = clocked.frames()
    assert len(burst) == 6, "the whole cushion at once"
    assert [(clocked.ms(f.deadline_ns), f.lateness_ns) for f in burst] == [(5000, 0)] * 6
    assert clocked.events() == [("started", 5000, 0)]
    assert pcm_of(burst) == ramp(0, 6 * FRAME).tobytes()
    stats = stream.stats()
    assert (stats.holds, stats.underruns) == (1, 0)
    assert stats.held_ms == pytest.approx(5000)


async def test_reports_while_held_move_the_phase_not_the_rate_and_never_resume(
    clocked: Clocked,
    autojump_clock: trio.abc.Clock,
) -> None:
    stream = clocked.pacer.open_stream(16_000, cushion_ms=120, queue_ms=10_000)
    stream.push(np.zeros(16_000 * 8, dtype=np.int16))
    released = 0
    for k in range(1, 9):  # a client 2 % fast, reporting every 250 ms
        await clocked.advance(250)
        released += FRAME * len(clocked.frames())
        played = k * 250 * 16 * 1.02
        stream.report_playout(max(released - played, 0) / 16)
    rate = stream.stats().client_rate_ppm
    assert rate > 1000, f"the fast client was measured: {rate} ppm"
    stream.hold()
    for buffered_ms in (0.0, 500.0, 40.0, 100.0):
        await clocked.advance(250)
        stream.report_playout(buffered_ms)
        stats = stream.stats()
        assert stats.client_rate_ppm == rate, "nothing played: nothing learnt of its clock"
        assert stream.held, "a report never resumes"
        assert stats.client_buffered_ms == pytest.approx(buffered_ms)
    assert clocked.frames() == []
    stream.resume()
    await clocked.advance(0)
    assert len(clocked.frames()) == 1, "100 ms at the client: topped up to the cushion"


async def test_flush_while_held_counts_what_the_client_played_before_it_paused(
    clocked: Clocked,
    autojump_clock: trio.abc.Clock,
) -> None:
    stream = clocked.pacer.open_stream(16_000, cushion_ms=60)
    stream.push(np.full(20 * FRAME, 7, dtype=np.int16))
    await clocked.advance(40)  # 3 burst frames and 2 paced: 100 ms sent, 40 ms played
    assert len(clocked.frames()) == 5
    stream.hold()
    await clocked.advance(500)
    report = stream.flush()
    assert (report.released_samples, report.dropped_samples) == (5 * FRAME, 15 * FRAME)
    assert report.heard_ms == pytest.approx(40), "the 500 ms paused played nothing"
    assert stream.held, "a flush does not resume"
    stream.push(np.full(5 * FRAME, 9, dtype=np.int16))
    await clocked.advance(100)
    assert clocked.frames() == []
    stream.resume()  # the client cleared its buffer: a fresh burst
    await clocked.advance(0)
    frames = clocked.frames()
    assert len(frames) == 3
    assert all(clocked.ms(f.deadline_ns) == 640 for f in frames)
    assert pcm_of(frames) == np.full(3 * FRAME, 9, dtype=np.int16).tobytes()


async def test_finish_while_held_drains_after_the_resume(
    clocked: Clocked, autojump_clock: trio.abc.Clock
) -> None:
    stream = clocked.pacer.open_stream(16_000, cushion_ms=20)
    stream.push(ramp(0, 500))
    await clocked.advance(0)
    assert len(clocked.frames()) == 1
    clocked.events()
    stream.hold()
    assert stream.finish() == FRAME - 180
    await clocked.advance(1000)
    assert clocked.frames() == []
    assert clocked.events() == [], "the tail is still queued"
    stream.resume()
    await clocked.advance(20)
    (tail,) = clocked.frames()
    assert tail.pcm16 == ramp(320, 180).tobytes() + bytes(2 * (FRAME - 180))
    assert clocked.events() == [("drained", 1020, None)]
    await clocked.advance(1000)
    stats = stream.stats()
    assert (stats.underruns, stats.playing) == (0, False)


async def test_a_held_queue_fills_with_the_usual_backpressure(
    clocked: Clocked, autojump_clock: trio.abc.Clock
) -> None:
    stream = clocked.pacer.open_stream(16_000, cushion_ms=20, queue_ms=100, held=True)
    assert stream.push(ramp(0, 2000)) == 1600
    await clocked.advance(1000)
    assert stream.push(ramp(1600, 400)) == 0
    assert not readable(stream.writable_fileno()), "nothing drains while held"
    stream.resume()
    await clocked.advance(40)  # one burst frame and two paced: 640 samples left
    assert readable(stream.writable_fileno())
    assert stream.push(ramp(1600, 400)) == 400
    assert pcm_of(clocked.frames()) == ramp(0, 3 * FRAME).tobytes()


async def test_hold_and_resume_refuse_closed_streams_and_a_stopped_pacer(
    clocked: Clocked,
    autojump_clock: trio.abc.Clock,
) -> None:
    closed = clocked.pacer.open_stream(16_000)
    open_ = clocked.pacer.open_stream(16_000)
    closed.close()
    with pytest.raises(UnknownStreamError):
        closed.hold()
    with pytest.raises(UnknownStreamError):
        closed.resume()
    with pytest.raises(UnknownStreamError):
        _ = closed.held
    clocked.pacer.stop()
    with pytest.raises(PacerStoppedError):
        open_.hold()
    with pytest.raises(PacerStoppedError):
        open_.resume()


async def test_the_router_opens_a_stream_held(autojump_clock: trio.abc.Clock) -> None:
    events: list[StreamEventLike] = []
    frames: list[ReleasedFrameLike] = []
    with FramePacer(clock="virtual") as pacer:
        router = PlayoutRouter(pacer)
        stream = router.open_stream(16000, events.append, frames.extend, held=True)
        stream.push(np.zeros(3200, dtype=np.int16))  # 200 ms, ready before the turn ends
        async with trio.open_nursery() as nursery:
            nursery.start_soon(router.run)
            await trio.sleep(0.5)
            assert (frames, events) == ([], [])
            stream.resume()
            resumed_ns = pacer.now_ns()
            await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert [(e.kind, e.at_ns) for e in events] == [("started", resumed_ns)]
    assert len(frames) == 6 + 2, "the 120 ms cushion at once, then one per 20 ms"


# --- the Rust pacer on the real clock --------------------------------------------------------


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


def received(peer: socket.socket) -> bytes:
    data = bytearray()
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            return bytes(data)
        if not chunk:
            return bytes(data)
        data += chunk


def payloads(data: bytes) -> list[bytes]:
    """Splits server-to-client WebSocket binary messages (unmasked) into payloads."""
    out = []
    while data:
        assert data[0] == 0x82
        length, header = data[1], 2
        if length == 126:
            length, header = int.from_bytes(data[2:4], "big"), 4
        out.append(data[header : header + length])
        data = data[header + length :]
    return out


def test_no_byte_reaches_the_peer_while_held_and_the_audio_goes_on_after(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    audio = ramp(0, 16_000 * 3)
    with FramePacer(20) as pacer:
        stream = pacer.open_stream(16_000, cushion_ms=40, sink=sink)
        stream.push(audio)
        time.sleep(0.15)
        stream.hold()
        # The pacer thread writes to the sink under the lock hold() took: nothing after it.
        before = payloads(received(peer))
        assert len(before) >= 4, "2 burst frames and a few paced ones"
        time.sleep(0.4)
        assert received(peer) == b"", "not a byte while held"
        assert stream.stats().underruns == 0
        resumed = time.monotonic()
        stream.resume()
        time.sleep(0.2)
        after = payloads(received(peer))
        elapsed = time.monotonic() - resumed
        stats = stream.stats()
    sink.close()
    # The client paused holding at most the cushion: from the resume, about one frame per
    # 20 ms (the machine is shared: generous bounds).
    assert 3 <= len(after) <= elapsed / 0.02 + 3
    assert b"".join(before + after) == audio[: (len(before) + len(after)) * FRAME].tobytes()
    assert stats.holds == 1
    assert 400 <= stats.held_ms < 2000


def pacer_threads() -> set[int]:
    """Ids of this process's threads named ``voicecore-pacer``."""
    found = set()
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/comm") as comm:
                if comm.read().strip() == "voicecore-pacer":
                    found.add(int(tid))
        except FileNotFoundError:  # the thread has exited meanwhile
            pass
    return found


def wakes(tid: int) -> int:
    """How many times the thread has blocked and been woken (voluntary context switches)."""
    with open(f"/proc/self/task/{tid}/status") as status:
        for line in status:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc status")


def test_the_pacer_thread_does_not_wake_for_a_held_stream() -> None:
    existing = pacer_threads()
    with FramePacer(20, realtime=False) as pacer:
        (thread,) = pacer_threads() - existing
        stream = pacer.open_stream(16_000, cushion_ms=20, queue_ms=10_000)
        stream.push(np.zeros(16_000 * 5, dtype=np.int16))
        time.sleep(0.05)
        start = wakes(thread)
        time.sleep(0.3)
        playing = wakes(thread) - start
        stream.hold()
        time.sleep(0.05)  # its timer may still fire once, for the deadline it slept to
        start = wakes(thread)
        time.sleep(0.3)
        held = wakes(thread) - start
        assert stream.stats().frames_released < 30
    assert playing >= 10, f"a playing stream wakes it every 20 ms: {playing} in 300 ms"
    assert held == 0, f"{held} wakes in 300 ms with its only stream held"
