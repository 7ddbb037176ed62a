"""espeak-ng TTS on the real library: audio, streaming, cancellation, serialization, errors.

espeak-ng's output is not bit-exact from one run to the next (its length varies by up to
~0.5 %, unvoiced sounds are noise), so two syntheses are compared by their loudness envelope
(RMS per 50 ms): the same text gives a correlation of 0.9-1.0, two different sentences
about 0.2.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from harness.speech import noise, voice
from voicecore.engine.session import Session, SessionConfig
from voicecore.engine.stages import TTS, TurnContext
from voicecore.engine.transport import memory_transport
from voicecore.exceptions import ConfigError
from voicecore.protocol import AgentAudio, AgentDone, AgentText
from voicecore.providers import (
    EspeakTTS,
    RuleBasedResponder,
    ScriptedSTT,
    Utterance,
    espeak_voices,
)
from voicecore.providers.espeak import CALLBACK_BUFFER_MS, EspeakEngine

RATE = 22050
SENTENCE = "The quick brown fox jumps over the lazy dog, and then it runs away."
GERMAN = "Guten Morgen, wie geht es Ihnen heute?"
# About three minutes of speech: its synthesis takes long enough (~150 ms) to be caught
# mid-way on a loaded machine.
LONG_TEXT = " ".join(
    f"Paragraph {n}: the quick brown fox jumps over the lazy dog." for n in range(40)
)


def ctx() -> TurnContext:
    return TurnContext.standalone("test", clock=trio.current_time)


async def synthesize(tts: EspeakTTS, text: str, turn: TurnContext | None = None) -> Any:
    """The whole audio of ``text`` (int16), concatenated from its chunks."""
    chunks = [chunk async for chunk in tts.synthesize(text, turn)]
    assert all(c.sample_rate == RATE and c.pcm.dtype == np.int16 for c in chunks)
    return np.concatenate([c.pcm for c in chunks]) if chunks else np.zeros(0, np.int16)


def envelope_similarity(a: npt.NDArray[np.int16], b: npt.NDArray[np.int16]) -> float:
    """Correlation of the two signals' RMS envelopes (50 ms windows) over their common span."""
    window = RATE // 20

    def envelope(x: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
        n = len(x) // window
        frames = x[: n * window].astype(np.float64).reshape(n, window)
        return np.asarray(np.sqrt((frames**2).mean(axis=1)))

    ea, eb = envelope(a), envelope(b)
    n = min(len(ea), len(eb))
    return float(np.corrcoef(ea[:n], eb[:n])[0, 1])


async def synth_record(turn: TurnContext) -> dict[str, Any]:
    """The ``espeak_synth`` timeline record of ``turn``, waiting for it to arrive."""
    with trio.fail_after(10):
        while not (records := turn.timeline.events("espeak_synth")):
            await trio.sleep(0.001)
    assert len(records) == 1
    return records[0]


@pytest.fixture(scope="module")
def tts() -> EspeakTTS:
    return EspeakTTS("en-us")


def test_it_implements_the_tts_protocol(tts: EspeakTTS) -> None:
    assert isinstance(tts, TTS)
    assert tts.sample_rate == RATE
    assert "en-us" in repr(tts)
    assert "175" in repr(tts)


def test_every_instance_shares_the_one_engine(tts: EspeakTTS) -> None:
    other = EspeakTTS("de", rate_wpm=200)
    assert other.engine is tts.engine is EspeakEngine.shared()


async def test_it_speaks_a_sentence(tts: EspeakTTS) -> None:
    audio = await synthesize(tts, SENTENCE)
    duration_s = len(audio) / RATE
    words = len(SENTENCE.split())
    # 175 words per minute is 0.34 s per word; pauses and long words make it vary.
    assert 0.2 * words < duration_s < 0.7 * words, duration_s
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)) / 32768)
    assert rms_dbfs > -35, rms_dbfs  # speech, not silence
    assert np.abs(audio).max() < 32767  # not clipped
    # speech has pauses: quiet 20 ms windows between loud ones
    window = RATE // 50
    levels = np.abs(audio[: len(audio) // window * window].reshape(-1, window)).max(axis=1)
    assert (levels < 500).any()
    assert (levels > 5000).sum() > len(levels) // 3


async def test_the_rate_changes_the_duration() -> None:
    slow = await synthesize(EspeakTTS(rate_wpm=120), SENTENCE)
    fast = await synthesize(EspeakTTS(rate_wpm=360), SENTENCE)
    assert 1.8 < len(slow) / len(fast) < 4.0  # 3x the words per minute, pauses included


async def test_a_sentence_end_gets_a_pause_a_clause_does_not(tts: EspeakTTS) -> None:
    sentence = await synthesize(tts, "Hello there.")
    clause = await synthesize(tts, "Hello there,")
    trailing_ms = [
        1000 * (len(x) - np.flatnonzero(np.abs(x) > 300)[-1]) / RATE for x in (sentence, clause)
    ]
    assert trailing_ms[0] > 150 > 50 > trailing_ms[1], trailing_ms


async def test_audio_streams_chunk_by_chunk(tts: EspeakTTS) -> None:
    turn = ctx()
    start = time.perf_counter()
    arrivals: list[float] = []
    sizes: list[int] = []
    async for chunk in tts.synthesize(LONG_TEXT, turn):
        arrivals.append(time.perf_counter() - start)
        sizes.append(len(chunk.pcm))
    audio_s = sum(sizes) / RATE
    assert audio_s > 120
    # chunks of CALLBACK_BUFFER_MS (the last one shorter), many of them
    assert abs(max(sizes) - RATE * CALLBACK_BUFFER_MS / 1000) <= 2
    assert len(sizes) > 1000 * audio_s / CALLBACK_BUFFER_MS * 0.9
    record = await synth_record(turn)
    # the first audio exists long before the synthesis ends, and reaches Trio early too
    assert record["first_audio_ms"] < record["synth_ms"] / 10, record
    assert arrivals[0] < arrivals[-1] / 3, (arrivals[0], arrivals[-1])
    assert record["aborted"] is False
    assert record["error"] is None
    assert record["audio_ms"] == pytest.approx(1000 * audio_s)
    assert record["chars"] == len(LONG_TEXT)


async def test_closing_the_stream_aborts_mid_sentence_and_the_next_one_works(
    tts: EspeakTTS,
) -> None:
    full = ctx()
    async for _ in tts.synthesize(LONG_TEXT, full):
        pass
    full_ms = (await synth_record(full))["audio_ms"]
    before = tts.engine.stats()

    cut = ctx()
    stream = tts.synthesize(LONG_TEXT, cut)
    first = await stream.__anext__()
    assert len(first.pcm) > 0
    await stream.aclose()  # what the engine does on barge-in
    # queued right behind the aborted one: it must not wait for LONG_TEXT to finish
    after = await synthesize(tts, SENTENCE)
    record = await synth_record(cut)
    assert record["aborted"] is True
    assert record["error"] is None
    assert record["audio_ms"] < full_ms / 2, (record, full_ms)
    assert record["synth_ms"] < (await synth_record(full))["synth_ms"] / 2
    stats = tts.engine.stats()
    assert stats.aborted == before.aborted + 1
    assert stats.completed == before.completed + 1
    reference = await synthesize(tts, SENTENCE)
    assert abs(len(after) - len(reference)) < 0.01 * len(reference)
    assert envelope_similarity(after, reference) > 0.8


async def test_cancelling_the_task_aborts_the_synthesis(tts: EspeakTTS) -> None:
    turn = ctx()
    chunks = 0
    with trio.CancelScope() as scope:
        async for _ in tts.synthesize(LONG_TEXT, turn):
            chunks += 1
            scope.cancel()  # a barge-in: the turn's scope is cancelled
    assert scope.cancelled_caught
    assert chunks == 1  # none after the cancellation, even those already produced
    record = await synth_record(turn)
    assert record["aborted"] is True
    assert record["audio_ms"] < 60_000  # of ~180 s


async def test_concurrent_requests_are_serialized_without_mixing(tts: EspeakTTS) -> None:
    german = EspeakTTS("de", rate_wpm=220)
    english_alone = await synthesize(tts, SENTENCE)
    german_alone = await synthesize(german, GERMAN)
    assert envelope_similarity(english_alone, german_alone) < 0.5  # the check can tell

    turns = [ctx(), ctx(), ctx(), ctx()]
    results: dict[int, Any] = {}
    before = tts.engine.stats()

    async def speak(index: int, engine: EspeakTTS, text: str) -> None:
        results[index] = await synthesize(engine, text, turns[index])

    async with trio.open_nursery() as nursery:
        for index in range(4):
            english = index % 2 == 0
            nursery.start_soon(
                speak, index, tts if english else german, SENTENCE if english else GERMAN
            )
    for index in range(4):
        alone = english_alone if index % 2 == 0 else german_alone
        assert abs(len(results[index]) - len(alone)) < 0.01 * len(alone), index
        assert envelope_similarity(results[index], alone) > 0.8, index
        assert (await synth_record(turns[index]))["aborted"] is False
    assert tts.engine.stats().completed == before.completed + 4


async def test_empty_text_yields_nothing_and_costs_nothing(tts: EspeakTTS) -> None:
    before = tts.engine.stats()
    for text in ("", "   ", "\n\t"):
        assert [c async for c in tts.synthesize(text, None)] == []
    after = tts.engine.stats()
    assert (after.completed, after.aborted) == (before.completed, before.aborted)


async def test_odd_text_is_spoken(tts: EspeakTTS) -> None:
    for text in ("a\0b", "Ünïcödé and emoji 🎉 ok.", "<speak>not SSML</speak>", "3.14 $5"):
        assert len(await synthesize(tts, text)) > RATE // 10, text


async def test_non_str_text_is_a_type_error(tts: EspeakTTS) -> None:
    with pytest.raises(TypeError, match="str"):
        _ = [c async for c in tts.synthesize(b"bytes", None)]  # type: ignore[arg-type]


def test_an_unknown_voice_says_how_to_find_one() -> None:
    with pytest.raises(ConfigError, match="espeak_voices") as info:
        EspeakTTS("en-uss")
    assert "en-us" in str(info.value)  # a close match is suggested
    with pytest.raises(ConfigError, match="variant"):
        EspeakTTS("en-us+nosuchvariant")


def test_voices_and_variants_are_selectable() -> None:
    voices = espeak_voices()
    assert len(voices) > 50
    assert all(v.name and v.identifier and v.languages for v in voices)
    english = next(v for v in voices if "en-us" in v.languages)
    for spelling in ("en-us", english.name, english.identifier, "en-us+f3"):
        EspeakTTS(spelling)  # each accepted


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"rate_wpm": 79}, ConfigError),
        ({"rate_wpm": 451}, ConfigError),
        ({"rate_wpm": 175.0}, TypeError),
        ({"rate_wpm": True}, TypeError),
        ({"voice": ""}, ConfigError),
        ({"voice": "en\0us"}, ConfigError),
        ({"voice": 1}, TypeError),
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        EspeakTTS(**kwargs)


