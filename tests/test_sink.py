"""SocketSink over a real socketpair, alone and as the pacer thread's way to the wire."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Generator, Iterator
from typing import TypeVar

import numpy as np
import pytest
from websockets.frames import Frame, Opcode
from websockets.streams import StreamReader

from voicecore import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    FramePacer,
    SendBufferFullError,
    SinkStats,
    SocketSink,
    VoicecoreError,
)

T = TypeVar("T")
FRAME = 320  # samples of 20 ms at 16 kHz


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    ours, peer = socket.socketpair()
    peer.setblocking(False)
    yield ours, peer
    ours.close()
    peer.close()


def complete(generator: Generator[None, None, T]) -> T:
    """Runs a websockets parser coroutine over data that is all there already."""
    try:
        next(generator)
    except StopIteration as done:
        return done.value  # type: ignore[no-any-return]
    raise AssertionError("the parser wanted more data than the stream holds")


def parse_frames(data: bytes) -> list[Frame]:
    """Splits `data` into WebSocket frames with websockets' own (client-side) parser."""
    reader = StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    frames = []
    while not complete(reader.at_eof()):
        frames.append(complete(Frame.parse(reader.read_exact, mask=False)))
    return frames


def receive_all(peer: socket.socket, sink: SocketSink | None = None) -> bytes:
    """Reads everything the peer can get, flushing the sink until nothing waits."""
    received = bytearray()
    while True:
        try:
            chunk = peer.recv(1 << 20)
        except BlockingIOError:
            if sink is None or sink.flush() == 0:
                try:
                    chunk = peer.recv(1 << 20)
                except BlockingIOError:
                    return bytes(received)
            else:
                continue
        received += chunk


def fill(sink: SocketSink) -> int:
    """Writes until the socket keeps bytes back; returns how many bytes were written."""
    total = 0
    while True:
        pending = sink.write(b"\x07" * 4096)
        total += 4096
        if pending:
            return total


