"""VAD accuracy and cost: voicecore's energy VAD beside webrtcvad and Silero, in one run.

Streams: the real speech of ``../shared/data/speech`` concatenated in a seeded random order
with 0.5-1.5 s gaps of digital silence (and 1 s of lead-in, so every detector starts on
non-speech), then mixed with generated noise:

* white: Gaussian;
* pink: Gaussian noise shaped to 1/f power in the frequency domain;
* babble: six copies of the corpus itself, each time-reversed or not and circularly shifted
  by a random amount, summed (speech-like, non-stationary: the hard case for every VAD).

SNR is the speech's *active* power (over the oracle's speech samples) over the noise's
mean power, at 20, 10 and 5 dB. The "quiet" condition adds white noise at 40 dB SNR, like a
good microphone's self-noise: digital-zero gaps between recordings that carry their own
room noise would otherwise make every recording's lead-in a loud event.

Oracle (ground truth) from the clean speech: per utterance, 10 ms blocks whose energy is
within 20 dB of the utterance's 90th-percentile block energy are speech; gaps shorter than
100 ms between speech blocks are bridged (stop closures inside words). A 30 ms frame is
speech when most of its samples are.

Scores, per condition, on the 30 ms frame grid at 16 kHz:

* voicecore ``EnergyVad(frame_ms=30)``, default settings: F1 of its segments (frames between
  its start and end events, which is what a user acts on), the same without the level gate
  (``level_gate_db=None``), F1 of its raw per-frame decision, and ROC AUC of its continuous
  score (dB; the score ignores the level gates).
* webrtcvad (``webrtcvad-wheels``) on the same 30 ms frames: F1 for each aggressiveness
  mode (the best is shown, with its mode); its output is binary, so its ROC AUC is the area
  under the curve through its four modes' (FPR, TPR) points, from (0, 0) to (1, 1).
* Silero VAD 6.2.3 (onnxruntime, one thread): probability per 32 ms chunk, mapped to a 30 ms
  frame by the chunk holding the frame's centre; F1 at threshold 0.5, ROC AUC of the
  probability. Skipped with a message if the model cannot be fetched.

Cost: ns per 30 ms frame for voicecore's features (40 mel bands) and energy VAD, and
webrtcvad's ``is_speech``, each as one Python call per frame; voicecore also batched (one
call over a whole stream, divided by its frames); Silero per 32 ms chunk. The target
compares like with like: voicecore's per-frame call against webrtcvad's per-frame call.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import webrtcvad
from scipy.stats import rankdata

from voicecore import EnergyVad, VadFeatures, models
from voicecore.exceptions import ModelFetchError
from voicecore.providers.silero import SILERO_MODEL_FILE

RATE = 16000
FRAME = 480  # 30 ms at 16 kHz: the longest frame webrtcvad takes
SILERO_CHUNK = 512
SEED = 20_241_121

Bool = npt.NDArray[np.bool_]
Floats = npt.NDArray[np.float64]


@dataclass
class Stream:
    """A clean labelled stream: speech with silence gaps, and the oracle's labels."""

    clean: Floats  # float64, full scale 1.0
    speech_samples: Bool  # oracle label per sample

    def frame_labels(self) -> Bool:
        n = len(self.clean) // FRAME
        blocks = self.speech_samples[: n * FRAME].reshape(n, FRAME)
        return np.asarray(blocks.mean(axis=1) >= 0.5)


def oracle(samples: Floats) -> Bool:
    """Speech labels of one clean utterance (see the module docstring)."""
    block = RATE // 100
    n = len(samples) // block
    energy = (samples[: n * block].reshape(n, block) ** 2).mean(axis=1)
    level_db = 10 * np.log10(energy + 1e-12)
    active = level_db >= np.percentile(level_db, 90) - 20.0
    speech_blocks = np.flatnonzero(active)
    for a, b in itertools.pairwise(speech_blocks):
        if 1 < b - a <= 10:
            active[a:b] = True
    labels = np.zeros(len(samples), dtype=bool)
    labels[: n * block] = np.repeat(active, block)
    return labels


