"""The pure-Python pacing baseline (``harness.trio_pacer``): a real ``Session``
through ``PlayoutRouter`` on it, its release schedule against the Rust pacer's, its errors."""

from __future__ import annotations

import contextlib
import gc
import math
import os
import select
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import numpy as np
import pytest
import trio

from harness.speech import RATE, noise, voice
from harness.trio_pacer import ENV, TrioFramePacer, pacer_from_env
from session_helpers import is_event, receive_until, start
from voicecore import FramePacer
from voicecore.engine.pacing import push, receive_released
from voicecore.engine.playout import PlayoutRouter
from voicecore.engine.session import Session
from voicecore.engine.stages import AudioChunk, TurnContext
from voicecore.engine.transport import MemoryClient, memory_transport
from voicecore.exceptions import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    PacerStoppedError,
    UnknownStreamError,
    UnsupportedSampleRateError,
)
from voicecore.protocol import AgentAudio, AgentText, Clear, Pause
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance


def readable(fd: int) -> bool:
    return bool(select.select([fd], [], [], 0)[0])


@dataclass
class RecordingTTS:
    """A ``ScriptedTTS`` at the session's rate (so nothing is resampled) that keeps every
    chunk of PCM it yields: what the session pushes into the pacer."""

    inner: ScriptedTTS = field(default_factory=lambda: ScriptedTTS(sample_rate=RATE))
    pcm: list[bytes] = field(default_factory=list)

    async def synthesize(self, text: str, ctx: TurnContext) -> AsyncIterator[AudioChunk]:
        # Closed with us: a barge-in cancels the call mid-stream.
        async with contextlib.aclosing(self.inner.synthesize(text, ctx)) as chunks:  # type: ignore[type-var]
            async for chunk in chunks:
                self.pcm.append(bytes(chunk.pcm))
                yield chunk


def trio_session(
    tts: RecordingTTS, stt: ScriptedSTT, llm: ScriptedLLM
) -> tuple[Session, MemoryClient, TrioFramePacer]:
    transport, client = memory_transport(RATE)
    pacer = TrioFramePacer()
    session = Session(
        transport, stt=stt, llm=llm, tts=tts, pacer=PlayoutRouter(pacer)
    )  # the router runs the pacer's task
    return session, client, pacer


async def test_a_session_turn_is_paced_by_the_trio_pacer(autojump_clock: trio.abc.Clock) -> None:
    tts = RecordingTTS()
    session, client, pacer = trio_session(
        tts, ScriptedSTT([Utterance([], "What time is it?")]), ScriptedLLM(["It is nine."])
    )
    router = session._router
    assert router is not None
    async with trio.open_nursery() as nursery:
        nursery.start_soon(router.run)
        await start(nursery, session, client, noise(500) + voice(800) + noise(3000))
        await receive_until(client, is_event("agent_done"))
        nursery.cancel_scope.cancel()
    assert pacer.stopped  # its task ended with the router's
    frames = client.audio(1)
    # The frames are the TTS audio, in order, then the last frame's silent padding.
    sent, pushed = b"".join(f.pcm for f in frames), b"".join(tts.pcm)
    assert sent[: len(pushed)] == pushed
    assert set(sent[len(pushed) :]) <= {0}
    assert len(sent) - len(pushed) < 640
    # Paced: the cushion at once, then one frame per 20 ms of Trio time.
    burst = session.config.cushion_ms // 20
    times = [t for t, m in client.received if isinstance(m, AgentAudio)]
    assert times[:burst] == [times[0]] * burst
    assert times[burst] > times[0]
    assert np.diff(times[burst:]) == pytest.approx(0.02, abs=1e-6)
    # The session's metrics saw the Trio pacer's frames, released on time (MockClock).
    turn = session.metrics.turns[0]
    assert turn.voice_to_voice_ms is not None
    assert session.metrics.pacer_lateness_max_ms is not None
    assert session.metrics.pacer_lateness_max_ms < 0.001


