"""Moonshine (``MoonshineSTT``, ``moonshine-base-en`` on onnxruntime) against PocketSphinx
(``SphinxSTT``, the current offline default: the baseline), on the recordings of
``../shared/data/speech``, in the same run.

* **Accuracy and cost**: every recording (``--quick``: the shortest one) fed as fast as each
  STT takes it, followed by 600 ms of faint room noise (-60 dBFS; the engine's end-of-turn
  silence). WER = word-level Levenshtein distance / reference words, after lower-casing,
  dropping punctuation (hyphens split words) and spelling out "mr"/"mrs"/"dr"; errors summed
  over words summed. Real-time factor = decoder CPU time / audio time: Moonshine's "batch"
  figure is one decode of each whole recording (``MoonshineModel.transcribe``), its
  "streaming" figure all the decodes a real-time stream costs (partials, speculative, final).
* **Final latency** (wall clock, from the last frame of the stream to the final): the same
  streams in real time (20 ms frames every 20 ms), Moonshine with the speculative decode
  (default) and without it (``speculative_silence_ms=None``: the final's decode starts when
  the audio ends), and PocketSphinx. p50 over the recordings.
* **Memory**: resident set size of a fresh process after loading the model and decoding one
  recording, once (one model shared by every session) and twice (one model per session).

The machine is shared with other work: wall-clock figures vary from run to run; CPU times
are the thread's own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import trio

from harness.speech import normalize, word_errors
from voicecore.engine.stages import STT, AudioFrame, TurnContext
from voicecore.providers.moonshine import MoonshineSTT
from voicecore.providers.moonshine_model import MoonshineModel
from voicecore.providers.sphinx import SphinxSTT

RATE = 16000
FRAME = 320  # 20 ms
TAIL_MS = 600


def with_tail(samples: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]:
    noise = np.random.default_rng(7).normal(0, 33, RATE * TAIL_MS // 1000)
    return np.concatenate([samples, noise.astype(np.int16)])


async def frames(
    samples: npt.NDArray[np.int16], realtime: bool, ended: list[float]
) -> AsyncIterator[AudioFrame]:
    for i in range(0, len(samples), FRAME):
        yield AudioFrame(samples[i : i + FRAME].tobytes(), RATE, i)
        await (trio.sleep(FRAME / RATE) if realtime else trio.lowlevel.checkpoint())
    ended.append(time.perf_counter())


async def run_one(stt: STT, samples: npt.NDArray[np.int16], realtime: bool) -> dict[str, Any]:
    """The final's text, its latency after the last frame, and the partials' count."""
    ended: list[float] = []
    partials, text, latency = 0, "", float("nan")
    async for hypothesis in stt.transcribe(
        frames(with_tail(samples), realtime, ended), TurnContext.standalone("bench")
    ):
        if hypothesis.is_final:
            text, latency = hypothesis.text, 1000 * (time.perf_counter() - ended[0])
        else:
            partials += 1
    return {"text": text, "latency_ms": latency, "partials": partials}


@pytest.fixture(scope="module")
def model_dir(moonshine_model_dir: Path) -> Path:
    return moonshine_model_dir


def _wer(speech: list[Any], texts: list[str]) -> tuple[float, int, int]:
    errors = words = 0
    for utterance, text in zip(speech, texts, strict=True):
        reference = normalize(utterance.transcript)
        errors += word_errors(reference, normalize(text))
        words += len(reference)
    return errors / words, errors, words


def test_moonshine_vs_pocketsphinx(
    speech: list[Any], model_dir: Path, quick: bool, benchmark: Any, report: Any
) -> None:
    clips = sorted(speech, key=lambda u: len(u.samples))[:1] if quick else speech
    audio_s = sum(len(u.samples) for u in clips) / RATE
    model = MoonshineModel.shared(model_dir)

    # --- accuracy and CPU, fed as fast as taken --------------------------------------------
    before = model.stats()
    batch_texts = [model.transcribe(u.samples) for u in clips]
    after = model.stats()
    batch_rtf = (after.decode_cpu_s - before.decode_cpu_s) / audio_s

    def moonshine_fast() -> list[dict[str, Any]]:
        stt = MoonshineSTT(model)
        return [trio.run(run_one, stt, u.samples, False) for u in clips]

    moon = benchmark.pedantic(moonshine_fast, rounds=1, iterations=1)
    sphinx_stt = SphinxSTT()
    sphinx = [trio.run(run_one, sphinx_stt, u.samples, False) for u in clips]
    sphinx_rtf = sphinx_stt.stats().real_time_factor

    # --- final latency, in real time -------------------------------------------------------
    def realtime(stt: STT) -> tuple[list[dict[str, Any]], float]:
        cpu = model.stats().decode_cpu_s
        results = [trio.run(run_one, stt, u.samples, True) for u in clips]
        return results, (model.stats().decode_cpu_s - cpu) / audio_s

    spec_stt = MoonshineSTT(model)
    spec, spec_rtf = realtime(spec_stt)
    plain_stt = MoonshineSTT(model, speculative_silence_ms=None)
    plain, plain_rtf = realtime(plain_stt)
    sphinx_rt, _ = realtime(SphinxSTT())

    rows = [
        ("moonshine batch (1 decode/clip)", [{"text": t} for t in batch_texts], batch_rtf),
        ("moonshine stream, fast feed", moon, None),
        ("moonshine realtime, speculative", spec, spec_rtf),
        ("moonshine realtime, no speculative", plain, plain_rtf),
        ("pocketsphinx stream, fast feed (baseline)", sphinx, sphinx_rtf),
        ("pocketsphinx realtime (baseline)", sphinx_rt, None),
    ]
    figures: dict[str, dict[str, Any]] = {}
    for name, results, rtf in rows:
        wer, errors, words = _wer(clips, [r["text"] for r in results])
        latencies = [r["latency_ms"] for r in results if "latency_ms" in r]
        p50 = float(np.median(latencies)) if latencies and "realtime" in name else None
        partials = sum(r.get("partials", 0) for r in results)
        figures[name] = {"wer": wer, "rtf": rtf, "p50": p50}
        report.row(
            config=name,
            clips=len(clips),
            wer=round(wer, 3),
            errors=f"{errors}/{words}",
            rtf=round(rtf, 3) if rtf is not None else "-",
            final_p50_ms=round(p50, 1) if p50 is not None else "-",
            partials=partials if "stream" in name or "realtime" in name else "-",
        )
    for u, r, q in zip(clips, spec, plain, strict=True):
        report.row(
            config="moonshine realtime, per clip",
            clip=u.name,
            audio_s=round(len(u.samples) / RATE, 2),
            final_ms_speculative=round(r["latency_ms"], 1),
            final_ms_no_speculative=round(q["latency_ms"], 1),
            text=r["text"],
        )
    moon_wer = figures["moonshine stream, fast feed"]["wer"]
    sphinx_wer = figures["pocketsphinx stream, fast feed (baseline)"]["wer"]
    report.figure("wer_moonshine", round(moon_wer, 3))
    report.figure("wer_pocketsphinx", round(sphinx_wer, 3))
    report.figure(
        "wer_ratio_moonshine_over_sphinx",
        round(moon_wer / sphinx_wer, 3) if sphinx_wer else None,
    )
    report.figure("rtf_moonshine_batch", round(batch_rtf, 3))
    report.figure("rtf_moonshine_streaming", round(spec_rtf, 3))
    report.figure("rtf_pocketsphinx", round(sphinx_rtf, 3))
    report.figure("rtf_ratio_moonshine_batch_over_sphinx", round(batch_rtf / sphinx_rtf, 3))
    p50_spec = figures["moonshine realtime, speculative"]["p50"]
    p50_plain = figures["moonshine realtime, no speculative"]["p50"]
    p50_sphinx = figures["pocketsphinx realtime (baseline)"]["p50"]
    report.figure("final_p50_ms_speculative", round(p50_spec, 1))
    report.figure("final_p50_ms_no_speculative", round(p50_plain, 1))
    report.figure("final_p50_ms_pocketsphinx", round(p50_sphinx, 1))
    report.figure("final_p50_ratio_speculative_over_none", round(p50_spec / p50_plain, 3))
    stats = spec_stt.stats()
    report.figure("finals_ready_from_speculative", f"{stats.speculative_finals}/{stats.finals}")
    report.figure("stt_stats_speculative", str(stats))
    if not quick:  # one clip (4 words) says nothing about accuracy
        assert moon_wer < sphinx_wer


_MEMORY_PROBE = """
import json, sys, wave
import numpy as np
from voicecore.providers.moonshine_model import MoonshineModel

def rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024

with wave.open(sys.argv[2]) as w:
    audio = np.frombuffer(w.readframes(w.getnframes()), "<i2").astype(np.int16)
base = rss()
first = MoonshineModel(sys.argv[1])
first.transcribe(audio)
one = rss()
second = MoonshineModel(sys.argv[1])
second.transcribe(audio)
two = rss()
print(json.dumps({"base": base, "one": one, "two": two}))
"""


def test_moonshine_memory_shared_vs_per_session(
    speech_dir: Path, model_dir: Path, benchmark: Any, report: Any
) -> None:
    def probe() -> dict[str, float]:
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _MEMORY_PROBE,
                str(model_dir),
                str(speech_dir / "goforward.wav"),
            ],
            capture_output=True,
            text=True,
            check=True,
            timeout=120,
        )
        return dict(json.loads(done.stdout))

    mb = benchmark.pedantic(probe, rounds=1, iterations=1)
    one, two = mb["one"] - mb["base"], mb["two"] - mb["base"]
    report.row(models=1, rss_delta_mb=round(one, 1), note="one model shared by every session")
    report.row(models=2, rss_delta_mb=round(two, 1), note="one model per session (2 sessions)")
    report.figure("rss_mb_one_model", round(one, 1))
    report.figure("rss_mb_per_extra_model", round(two - one, 1))
    report.figure("rss_ratio_two_over_one", round(two / one, 3))
