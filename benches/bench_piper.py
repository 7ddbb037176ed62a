"""Piper (neural, ``PiperTTS``) against espeak-ng (``EspeakTTS``, today's offline voice: the
baseline), on the same sentences in the same run.

* **time to first audio**: from the ``synthesize`` call to the first ``AudioChunk`` on the
  Trio side (``time.perf_counter``), as the engine waits for it at the start of a turn (a
  fresh ``TurnContext``: Piper's short first piece). espeak-ng streams 60 ms buffers as it
  goes; Piper computes a whole piece per inference, so its first audio is the phonemization
  plus the first piece's inference. ``piper_vs_espeak`` is the ratio of the p50s.
* **real-time factor**: whole synthesis time (call to end of stream) / audio duration.
* **intelligibility proxy**: the fraction of each sentence's words that PocketSphinx
  (``SphinxSTT``, a fresh decoder per utterance, audio resampled to 16 kHz) recognizes in
  the synthesized audio. PocketSphinx is a weak recognizer, so the rates are low in
  absolute terms; what counts is the comparison on the same sentences.
* **load**: loading the voice (a second copy of the ONNX session, as at start-up).

The contract allots 150 ms to a TTS's first audio (``contracts.latency_budget``);
``piper_first_audio_budget_met`` says whether Piper's p99 is within it. ``--quick``: two
sentences, two rounds. The machine is a shared 2-core VM: figures move with its load.
"""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import trio

from voicecore._core import Resampler
from voicecore.engine.contracts import latency_budget
from voicecore.engine.stages import STT_SAMPLE_RATE, AudioFrame, TurnContext
from voicecore.metrics import percentile
from voicecore.providers import EspeakTTS, SphinxSTT
from voicecore.providers.piper import PiperTTS, PiperVoice

SENTENCES = [
    "Hello! How can I help you today?",
    "The weather will be sunny tomorrow with a light breeze from the west.",
    "I would like to book a table for two at seven o'clock.",
    (
        "The train to Edinburgh leaves from platform four at twenty past nine, and if you "
        "hurry you can still buy a coffee and a newspaper before it departs."
    ),
]

assert latency_budget().lines[4].stage == "TTS first audio"


def p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+", text.lower())


async def timed(tts: Any, text: str) -> dict[str, Any]:
    """One synthesis at the start of a turn: ms to first chunk and to the end, the audio."""
    chunks: list[npt.NDArray[np.int16]] = []
    first_ms = None
    start = time.perf_counter()
    async for chunk in tts.synthesize(text, TurnContext.standalone("bench")):
        if first_ms is None:
            first_ms = 1000 * (time.perf_counter() - start)
        chunks.append(chunk.pcm)
    whole_ms = 1000 * (time.perf_counter() - start)
    assert first_ms is not None
    pcm = np.concatenate(chunks)
    return {
        "first_ms": first_ms,
        "whole_ms": whole_ms,
        "audio_ms": 1000 * len(pcm) / tts.sample_rate,
        "pcm": pcm,
    }