def build_stream(utterances: list[Any], rng: np.random.Generator, passes: int) -> Stream:
    pieces: list[Floats] = [np.zeros(RATE)]
    labels: list[Bool] = [np.zeros(RATE, dtype=bool)]
    for _ in range(passes):
        for index in rng.permutation(len(utterances)):
            speech = utterances[index].samples.astype(np.float64) / 32768.0
            pieces.append(speech)
            labels.append(oracle(speech))
            gap = int(rng.uniform(0.5, 1.5) * RATE)
            pieces.append(np.zeros(gap))
            labels.append(np.zeros(gap, dtype=bool))
    return Stream(np.concatenate(pieces), np.concatenate(labels))


def pink_noise(n: int, rng: np.random.Generator) -> Floats:
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / RATE)
    freqs[0] = freqs[1]
    shaped: Floats = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return shaped


def babble_noise(n: int, utterances: list[Any], rng: np.random.Generator) -> Floats:
    corpus = np.concatenate([u.samples.astype(np.float64) / 32768.0 for u in utterances])
    babble = np.zeros(n)
    for _ in range(6):
        voice = corpus[::-1] if rng.random() < 0.5 else corpus
        tiled = np.resize(voice, n + len(voice))
        start = int(rng.integers(len(voice)))
        babble += tiled[start : start + n]
    return babble


def to_pcm16(samples: Floats) -> npt.NDArray[np.int16]:
    return np.asarray(np.clip(np.round(samples * 32768.0), -32768, 32767).astype(np.int16))


def mix(stream: Stream, noise: Floats, snr_db: float) -> npt.NDArray[np.int16]:
    speech_power = float(np.mean(stream.clean[stream.speech_samples] ** 2))
    noise_power = float(np.mean(noise**2))
    gain = np.sqrt(speech_power / (noise_power * 10 ** (snr_db / 10)))
    return to_pcm16(stream.clean + gain * noise)


def f1(decision: Bool, truth: Bool) -> float:
    tp = float(np.sum(decision & truth))
    fp = float(np.sum(decision & ~truth))
    fn = float(np.sum(~decision & truth))
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def roc_auc(score: Floats, truth: Bool) -> float:
    """Probability that a speech frame outscores a non-speech one (ties count half)."""
    ranks = rankdata(score)
    positives = int(truth.sum())
    negatives = len(truth) - positives
    return float((ranks[truth].sum() - positives * (positives + 1) / 2) / (positives * negatives))


def roc_auc_of_points(points: list[tuple[float, float]]) -> float:
    """Area under the ROC curve through (FPR, TPR) points, closed by (0, 0) and (1, 1)."""
    curve = sorted([(0.0, 0.0), *points, (1.0, 1.0)])
    return float(sum((x1 - x0) * (y0 + y1) / 2 for (x0, y0), (x1, y1) in itertools.pairwise(curve)))


def rates(decision: Bool, truth: Bool) -> tuple[float, float]:
    fpr = float(np.sum(decision & ~truth) / max(1, np.sum(~truth)))
    tpr = float(np.sum(decision & truth) / max(1, np.sum(truth)))
    return fpr, tpr


