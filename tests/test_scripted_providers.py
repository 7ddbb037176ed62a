"""The scripted providers: output, timings (MockClock) and failure modes as documented."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import numpy as np
import pytest
import trio

from voicecore.engine.history import Message
from voicecore.engine.stages import LLM, STT, TTS, AudioFrame, TurnContext
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance


def ctx() -> TurnContext:
    return TurnContext.standalone("test")


async def frames(pattern: list[int], ms: int = 20) -> AsyncIterator[AudioFrame]:
    """20 ms frames of constant level ``pattern[i]``, one per 20 ms of Trio time."""
    n = 16 * ms
    for index, level in enumerate(pattern):
        await trio.sleep(ms / 1000)
        yield AudioFrame(np.full(n, level, dtype="<i2").tobytes(), 16000, index * n)


def test_they_implement_the_stage_protocols() -> None:
    assert isinstance(ScriptedSTT([Utterance()]), STT)
    assert isinstance(ScriptedLLM(["a"]), LLM)
    assert isinstance(ScriptedTTS(), TTS)


async def test_stt_partials_follow_the_audio_then_the_final(autojump_clock: trio.abc.Clock) -> None:
    stt = ScriptedSTT([Utterance(["a", "a b"], "A b.")], partial_every_ms=100, final_delay_s=0.25)
    start = trio.current_time()
    out = [
        (round(trio.current_time() - start, 3), t)
        async for t in stt.transcribe(frames([1000] * 10), ctx())
    ]
    assert [(t, x.text, x.is_final) for t, x in out] == [
        (0.1, "a", False),
        (0.2, "a b", False),
        (0.45, "A b.", True),
    ]
    assert stt.audio_ms == [200.0]


async def test_stt_endpointing_finalises_after_trailing_silence(
    autojump_clock: trio.abc.Clock,
) -> None:
    stt = ScriptedSTT([Utterance([], "Done.")], endpoint_silence_ms=60)
    # 3 loud frames then silence that never ends: the final comes after 3 quiet frames.
    async with contextlib.aclosing(frames([2000] * 3 + [0] * 100)) as audio:
        out = [t async for t in stt.transcribe(audio, ctx())]
    assert out[-1].is_final
    assert stt.audio_ms == [120.0]


async def test_stt_script_advances_and_repeats_its_last_utterance() -> None:
    stt = ScriptedSTT([Utterance([], "One."), Utterance([], "Two.")])
    finals = [[t.text async for t in stt.transcribe(frames([]), ctx())] for _ in range(3)]
    assert finals == [["One."], ["Two."], ["Two."]]


async def test_stt_error_and_stall(autojump_clock: trio.abc.Clock) -> None:
    stt = ScriptedSTT([Utterance([], "x", error=RuntimeError("down")), Utterance(stall=True)])
    with pytest.raises(RuntimeError, match="down"):
        [t async for t in stt.transcribe(frames([0]), ctx())]
    with trio.move_on_after(100) as scope:
        [t async for t in stt.transcribe(frames([0]), ctx())]
    assert scope.cancelled_caught


async def test_llm_streams_words_with_its_delays(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["Hello there friend."], first_token_delay_s=0.5, token_delay_s=0.1)
    start = trio.current_time()
    messages = [Message("user", "hi")]
    out = [(round(trio.current_time() - start, 3), d) async for d in llm.generate(messages, ctx())]
    assert out == [(0.5, "Hello"), (0.6, " there"), (0.7, " friend.")]
    assert llm.calls == [messages]
    assert llm.closed == 1


async def test_llm_failure_and_stall_after_some_deltas(autojump_clock: trio.abc.Clock) -> None:
    llm = ScriptedLLM(["a b c", "d e f"])
    llm.fail(0, ValueError("boom"), after_deltas=2)
    llm.stall(1, after_deltas=1)
    got: list[str] = []

    async def collect() -> None:
        async for delta in llm.generate([], ctx()):
            got.append(delta)

    with pytest.raises(ValueError, match="boom"):
        await collect()
    assert got == ["a", " b"]
    got.clear()
    with trio.move_on_after(10):
        await collect()
    assert got == ["d"]
    assert llm.closed == 2


async def test_tts_duration_chunks_and_delay(autojump_clock: trio.abc.Clock) -> None:
    tts = ScriptedTTS(sample_rate=24000, ms_per_char=10.0, chunk_ms=50.0, first_audio_delay_s=0.2)
    start = trio.current_time()
    chunks = [c async for c in tts.synthesize("x" * 12, ctx())]  # 120 ms of audio
    assert trio.current_time() - start == pytest.approx(0.2)
    assert [len(c.pcm) for c in chunks] == [1200, 1200, 480]
    assert all(c.sample_rate == 24000 and c.pcm.dtype == np.int16 for c in chunks)
    assert sum(len(c.pcm) for c in chunks) == tts.samples_for("x" * 12)
    assert np.abs(chunks[0].pcm).max() > 7000  # the tone, not silence


async def test_tts_error_and_stall(autojump_clock: trio.abc.Clock) -> None:
    tts = ScriptedTTS(error=RuntimeError("tts down"), fail_call=0, stall_call=1)
    with pytest.raises(RuntimeError, match="tts down"):
        [c async for c in tts.synthesize("a", ctx())]
    with trio.move_on_after(10) as scope:
        [c async for c in tts.synthesize("b", ctx())]
    assert scope.cancelled_caught
    assert tts.closed == 2


def test_bad_scripts_are_rejected() -> None:
    with pytest.raises(ValueError, match="at least one"):
        ScriptedSTT([])
    with pytest.raises(ValueError, match="at least one"):
        ScriptedLLM([])
    with pytest.raises(ValueError, match=">= 0"):
        ScriptedLLM(["a"], token_delay_s=-1)
    with pytest.raises(ValueError, match="endpoint_silence_ms"):
        ScriptedSTT([Utterance()], endpoint_silence_ms=0)
