"""Smart Turn v3.2 end-of-turn predictor: its Whisper features against two independent
references, the real model on a real utterance whole and cut mid-sentence, and its worker
thread under Trio (the loop keeps running, predictions queue, cancellation)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
import trio
import trio.testing

from harness.speech import Utterance, normalize, word_ends
from voicecore.exceptions import AudioFormatError, AudioTypeError, ConfigError, ModelNotFoundError
from voicecore.providers.smart_turn import (
    DEFAULT_THRESHOLD,
    N_FRAMES,
    N_MELS,
    WINDOW_SAMPLES,
    SmartTurn,
    log_mel_features,
    prediction_limiter,
)

RATE = 16000


def chirp() -> npt.NDArray[np.int16]:
    """2.5 s of a harmonic chirp (200 -> 3000 Hz, three harmonics) pulsing at 3 Hz: a
    deterministic signal whose features reach most mel bands."""
    t = np.arange(int(2.5 * RATE)) / RATE
    phase = 2 * np.pi * (200 * t + (3000 - 200) / (2 * 2.5) * t**2)
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    x = 8000 * envelope * (np.sin(phase) + 0.5 * np.sin(2 * phase) + 0.25 * np.sin(3 * phase))
    return np.round(x).astype(np.int16)


# --- features --------------------------------------------------------------------------------


def test_features_shape_dtype_and_left_padding() -> None:
    audio = chirp()
    features = log_mel_features(audio)
    assert features.shape == (N_MELS, N_FRAMES) == (80, 800)
    assert features.dtype == np.float32
    assert features.flags.c_contiguous
    # The audio sits at the end of the window: the frames before it are the padding, all
    # alike; those over the chirp are not.
    audio_frames = len(audio) // 160
    padding = features[:, : N_FRAMES - audio_frames - 2]
    assert np.all(padding == padding[:, :1])
    assert np.ptp(features[:, -audio_frames:]) > 1.0
    # Left padding is zeros: silence before the audio changes nothing...
    longer = np.concatenate([np.zeros(3 * RATE, dtype=np.int16), audio])
    np.testing.assert_array_equal(log_mel_features(longer), features)
    # ...and audio older than 8 s is dropped.
    noise = np.random.default_rng(0).normal(0, 3000, 20 * RATE).astype(np.int16)
    np.testing.assert_array_equal(
        log_mel_features(np.concatenate([noise, audio])),
        log_mel_features(np.concatenate([noise, audio])[-WINDOW_SAMPLES:]),
    )


def test_features_take_pcm16_bytes_int16_and_float32_alike() -> None:
    audio = chirp()
    features = log_mel_features(audio)
    np.testing.assert_array_equal(log_mel_features(audio.tobytes()), features)
    np.testing.assert_array_equal(log_mel_features(bytearray(audio.tobytes())), features)
    np.testing.assert_array_equal(log_mel_features(audio.astype(np.float32) / 32768), features)
    silence = log_mel_features(b"")
    assert np.all(silence == -1.5)  # log10(1e-10) = -10, (x + 4) / 4


def test_features_refuse_unusable_audio() -> None:
    with pytest.raises(AudioFormatError, match="even number of bytes"):
        log_mel_features(b"\x00\x01\x02")
    with pytest.raises(AudioFormatError, match="1-D"):
        log_mel_features(np.zeros((2, 100), dtype=np.int16))
    with pytest.raises(AudioTypeError, match="float64"):
        log_mel_features(np.zeros(100))
    with pytest.raises(AudioTypeError, match="list"):
        log_mel_features([0, 1, 2])  # type: ignore[arg-type]


def slow_reference_features(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.float64]:
    """Whisper's log-mel features written from their definition, slowly and separately from
    the module: a DFT as a matrix product, the mel filters filter by filter from their
    three corner frequencies, float64 throughout."""
    x = np.zeros(WINDOW_SAMPLES)
    x[-len(samples) :] = samples / 32768.0
    x = (x - x.mean()) / np.sqrt(x.var() + 1e-7)
    n_fft, hop = 400, 160
    x = np.concatenate([x[1 : n_fft // 2 + 1][::-1], x, x[-n_fft // 2 - 1 : -1][::-1]])
    n = np.arange(n_fft)
    hann = np.sin(np.pi * n / n_fft) ** 2  # the periodic Hann window, another way
    k = np.arange(n_fft // 2 + 1)[:, None]
    dft = np.exp(-2j * np.pi * k * n / n_fft)  # (201, 400)
    frames = np.stack([x[t * hop : t * hop + n_fft] for t in range(801)])
    power = np.abs(dft @ (frames * hann).T) ** 2  # (201 bins, 801 frames)

    def mel(hz: float) -> float:  # Slaney: linear to 1 kHz, then logarithmic
        return 3 * hz / 200 if hz < 1000 else 15 + 27 * np.log(hz / 1000) / np.log(6.4)

    def hz(m: float) -> float:
        return 200 * m / 3 if m < 15 else 1000 * 6.4 ** ((m - 15) / 27)

    corners = [hz(m) for m in np.linspace(mel(0), mel(8000), 82)]
    bin_hz = np.arange(201) * 8000 / 200
    filters = np.zeros((80, 201))
    for i in range(80):
        low, centre, high = corners[i : i + 3]
        for j, f in enumerate(bin_hz):
            if low < f <= centre:
                filters[i, j] = (f - low) / (centre - low)
            elif centre < f < high:
                filters[i, j] = (high - f) / (high - centre)
        filters[i] *= 2 / (high - low)
    log_mel = np.log10(np.maximum(filters @ power, 1e-10))[:, :800]
    log_mel = np.maximum(log_mel, log_mel.max() - 8)
    return (log_mel + 4) / 4


# The module scales the waveform in float32, as transformers does, the slow reference in
# float64: a few 1e-5 apart in the faintest bins, where the logarithm magnifies rounding.
SLOW_REFERENCE_TOLERANCE = 1e-4


def test_features_match_a_slow_reference_from_the_definition() -> None:
    samples = chirp()
    difference = np.abs(log_mel_features(samples) - slow_reference_features(samples))
    assert difference.max() < SLOW_REFERENCE_TOLERANCE


def test_features_of_real_speech_match_the_slow_reference(speech: list[Utterance]) -> None:
    for utterance in speech:
        ours = log_mel_features(utterance.samples)
        difference = np.abs(ours - slow_reference_features(utterance.samples))
        assert difference.max() < SLOW_REFERENCE_TOLERANCE, utterance.name


# transformers 5.25 WhisperFeatureExtractor(chunk_length=8)(window, sampling_rate=16000,
# padding="max_length", max_length=128000, truncation=True, do_normalize=True), where window
# is chirp() / 32768 left-padded with zeros to 128000 samples (pipecat's call), computed once
# in a scratch environment: (mel band, frame) -> value.
TRANSFORMERS_CHIRP = {
    (0, 0): -0.13983726501464844,
    (7, 560): 1.819305419921875,
    (4, 560): 0.8740373849868774,
    (15, 560): 1.6580785512924194,
    (19, 600): 1.6866374015808105,
    (16, 600): 0.6748920679092407,
    (33, 650): 1.6980724334716797,
    (30, 650): 0.25532978773117065,
    (42, 700): 1.6518690586090088,
    (39, 700): 0.21316003799438477,
    (49, 750): 1.6497867107391357,
    (53, 790): 1.733620524406433,
    (50, 790): 0.1060599684715271,
    (54, 799): 1.642150640487671,
    (51, 799): 0.46344834566116333,
    (62, 799): 0.25702714920043945,
}
TRANSFORMERS_CHIRP_MEAN = -0.0633508


def test_features_match_values_computed_with_transformers() -> None:
    features = log_mel_features(chirp())
    for (band, frame), expected in TRANSFORMERS_CHIRP.items():
        assert features[band, frame] == pytest.approx(expected, abs=1e-5), (band, frame)
    assert float(features.mean()) == pytest.approx(TRANSFORMERS_CHIRP_MEAN, abs=1e-6)


# --- the model -------------------------------------------------------------------------------


def test_missing_model_says_how_to_fetch_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(ModelNotFoundError, match=r"voicecore models fetch smart-turn-v3\.2"):
        SmartTurn(tmp_path / "smart-turn-v3.2-cpu.onnx")
    with pytest.raises(ModelNotFoundError, match=r"voicecore models fetch smart-turn-v3\.2"):
        SmartTurn(tmp_path)  # a folder without the file
    monkeypatch.setenv("VOICECORE_CACHE_DIR", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelNotFoundError, match=r"voicecore models fetch smart-turn-v3\.2"):
        SmartTurn.shared()


def test_a_file_that_is_not_the_model_and_bad_threads_are_config_errors(
    tmp_path: Path, smart_turn_model_path: Path
) -> None:
    garbage = tmp_path / "smart-turn-v3.2-cpu.onnx"
    garbage.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        SmartTurn(garbage)
    with pytest.raises(ConfigError, match="intra_op_threads"):
        SmartTurn(smart_turn_model_path, intra_op_threads=0)


def test_shared_is_one_model_per_file_and_thread_count(smart_turn_model_path: Path) -> None:
    turn = SmartTurn.shared(smart_turn_model_path)
    assert SmartTurn.shared(smart_turn_model_path.parent) is turn
    assert turn.intra_op_threads == 2
    assert SmartTurn.shared(smart_turn_model_path, intra_op_threads=1) is not turn


def cut_mid_sentence(utterance: Utterance) -> npt.NDArray[np.int16]:
    """librivox-0870 ("and mister john dashwood had then leisure to consider how much there
    might be prudently in his power to do for them") cut after "how much" (where
    PocketSphinx's forced alignment ends the word), followed by the recording's own last
    200 ms of room tone, as a pause reported by the VAD would leave it."""
    ends = word_ends(utterance.samples, utterance.transcript)
    assert ends is not None, "PocketSphinx cannot align the recording"
    much = normalize(utterance.transcript).index("much")
    return np.concatenate([utterance.samples[: ends[much]], utterance.samples[-3200:]])


def test_complete_utterance_scores_complete_and_its_cut_does_not(
    speech: list[Utterance], smart_turn_model_path: Path
) -> None:
    turn = SmartTurn.shared(smart_turn_model_path)
    (utterance,) = (u for u in speech if u.name == "librivox-0870.wav")
    complete = turn.predict(utterance.samples)
    cut = turn.predict(cut_mid_sentence(utterance))
    assert complete >= DEFAULT_THRESHOLD
    assert cut < DEFAULT_THRESHOLD
    assert cut < complete
    # The same audio, as bytes or float: the same probability (no state between calls).
    assert turn.predict(utterance.samples.tobytes()) == pytest.approx(complete, abs=1e-6)
    assert turn.predict(utterance.samples / np.float32(32768)) == pytest.approx(complete, abs=1e-6)
    stats = turn.stats()
    assert stats.predictions >= 4
    assert 0 < stats.features_mean_ms < stats.mean_ms
    assert stats.p95_ms > 0


def test_predict_async_runs_off_the_loop(smart_turn_model_path: Path) -> None:
    turn = SmartTurn.shared(smart_turn_model_path)
    audio = chirp()
    expected = turn.predict(audio)

    async def ticks_during(predict: str) -> tuple[int, float]:
        """Ticks of a 2 ms canary during one prediction, and the prediction's duration."""
        ticks: list[float] = []

        async def canary() -> None:
            while True:
                ticks.append(time.perf_counter())
                await trio.sleep(0.002)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(canary)
            await trio.sleep(0.01)
            started = time.perf_counter()
            if predict == "async":
                assert await turn.predict_async(audio) == pytest.approx(expected, abs=1e-6)
            else:
                turn.predict(audio)  # blocks the loop: the canary cannot tick
            ended = time.perf_counter()
            nursery.cancel_scope.cancel()
        return sum(started < t < ended for t in ticks), ended - started

    async_ticks, async_s = trio.run(ticks_during, "async")
    blocking_ticks, _ = trio.run(ticks_during, "blocking")
    assert blocking_ticks == 0
    # A prediction takes tens of ms; a canary every 2 ms ticks at least a few times (the
    # VM is shared, so not every 2 ms).
    assert async_ticks >= min(5, int(async_s / 0.002) // 3), (async_ticks, async_s)


def test_concurrent_predictions_queue_one_at_a_time(smart_turn_model_path: Path) -> None:
    turn = SmartTurn.shared(smart_turn_model_path)
    base = chirp()
    clips = [np.roll(base, shift) for shift in (0, 4000, 8000, 12000)]
    expected = [turn.predict(clip) for clip in clips]

    async def main() -> tuple[list[float], int, int]:
        limiter = prediction_limiter()
        results: list[float] = [-1.0] * len(clips)
        most_borrowed = most_waiting = 0

        async def predict(i: int) -> None:
            results[i] = await turn.predict_async(clips[i])

        async def watch() -> None:
            nonlocal most_borrowed, most_waiting
            while True:
                statistics = limiter.statistics()
                most_borrowed = max(most_borrowed, statistics.borrowed_tokens)
                most_waiting = max(most_waiting, statistics.tasks_waiting)
                await trio.sleep(0.001)

        async with trio.open_nursery() as watching:
            watching.start_soon(watch)
            async with trio.open_nursery() as nursery:
                for i in range(len(clips)):
                    nursery.start_soon(predict, i)
            watching.cancel_scope.cancel()
        return results, most_borrowed, most_waiting

    results, most_borrowed, most_waiting = trio.run(main)
    assert results == pytest.approx(expected, abs=1e-6)
    assert most_borrowed == 1  # one prediction at a time...
    assert most_waiting == 3  # ...the three others queued


def test_a_cancelled_prediction_is_abandoned_and_never_overlaps_the_next(
    smart_turn_model_path: Path,
) -> None:
    turn = SmartTurn(smart_turn_model_path)  # its own counters
    audio = chirp()

    async def main() -> tuple[int, int, float]:
        limiter = prediction_limiter()
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(turn.predict_async, audio)
                await trio.testing.wait_all_tasks_blocked()  # waiting for its thread
                scope.cancel()
        finished_when_cancelled = turn.stats().predictions
        still_borrowed = limiter.statistics().borrowed_tokens  # the thread still runs
        p = await turn.predict_async(audio)  # waits for the abandoned one, then runs
        return finished_when_cancelled, still_borrowed, p

    finished_when_cancelled, still_borrowed, p = trio.run(main)
    assert finished_when_cancelled == 0  # the call returned before its prediction ended
    assert still_borrowed == 1
    assert p == pytest.approx(turn.predict(audio), abs=1e-6)
    stats = turn.stats()
    assert stats.abandoned == 1
    assert stats.predictions == 3
