"""Stream lifecycle events of the Rust pacer, with a real SocketSink over a socketpair.

A stream with a sink has its frames written to the client by the pacer itself and never
copied for Python: Python learns that the agent became audible ("started") and that an
utterance has played out ("drained") from ``FramePacer.take_events()``. Streams without a
sink give both their frames (the in-memory transport needs the audio) and the same events.
"""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import numpy as np
import pytest

from voicecore import FramePacer, SocketSink, StreamEvent

FRAME = 320  # samples of 20 ms at 16 kHz
MS = 1_000_000


@pytest.fixture
def pacer() -> Iterator[FramePacer]:
    with FramePacer(20, clock="virtual") as virtual:
        yield virtual


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


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


def kinds(events: list[StreamEvent]) -> list[tuple[int, str, int]]:
    return [(event.stream_id, event.kind, event.at_ns) for event in events]


def test_sink_stream_gives_events_and_no_released_frames(
    pacer: FramePacer, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    stream = pacer.open_stream(16000, cushion_ms=40, sink=sink)
    audio = np.arange(5 * FRAME + 100, dtype=np.int16)
    stream.push(audio)
    pacer.advance(0)
    started = pacer.take_events()
    assert kinds(started) == [(stream.id, "started", 0)]
    assert started[0].lateness_ns == 0
    assert pacer.take_released() == []
    assert stream.finish() == FRAME - 100
    pacer.advance(200)
    events = pacer.take_events()
    # 6 frames: 2 at 0 ms (the cushion), then one every 20 ms: the last one at 80 ms.
    assert kinds(events) == [(stream.id, "drained", 80 * MS)]
    assert events[0].lateness_ns is None
    assert pacer.take_released() == [], "Rust owns the audio it sent"
    wire = payloads(received(peer))
    assert len(wire) == 6
    padded = np.concatenate([audio, np.zeros(FRAME - 100, dtype=np.int16)])
    assert b"".join(wire) == padded.tobytes()
    stats = stream.stats()
    assert (stats.frames_released, stats.released_samples, stats.sink_refused) == (6, 6 * FRAME, 0)
    assert stats.lateness_max_ms == 0.0  # virtual clock: released exactly on time
    assert pacer.stats().frames_released == 6
    sink.close()


def test_non_sink_stream_gives_frames_and_events(pacer: FramePacer) -> None:
    stream = pacer.open_stream(16000, cushion_ms=20)
    stream.push(np.arange(2 * FRAME, dtype=np.int16))
    stream.finish()
    pacer.advance(0)
    assert kinds(pacer.take_events()) == [(stream.id, "started", 0)]
    pacer.advance(20)
    assert kinds(pacer.take_events()) == [(stream.id, "drained", 20 * MS)]
    frames = pacer.take_released()
    assert [frame.seq for frame in frames] == [0, 1]
    assert (
        b"".join(frame.pcm16 for frame in frames) == np.arange(2 * FRAME, dtype=np.int16).tobytes()
    )


def test_sink_and_non_sink_streams_side_by_side(
    pacer: FramePacer, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    wired = pacer.open_stream(16000, cushion_ms=20, sink=sink)
    memory = pacer.open_stream(16000, cushion_ms=20)
    for stream in (wired, memory):
        stream.push(np.ones(FRAME, dtype=np.int16))
    pacer.advance(0)
    assert sorted(kinds(pacer.take_events())) == [
        (wired.id, "started", 0),
        (memory.id, "started", 0),
    ]
    assert [frame.stream_id for frame in pacer.take_released()] == [memory.id]
    assert len(payloads(received(peer))) == 1
    sink.close()


def test_the_descriptor_wakes_for_events(
    pacer: FramePacer, pair: tuple[socket.socket, socket.socket]
) -> None:
    ours, _peer = pair
    sink = SocketSink(ours.fileno())
    stream = pacer.open_stream(16000, cushion_ms=20, sink=sink)
    fd = pacer.fileno()
    assert pacer.take_events() == []
    assert not readable(fd)
    stream.push(np.ones(FRAME, dtype=np.int16))
    assert not readable(fd), "virtual time releases only in advance()"
    pacer.advance(0)
    assert readable(fd), "the started event wakes the consumer (no frame is queued)"
    assert pacer.take_released() == []
    assert readable(fd), "the event still waits for take_events()"
    assert [event.kind for event in pacer.take_events()] == ["started"]
    assert not readable(fd)
    stream.finish()
    pacer.advance(40)
    assert readable(fd)
    assert [event.kind for event in pacer.take_events()] == ["drained"]
    assert not readable(fd)
    sink.close()


def test_no_drained_after_flush_and_none_after_close(pacer: FramePacer) -> None:
    flushed = pacer.open_stream(16000, cushion_ms=20)
    closed = pacer.open_stream(16000, cushion_ms=20)
    for stream in (flushed, closed):
        stream.push(np.ones(10 * FRAME, dtype=np.int16))
        stream.finish()
    pacer.advance(0)
    assert [event.kind for event in pacer.take_events()] == ["started", "started"]
    flushed.flush()
    closed.close()
    pacer.advance(1000)
    flushed.finish()
    assert pacer.take_events() == []
    # New audio after the flush is a new utterance: it drains (no second "started").
    flushed.push(np.ones(FRAME, dtype=np.int16))
    flushed.finish()
    pacer.advance(0)
    assert kinds(pacer.take_events()) == [(flushed.id, "drained", 1000 * MS)]


def test_stream_event_is_a_frozen_record(pacer: FramePacer) -> None:
    stream = pacer.open_stream(16000)
    stream.finish()  # nothing queued: drained at once
    (event,) = pacer.take_events()
    assert (event.stream_id, event.kind, event.at_ns, event.lateness_ns) == (
        stream.id,
        "drained",
        0,
        None,
    )
    assert repr(event) == f'StreamEvent(stream_id={stream.id}, kind="drained", at_ns=0)'
    with pytest.raises(AttributeError):
        event.kind = "started"  # type: ignore[misc]