def voicecore_frames(
    audio: npt.NDArray[np.int16], vad: EnergyVad | None = None
) -> tuple[Bool, Bool, Floats]:
    """Segment labels (from events), raw decisions and scores per 30 ms frame."""
    vad = vad if vad is not None else EnergyVad(RATE, 30)
    out = vad.process_frames(audio)
    n = len(out)
    segments = np.zeros(n, dtype=bool)
    events = list(out.events)
    closing = vad.flush()
    if closing is not None:
        events.append(closing)
    for start, end in zip(events[::2], events[1::2], strict=True):
        segments[start.sample // FRAME : -(-end.sample // FRAME)] = True
    return segments, np.asarray(out.is_speech), np.asarray(out.scores, dtype=np.float64)


def webrtc_frames(audio: npt.NDArray[np.int16], mode: int) -> Bool:
    vad = webrtcvad.Vad(mode)
    data = audio.tobytes()
    n = len(audio) // FRAME
    return np.array(
        [vad.is_speech(data[i * FRAME * 2 : (i + 1) * FRAME * 2], RATE) for i in range(n)]
    )


class Silero:
    """Silero VAD on onnxruntime, one thread, per 32 ms chunk (see RECIPES.md)."""

    CONTEXT = 64

    def __init__(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(
            str(models.fetch("silero-vad") / SILERO_MODEL_FILE),
            options,
            providers=["CPUExecutionProvider"],
        )
        self.sr = np.array(RATE, dtype=np.int64)

    def probabilities(self, audio: npt.NDArray[np.int16]) -> Floats:
        samples = audio.astype(np.float32) / 32768.0
        state = np.zeros((2, 1, 128), dtype=np.float32)
        context = np.zeros(self.CONTEXT, dtype=np.float32)
        n = len(samples) // SILERO_CHUNK
        probs = np.empty(n)
        for i in range(n):
            chunk = samples[i * SILERO_CHUNK : (i + 1) * SILERO_CHUNK]
            window = np.concatenate([context, chunk])[np.newaxis, :]
            prob, state = self.session.run(None, {"input": window, "state": state, "sr": self.sr})
            probs[i] = prob[0, 0]
            context = chunk[-self.CONTEXT :]
        return probs

    @staticmethod
    def on_frame_grid(probs: Floats, n_frames: int) -> Floats:
        centres = np.arange(n_frames) * FRAME + FRAME // 2
        return probs[np.minimum(centres // SILERO_CHUNK, len(probs) - 1)]


def load_silero(report: Any) -> Silero | None:
    """Silero, fetching its model if needed; None (said in the report) if that fails."""
    try:
        silero = Silero()
    except (ModelFetchError, ImportError) as error:
        message = f"Silero skipped: {error}"
        print(f"\n{message}")
        report.figure("silero", message)
        return None
    report.figure("silero", "silero-vad 6.2.3 on onnxruntime, 1 thread")
    return silero


def conditions(quick: bool) -> list[tuple[str, float]]:
    if quick:
        return [("quiet", 40.0), ("white", 10.0), ("pink", 5.0), ("babble", 10.0)]
    return [("quiet", 40.0)] + [
        (kind, snr) for kind in ("white", "pink", "babble") for snr in (20.0, 10.0, 5.0)
    ]


def test_vad_accuracy(speech: list[Any], quick: bool, benchmark: Any, report: Any) -> None:
    rng = np.random.default_rng(SEED)
    stream = build_stream(speech, rng, passes=1 if quick else 3)
    truth = stream.frame_labels()
    silero = load_silero(report)
    n = len(truth)
    noises: dict[str, Callable[[], Floats]] = {
        "white": lambda: rng.standard_normal(len(stream.clean)),
        "pink": lambda: pink_noise(len(stream.clean), rng),
        "babble": lambda: babble_noise(len(stream.clean), speech, rng),
    }
    summary: dict[str, list[float]] = {}
    for kind, snr in conditions(quick):
        noise = noises["white" if kind == "quiet" else kind]()
        audio = mix(stream, noise, snr)
        segments, raw, scores = voicecore_frames(audio)
        segments, raw, scores = segments[:n], raw[:n], scores[:n]
        ungated = voicecore_frames(audio, EnergyVad(RATE, 30, level_gate_db=None))[0][:n]
        webrtc = {mode: webrtc_frames(audio, mode)[:n] for mode in range(4)}
        webrtc_f1 = {mode: f1(decision, truth) for mode, decision in webrtc.items()}
        best_mode = max(webrtc_f1, key=lambda m: webrtc_f1[m])
        row: dict[str, Any] = {
            "condition": f"{kind} {snr:g} dB",
            "speech_share": round(float(truth.mean()), 3),
            "vc_f1": round(f1(segments, truth), 3),
            "vc_f1_no_gate": round(f1(ungated, truth), 3),
            "vc_raw_f1": round(f1(raw, truth), 3),
            "vc_auc": round(roc_auc(scores, truth), 3),
            "webrtc_f1": round(webrtc_f1[best_mode], 3),
            "webrtc_mode": best_mode,
            "webrtc_auc": round(roc_auc_of_points([rates(d, truth) for d in webrtc.values()]), 3),
        }
        if silero is not None:
            probs = Silero.on_frame_grid(silero.probabilities(audio), n)
            row["silero_f1"] = round(f1(probs >= 0.5, truth), 3)
            row["silero_auc"] = round(roc_auc(probs, truth), 3)
        for key, value in row.items():
            if key.endswith(("_f1", "_auc", "_no_gate")):
                summary.setdefault(key, []).append(value)
        report.row(**row)
    for key, values in summary.items():
        report.figure(f"mean_{key}", round(float(np.mean(values)), 3))
    # The timed part: one batched pass of the energy VAD over the last condition's stream.
    benchmark.pedantic(lambda: EnergyVad(RATE, 30).process(audio), rounds=3, iterations=1)
    # Sanity: on quiet speech the energy VAD must clearly work (a regression guard, not a
    # target; the comparison is in the table).
    assert summary["vc_auc"][0] > 0.8


def median_ns(fn: Callable[[], Any], repeats: int = 5) -> float:
    """Median wall time of one call of `fn` over `repeats` calls, in ns (robust to the odd
    preemption on a shared machine)."""
    samples = []
    for _ in range(repeats):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return float(np.median(samples))


def test_vad_cost(speech: list[Any], quick: bool, benchmark: Any, report: Any) -> None:
    rng = np.random.default_rng(SEED)
    stream = build_stream(speech, rng, passes=1)
    audio = mix(stream, rng.standard_normal(len(stream.clean)), 10.0)
    n = len(audio) // FRAME
    frames = [audio[i * FRAME : (i + 1) * FRAME].tobytes() for i in range(n)]
    if quick:
        frames = frames[:300]

    def per_frame(fn: Callable[[bytes], Any]) -> Callable[[], None]:
        def run() -> None:
            for frame in frames:
                fn(frame)

        return run

    features = VadFeatures(RATE, 30, 40)
    energy = EnergyVad(RATE, 30)
    webrtc = webrtcvad.Vad(2)
    webrtc_ns = median_ns(per_frame(lambda f: webrtc.is_speech(f, RATE))) / len(frames)
    energy_frame = median_ns(per_frame(energy.process)) / len(frames)
    energy_batch = median_ns(lambda: EnergyVad(RATE, 30).process(audio)) / n
    features_frame = median_ns(per_frame(features.compute)) / len(frames)
    features_batch = median_ns(lambda: features.compute_many(audio)) / n
    timings = {
        ("voicecore EnergyVad", "per frame"): energy_frame,
        ("voicecore EnergyVad", "batched"): energy_batch,
        ("voicecore VadFeatures (40 mels)", "per frame"): features_frame,
        ("voicecore VadFeatures (40 mels)", "batched"): features_batch,
    }
    benchmark.pedantic(per_frame(energy.process), rounds=3, iterations=1)

    report.row(
        detector="webrtcvad is_speech (baseline)",
        call="per frame",
        ns_per_call=round(webrtc_ns),
        ns_per_30ms_of_audio=round(webrtc_ns),
        vs_webrtcvad=1.0,
    )
    for (detector, call), ns in timings.items():
        report.row(
            detector=detector,
            call=call,
            ns_per_call=round(ns) if call == "per frame" else "",
            ns_per_30ms_of_audio=round(ns),
            vs_webrtcvad=round(ns / webrtc_ns, 3),
        )
    silero = load_silero(report)
    if silero is not None:
        chunk = audio[: SILERO_CHUNK * 40]
        silero_ns = median_ns(lambda: silero.probabilities(chunk)) / 40
        per_30ms = silero_ns * FRAME / SILERO_CHUNK
        report.row(
            detector="Silero (onnxruntime, 1 thread)",
            call="per 32 ms chunk",
            ns_per_call=round(silero_ns),
            ns_per_30ms_of_audio=round(per_30ms),
            vs_webrtcvad=round(per_30ms / webrtc_ns, 3),
        )
        report.figure("silero_ns_per_32ms_chunk", silero_ns)
    energy_ratio = energy_frame / webrtc_ns
    report.figure("webrtcvad_ns_per_frame", webrtc_ns)
    report.figure("energy_vad_per_frame_over_webrtcvad", round(energy_ratio, 3))
    report.figure("energy_vad_batched_over_webrtcvad", round(energy_batch / webrtc_ns, 3))
    report.figure("features_per_frame_over_webrtcvad", round(features_frame / webrtc_ns, 3))
    # The target compares like with like: one Python call per 30 ms frame on both sides.
    report.figure(
        "target_energy_vad_per_frame_le_webrtcvad", "met" if energy_ratio <= 1.0 else "missed"
    )
