"""VAD features and the energy VAD: known signals, sample-accurate events, real speech, and
every bad input."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voicecore import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    EnergyVad,
    FrameFeatures,
    SpeechEvent,
    UnsupportedSampleRateError,
    VadFeatures,
    VadFrames,
)

RATE = 16000


def tone(hz: float, n: int, amplitude: float = 1.0, rate: int = RATE) -> npt.NDArray[np.float32]:
    t = np.arange(n) / rate
    return (amplitude * np.sin(2 * np.pi * hz * t)).astype(np.float32)


def bursts(n: int, ranges: list[tuple[int, int]], seed: int = 1) -> npt.NDArray[np.int16]:
    """White noise (-40 dBFS) with 1 kHz tone bursts (-15 dBFS) at `ranges`: the noise is
    above the level gate, so the decisions rest on the noise-floor tracking."""
    rng = np.random.default_rng(seed)
    signal = rng.normal(0.0, 330.0, n)
    burst = 8000 * np.sin(2 * np.pi * 1000 * np.arange(n) / RATE)
    for start, end in ranges:
        signal[start:end] += burst[start:end]
    return np.round(signal).astype(np.int16)


def start(sample: int) -> SpeechEvent:
    return SpeechEvent("start", sample, RATE)


def end(sample: int) -> SpeechEvent:
    return SpeechEvent("end", sample, RATE)


# --- features ------------------------------------------------------------------------------


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_full_scale_sine_is_minus_3_dbfs_in_every_input_type(frame_ms: int) -> None:
    features = VadFeatures(RATE, frame_ms)
    n = features.frame_length
    assert n == RATE * frame_ms // 1000
    sine = tone(1000, n)
    pcm = np.round(sine * 32767).astype(np.int16)
    for frame in (sine, pcm, pcm.tobytes(), bytearray(pcm.tobytes()), memoryview(pcm.tobytes())):
        assert features.compute(frame).rms_dbfs == pytest.approx(-3.01, abs=0.01)


def test_tone_features() -> None:
    f = VadFeatures(RATE, 30).compute(tone(1000, 480, 0.5))
    assert isinstance(f, FrameFeatures)
    # A 1 kHz tone crosses zero 2000 times a second: 0.125 of the sample pairs at 16 kHz.
    assert f.zero_crossing_rate == pytest.approx(0.125, abs=0.005)
    assert f.spectral_centroid_hz == pytest.approx(1000, abs=50)
    assert f.spectral_flatness < 0.01
    assert f.speech_band_ratio > 0.99
    high = VadFeatures(RATE, 30).compute(tone(5000, 480, 0.5))
    assert high.speech_band_ratio < 0.01
    assert high.spectral_centroid_hz == pytest.approx(5000, abs=50)


def test_white_noise_is_flat_and_broadband() -> None:
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 0.1, 480).astype(np.float32)
    f = VadFeatures(RATE, 30).compute(noise)
    # A periodogram of white noise has exponentially distributed bins: flatness e^-gamma
    # (0.56) in expectation, against < 0.01 for a tone.
    assert 0.4 < f.spectral_flatness <= 1.0
    assert f.spectral_centroid_hz == pytest.approx(4000, abs=600)
    assert f.speech_band_ratio == pytest.approx(3100 / 8000, abs=0.08)
    assert f.zero_crossing_rate == pytest.approx(0.5, abs=0.08)


def test_silence_is_finite_with_documented_floor_values() -> None:
    f = VadFeatures(RATE, 20).compute(np.zeros(320, dtype=np.int16))
    assert f.rms_dbfs == -120.0
    assert f.zero_crossing_rate == 0.0
    assert f.spectral_flatness == 1.0
    assert f.spectral_centroid_hz == 0.0
    assert f.speech_band_ratio == 0.0
    assert np.all(np.isfinite(f.log_mel))
    assert np.allclose(f.log_mel, np.log(1e-12), atol=1e-3)


def test_mel_energy_peaks_in_the_band_of_the_tone() -> None:
    features = VadFeatures(RATE, 20, n_mels=40)

    def hz_to_mel(hz: float) -> float:
        return 1127.0 * float(np.log1p(hz / 700.0))

    # Band i is centred at mel(20 Hz) + (i + 1) * step on the HTK scale, 40 bands to 8 kHz.
    step = (hz_to_mel(8000) - hz_to_mel(20)) / 41
    for hz in (300.0, 1000.0, 3000.0, 6000.0):
        log_mel = features.compute(tone(hz, 320, 0.5)).log_mel
        assert log_mel.shape == (40,)
        assert log_mel.dtype == np.float32
        expected_band = (hz_to_mel(hz) - hz_to_mel(20)) / step - 1
        assert abs(int(np.argmax(log_mel)) - expected_band) <= 1, hz


def test_compute_many_matches_compute_frame_by_frame() -> None:
    features = VadFeatures(RATE, 20, n_mels=24)
    rng = np.random.default_rng(5)
    audio = (rng.normal(0, 2000, 320 * 7 + 100)).astype(np.int16)
    batch = features.compute_many(audio)
    assert set(batch) == {
        "rms_dbfs",
        "zero_crossing_rate",
        "spectral_flatness",
        "spectral_centroid_hz",
        "speech_band_ratio",
        "log_mel",
    }
    assert batch["log_mel"].shape == (7, 24)  # the trailing 100 samples are ignored
    for i in range(7):
        one = features.compute(audio[i * 320 : (i + 1) * 320])
        assert batch["rms_dbfs"][i] == pytest.approx(one.rms_dbfs)
        assert batch["spectral_centroid_hz"][i] == pytest.approx(one.spectral_centroid_hz)
        assert np.allclose(batch["log_mel"][i], one.log_mel)
    assert features.compute_many(b"")["log_mel"].shape == (0, 24)


def test_eight_khz_and_no_mel_bands() -> None:
    features = VadFeatures(8000, 30, n_mels=0)
    f = features.compute(tone(1000, 240, 0.5, rate=8000))
    assert f.spectral_centroid_hz == pytest.approx(1000, abs=60)
    assert f.log_mel.shape == (0,)


def test_features_repr_and_properties() -> None:
    features = VadFeatures(16000, 10, 32)
    assert (features.sample_rate, features.frame_ms, features.n_mels) == (16000, 10, 32)
    assert repr(features) == "VadFeatures(sample_rate=16000, frame_ms=10, n_mels=32)"
    assert "rms_dbfs=" in repr(features.compute(np.zeros(160, np.float32)))


# --- energy VAD ----------------------------------------------------------------------------


def test_burst_on_the_frame_grid_gives_exact_sample_timestamps() -> None:
    audio = bursts(4 * RATE, [(RATE, 2 * RATE)])
    vad = EnergyVad(RATE, 20)
    events = vad.process(audio)
    # The end is the end of the last speech frame plus the hangover (150 ms = 8 frames of 20).
    assert events == [start(16000), end(32000 + 8 * 320)]
    assert events[0].kind == "start"
    assert events[0].time_s == 1.0
    assert events[1].time_s == pytest.approx((32000 + 8 * 320) / RATE)
    # Where the speech itself ended, without the hangover (what turn-taking times from).
    assert vad.speech_until == 32000
    vad.reset()
    assert vad.speech_until == 0


@pytest.mark.parametrize("frame_ms", [10, 20, 30])
def test_events_do_not_depend_on_chunking(frame_ms: int) -> None:
    audio = bursts(5 * RATE, [(7001, 20011), (40000, 52000)])
    whole = EnergyVad(RATE, frame_ms).process(audio)
    assert [e.kind for e in whole] == ["start", "end", "start", "end"]
    frame = RATE * frame_ms // 1000
    # An off-grid onset: the start is on the frame grid, within a frame of it (the frame
    # holding the onset counts if enough of the tone falls under its window).
    assert whole[0].sample % frame == 0
    assert abs(whole[0].sample - 7001) < frame
    for chunk in (1, 13, 333, 1001):
        vad = EnergyVad(RATE, frame_ms)
        events = []
        for i in range(0, len(audio), chunk):
            events += vad.process(audio[i : i + chunk])
        assert events == whole, chunk
    # PCM16 bytes and float32 give the same events as int16.
    assert EnergyVad(RATE, frame_ms).process(audio.tobytes()) == whole
    assert EnergyVad(RATE, frame_ms).process(audio.astype(np.float32) / 32768) == whole


def test_a_click_shorter_than_min_speech_triggers_nothing() -> None:
    audio = bursts(3 * RATE, [(RATE + 17, RATE + 17 + 480)])  # 30 ms, off the frame grid
    for frame_ms in (10, 20, 30):
        assert EnergyVad(RATE, frame_ms).process(audio) == []
    # With no minimum speech duration the same click is speech.
    events = EnergyVad(RATE, 10, min_speech_ms=0).process(audio)
    assert start((RATE + 17) // 160 * 160) in events


def test_min_silence_and_hangover_bridge_short_pauses_and_split_long_ones() -> None:
    # Pauses of 100 ms (bridged: under hangover 150 + min silence 200) and 600 ms (split).
    audio = bursts(6 * RATE, [(16000, 24000), (25600, 32000), (41600, 48000)])
    events = EnergyVad(RATE, 20).process(audio)
    assert events == [start(16000), end(32000 + 8 * 320), start(41600), end(48000 + 8 * 320)]
    # No hangover and a short minimum silence: the 100 ms pause now splits, ends are exact.
    tight = EnergyVad(RATE, 20, hangover_ms=0, min_silence_ms=60).process(audio)
    assert tight == [
        start(16000),
        end(24000),
        start(25600),
        end(32000),
        start(41600),
        end(48000),
    ]


def test_process_frames_reports_scores_and_decisions() -> None:
    audio = bursts(2 * RATE, [(RATE, 2 * RATE)])
    vad = EnergyVad(RATE, 20)
    first = vad.process_frames(audio[:8000])
    second = vad.process_frames(audio[8000:])
    assert isinstance(second, VadFrames)
    assert (len(first), first.first_frame) == (25, 0)
    assert (len(second), second.first_frame) == (75, 25)
    scores = np.concatenate([first.scores, second.scores])
    is_speech = np.concatenate([first.is_speech, second.is_speech])
    in_segment = np.concatenate([first.in_segment, second.in_segment])
    assert scores.dtype == np.float32
    assert is_speech.dtype == np.bool_
    assert np.all(scores[:50] < vad.threshold_db)
    assert not is_speech[:50].any()
    assert np.all(scores[50:] > 20)
    assert is_speech[50:].all()
    # Causal state: the segment is confirmed after min_speech (90 ms = 5 frames of 20 ms).
    assert not in_segment[:54].any()
    assert in_segment[54:].all()
    assert second.events == [start(16000)]
    assert vad.in_segment


def test_flush_and_reset() -> None:
    audio = bursts(2 * RATE, [(RATE, 2 * RATE)])
    vad = EnergyVad(RATE, 20)
    assert vad.process(audio) == [start(16000)]
    assert vad.samples_received == 2 * RATE
    # The hangover would reach past the audio received: the end is clipped to it.
    assert vad.flush() == end(32000)
    assert vad.flush() is None
    vad.reset()
    assert vad.samples_received == 0
    assert vad.process(audio) == [start(16000)]


def test_the_noise_floor_follows_a_louder_noise_within_one_window() -> None:
    rng = np.random.default_rng(2)
    quiet = rng.normal(0, 100, 2 * RATE)  # -50 dBFS
    loud = rng.normal(0, 1000, 10 * RATE)  # -30 dBFS from 2 s on
    audio = np.round(np.concatenate([quiet, loud])).astype(np.int16)
    vad = EnergyVad(RATE, 20, noise_window_ms=3000)
    events = vad.process(audio)
    # The step reads as speech until the floor has learnt it: within one window (3 s),
    # plus the hangover and minimum silence that end a segment (350 ms).
    assert [e.kind for e in events] == ["start", "end"]
    assert abs(events[0].sample - 2 * RATE) <= 320
    assert events[1].sample - 2 * RATE <= 3.35 * RATE
    assert not vad.in_segment


def test_the_level_gate_rejects_a_much_quieter_background_talker() -> None:
    foreground = bursts(5 * RATE, [(RATE, 2 * RATE)])
    background = bursts(5 * RATE, [(3 * RATE, 4 * RATE)], seed=2) // 32  # 30 dB quieter
    audio = np.concatenate([foreground[: 5 * RATE // 2], background[5 * RATE // 2 :]])
    assert EnergyVad(RATE, 20).process(audio) == [start(16000), end(32000 + 8 * 320)]
    ungated = EnergyVad(RATE, 20, level_gate_db=None).process(audio)
    assert [e.kind for e in ungated] == ["start", "end", "start", "end"]
    assert ungated[2] == start(3 * RATE)
    assert EnergyVad(level_gate_db=None).level_gate_db is None


def test_eight_khz_bursts() -> None:
    audio = bursts(4 * RATE, [(RATE, 2 * RATE)])[::2].copy()  # decimated: 1 kHz tone at 8 kHz
    events = EnergyVad(8000, 30).process(audio)
    assert [e.kind for e in events] == ["start", "end"]
    assert events[0].sample == 8000 // 240 * 240
    assert events[0].sample_rate == 8000


def test_real_speech_is_detected(speech: list[Any]) -> None:
    rng = np.random.default_rng(11)
    for utterance in speech:
        pad = np.zeros(RATE, dtype=np.int16)
        clean = np.concatenate([pad, utterance.samples, pad]).astype(np.float64)
        audio = np.round(clean + rng.normal(0, 10, len(clean))).astype(np.int16)  # -70 dBFS
        vad = EnergyVad(RATE, 30)
        events = vad.process(audio)
        closing = vad.flush()
        if closing is not None:
            events.append(closing)
        assert events, utterance.name
        assert [e.kind for e in events[:2]] == ["start", "end"]
        level = np.abs(utterance.samples.astype(np.float64))
        loud = np.flatnonzero(level > 0.1 * level.max()) + RATE
        # Speech starts before the first loud sample and ends after the last one.
        assert events[0].sample <= loud[0], utterance.name
        assert events[-1].sample >= loud[-1], utterance.name
        assert events[0].sample >= RATE - 3 * 480, utterance.name
        # Nothing is detected in the second of silence before the speech.
        assert events[0].sample > RATE // 2, utterance.name


def test_vad_repr_and_properties() -> None:
    vad = EnergyVad(8000, 10, threshold_db=6, hangover_ms=50, noise_window_ms=900)
    assert (vad.sample_rate, vad.frame_ms, vad.frame_length) == (8000, 10, 80)
    assert (vad.threshold_db, vad.hangover_ms, vad.noise_window_ms) == (6.0, 50.0, 900.0)
    assert (vad.min_speech_ms, vad.min_silence_ms, vad.min_level_dbfs) == (90.0, 200.0, -60.0)
    assert vad.level_gate_db == 20.0
    assert repr(vad).endswith("min_level_dbfs=-60, level_gate_db=20)")
    assert repr(vad).startswith("EnergyVad(sample_rate=8000, frame_ms=10, threshold_db=6,")
    assert (
        repr(start(8000)) == 'SpeechEvent(kind="start", sample=8000, sample_rate=16000)  # 0.500 s'
    )
    assert {start(1), start(1), end(1)} == {start(1), end(1)}


def test_concurrent_use_from_threads_is_safe() -> None:
    audio = bursts(3 * RATE, [(RATE, 2 * RATE)])
    expected = EnergyVad(RATE, 20).process(audio)
    results: list[list[SpeechEvent]] = []

    def run() -> None:
        vad = EnergyVad(RATE, 20)
        results.append(vad.process(audio))

    threads = [threading.Thread(target=run) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [expected] * 4


# --- bad input -----------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [0, -16000, 44100, 48000, 2**40])
def test_unsupported_sample_rate(rate: int) -> None:
    expected = UnsupportedSampleRateError if 0 <= rate < 2**32 else ConfigError
    with pytest.raises(expected, match=r"sample_rate|sample rate"):
        VadFeatures(rate)
    with pytest.raises(expected, match=r"sample_rate|sample rate"):
        EnergyVad(rate)


@pytest.mark.parametrize("frame_ms", [0, -20, 15, 40])
def test_bad_frame_duration(frame_ms: int) -> None:
    with pytest.raises(ConfigError, match="frame_ms"):
        VadFeatures(RATE, frame_ms)
    with pytest.raises(ConfigError, match="frame_ms"):
        EnergyVad(RATE, frame_ms)


@pytest.mark.parametrize("n_mels", [-1, 129])
def test_bad_mel_band_count(n_mels: int) -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        VadFeatures(RATE, 20, n_mels)


def test_too_many_mel_bands_for_a_short_8khz_frame() -> None:
    with pytest.raises(ConfigError, match="n_mels"):
        VadFeatures(8000, 10, 128)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("threshold_db", 0.0),
        ("threshold_db", -3.0),
        ("threshold_db", 61.0),
        ("threshold_db", float("nan")),
        ("hangover_ms", -1.0),
        ("min_speech_ms", -10.0),
        ("min_silence_ms", float("inf")),
        ("min_silence_ms", 10_001.0),
        ("noise_window_ms", 0.0),
        ("noise_window_ms", 100.0),
        ("min_level_dbfs", 1.0),
        ("min_level_dbfs", -121.0),
        ("level_gate_db", 0.0),
        ("level_gate_db", 121.0),
    ],
)
def test_bad_vad_settings(name: str, value: float) -> None:
    with pytest.raises(ConfigError, match=name):
        EnergyVad(RATE, 20, **{name: value})


def test_wrong_frame_length_for_compute() -> None:
    features = VadFeatures(RATE, 20)
    for n in (0, 319, 321, 640):
        with pytest.raises(AudioFormatError, match="320 samples"):
            features.compute(np.zeros(n, np.int16))


@pytest.mark.parametrize(
    "audio",
    [
        np.zeros(320, dtype=np.float64),
        np.zeros(320, dtype=np.int32),
        np.zeros(320, dtype=np.uint8),
        [0] * 320,
        "pcm",
    ],
)
def test_wrong_audio_type(audio: Any) -> None:
    with pytest.raises(AudioTypeError):
        VadFeatures(RATE, 20).compute(audio)
    with pytest.raises(AudioTypeError):
        VadFeatures(RATE, 20).compute_many(audio)
    with pytest.raises(AudioTypeError):
        EnergyVad(RATE, 20).process(audio)
    with pytest.raises(AudioTypeError):
        EnergyVad(RATE, 20).process_frames(audio)


@pytest.mark.parametrize(
    "audio",
    [
        b"\x00" * 641,  # odd PCM16 byte length
        np.zeros(640, dtype=np.int16)[::2],  # not contiguous
        np.zeros((2, 320), dtype=np.float32),  # two-dimensional
    ],
)
def test_unusable_audio_layout(audio: Any) -> None:
    with pytest.raises(AudioFormatError):
        VadFeatures(RATE, 20).compute(audio)
    with pytest.raises(AudioFormatError):
        VadFeatures(RATE, 20).compute_many(audio)
    with pytest.raises(AudioFormatError):
        EnergyVad(RATE, 20).process(audio)
    with pytest.raises(AudioFormatError):
        EnergyVad(RATE, 20).process_frames(audio)


def test_bad_speech_event() -> None:
    with pytest.raises(ConfigError, match="kind"):
        SpeechEvent("begin", 0, RATE)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sample_rate"):
        SpeechEvent("start", 0, 0)
