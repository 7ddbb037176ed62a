"""espeak-ng TTS: time to first audio, streamed vs the whole utterance first; real-time factor.

For a short and a long sentence, each synthesis is timed from the ``synthesize`` call on
the Trio side (``time.perf_counter``):

* **streamed first audio**: until the first ``AudioChunk`` reaches the Trio task (through
  the worker thread, espeak's callback and ``run_sync_soon``): what the engine waits for.
* **whole utterance** (the non-streaming baseline, same syntheses): until the stream ends,
  i.e. until the whole audio exists, which is when a TTS that synthesizes the utterance
  first could start playing it. ``first_audio_ratio`` = whole / streamed (p50s).
* **espeak first buffer**: inside the worker, from ``espeak_Synth`` to its first callback
  (from the ``espeak_synth`` timeline record), the part that is espeak's own.
* **real-time factor**: synthesis time / audio duration (and its inverse, x real time).

``test_espeak_concurrent_requests`` issues four requests for the long sentence at once (four
sessions speaking at the same moment) beside one alone: espeak-ng runs one synthesis at a
time per process, so the request served last waits for the other three; its first audio
shows the cost of that serialization.

The contract's latency budget allots 150 ms to a TTS's first audio
(``contracts.latency_budget``); ``first_audio_budget_met`` says whether the p99 is within it.
"""

from __future__ import annotations

import time
from typing import Any

import trio

from voicecore.engine.contracts import latency_budget
from voicecore.engine.stages import TurnContext
from voicecore.metrics import percentile
from voicecore.providers import EspeakTTS

TEXTS = {
    "short": "Hello! How can I help you today?",
    "long": (
        "The train to Edinburgh leaves from platform four at twenty past nine, and if you "
        "hurry you can still buy a coffee and a newspaper before it departs, but the "
        "station is busy this morning, so please allow an extra ten minutes."
    ),
}
CONCURRENT_REQUESTS = 4

assert latency_budget().lines[4].stage == "TTS first audio"


def ctx() -> TurnContext:
    return TurnContext.standalone("bench")


async def timed_synthesis(tts: EspeakTTS, text: str) -> dict[str, float]:
    """One synthesis: ms to the first chunk and to the end, audio ms, espeak's own times."""
    turn = ctx()
    samples = 0
    first_ms = None
    start = time.perf_counter()
    async for chunk in tts.synthesize(text, turn):
        if first_ms is None:
            first_ms = 1000 * (time.perf_counter() - start)
        samples += len(chunk.pcm)
    whole_ms = 1000 * (time.perf_counter() - start)
    record = turn.timeline.events("espeak_synth")[0]  # recorded before the stream ends
    assert first_ms is not None
    assert not record["aborted"]
    return {
        "first_ms": first_ms,
        "whole_ms": whole_ms,
        "audio_ms": 1000 * samples / tts.sample_rate,
        "espeak_first_ms": record["first_audio_ms"],
        "synth_ms": record["synth_ms"],
    }


def p(values: list[float], q: float) -> float:
    return percentile(sorted(values), q)


def test_espeak_time_to_first_audio(benchmark: Any, report: Any, quick: bool) -> None:
    rounds = 20 if quick else 200
    tts = EspeakTTS("en-us")
    results: dict[str, list[dict[str, float]]] = {name: [] for name in TEXTS}

    async def measure() -> None:
        for name, text in TEXTS.items():
            await timed_synthesis(tts, text)  # warm-up: the voice is loaded, caches are hot
            for _ in range(rounds):
                results[name].append(await timed_synthesis(tts, text))

    benchmark.pedantic(lambda: trio.run(measure), rounds=1, iterations=1)

    worst_p99 = 0.0
    for name, runs in results.items():
        first = [r["first_ms"] for r in runs]
        whole = [r["whole_ms"] for r in runs]
        rtf = [r["synth_ms"] / r["audio_ms"] for r in runs]
        ratio = p(whole, 50) / p(first, 50)
        worst_p99 = max(worst_p99, p(first, 99))
        report.row(
            text=name,
            audio_ms=runs[0]["audio_ms"],
            first_audio_p50_ms=p(first, 50),
            first_audio_p99_ms=p(first, 99),
            whole_utterance_p50_ms=p(whole, 50),
            whole_utterance_p99_ms=p(whole, 99),
            first_audio_ratio=ratio,
            espeak_first_buffer_p50_ms=p([r["espeak_first_ms"] for r in runs], 50),
            rtf_p50=p(rtf, 50),
            x_realtime_p50=1 / p(rtf, 50),
        )
        report.figure(f"{name}_first_audio_p50_ms", p(first, 50))
        report.figure(f"{name}_first_audio_p99_ms", p(first, 99))
        report.figure(f"{name}_whole_utterance_p50_ms", p(whole, 50))
        report.figure(f"{name}_first_audio_ratio", ratio)
        report.figure(f"{name}_rtf_p50", p(rtf, 50))
    budget_ms = latency_budget().lines[4].budget_ms  # "TTS first audio"
    report.figure("first_audio_budget_ms", budget_ms)
    report.figure("first_audio_budget_met", worst_p99 <= budget_ms)