def test_writes_bytes_like_objects_through(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    assert sink.write(b"abc") == 0
    assert sink.write(bytearray(b"def")) == 0
    assert sink.write(memoryview(b"xghix")[1:4]) == 0
    assert receive_all(peer) == b"abcdefghi"
    stats = sink.stats()
    assert isinstance(stats, SinkStats)
    assert (stats.bytes_written, stats.messages) == (9, 3)
    assert (stats.refused, stats.partial_writes) == (0, 0)
    assert sink.fileno() == ours.fileno()
    assert sink.max_pending_bytes == 1 << 20
    assert repr(sink) == (
        f"SocketSink(fd={ours.fileno()}, max_pending_bytes=1048576, pending_bytes=0, "
        "closed=False, broken=False)"
    )
    assert "messages=3" in repr(stats)


@pytest.mark.parametrize("payload_bytes", [0, 124, 126, 65534, 65536])
def test_pcm16_messages_parse_as_websocket_binary_frames(
    pair: tuple[socket.socket, socket.socket], payload_bytes: int
) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    samples = (np.arange(payload_bytes // 2) * 7 - 3000).astype(np.int16)
    sink.write_ws_binary_pcm16(samples)
    sink.write_ws_binary_pcm16(samples.tobytes())
    frames = parse_frames(receive_all(peer, sink))
    assert len(frames) == 2
    for frame in frames:
        assert frame.fin
        assert frame.opcode is Opcode.BINARY
        assert bytes(frame.data) == samples.astype("<i2").tobytes()


def test_bad_inputs_are_refused(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, _ = pair
    with open(os.devnull, "rb") as not_a_socket, pytest.raises(ConfigError, match="socket"):
        SocketSink(not_a_socket.fileno())
    with pytest.raises(ConfigError, match="fd"):
        SocketSink(-1)
    with pytest.raises(ConfigError, match="max_pending_bytes"):
        SocketSink(ours.fileno(), max_pending_bytes=0)
    with pytest.raises(ConfigError, match="max_pending_bytes"):
        SocketSink(ours.fileno(), max_pending_bytes=-5)
    sink = SocketSink(ours.fileno())
    with pytest.raises(TypeError, match="str"):
        sink.write("text")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="contiguous"):
        sink.write(memoryview(b"abcdef")[::2])
    with pytest.raises(AudioTypeError, match="float32"):
        sink.write_ws_binary_pcm16(np.zeros(4, np.float32))
    with pytest.raises(AudioFormatError, match="2-byte"):
        sink.write_ws_binary_pcm16(b"\x00\x01\x02")
    assert sink.stats().messages == 0


def test_a_write_over_the_bound_queues_nothing(pair: tuple[socket.socket, socket.socket]) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno(), max_pending_bytes=50_000)
    written = fill(sink)
    pending = sink.pending_bytes
    assert pending > 0
    room = 50_000 - pending
    with pytest.raises(SendBufferFullError, match="nothing of this write was queued") as caught:
        sink.write(b"\x01" * (room + 1))
    assert isinstance(caught.value, VoicecoreError)
    assert sink.pending_bytes == pending
    stats = sink.stats()
    assert stats.refused == 1
    assert stats.partial_writes >= 1
    # The stream on the wire holds exactly what was accepted, in order.
    sink.write(b"END")
    assert receive_all(peer, sink) == b"\x07" * written + b"END"


def test_a_closed_peer_and_close_raise_connection_reset(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    peer.close()
    with pytest.raises(ConnectionResetError, match="broke"):
        sink.write(b"x")
    assert sink.broken
    assert not sink.closed
    assert sink.flush() == 0

    other_ours, other_peer = socket.socketpair()
    with other_ours, other_peer:
        closed = SocketSink(other_ours.fileno())
        closed.close()
        assert closed.closed
        with pytest.raises(ConnectionResetError, match="closed"):
            closed.write_ws_binary_pcm16(b"\x00\x00")
        other_peer.setblocking(False)
        with pytest.raises(BlockingIOError):
            other_peer.recv(1)


def test_virtual_pacer_frames_go_on_the_wire_and_are_not_handed_over(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    with FramePacer(20, clock="virtual") as pacer:
        stream = pacer.open_stream(16000, sink=sink)
        audio = np.arange(10 * FRAME, dtype=np.int16)
        stream.push(audio)
        pacer.advance(60)
        wire = parse_frames(receive_all(peer))
        assert len(wire) == 9  # a 120 ms burst, then 3 paced frames
        assert b"".join(bytes(frame.data) for frame in wire) == audio[: 9 * FRAME].tobytes()
        assert pacer.take_released() == []  # Rust owns the audio it sent
        sink.close()
        pacer.advance(20)
        assert stream.stats().frames_released == 10  # pacing goes on without the sink
        assert stream.stats().sink_refused == 1
        assert pacer.stats().sink_refused == 1


def test_the_pacer_thread_sends_while_python_is_blocked(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    """The point of the sink: frames reach the socket while the main thread holds the GIL
    and never calls take_released."""
    ours, peer = pair
    sink = SocketSink(ours.fileno())
    with FramePacer(20) as pacer:
        stream = pacer.open_stream(16000, cushion_ms=40, sink=sink)
        stream.push(np.zeros(50 * FRAME, dtype=np.int16))
        interval = sys.getswitchinterval()
        sys.setswitchinterval(1.0)
        try:
            # A blocked event loop: pure-Python spinning, the GIL held throughout.
            end = time.perf_counter() + 0.3
            while time.perf_counter() < end:
                pass
        finally:
            sys.setswitchinterval(interval)
        during = parse_frames(receive_all(peer))
        # 2 burst frames + one per 20 ms for 300 ms = 17; allow a slow, shared machine.
        assert len(during) >= 10
        assert all(len(frame.data) == 2 * FRAME for frame in during)
        # Python gets no copy of the frames, only the stream's "started" event.
        assert pacer.take_released() == []
        assert [event.kind for event in pacer.take_events()] == ["started"]
        on_wire = during + parse_frames(receive_all(peer))
        stats = stream.stats()
        assert stats.frames_released >= len(on_wire) > 0
        assert stats.sink_refused == 0
    sink.close()