async def test_a_spoken_turn_with_the_responder_and_espeak() -> None:
    """A real-clock session: the responder answers, espeak speaks, the pacer plays it."""
    transport, client = memory_transport(16000)
    session = Session(
        transport,
        stt=ScriptedSTT([Utterance(["what"], "what time is it")]),
        llm=RuleBasedResponder(token_delay_s=0.01, clock=lambda: dt.datetime(2026, 1, 1, 9, 5)),
        tts=EspeakTTS("en-us"),
        config=SessionConfig(end_of_turn_silence_ms=300),
    )
    mic = noise(300) + voice(800) + noise(2000)
    texts: list[str] = []
    audio_frames = 0
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            nursery.start_soon(client.stream_audio, mic)
            async for message in client:
                if isinstance(message, AgentAudio):
                    audio_frames += 1
                elif isinstance(message, AgentText):
                    texts.append(message.text)
                elif isinstance(message, AgentDone):
                    break
            nursery.cancel_scope.cancel()
    assert "9:05" in " ".join(texts)
    assert audio_frames * 20 > 500  # the reply was spoken, not just sent as text
    turn = session.metrics.turns[0]
    assert turn.tts_first_audio_ms is not None
    assert turn.tts_first_audio_ms < 100


def test_the_engine_is_only_shared() -> None:
    with pytest.raises(TypeError, match="shared"):
        EspeakEngine()


