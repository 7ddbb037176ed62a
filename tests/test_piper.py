"""Piper TTS with the real voice: phonemes to ids, audio, streaming, cancellation, sharing,
and a round trip through PocketSphinx. Skips with a clear message when the voice is absent
(the ``piper_voice_dir`` fixture: the model registry; skipped until `make models`).

The piece planner and the config checks need no voice and always run."""

# IPA strings are the subject here: their letters only look like ASCII ones.
# ruff: noqa: RUF001

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import trio

from voicecore._core import Resampler
from voicecore.engine.stages import STT_SAMPLE_RATE, TTS, AudioChunk, AudioFrame, TurnContext
from voicecore.exceptions import ConfigError, ModelNotFoundError, SynthesisError
from voicecore.providers import SphinxSTT
from voicecore.providers.espeak import EspeakEngine, PhonemeClause
from voicecore.providers.piper import (
    BOS,
    EOS,
    PAD,
    PiperConfig,
    PiperTTS,
    PiperVoice,
    plan_pieces,
)

SENTENCE = "The weather will be sunny tomorrow with a light breeze from the west."
LONG = (
    "The train to Edinburgh leaves from platform four at twenty past nine, and if you "
    "hurry you can still buy a coffee and a newspaper before it departs, but the station "
    "is busy this morning, so please allow an extra ten minutes."
)


@pytest.fixture(scope="module")
def voice(piper_voice_dir: Path) -> PiperVoice:
    return PiperVoice.shared(piper_voice_dir)


@pytest.fixture
def tts(voice: PiperVoice) -> PiperTTS:
    return PiperTTS(voice)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def collect(tts: PiperTTS, text: str, ctx: TurnContext | None = None) -> list[AudioChunk]:
    return [chunk async for chunk in tts.synthesize(text, ctx)]


async def idle(voice: PiperVoice) -> None:
    """Waits until the voice's workers have nothing queued or running."""
    for _ in range(500):
        stats = voice.stats()
        if stats.queued == stats.running == 0:
            return
        await trio.sleep(0.01)


# --- no voice needed ------------------------------------------------------------------------


def clause(phonemes: str, terminator: str = "") -> PhonemeClause:
    return PhonemeClause(phonemes, terminator)


def test_pieces_are_sentences_with_their_punctuation() -> None:
    clauses = [clause("həlˈoʊ", "!"), clause("wˈɛl", ","), clause("hˌaʊ ɑːɹ juː", "?")]
    assert plan_pieces(clauses, first_max=100, max_len=100) == ["həlˈoʊ!", "wˈɛl, hˌaʊ ɑːɹ juː?"]


def test_a_long_sentence_is_cut_at_clauses_and_the_first_piece_is_short() -> None:
    clauses = [clause("a" * 10, ","), clause("b" * 30, ","), clause("c" * 30, ".")]
    # First piece under 15: the first clause alone; then clauses packed under 70.
    assert plan_pieces(clauses, first_max=15, max_len=70) == [
        "a" * 10 + ",",
        "b" * 30 + ", " + "c" * 30 + ".",
    ]
    assert plan_pieces(clauses, first_max=70, max_len=70) == [
        "a" * 10 + ", " + "b" * 30 + ",",
        "c" * 30 + ".",
    ]


def test_an_overlong_first_clause_is_cut_between_words() -> None:
    long_clause = clause(" ".join(["wɜːd"] * 12), ".")  # 59 characters
    pieces = plan_pieces([long_clause], first_max=24, max_len=120)
    assert len(pieces) == 2
    assert len(pieces[0]) <= 24
    assert " ".join(pieces) == long_clause.phonemes + "."
    # Later pieces over the limit are cut into about equal parts.
    pieces = plan_pieces([long_clause], first_max=20, max_len=20)
    assert all(len(p) <= 20 for p in pieces)
    assert " ".join(pieces) == long_clause.phonemes + "."
    with pytest.raises(ConfigError):
        plan_pieces([long_clause], first_max=30, max_len=20)


