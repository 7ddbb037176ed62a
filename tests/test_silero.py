"""Silero VAD stage: real model on real speech, state carried, energy gate, fallback."""

from __future__ import annotations

import gc
import itertools
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from voicecore import EnergyVad, models
from voicecore.engine.stages import VAD, AudioFrame, EnergyVadStage, SpeechEnded, SpeechStarted
from voicecore.exceptions import (
    AudioFormatError,
    ConfigError,
    ModelFetchError,
    ModelNotFoundError,
    VadFallbackWarning,
)
from voicecore.providers import SileroVad, make_vad
from voicecore.providers.silero import SILERO_CONTEXT, SILERO_MODEL_FILE, SILERO_WINDOW

RATE = 16000
FRAME = 320  # 20 ms: what the engine feeds
LEAD = RATE  # 1 s of room noise before and after each recording


@pytest.fixture(scope="module")
def model() -> Path:
    try:
        return models.fetch("silero-vad") / SILERO_MODEL_FILE
    except ModelFetchError as exc:
        pytest.skip(f"Silero VAD model not cached and could not be fetched: {exc}")


def room_noise(n: int, seed: int = 0) -> npt.NDArray[np.float64]:
    """Faint white noise, about -60 dBFS (a quiet room through a decent microphone)."""
    return np.random.default_rng(seed).normal(0, 30, n)


def padded(samples: npt.NDArray[np.int16], lead: int = LEAD) -> npt.NDArray[np.int16]:
    """``samples`` with ``lead`` samples of room noise before and after."""
    x = np.concatenate([np.zeros(lead), samples.astype(np.float64), np.zeros(lead)])
    return np.clip(x + room_noise(len(x)), -32768, 32767).astype(np.int16)


def feed(
    vad: SileroVad | EnergyVadStage, pcm: npt.NDArray[np.int16], sizes: list[int] | int = FRAME
) -> list[SpeechStarted | SpeechEnded]:
    """Feeds ``pcm`` in frames of ``sizes`` (cycled) samples; returns every event, flushed."""
    steps = itertools.cycle([sizes] if isinstance(sizes, int) else sizes)
    events: list[SpeechStarted | SpeechEnded] = []
    offset = 0
    while offset < len(pcm):
        chunk = pcm[offset : offset + next(steps)]
        events += vad.process(AudioFrame(chunk.tobytes(), RATE, offset))
        offset += len(chunk)
    if isinstance(vad, SileroVad):
        events += vad.flush()
    return events


def segments(events: list[SpeechStarted | SpeechEnded]) -> list[tuple[int, int]]:
    starts = [e.sample for e in events if isinstance(e, SpeechStarted)]
    ends = [e.sample for e in events if isinstance(e, SpeechEnded)]
    assert len(starts) == len(ends), events
    return list(zip(starts, ends, strict=True))


def test_is_a_vad_stage(model: Path) -> None:
    vad = SileroVad(model)
    assert isinstance(vad, VAD)
    assert vad.speech_until == 0
    assert "SileroVad(" in repr(vad)


def test_detects_speech_within_each_utterance_and_none_in_the_silence(
    model: Path, speech: list[Any]
) -> None:
    for utterance in speech:
        vad = SileroVad(model)
        spans = segments(feed(vad, padded(utterance.samples)))
        assert spans, f"{utterance.name}: no speech detected"
        first, last = spans[0][0], spans[-1][1]
        # Within the recording (which carries some room noise of its own around the words),
        # never in the padding of pure room noise: at most the start pad (32 ms) early.
        assert first >= LEAD - 512, (utterance.name, spans)
        assert last <= LEAD + len(utterance.samples), (utterance.name, spans)
        covered = sum(end - start for start, end in spans)
        assert covered >= 0.5 * len(utterance.samples), (utterance.name, spans)
        assert vad.speech_until == last


def test_no_speech_in_room_noise_or_digital_silence(model: Path) -> None:
    for pcm in (
        np.clip(room_noise(3 * RATE, seed=5), -32768, 32767).astype(np.int16),
        np.zeros(3 * RATE, dtype=np.int16),
    ):
        vad = SileroVad(model, gate=False)
        assert feed(vad, pcm) == []
        assert vad.speech_until == 0
        assert vad.stats().windows == 3 * RATE // SILERO_WINDOW