# --- phonemization (for Piper voices) --------------------------------------------------------


async def test_phonemize_gives_ipa_clauses_with_their_terminators() -> None:
    engine = EspeakEngine.shared()
    clauses = await engine.phonemize_async("Well, the train leaves at nine; hurry up. OK?")
    assert [c.terminator for c in clauses] == [",", ";", ".", "?"]
    assert [c.ends_sentence for c in clauses] == [False, False, True, True]
    assert all(c.phonemes and c.phonemes == c.phonemes.strip() for c in clauses)
    assert clauses[0].phonemes == "w\u02c8\u025bl"  # IPA, primary stress mark
    assert engine.phonemize("Wait... what") == await engine.phonemize_async("Wait... what")
    assert [c.terminator for c in engine.phonemize("Wait... what")] == [".", ""]
    assert engine.phonemize("  ") == engine.phonemize("...") == []
    with pytest.raises(ConfigError):
        engine.phonemize("hello", "no-such-voice")


async def test_phonemize_between_syntheses_leaves_them_unchanged() -> None:
    tts = EspeakTTS("en-us")

    async def speak() -> npt.NDArray[np.int16]:
        return np.concatenate([c.pcm async for c in tts.synthesize("Good morning.", None)])

    before = await speak()
    await EspeakEngine.shared().phonemize_async("Something else entirely, in between!")
    after = await speak()
    # espeak-ng varies a synthesis by a few samples from run to run: same length within 2 %
    # (a changed voice, rate or text would differ by far more), same loudness.
    assert abs(len(after) - len(before)) <= 0.02 * len(before)
    assert np.std(after) == pytest.approx(np.std(before), rel=0.05)