async def test_barge_in_flushes_the_trio_pacer(autojump_clock: trio.abc.Clock) -> None:
    story = "Once upon a time there was a bug. It hid in the pacer. Nobody found it for years."
    tts = RecordingTTS()
    session, client, _ = trio_session(
        tts,
        ScriptedSTT([Utterance([], "Tell me a story."), Utterance(["stop"], "Stop.")]),
        ScriptedLLM([story, "Okay."]),
    )
    router = session._router
    assert router is not None
    mic = noise(500) + voice(1000) + noise(2000) + voice(600) + noise(6000)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(router.run)
        await start(nursery, session, client, mic)
        clear = await receive_until(client, lambda m: isinstance(m, Clear))
        await receive_until(client, is_event("agent_done", turn_id=2))
        nursery.cancel_scope.cancel()
    assert isinstance(clear, Clear)
    assert clear.turn_id == 1
    index = next(i for i, (_, m) in enumerate(client.received) if m is clear)
    after = [m for _, m in client.received[index:]]
    # No frame of turn 1 after its clear: frames carry no turn id on the wire, and the
    # first frame after the clear comes after turn 2's first agent_text.
    second = next(i for i, m in enumerate(after) if isinstance(m, AgentText) and m.turn_id == 2)
    assert not [m for m in after[:second] if isinstance(m, AgentAudio)]
    # Sent: the cushion ahead of the playback until the pause; heard = sent - cushion (the
    # Rust pacer's figures in test_session's barge-in test).
    cushion = session.config.cushion_ms
    paused_at = next(t for t, m in client.received if isinstance(m, Pause))
    expected_ms = 1000 * (paused_at - 2.0) + cushion
    assert len(client.audio(1)) * 20 == pytest.approx(expected_ms, abs=40)
    heard = client.events("agent_done")[0]["heard"]
    assert story.startswith(heard)
    assert 20 <= len(heard) <= 40
    assert client.audio(2)


