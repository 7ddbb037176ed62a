"""PocketSphinx streaming STT on real speech, under Trio: partials, finals, cancellation."""

from __future__ import annotations

import itertools
import re
import threading
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from voicecore.engine.stages import STT, AudioFrame, Hypothesis, TurnContext
from voicecore.exceptions import AudioFormatError, ConfigError
from voicecore.providers import SphinxSTT

RATE = 16000
FRAME = 320  # 20 ms


def context() -> TurnContext:
    return TurnContext.standalone("test")


class Feed:
    """Frames served one by one, optionally paced like a live microphone (in real time).

    A plain async iterator, not an async generator: a transcription cancelled mid-stream
    leaves it unfinished, with nothing to finalize (the engine's channel behaves alike).
    """

    def __init__(self, items: list[AudioFrame], *, real_time: bool = False) -> None:
        self.items, self.real_time = items, real_time
        self.index = 0
        self.start: float | None = None

    def __aiter__(self) -> Feed:
        return self

    async def __anext__(self) -> AudioFrame:
        if self.index >= len(self.items):
            raise StopAsyncIteration
        frame = self.items[self.index]
        self.index += 1
        if self.start is None:
            self.start = trio.current_time()
        if self.real_time:
            await trio.sleep_until(self.start + frame.start_sample / frame.sample_rate)
        else:
            await trio.lowlevel.checkpoint()
        return frame


def frames(samples: npt.NDArray[np.int16], *, frame: int = FRAME, real_time: bool = False) -> Feed:
    """``samples`` as a stream of ``frame``-sample frames (20 ms by default)."""
    return Feed(
        [
            AudioFrame(samples[offset : offset + frame].tobytes(), RATE, offset)
            for offset in range(0, len(samples), frame)
        ],
        real_time=real_time,
    )


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-z']+", text.lower()))


async def collect(stt: SphinxSTT, samples: npt.NDArray[np.int16]) -> list[Hypothesis]:
    return [t async for t in stt.transcribe(frames(samples), context())]


def by_name(speech: list[Any], name: str) -> Any:
    return next(u for u in speech if u.name == name)


async def test_is_an_stt_stage() -> None:
    stt = SphinxSTT()
    assert isinstance(stt, STT)
    assert "SphinxSTT(loaded=False" in repr(stt)
    await stt.load()
    load_s = stt.stats().decoder_load_s
    assert load_s is not None
    assert load_s > 0
    await stt.load()  # once per session: not created again
    assert stt.stats().decoder_load_s == load_s


async def test_real_speech_partials_then_a_final_sharing_the_words(speech: list[Any]) -> None:
    stt = SphinxSTT()
    for utterance in speech:
        transcripts = await collect(stt, utterance.samples)
        assert transcripts[-1].is_final
        assert [t.is_final for t in transcripts].count(True) == 1
        partials = [t.text for t in transcripts[:-1]]
        assert partials, f"{utterance.name}: no partial before the final"
        assert all(a != b for a, b in itertools.pairwise(partials))  # changes only
        reference, final = words(utterance.transcript), words(transcripts[-1].text)
        shared = len(reference & final) / len(reference)
        assert shared >= 0.4, (utterance.name, transcripts[-1].text, utterance.transcript)
    # One decoder for every utterance.
    stats = stt.stats()
    assert stats.utterances == stats.finals == len(speech)
    total_s = sum(len(u.samples) for u in speech) / RATE
    assert stats.audio_s == pytest.approx(total_s)
    assert 0 < stats.real_time_factor < 1.5


def recognized(transcript: Hypothesis) -> bool:
    """The short command "go forward ten meters" recognized (the last word varies: the
    decoder's cepstral mean adapts over the utterances it has heard)."""
    return transcript.is_final and words(transcript.text) >= {"go", "forward", "ten"}


async def test_a_short_command_is_recognized(speech: list[Any]) -> None:
    command = by_name(speech, "goforward.wav")
    transcripts = await collect(SphinxSTT(), command.samples)
    assert recognized(transcripts[-1]), transcripts[-1]


async def test_streams_live_20ms_frames_without_blocking_the_event_loop(
    speech: list[Any],
) -> None:
    command = by_name(speech, "goforward.wav")
    stt = SphinxSTT()
    await stt.load()
    duration_s = len(command.samples) / RATE
    received: list[tuple[float, Hypothesis]] = []
    start, trio_cpu = trio.current_time(), time.thread_time()
    stream = frames(command.samples, real_time=True)
    async for transcript in stt.transcribe(stream, context()):
        received.append((trio.current_time() - start, transcript))
    trio_cpu = time.thread_time() - trio_cpu
    first_partial_s = next(t for t, tr in received if not tr.is_final)
    final_s, final = received[-1]
    assert recognized(final), final
    assert first_partial_s < duration_s  # partials while the user still speaks
    assert final_s < duration_s + 3.0  # within the engine's default stt_final_timeout_s
    # The decoding ran in worker threads: the Trio thread spent a small fraction of the
    # decoder's CPU time (CPU time, so a loaded machine does not change the verdict).
    assert trio_cpu < 0.3 * stt.stats().decode_cpu_s, (trio_cpu, stt.stats())