async def recognition_rate(pcm: npt.NDArray[np.int16], rate: int, text: str) -> float:
    """The fraction of ``text``'s words a fresh PocketSphinx decoder hears in ``pcm``."""
    resampler = Resampler(rate, STT_SAMPLE_RATE)
    quiet = np.zeros(STT_SAMPLE_RATE // 4, dtype=np.int16)
    audio = np.concatenate(
        [quiet, np.asarray(resampler.process(pcm)), np.asarray(resampler.flush()), quiet]
    ).astype(np.int16)

    async def frames() -> AsyncIterator[AudioFrame]:
        for offset in range(0, len(audio), 320):
            yield AudioFrame(audio[offset : offset + 320].tobytes(), STT_SAMPLE_RATE, offset)

    final = [h async for h in SphinxSTT().transcribe(frames(), TurnContext.standalone())][-1]
    heard = set(words(final.text))
    reference = words(text)
    return sum(w in heard for w in reference) / len(reference)


def test_piper_vs_espeak(benchmark: Any, report: Any, quick: bool, piper_voice_dir: Path) -> None:
    sentences = SENTENCES[:2] if quick else SENTENCES
    rounds = 2 if quick else 5
    started = time.perf_counter()
    load_copy = PiperVoice(piper_voice_dir)  # a cold load, as at start-up
    load_s = time.perf_counter() - started
    del load_copy
    voices: dict[str, Any] = {"espeak": EspeakTTS("en-us"), "piper": PiperTTS(piper_voice_dir)}
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    heard: dict[tuple[str, int], float] = {}

    async def measure() -> None:
        for index, text in enumerate(sentences):
            for name, tts in voices.items():
                await timed(tts, text)  # warm-up
                runs[name, index] = [await timed(tts, text) for _ in range(rounds)]
                heard[name, index] = await recognition_rate(
                    runs[name, index][0]["pcm"], tts.sample_rate, text
                )

    benchmark.pedantic(lambda: trio.run(measure), rounds=1, iterations=1)

    summary: dict[str, dict[str, list[float]]] = {
        name: {"first": [], "rtf": [], "heard": []} for name in voices
    }
    for index, text in enumerate(sentences):
        per_voice = {}
        for name in voices:
            results = runs[name, index]
            first = [r["first_ms"] for r in results]
            rtf = [r["whole_ms"] / r["audio_ms"] for r in results]
            summary[name]["first"] += first
            summary[name]["rtf"] += rtf
            summary[name]["heard"].append(heard[name, index])
            per_voice[name] = (p(first, 50), p(rtf, 50))
            report.row(
                sentence=f"{index + 1}: {len(words(text))} words",
                voice=name,
                audio_ms=results[0]["audio_ms"],
                first_audio_p50_ms=p(first, 50),
                first_audio_max_ms=max(first),
                rtf_p50=p(rtf, 50),
                words_heard=heard[name, index],
            )
        report.row(
            sentence=f"{index + 1}: ratio",
            voice="piper/espeak",
            first_audio_p50_ms=per_voice["piper"][0] / per_voice["espeak"][0],
            rtf_p50=per_voice["piper"][1] / per_voice["espeak"][1],
            words_heard=heard["piper", index] / max(heard["espeak", index], 1e-9),
        )
    budget_ms = latency_budget().lines[4].budget_ms
    for name, figures in summary.items():
        report.figure(f"{name}_first_audio_p50_ms", p(figures["first"], 50))
        report.figure(f"{name}_first_audio_p99_ms", p(figures["first"], 99))
        report.figure(f"{name}_rtf_p50", p(figures["rtf"], 50))
        report.figure(f"{name}_words_heard", float(np.mean(figures["heard"])))
    report.figure(
        "piper_vs_espeak_first_audio_p50",
        p(summary["piper"]["first"], 50) / p(summary["espeak"]["first"], 50),
    )
    report.figure(
        "piper_vs_espeak_rtf_p50", p(summary["piper"]["rtf"], 50) / p(summary["espeak"]["rtf"], 50)
    )
    report.figure("piper_load_s", load_s)
    report.figure("first_audio_budget_ms", budget_ms)
    report.figure("piper_first_audio_budget_met", p(summary["piper"]["first"], 99) <= budget_ms)
    report.row(
        sentence="all",
        voice="espeak",
        first_audio_p50_ms=p(summary["espeak"]["first"], 50),
        rtf_p50=p(summary["espeak"]["rtf"], 50),
        words_heard=float(np.mean(summary["espeak"]["heard"])),
    )
    report.row(
        sentence="all",
        voice="piper",
        first_audio_p50_ms=p(summary["piper"]["first"], 50),
        first_audio_max_ms=max(summary["piper"]["first"]),
        rtf_p50=p(summary["piper"]["rtf"], 50),
        words_heard=float(np.mean(summary["piper"]["heard"])),
    )