def reference_probabilities(
    model: Path, pcm: npt.NDArray[np.int16], *, carry_state: bool = True
) -> list[float]:
    """Silero run directly with onnxruntime as in its reference code: state and 64-sample
    context carried across 512-sample windows (or the state reset at every window)."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(model), providers=["CPUExecutionProvider"])
    audio = pcm.astype(np.float32) / 32768
    state = np.zeros((2, 1, 128), dtype=np.float32)
    context = np.zeros(SILERO_CONTEXT, dtype=np.float32)
    probabilities = []
    for start in range(0, len(audio) - SILERO_WINDOW + 1, SILERO_WINDOW):
        window = audio[start : start + SILERO_WINDOW]
        model_input = np.concatenate([context, window])[np.newaxis, :]
        sr = np.array(RATE, dtype=np.int64)
        out, state = session.run(None, {"input": model_input, "state": state, "sr": sr})
        probabilities.append(float(out[0, 0]))
        context = window[-SILERO_CONTEXT:]
        if not carry_state:
            state = np.zeros_like(state)
    return probabilities


def test_recurrent_state_is_carried_across_windows(model: Path, speech: list[Any]) -> None:
    pcm = padded(speech[0].samples)
    vad = SileroVad(model, gate=False)
    seen = []
    for start in range(0, len(pcm) - SILERO_WINDOW + 1, SILERO_WINDOW):
        vad.process(AudioFrame(pcm[start : start + SILERO_WINDOW].tobytes(), RATE, start))
        vad.drain()
        seen.append(vad.last_probability)
    expected = reference_probabilities(model, pcm)
    np.testing.assert_allclose(seen, expected, atol=1e-5)
    assert max(expected) > 0.9
    # The state matters: the same windows each scored from a zero state come out different.
    stateless = reference_probabilities(model, pcm, carry_state=False)
    assert np.max(np.abs(np.subtract(stateless, expected))) > 0.3


def test_vads_share_one_model_and_keep_their_own_state(model: Path, speech: list[Any]) -> None:
    # One onnxruntime session per process, whatever the number of conversations...
    a, b = SileroVad(model, background=False), SileroVad(model, background=False)
    assert a._model.session is b._model.session
    # ...and each VAD's recurrent state its own: interleaved streams give the events each
    # gives alone.
    one, other = padded(speech[0].samples), padded(speech[1].samples)
    alone = [feed(SileroVad(model, background=False), pcm) for pcm in (one, other)]
    together: list[list[SpeechStarted | SpeechEnded]] = [[], []]
    for offset in range(0, max(len(one), len(other)), FRAME):
        for vad, pcm, events in ((a, one, together[0]), (b, other, together[1])):
            chunk = pcm[offset : offset + FRAME]
            if len(chunk):
                events += vad.process(AudioFrame(chunk.tobytes(), RATE, offset))
    together[0] += a.flush()
    together[1] += b.flush()
    assert together == alone
    assert alone[0]
    assert alone[1]


def test_events_do_not_depend_on_the_chunking(model: Path, speech: list[Any]) -> None:
    pcm = padded(speech[1].samples)
    rng = np.random.default_rng(7)
    chunkings: list[list[int] | int] = [
        FRAME,
        SILERO_WINDOW,
        len(pcm),
        [int(n) for n in rng.integers(0, 2000, 64)],
    ]
    results = []
    for sizes, background in [(sizes, True) for sizes in chunkings] + [(FRAME, False)]:
        vad = SileroVad(model, background=background)
        events = feed(vad, pcm, sizes)
        stats = vad.stats()
        results.append((events, vad.speech_until, stats.windows, stats.inferred))
    assert results[0][0], "no speech detected"
    assert all(r == results[0] for r in results[1:]), results


def test_gate_skips_silence_and_keeps_the_decisions(model: Path, speech: list[Any]) -> None:
    pcm = padded(np.concatenate([u.samples for u in speech]), lead=3 * RATE)
    gated, ungated = SileroVad(model), SileroVad(model, gate=False)
    assert gated.gated
    assert not ungated.gated
    gated_spans = segments(feed(gated, pcm))
    ungated_spans = segments(feed(ungated, pcm))
    g, u = gated.stats(), ungated.stats()
    assert u.skipped == 0
    assert u.inferred == u.windows
    # 6 s of the stream is room noise the energy VAD calls silence: skipped.
    silence_windows = 6 * RATE // SILERO_WINDOW
    assert g.skipped >= 0.8 * silence_windows, g
    assert g.skipped_fraction > 0.2
    # Fewer inferences; the CPU time they save is the benchmark's to measure (bench_silero):
    # timed on a loaded CI machine, the gated run can come out slower.
    assert g.inferred == g.windows - g.skipped < u.inferred
    # The same speech, to within a window or two at each boundary.
    assert len(gated_spans) == len(ungated_spans), (gated_spans, ungated_spans)
    for (gs, ge), (us, ue) in zip(gated_spans, ungated_spans, strict=True):
        assert abs(gs - us) <= 2 * SILERO_WINDOW
        assert abs(ge - ue) <= 2 * SILERO_WINDOW


def test_digital_silence_never_runs_the_model(model: Path) -> None:
    vad = SileroVad(model)
    feed(vad, np.zeros(2 * RATE, dtype=np.int16))
    stats = vad.stats()
    assert stats.windows == 2 * RATE // SILERO_WINDOW
    assert stats.inferred == 0
    assert stats.skipped_fraction == 1.0
    assert stats.inference_cpu_s == 0.0


def test_background_thread_runs_the_model_and_gives_the_inline_events(
    model: Path, speech: list[Any]
) -> None:
    pcm = padded(speech[3].samples)
    inline, background = SileroVad(model, background=False), SileroVad(model)
    assert background.background
    expected = feed(inline, pcm)
    workers: set[int] = set()
    run = background._model.run

    def spy(inputs: list[npt.NDArray[np.float32]]) -> list[float]:
        workers.add(threading.get_ident())
        return run(inputs)

    background._model.run = spy  # type: ignore[method-assign]
    from_the_future = 0
    events: list[SpeechStarted | SpeechEnded] = []
    for start in range(0, len(pcm), FRAME):
        frame = AudioFrame(pcm[start : start + FRAME].tobytes(), RATE, start)
        new = background.process(frame)
        from_the_future += sum(e.sample > start + FRAME for e in new)
        events += new
    events += background.flush()
    assert from_the_future == 0
    assert events == expected
    assert background.speech_until == inline.speech_until
    assert background.stats().inferred == inline.stats().inferred
    assert workers
    assert threading.get_ident() not in workers
    background.close()


def test_background_events_come_a_frame_or_so_later(model: Path, speech: list[Any]) -> None:
    """Paced like a live mic (20 ms frames in real time), each window's verdict is back by
    the next frame or so: events are reported at most a few frames after the inline ones."""
    pcm = padded(speech[0].samples)
    inline, background = SileroVad(model, background=False), SileroVad(model)
    frames = [AudioFrame(pcm[i : i + FRAME].tobytes(), RATE, i) for i in range(0, len(pcm), FRAME)]
    when_inline = {}
    for index, frame in enumerate(frames):
        for event in inline.process(frame):
            when_inline[event] = index
    delays = []
    started = time.perf_counter()
    for index, frame in enumerate(frames):
        time.sleep(max(0.0, started + index * FRAME / RATE - time.perf_counter()))
        delays += [index - when_inline[event] for event in background.process(frame)]
    assert len(delays) == len(when_inline)
    assert all(d >= 0 for d in delays)
    assert sorted(delays)[len(delays) // 2] <= 1, delays  # typically the very next frame
    assert max(delays) <= 10, delays  # a loaded machine may hold a window back a little
    background.close()


def test_close_stops_the_thread(model: Path) -> None:
    vad = SileroVad(model, gate=False)
    vad.process(AudioFrame(np.ones(SILERO_WINDOW, dtype=np.int16).tobytes(), RATE, 0))
    thread = vad._thread
    assert thread is not None
    assert thread.is_alive()
    vad.close()
    assert not thread.is_alive()
    vad.close()  # idempotent
    with pytest.raises(RuntimeError, match="closed"):
        vad.process(AudioFrame(b"\0\0" * 160, RATE, SILERO_WINDOW))


def test_a_model_error_in_the_background_thread_reaches_the_caller(model: Path) -> None:
    vad = SileroVad(model, gate=False)
    vad._model.state = np.zeros((3, 3), dtype=np.float32)  # a state onnxruntime rejects
    vad.process(AudioFrame(np.ones(SILERO_WINDOW, dtype=np.int16).tobytes(), RATE, 0))
    with pytest.raises(Exception, match="state") as info:
        vad.drain()
    assert type(info.value).__module__.startswith("onnxruntime")
    vad.close()


def test_a_dropped_vad_stops_its_thread(model: Path) -> None:
    vad = SileroVad(model, gate=False)
    vad.process(AudioFrame(np.ones(SILERO_WINDOW, dtype=np.int16).tobytes(), RATE, 0))
    thread = vad._thread
    assert thread is not None
    del vad
    gc.collect()
    thread.join(timeout=5)
    assert not thread.is_alive()


def test_minimum_durations_and_hysteresis(model: Path, speech: list[Any]) -> None:
    by_name = {u.name: padded(u.samples) for u in speech}
    sentence = by_name["librivox-0880.wav"]
    # A short minimum silence splits the sentence at a pause; the default (100 ms) bridges it.
    split = segments(feed(SileroVad(model, min_silence_ms=32), sentence))
    whole = segments(feed(SileroVad(model), sentence))
    assert len(split) == 2
    assert len(whole) == 1
    assert split[0][0] == whole[0][0]
    assert split[-1][1] == whole[0][1]
    assert segments(feed(SileroVad(model, min_speech_ms=5000), sentence)) == []
    # Hysteresis: inside speech a window is silence only below neg_threshold; with it close
    # to the threshold, the dips inside "go forward ten meters" split it.
    command = by_name["goforward.wav"]
    wide = segments(feed(SileroVad(model, threshold=0.9, neg_threshold=0.5), command))
    narrow = segments(feed(SileroVad(model, threshold=0.9, neg_threshold=0.85), command))
    assert len(wide) == 1
    assert len(narrow) == 2
    # Starts are window boundaries minus the pad, sample-exact.
    no_pad = segments(feed(SileroVad(model, speech_pad_ms=0), sentence))
    assert no_pad[0][0] % SILERO_WINDOW == 0
    assert whole[0][0] == no_pad[0][0] - 512


def test_bad_input_is_rejected(model: Path) -> None:
    vad = SileroVad(model)
    with pytest.raises(ValueError, match="16000 Hz"):
        vad.process(AudioFrame(b"\0\0" * 160, 8000, 0))
    with pytest.raises(AudioFormatError, match="even number of bytes"):
        SileroVad(model, gate=False).process(AudioFrame(b"\0" * 3, RATE, 0))
    with pytest.raises(AudioFormatError):
        vad.process(AudioFrame(b"\0" * 3, RATE, 0))
    vad.process(AudioFrame(b"\0\0" * 160, RATE, 0))
    with pytest.raises(ValueError, match="contiguous"):
        vad.process(AudioFrame(b"\0\0" * 160, RATE, 100))


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": 0.5, "neg_threshold": 0.6},
        {"neg_threshold": 0.0},
        {"min_speech_ms": -1.0},
        {"min_silence_ms": 20_000.0},
        {"speech_pad_ms": -5.0},
    ],
)
def test_bad_settings_raise_config_error(model: Path, options: dict) -> None:
    with pytest.raises(ConfigError):
        SileroVad(model, **options)


def test_gate_at_another_rate_is_refused(model: Path) -> None:
    with pytest.raises(ValueError, match="16000 Hz"):
        SileroVad(model, energy_vad=EnergyVad(8000, 10))


def test_missing_model_raises_with_the_fetch_command(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="voicecore models fetch") as info:
        SileroVad(tmp_path / "nowhere.onnx")
    assert isinstance(info.value, FileNotFoundError)


def test_a_file_that_is_not_the_model_raises_config_error(tmp_path: Path) -> None:
    bogus = tmp_path / "silero_vad.onnx"
    bogus.write_bytes(b"not an onnx model")
    with pytest.raises(ConfigError, match="not a loadable ONNX model"):
        SileroVad(bogus)
    with pytest.raises(ConfigError):  # a misconfiguration is not papered over
        make_vad(model_path=bogus)


def test_make_vad_builds_silero_when_the_model_is_there(model: Path) -> None:
    vad = make_vad(model_path=model, threshold=0.6)
    assert isinstance(vad, SileroVad)
    assert vad.threshold == 0.6
    assert isinstance(make_vad("energy"), EnergyVadStage)
    with pytest.raises(ValueError, match="prefer"):
        make_vad("webrtc")  # type: ignore[arg-type]


def test_missing_model_falls_back_to_the_energy_vad_with_a_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, speech: list[Any]
) -> None:
    monkeypatch.setenv("VOICECORE_CACHE_DIR", str(tmp_path))  # an empty cache
    with pytest.warns(VadFallbackWarning, match="voicecore models fetch"):
        vad = make_vad()
    assert isinstance(vad, EnergyVadStage)
    # The fallback works: it finds the speech in a real recording.
    spans = segments(feed(vad, padded(speech[0].samples)))
    assert spans
    assert spans[0][0] >= LEAD - 1600
