"""MoonshineSTT and MoonshineModel on the real model and real speech (``../shared/data/speech``).

Skipped with the reason when the model is not fetched (``make models``) or the speech corpus
is absent. The
machine is shared: most tests feed the audio as fast as the STT takes it; one streams a short
command in real time to see partials.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from harness.speech import Utterance, normalize, word_errors
from voicecore.engine.stages import STT, AudioFrame, Hypothesis, TurnContext
from voicecore.exceptions import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    ModelNotFoundError,
    UnsupportedSampleRateError,
)
from voicecore.providers.moonshine import MoonshineSTT
from voicecore.providers.moonshine_model import MoonshineModel, MoonshineTokenizer

RATE = 16000
FRAME = 320  # 20 ms
TAIL_MS = 600  # the engine's end-of-turn silence: it keeps sending frames meanwhile


@pytest.fixture(scope="module")
def model(moonshine_model_dir: Path) -> MoonshineModel:
    return MoonshineModel.shared(moonshine_model_dir)


@pytest.fixture(scope="module")
def clips(speech: list[Utterance]) -> dict[str, Utterance]:
    return {u.name: u for u in speech}


def with_tail(samples: npt.NDArray[np.int16], seed: int = 7) -> npt.NDArray[np.int16]:
    """The utterance then TAIL_MS of faint room noise (-60 dBFS), as the mic sends it."""
    noise = np.random.default_rng(seed).normal(0, 33, RATE * TAIL_MS // 1000)
    return np.concatenate([samples, noise.astype(np.int16)])


async def frames(
    samples: npt.NDArray[np.int16], *, realtime: bool = False, ended: list[float] | None = None
) -> AsyncIterator[AudioFrame]:
    """20 ms frames, in real time or as fast as they are taken; notes when they ran out."""
    for i in range(0, len(samples), FRAME):
        yield AudioFrame(samples[i : i + FRAME].tobytes(), RATE, i)
        await (trio.sleep(FRAME / RATE) if realtime else trio.lowlevel.checkpoint())
    if ended is not None:
        ended.append(trio.current_time())


def context() -> TurnContext:
    return TurnContext.standalone("test")


async def collect(stt: MoonshineSTT, samples: npt.NDArray[np.int16], **kw: Any) -> list[Any]:
    """[(time, hypothesis)...] of one utterance."""
    out = []
    async for hypothesis in stt.transcribe(frames(samples, **kw), context()):
        out.append((trio.current_time(), hypothesis))
    return out


def final_text(results: list[Any]) -> str:
    assert results
    assert results[-1][1].is_final
    assert all(not h.is_final for _, h in results[:-1])
    return str(results[-1][1].text)


# --- without the model -----------------------------------------------------------------------


def test_tokenizer_reads_one_and_two_byte_lengths(tmp_path: Path) -> None:
    long = "\u2581" + "x" * 200  # 202 bytes: a two-byte length prefix
    pieces = [b"<unk>", b"<s>", b"</s>", b"", "\u2581go".encode(), long.encode(), b"!"]
    data = b""
    for piece in pieces:
        n = len(piece)
        data += bytes([n]) if n < 128 else bytes([n % 128 + 128, n // 128])
        data += piece
    path = tmp_path / "tokenizer.bin"
    path.write_bytes(data)
    tokenizer = MoonshineTokenizer(path)
    assert len(tokenizer) == len(pieces)
    assert tokenizer.decode([1, 4, 5, 6, 2]) == "go " + "x" * 200 + "!"
    assert tokenizer.token_bytes(3) == b""
    path.write_bytes(data[:-1])
    with pytest.raises(Exception, match="truncated"):
        MoonshineTokenizer(path)


def test_missing_model_names_the_fix(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="voicecore models fetch moonshine-base-en"):
        MoonshineModel(tmp_path)
    with pytest.raises(ConfigError):
        MoonshineSTT(tmp_path, partial_interval_ms=0)


# --- with the model --------------------------------------------------------------------------


def test_real_model_tokenizer_and_input_checks(model: MoonshineModel) -> None:
    assert len(model.tokenizer) == 32000
    assert model.tokenizer.decode([3 + ord("a")]) == "a"  # byte fallback tokens
    assert model.transcribe(np.zeros(800, np.int16)) == ""  # < 100 ms: nothing to decode
    with pytest.raises(AudioTypeError):
        model.transcribe(np.zeros(1600, np.float64))  # type: ignore[arg-type]
    with pytest.raises(AudioFormatError):
        model.transcribe(np.zeros((2, 1600), np.float32))


def test_stt_protocol_and_rejected_audio(
    model: MoonshineModel, clips: dict[str, Utterance]
) -> None:
    stt = MoonshineSTT(model)
    assert isinstance(stt, STT)

    async def main() -> None:
        results = await collect(stt, with_tail(clips["goforward.wav"].samples))
        assert normalize(final_text(results))[:3] == ["go", "forward", "ten"]
        assert all(isinstance(h, Hypothesis) for _, h in results)

        def bad(frame: AudioFrame) -> trio.MemoryReceiveChannel[AudioFrame]:
            send, receive = trio.open_memory_channel[AudioFrame](1)
            send.send_nowait(frame)
            send.close()
            return receive

        with pytest.raises(UnsupportedSampleRateError):
            async for _ in stt.transcribe(bad(AudioFrame(b"\0\0" * 160, 8000, 0)), context()):
                pass
        with pytest.raises(AudioFormatError):
            async for _ in stt.transcribe(bad(AudioFrame(b"\0" * 3, RATE, 0)), context()):
                pass

    trio.run(main)
    assert stt.stats().finals == 1


def test_word_error_rate_well_under_pocketsphinx(
    model: MoonshineModel, speech: list[Utterance]
) -> None:
    # PocketSphinx (the offline default) scores ~0.27-0.3 on these clips.
    stt = MoonshineSTT(model)
    errors = words = 0

    async def main() -> None:
        nonlocal errors, words
        for u in speech:
            text = final_text(await collect(stt, with_tail(u.samples)))
            reference = normalize(u.transcript)
            errors += word_errors(reference, normalize(text))
            words += len(reference)

    trio.run(main)
    wer = errors / words
    print(f"Moonshine WER {wer:.3f} ({errors}/{words} words)")
    assert wer < 0.15


def test_partials_arrive_while_speaking_and_agree_with_the_final(
    model: MoonshineModel, clips: dict[str, Utterance]
) -> None:
    u = clips["librivox-0880.wav"]  # 3 s, streamed in real time
    stt = MoonshineSTT(model)
    ended: list[float] = []

    async def main() -> list[Any]:
        return await collect(stt, with_tail(u.samples), realtime=True, ended=ended)

    results = trio.run(main)
    final = normalize(final_text(results))
    partials = [(t, h) for t, h in results if not h.is_final]
    assert partials, "no partial while the user spoke"
    assert partials[0][0] < ended[0] - TAIL_MS / 1000  # during the speech itself
    last = normalize(partials[-1][1].text)
    # Same words: the last partial matches the start of the final, but for its last two words
    # (the partial's audio ends where the decode started, often inside a word: the words at
    # that edge may be heard differently; seen under load: "...not and the" for "...not in").
    stable = last[:-2]
    assert word_errors(final[: len(stable)], stable) <= max(1, len(stable) // 3), (last, final)
    print(f"final {1000 * (results[-1][0] - ended[0]):+.0f} ms after the end of audio")


def test_cancelled_mid_decode_returns_promptly_and_frees_the_worker(
    model: MoonshineModel, clips: dict[str, Utterance]
) -> None:
    samples = clips["librivox-0870.wav"].samples  # 7 s: the final decode takes > 1 s of CPU
    stt = MoonshineSTT(model, partial_interval_ms=None, speculative_silence_ms=None)
    aborted_before = model.stats().aborted

    async def main() -> float:
        with trio.move_on_after(0.3) as scope:  # the audio is fed at once: mid final decode
            await collect(stt, samples)
        assert scope.cancelled_caught
        returned = time.perf_counter()
        deadline = trio.current_time() + 2.0
        while model.limiter.borrowed_tokens and trio.current_time() < deadline:
            await trio.sleep(0.01)
        assert model.limiter.borrowed_tokens == 0
        return time.perf_counter() - returned

    freed_s = trio.run(main)
    assert freed_s < 0.5, f"the worker came back {freed_s:.2f} s after the cancellation"
    assert model.stats().aborted == aborted_before + 1


def test_deterministic_and_shared_between_concurrent_calls(
    model: MoonshineModel, clips: dict[str, Utterance]
) -> None:
    a = with_tail(clips["goforward.wav"].samples)
    b = with_tail(clips["librivox-0880.wav"].samples)
    stt = MoonshineSTT(model)  # one STT (and one model) for both calls

    async def sequential() -> list[str]:
        return [final_text(await collect(stt, x)) for x in (a, b)]

    async def concurrent() -> list[str]:
        texts = ["", ""]

        async def one(i: int, x: npt.NDArray[np.int16]) -> None:
            texts[i] = final_text(await collect(stt, x))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(one, 0, a)
            nursery.start_soon(one, 1, b)
        return texts

    first = trio.run(sequential)
    assert trio.run(sequential) == first
    assert trio.run(concurrent) == first