async def test_flush_report_counts_queued_taken_and_heard(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        pacer = TrioFramePacer()
        nursery.start_soon(pacer.run)
        stream = pacer.open_stream(16000, cushion_ms=120)
        assert stream.push(np.zeros(16000, dtype=np.int16)) == 16000  # 1 s
        taken = await receive_released(pacer)
        assert len(taken) == 6  # the cushion's burst, at once
        await trio.sleep(0.2 + 0.001)  # 10 more frames are released, not taken
        report = stream.flush()
        nursery.cancel_scope.cancel()
    # Released and taken: 6 frames; 10 released frames not taken count as dropped.
    assert report.released_samples == 6 * 320
    assert report.dropped_samples == 16000 - 6 * 320
    # The client got 120 ms 201 ms ago: it has played it all, heard everything.
    assert report.client_buffered_samples == 0
    assert report.heard_ms == pytest.approx(120)
    assert report.dropped_ms == pytest.approx(1000 - 120)
    assert pacer.take_released() == []  # the flush took back what was waiting
    stats = pacer.stats()
    assert (stats.flushes, stats.dropped_samples, stats.frames_released) == (1, 14080, 16)


async def test_backpressure_through_the_writable_descriptor(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with trio.open_nursery() as nursery:
        pacer = TrioFramePacer()
        nursery.start_soon(pacer.run)
        stream = pacer.open_stream(16000, queue_ms=200, cushion_ms=40)
        assert stream.push(np.ones(16000, dtype=np.int16)) == 3200  # 200 ms fit
        assert not readable(stream.writable_fileno())
        start_s = trio.current_time()
        # Half the queue must drain: 2 frames of burst, then 3 more at 20 ms each.
        await trio.lowlevel.wait_readable(stream.writable_fileno())
        assert trio.current_time() - start_s == pytest.approx(0.06)
        assert stream.stats().queued_samples == 1600
        await push(stream, np.ones(8000, dtype=np.int16))  # waits for space as needed
        assert stream.stats().queued_samples + stream.stats().released_samples == 3200 + 8000
        nursery.cancel_scope.cancel()


async def test_underruns_and_finish_as_the_rust_pacer(autojump_clock: trio.abc.Clock) -> None:
    async with trio.open_nursery() as nursery:
        pacer = TrioFramePacer(frame_ms=10)
        nursery.start_soon(pacer.run)
        stream = pacer.open_stream(8000, cushion_ms=20)
        stream.push(np.zeros(200, dtype=np.int16))  # 25 ms: 2 frames and a half
        await trio.sleep(0.1)
        stats = stream.stats()
        assert (stats.frames_released, stats.playing) == (2, True)
        assert stats.underruns > 0
        assert stream.finish() == 40  # the half frame padded
        await trio.sleep(0.1)
        stats = stream.stats()
        # The padded frame went out, then the stream went idle: no more underruns.
        underruns = stats.underruns
        assert (stats.frames_released, stats.playing) == (3, False)
        await trio.sleep(0.1)
        assert stream.stats().underruns == underruns
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("client_ppm", [0, 8000, -8000])
async def test_release_schedule_matches_the_rust_pacer(
    autojump_clock: trio.abc.Clock, client_ppm: int
) -> None:
    """The same pushes and playout reports (a client playing ``client_ppm`` fast) through
    the Rust pacer on a virtual clock and the Trio pacer on Trio's mock clock: the frames
    released by each 20 ms tick agree within one frame."""
    tick_ns, ticks = 20_000_000, 250  # 5 s
    audio = np.arange(16000 * 6, dtype=np.int64).astype(np.int16)  # 6 s, more than played

    def client_buffered_ms(released: int, at_ns: int, first_ns: int | None) -> float:
        if first_ns is None:
            return 0.0
        played = (at_ns - first_ns) * 16 * (1 + client_ppm / 1e6) / 1e6  # 16 samples per ms
        return max(0.0, released - played) / 16

    def report_due(step: int) -> bool:
        return step % 12 == 11  # a playout report every 240 ms

    rust_counts: list[int] = []
    rust_deadlines: list[int] = []
    with FramePacer(clock="virtual") as rust:
        stream = rust.open_stream(16000)
        assert stream.push(audio[:32000]) == 32000  # a 2 s queue
        done, released, first_ns = 32000, 0, None
        for step in range(ticks):
            now = (step + 1) * tick_ns
            rust.advance_to(now)
            frames = rust.take_released()
            rust_deadlines += [f.deadline_ns for f in frames]
            if frames and first_ns is None:
                first_ns = frames[0].released_ns
            released += 320 * len(frames)
            done += stream.push(audio[done:])
            rust_counts.append(released)
            if report_due(step):
                stream.report_playout(client_buffered_ms(released, now, first_ns))

    trio_counts: list[int] = []
    trio_deadlines: list[int] = []
    contents = bytearray()
    async with trio.open_nursery() as nursery:
        pacer = TrioFramePacer()
        nursery.start_soon(pacer.run)
        t0 = pacer.now_ns()
        tstream = pacer.open_stream(16000)
        assert tstream.push(audio[:32000]) == 32000
        done, released, first_ns = 32000, 0, None
        for step in range(ticks):
            now = (step + 1) * tick_ns
            await trio.sleep_until((t0 + now) / 1e9)
            await trio.testing.wait_all_tasks_blocked()  # the pacer task served this instant
            frames = pacer.take_released()
            trio_deadlines += [f.deadline_ns - t0 for f in frames]
            if frames and first_ns is None:
                first_ns = frames[0].released_ns - t0
            released += 320 * len(frames)
            contents += b"".join(f.pcm16 for f in frames)
            done += tstream.push(audio[done:])
            trio_counts.append(released)
            if report_due(step):
                tstream.report_playout(client_buffered_ms(released, now, first_ns))
        stats = tstream.stats()
        nursery.cancel_scope.cancel()
    diffs = [abs(a - b) for a, b in zip(rust_counts, trio_counts, strict=True)]
    assert max(diffs) <= 320, (rust_counts, trio_counts)
    # In fact the same schedule: every frame due at the same instant (to float rounding of
    # Trio's clock), since both serve a tick's deadlines before that tick's report.
    assert len(trio_deadlines) == len(rust_deadlines)
    assert max(abs(a - b) for a, b in zip(rust_deadlines, trio_deadlines, strict=True)) < 1000
    # Both kept the client's cushion: the count at 5 s is the audio played plus ~120 ms.
    expected = 16 * (5000 - 0) * (1 + client_ppm / 1e6) + 16 * 120
    assert trio_counts[-1] == pytest.approx(expected, abs=3 * 320)
    assert bytes(contents) == audio[: len(contents) // 2].tobytes()  # in order, nothing lost
    assert stats.underruns == 0
    assert math.copysign(1, stats.client_rate_ppm) == math.copysign(1, client_ppm) or not client_ppm


async def test_stop_wakes_waiters_and_refuses_calls(autojump_clock: trio.abc.Clock) -> None:
    pacer = TrioFramePacer()
    stream = pacer.open_stream(16000, queue_ms=20)
    stream.push(np.zeros(640, dtype=np.int16))  # cut short: the writable fd is cleared
    assert not readable(stream.writable_fileno())
    with pacer:
        pass  # __exit__ stops it
    assert pacer.stopped
    assert readable(stream.writable_fileno())
    assert readable(pacer.fileno())
    with pytest.raises(PacerStoppedError):
        stream.push(b"\0\0")
    with pytest.raises(PacerStoppedError):
        pacer.open_stream(16000)
    with pytest.raises(PacerStoppedError):
        await receive_released(pacer)
    assert pacer.stats().open_streams == 1
    assert "stopped=True" in repr(pacer)
    await pacer.run()  # returns at once: nothing to pace


async def test_closed_stream_and_bad_arguments_raise() -> None:
    with pytest.raises(ConfigError, match="frame_ms"):
        TrioFramePacer(frame_ms=25)
    pacer = TrioFramePacer(frame_ms=10)
    with pytest.raises(UnsupportedSampleRateError, match="22050"):
        pacer.open_stream(22050)  # not a whole number of samples in 10 ms
    with pytest.raises(ConfigError, match="channels"):
        pacer.open_stream(16000, channels=2)
    with pytest.raises(ConfigError, match="cushion_ms"):
        pacer.open_stream(16000, cushion_ms=5)
    with pytest.raises(ConfigError, match="max_lead_ms"):
        pacer.open_stream(16000, cushion_ms=100, max_lead_ms=100)
    with pytest.raises(ConfigError, match="queue_ms"):
        pacer.open_stream(16000, queue_ms=0)
    stream = pacer.open_stream(16000)
    assert (stream.frame_samples, stream.max_lead_ms, stream.queue_ms) == (160, 160, 2000)
    assert "frame_samples=160" in repr(stream)
    with pytest.raises(AudioFormatError, match="3 bytes"):
        stream.push(b"\0\0\0")
    with pytest.raises(AudioTypeError, match="float64"):
        stream.push(np.zeros(10))  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError, match="one-dimensional"):
        stream.push(np.zeros((2, 2), dtype=np.int16))
    with pytest.raises(AudioFormatError, match="one-dimensional"):
        stream.push(np.zeros(10, dtype=np.int16)[::2])
    with pytest.raises(AudioFormatError, match="byte order"):
        stream.push(np.zeros(4, dtype=">i2"))
    with pytest.raises(AudioFormatError, match="sample 1 is nan"):
        stream.push(np.array([0.0, np.nan], dtype=np.float32))
    with pytest.raises(ConfigError, match="buffered_ms"):
        stream.report_playout(-1.0)
    assert stream.push(np.array([1.0, -1.0, 0.5], dtype=np.float32)) == 3
    stream.close()
    with pytest.raises(UnknownStreamError):
        stream.push(b"\0\0")
    with pytest.raises(UnknownStreamError):
        stream.stats()
    assert readable(stream.writable_fileno())  # a producer waiting on it wakes
    pacer.stop()


async def test_float_audio_is_converted_as_the_rust_pacer_does() -> None:
    samples = np.array([1.5, -1.0, 0.5, -0.25, 1e-5], dtype=np.float32)
    with FramePacer(clock="virtual") as rust:
        rstream = rust.open_stream(8000, cushion_ms=20)
        rstream.push(np.concatenate([samples, np.zeros(155, dtype=np.float32)]))
        rust.advance(0)
        (expected,) = rust.take_released()
    pacer = TrioFramePacer()
    stream = pacer.open_stream(8000, cushion_ms=20)
    stream.push(np.concatenate([samples, np.zeros(155, dtype=np.float32)]))
    assert pacer._streams[stream.id].queue == bytearray(expected.pcm16)
    pacer.stop()


def test_pacer_from_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV, raising=False)
    assert pacer_from_env(20) is None
    monkeypatch.setenv(ENV, "rust")
    assert pacer_from_env(20) is None
    monkeypatch.setenv(ENV, "trio")
    pacer = pacer_from_env(40)
    assert isinstance(pacer, TrioFramePacer)
    assert pacer.frame_ms == 40
    assert (pacer.clock, pacer.scheduling) == ("trio", "trio task (event loop)")
    monkeypatch.setenv(ENV, "asyncio")
    with pytest.raises(ValueError, match=ENV):
        pacer_from_env(20)


async def test_descriptors_are_closed_with_their_objects() -> None:
    pacer = TrioFramePacer()
    stream = pacer.open_stream(16000)
    fds = [pacer.fileno(), stream.writable_fileno()]
    pacer.stop()
    del pacer, stream
    gc.collect()
    for fd in fds:
        with pytest.raises(OSError, match="Bad file descriptor"):
            os.fstat(fd)