async def test_cancellation_mid_utterance_is_prompt_and_the_decoder_is_reusable(
    speech: list[Any],
) -> None:
    long = by_name(speech, "librivox-0870.wav")
    stt = SphinxSTT()
    await stt.load()
    decoding, worker_done = threading.Event(), threading.Event()
    feed = stt._feed

    def slow_feed(call: int, pcm: bytes) -> str:
        # After 3 s of audio, one decoder call is made slow (1.5 s) so that the cancellation
        # certainly lands while a worker is busy with the decoder.
        if stt.stats().audio_s < 3.0:
            return feed(call, pcm)
        decoding.set()
        time.sleep(1.5)
        try:
            return feed(call, pcm)
        finally:
            worker_done.set()

    stt._feed = slow_feed  # type: ignore[method-assign]
    partials = 0

    async def transcribe() -> None:
        nonlocal partials
        async for transcript in stt.transcribe(frames(long.samples), context()):
            partials += not transcript.is_final

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transcribe)
        await trio.to_thread.run_sync(decoding.wait)
        cancelled_at = time.perf_counter()
        nursery.cancel_scope.cancel()
    returned_s = time.perf_counter() - cancelled_at
    assert partials
    assert stt.stats().finals == 0
    # The turn did not wait for the 1.5 s decoder call (abandoned in its thread; the bound
    # leaves a loaded machine room)...
    assert returned_s < 0.75
    assert not worker_done.is_set()
    # ...which kept the limiter: the next decoder use waits for it, so at most one call
    # ever runs, and none is left behind.
    stt._feed = feed  # type: ignore[method-assign]
    await stt.load()
    assert worker_done.is_set()
    # The next utterance decodes cleanly from a fresh start.
    command = by_name(speech, "goforward.wav")
    transcripts = await collect(stt, command.samples)
    assert recognized(transcripts[-1]), transcripts[-1]
    assert stt.stats().finals == 1


async def test_cancelled_while_the_final_is_decoded(speech: list[Any]) -> None:
    sentence = by_name(speech, "librivox-0880.wav")
    stt = SphinxSTT()
    await stt.load()
    finishing, release = threading.Event(), threading.Event()
    finish = stt._finish

    def spy(call: int) -> str:
        finishing.set()
        release.wait()  # the final pass cannot win the race against the cancellation
        return finish(call)

    stt._finish = spy  # type: ignore[method-assign]
    got: list[Hypothesis] = []

    async def transcribe() -> None:
        async for transcript in stt.transcribe(frames(sentence.samples), context()):
            got.append(transcript)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(transcribe)
        await trio.to_thread.run_sync(finishing.wait)  # end_utt's final pass is due
        nursery.cancel_scope.cancel()
    release.set()
    assert got
    assert not any(t.is_final for t in got)
    command = by_name(speech, "goforward.wav")
    assert recognized((await collect(stt, command.samples))[-1])


async def test_a_newer_call_takes_the_decoder_over(speech: list[Any]) -> None:
    command = by_name(speech, "goforward.wav")
    stt = SphinxSTT()
    older = stt.transcribe(frames(command.samples), context())
    first = await older.__anext__()  # the older call is mid-utterance
    assert not first.is_final
    newer = await collect(stt, command.samples)
    assert recognized(newer[-1]), newer[-1]
    with pytest.raises(RuntimeError, match="took this SphinxSTT's decoder over"):
        async for _ in older:
            pass


async def test_empty_audio_gives_one_empty_final() -> None:
    transcripts = [t async for t in SphinxSTT().transcribe(Feed([]), context())]
    assert transcripts == [Hypothesis("", is_final=True)]


async def test_decoder_calls_run_in_worker_threads(speech: list[Any]) -> None:
    stt = SphinxSTT()
    threads: set[int] = set()
    original = stt._feed

    def spy(call: int, pcm: bytes) -> str:
        threads.add(threading.get_ident())
        return original(call, pcm)

    stt._feed = spy  # type: ignore[method-assign]
    await collect(stt, by_name(speech, "goforward.wav").samples[:8000])
    assert threads
    assert threading.get_ident() not in threads


async def test_bad_audio_is_rejected() -> None:
    stt = SphinxSTT()
    with pytest.raises(ValueError, match="16000 Hz"):
        async for _ in stt.transcribe(Feed([AudioFrame(b"\0\0" * 160, 8000, 0)]), context()):
            pass
    with pytest.raises(AudioFormatError, match="even number of bytes"):
        async for _ in stt.transcribe(Feed([AudioFrame(b"\0" * 3, RATE, 0)]), context()):
            pass


async def test_second_pass_is_off_by_default_and_can_be_turned_on() -> None:
    fast, thorough = SphinxSTT(), SphinxSTT(second_pass=True)
    await fast.load()
    await thorough.load()
    assert not fast._decoder.config["fwdflat"]
    assert not fast._decoder.config["bestpath"]
    assert thorough._decoder.config["fwdflat"]
    assert thorough._decoder.config["bestpath"]
    custom = SphinxSTT(decoder_options={"bestpath": True})
    await custom.load()
    assert custom._decoder.config["bestpath"]
    assert not custom._decoder.config["fwdflat"]


def test_another_sample_rate_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="samprate=8000"):
        SphinxSTT(decoder_options={"samprate": 8000})
    SphinxSTT(decoder_options={"samprate": 16000})