def test_missing_or_malformed_voice_files(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match=r"holds no \.onnx"):
        PiperVoice(tmp_path)
    (tmp_path / "v.onnx").write_bytes(b"not a model")
    with pytest.raises(ModelNotFoundError, match=r"v\.onnx\.json"):
        PiperVoice(tmp_path)
    (tmp_path / "v.onnx.json").write_text("{}")
    with pytest.raises(ConfigError, match="not a Piper voice config"):
        PiperVoice(tmp_path / "v.onnx")
    config = {
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], "a": [3]},
    }
    (tmp_path / "v.onnx.json").write_text(json.dumps(config))
    assert PiperConfig.from_json(tmp_path / "v.onnx.json").num_symbols == 4
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        PiperVoice(tmp_path)
    (tmp_path / "v.onnx.json").write_text(json.dumps({**config, "phoneme_type": "text"}))
    with pytest.raises(ConfigError, match="phoneme_type"):
        PiperConfig.from_json(tmp_path / "v.onnx.json")


# --- with the voice -------------------------------------------------------------------------


async def test_phonemes_of_a_known_sentence_map_to_ids(voice: PiperVoice) -> None:
    assert voice.espeak_voice == "en-us"
    clauses = await EspeakEngine.shared().phonemize_async(SENTENCE, voice.espeak_voice)
    ipa = " ".join(c.phonemes + c.terminator for c in clauses)
    assert ipa == "ðə wˈɛðɚ wɪl biː sˈʌni təmˈɑːɹoʊ wɪð ɐ lˈaɪt bɹˈiːz fɹʌmðə wˈɛst."
    id_map = voice.config.phoneme_id_map
    chars = unicodedata.normalize("NFD", ipa)
    assert set(chars) <= set(id_map), set(chars) - set(id_map)
    ids = voice.phoneme_ids(ipa)
    # ^ _ then each phoneme followed by _, then $.
    assert ids[:2] == [*id_map[BOS], *id_map[PAD]]
    assert ids[-1:] == list(id_map[EOS])
    assert ids[2:-1:2] == [id_map[c][0] for c in chars]
    assert set(ids[3:-1:2]) == set(id_map[PAD])
    before = voice.stats().missing_phonemes
    assert voice.phoneme_ids("a☃b") == voice.phoneme_ids("ab")  # unknown: dropped, counted
    assert voice.stats().missing_phonemes == before + 1


async def test_audio_of_a_sentence_is_loud_speech_of_plausible_length(tts: PiperTTS) -> None:
    assert isinstance(tts, TTS)
    ctx = TurnContext.standalone("piper")
    chunks = await collect(tts, SENTENCE, ctx)
    assert chunks
    assert all(c.sample_rate == 22050 == tts.sample_rate for c in chunks)
    assert all(c.pcm.dtype == np.int16 and c.pcm.ndim == 1 for c in chunks)
    pcm = np.concatenate([c.pcm for c in chunks]).astype(np.float64)
    duration_s = len(pcm) / 22050
    n_words = len(words(SENTENCE))
    assert 1.5 <= n_words / duration_s <= 4.5, (n_words, duration_s)  # ~2.5 words/s
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(pcm**2)) / 32768)
    assert -35 < rms_dbfs < -6, rms_dbfs
    assert np.abs(pcm).max() < 32767  # not clipped
    (record,) = ctx.timeline.events("piper_synth")
    assert record["done"] == record["pieces"] == len(chunks)
    assert not record["aborted"]
    assert record["error"] is None
    assert record["audio_ms"] == pytest.approx(1000 * duration_s, abs=1)
    assert 0 < record["first_audio_ms"] <= record["synth_ms"] + record["phonemize_ms"] + 50


async def test_blank_text_yields_nothing(tts: PiperTTS) -> None:
    assert await collect(tts, "   ") == []
    assert await collect(tts, "...") == []
    with pytest.raises(TypeError):
        await collect(tts, b"bytes")  # type: ignore[arg-type]


async def test_first_piece_of_a_turn_is_short_later_calls_are_sentences(tts: PiperTTS) -> None:
    first = await tts.pieces(LONG, first_of_turn=True)
    later = await tts.pieces(LONG, first_of_turn=False)
    assert len(first[0]) <= tts.first_piece_phonemes
    assert all(len(p) <= tts.max_piece_phonemes for p in first + later)
    assert len(later[0]) > tts.first_piece_phonemes
    # A turn that already has audio gets sentence-long pieces.
    ctx = TurnContext.standalone()
    ctx.metrics.tts_first_audio_ms = 100.0
    chunks = await collect(tts, LONG, ctx)
    assert len(chunks) == len(later)