def test_espeak_concurrent_requests(benchmark: Any, report: Any, quick: bool) -> None:
    rounds = 10 if quick else 100
    tts = EspeakTTS("en-us")
    firsts: list[list[float]] = []
    alone: list[float] = []

    async def one(batch: list[float]) -> None:
        batch.append((await timed_synthesis(tts, TEXTS["long"]))["first_ms"])

    async def measure() -> None:
        await timed_synthesis(tts, TEXTS["long"])  # warm-up
        for _ in range(rounds):
            alone.append((await timed_synthesis(tts, TEXTS["long"]))["first_ms"])
            batch: list[float] = []
            async with trio.open_nursery() as nursery:
                for _ in range(CONCURRENT_REQUESTS):
                    nursery.start_soon(one, batch)
            firsts.append(sorted(batch))

    benchmark.pedantic(lambda: trio.run(measure), rounds=1, iterations=1)

    served_first = [batch[0] for batch in firsts]
    served_last = [batch[-1] for batch in firsts]
    report.row(
        requests=f"1 alone ({len(alone)} runs)",
        first_audio_p50_ms=p(alone, 50),
        first_audio_max_ms=max(alone),
    )
    report.row(
        requests=f"{CONCURRENT_REQUESTS} at once: served first",
        first_audio_p50_ms=p(served_first, 50),
        first_audio_max_ms=max(served_first),
    )
    report.row(
        requests=f"{CONCURRENT_REQUESTS} at once: served last",
        first_audio_p50_ms=p(served_last, 50),
        first_audio_max_ms=max(served_last),
        vs_alone=p(served_last, 50) / p(alone, 50),
    )
    report.figure("alone_first_audio_p50_ms", p(alone, 50))
    report.figure("served_last_first_audio_p50_ms", p(served_last, 50))
    report.figure("served_last_first_audio_max_ms", max(served_last))
    report.figure("served_last_vs_alone", p(served_last, 50) / p(alone, 50))


def test_espeak_barge_in(benchmark: Any, report: Any, quick: bool) -> None:
    """A barge-in mid-sentence: the stream of a long text is closed after its first chunk
    and the next request is issued at once. Measured: its time to first audio, and how much
    audio the aborted synthesis produced. Baseline, same run: the same text synthesized to
    the end (what a synthesis that cannot be aborted would make the next request wait)."""
    rounds = 10 if quick else 100
    tts = EspeakTTS("en-us")
    text = " ".join([TEXTS["long"]] * 4)  # ~50 s of speech, tens of ms of synthesis
    next_first: list[float] = []
    aborted_audio: list[float] = []
    whole: list[dict[str, float]] = []

    async def measure() -> None:
        await timed_synthesis(tts, text)  # warm-up
        for _ in range(rounds):
            whole.append(await timed_synthesis(tts, text))
            turn = ctx()
            stream = tts.synthesize(text, turn)
            await stream.__anext__()
            await stream.aclose()
            next_first.append((await timed_synthesis(tts, TEXTS["short"]))["first_ms"])
            with trio.fail_after(10):
                while not turn.timeline.events("espeak_synth"):
                    await trio.sleep(0.001)
            record = turn.timeline.events("espeak_synth")[0]
            assert record["aborted"]
            aborted_audio.append(record["audio_ms"])

    benchmark.pedantic(lambda: trio.run(measure), rounds=1, iterations=1)

    whole_ms = [r["whole_ms"] for r in whole]
    report.row(
        measure="next request's first audio after a barge-in",
        p50_ms=p(next_first, 50),
        p99_ms=p(next_first, 99),
    )
    report.row(
        measure="baseline: the text synthesized to the end",
        p50_ms=p(whole_ms, 50),
        p99_ms=p(whole_ms, 99),
    )
    report.row(
        measure="speech produced before the abort (of the text's)",
        p50_ms=p(aborted_audio, 50),
        p99_ms=p(aborted_audio, 99),
        text_audio_ms=whole[0]["audio_ms"],
    )
    report.figure("next_first_audio_after_barge_in_p50_ms", p(next_first, 50))
    report.figure("unabortable_wait_p50_ms", p(whole_ms, 50))
    report.figure("barge_in_ratio", p(whole_ms, 50) / p(next_first, 50))
    report.figure("aborted_audio_p50_ms", p(aborted_audio, 50))
    report.figure("text_audio_ms", whole[0]["audio_ms"])