async def test_cancelled_after_the_first_chunk_stops_at_once(tts: PiperTTS) -> None:
    voice = tts.voice
    await idle(voice)
    # Closing the iterator after the first chunk: nothing more is synthesized.
    before = voice.stats().inferences
    stream = tts.synthesize(LONG, None)
    first = await stream.__anext__()
    assert len(first.pcm) > 0
    await stream.aclose()  # type: ignore[attr-defined]
    await idle(voice)
    assert voice.stats().inferences == before + 1
    # Cancelled while the second piece is being synthesized: returns at once; that
    # inference finishes in its thread and its audio is dropped.
    ctx = TurnContext.standalone()
    dropped = voice.stats().dropped
    got: list[AudioChunk] = []
    stopped = trio.Event()

    async def speak(scope: trio.CancelScope) -> None:
        with scope:
            async for chunk in tts.synthesize(LONG, ctx):
                got.append(chunk)
        stopped.set()

    async with trio.open_nursery() as nursery:
        scope = trio.CancelScope()
        nursery.start_soon(speak, scope)
        while not (got and voice.stats().running):  # the second piece is under way
            await trio.sleep(0.001)
        cancelled_at = time.perf_counter()
        scope.cancel()
        await stopped.wait()
        stopped_ms = 1000 * (time.perf_counter() - cancelled_at)
    assert len(got) == 1
    assert stopped_ms < 20, stopped_ms
    (record,) = ctx.timeline.events("piper_synth")
    assert record["aborted"]
    assert record["done"] == 1 < record["pieces"]
    await idle(voice)
    assert voice.stats().dropped == dropped + 1
    assert voice.stats().running == 0


async def test_two_sessions_share_one_voice(piper_voice_dir: Path, voice: PiperVoice) -> None:
    a, b = PiperTTS(piper_voice_dir), PiperTTS(piper_voice_dir / voice.model_path.name)
    assert a.voice is b.voice is voice  # one ONNX session per process
    texts = {"a": SENTENCE, "b": "Please call me back when you get home tonight."}
    results: dict[str, npt.NDArray[np.int16]] = {}

    async def speak(name: str, tts: PiperTTS) -> None:
        chunks = await collect(tts, texts[name], TurnContext.standalone(name))
        results[name] = np.concatenate([c.pcm for c in chunks])

    before = voice.stats().inferences
    async with trio.open_nursery() as nursery:
        nursery.start_soon(speak, "a", a)
        nursery.start_soon(speak, "b", b)
    for name, text in texts.items():
        duration_s = len(results[name]) / voice.sample_rate
        assert 1.5 <= len(words(text)) / duration_s <= 4.5, (name, duration_s)
    assert voice.stats().inferences > before
    assert voice.workers >= 1


async def test_inference_failure_is_a_synthesis_error(voice: PiperVoice) -> None:
    class Broken:
        def run(self, *args: object) -> None:
            raise RuntimeError("boom")

    other = PiperVoice(voice.model_path, workers=1)
    other._session = Broken()
    tts = PiperTTS(other)
    ctx = TurnContext.standalone()
    with pytest.raises(SynthesisError, match="boom"):
        await collect(tts, "Hello there.", ctx)
    assert other.stats().failed == 1
    assert ctx.timeline.events("piper_synth")[0]["error"] is not None


def to_16k(pcm: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    resampler = Resampler(22050, STT_SAMPLE_RATE)
    out = [np.asarray(resampler.process(pcm)), np.asarray(resampler.flush())]
    return np.concatenate(out).astype(np.int16)


async def recognize(samples: npt.NDArray[np.int16]) -> str:
    quiet = np.zeros(STT_SAMPLE_RATE // 4, dtype=np.int16)
    padded = np.concatenate([quiet, samples, quiet])

    async def frames() -> AsyncIterator[AudioFrame]:
        for offset in range(0, len(padded), 320):
            yield AudioFrame(padded[offset : offset + 320].tobytes(), STT_SAMPLE_RATE, offset)

    hypotheses = [h async for h in SphinxSTT().transcribe(frames(), TurnContext.standalone())]
    return hypotheses[-1].text


async def test_round_trip_pocketsphinx_recognizes_most_words(tts: PiperTTS) -> None:
    pcm = np.concatenate([c.pcm for c in await collect(tts, SENTENCE)])
    heard = set(words(await recognize(to_16k(pcm))))
    reference = words(SENTENCE)
    rate = sum(w in heard for w in reference) / len(reference)
    assert rate >= 0.6, (rate, heard)  # measured 0.92 (espeak-ng's voice: 0.46)
