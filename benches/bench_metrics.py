"""What a ``/metrics`` scrape costs: the exposition of 100 sessions written by
``prometheus_client`` (what the server serves) against the hand-written writer voicecore used
before (``harness.prometheus_baseline``), in the same run.

The sessions are what a busy server holds: 100 (its live sessions and the recently finished
ones it keeps), each with 20 turns (every latency of every stage filled in, a third of them
barged in), pacer figures, client underruns and five edge counters; plus the process
diagnostics. A scrape runs on the event loop, so what matters is that it stays a few
milliseconds (a Prometheus scrape every 15 s). Both writers produce the same samples
(checked); only their time is compared.
"""

from __future__ import annotations

import gc
import random
import time
from typing import Any

from harness.prometheus_baseline import handwritten_prometheus_text
from harness.soak import parse_prometheus
from voicecore.diagnostics import Diagnostics, Timeline
from voicecore.metrics import SessionMetrics, TurnMetrics, prometheus_text

SESSIONS = 100
TURNS = 20


class _PacerStats:
    frames_released = 15_000
    underruns = 2
    dropped_samples = 48_000
    lateness_p50_ms = 0.05
    lateness_p99_ms = 0.4
    lateness_max_ms = 3.1


def busy_sessions(sessions: int = SESSIONS, turns: int = TURNS) -> list[SessionMetrics]:
    """``sessions`` sessions of ``turns`` turns each, every figure filled in."""
    rng = random.Random(13)
    result = []
    for index in range(sessions):
        metrics = SessionMetrics(f"{index:012x}")
        for turn in range(turns):
            interrupted = turn % 3 == 0
            metrics.add_turn(
                TurnMetrics(
                    turn_id=turn,
                    stt_final_ms=rng.uniform(40, 400),
                    llm_first_token_ms=rng.uniform(50, 900),
                    tts_first_audio_ms=rng.uniform(60, 300),
                    voice_to_voice_ms=rng.uniform(300, 1500),
                    barge_in_ms=rng.uniform(1, 30) if interrupted else None,
                    prompt_tokens=rng.randrange(100, 4000),
                    interrupted=interrupted,
                )
            )
        metrics.update_pacer(_PacerStats())
        metrics.client_underruns = rng.randrange(3)
        for edge in ("dsp->stt.dropped", "stt.errors", "llm.retries", "turns.barge_ins"):
            metrics.count(edge, rng.randrange(5))
        metrics.count("client.rejected_messages", 1)
        result.append(metrics)
    return result


def _best_ms(write: Any, rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        gc.collect()
        started = time.perf_counter()
        write()
        best = min(best, time.perf_counter() - started)
    return best * 1000


def test_metrics_exposition_100_sessions(benchmark: Any, report: Any, quick: bool) -> None:
    sessions = busy_sessions()
    diagnostics = Diagnostics(Timeline())
    for lag_ms in (1.0, 2.0, 30.0):
        diagnostics.canary.observe(lag_ms)

    def library() -> str:
        return prometheus_text(sessions, open_sessions=40, diagnostics=diagnostics)

    def handwritten() -> str:
        return handwritten_prometheus_text(sessions, open_sessions=40, diagnostics=diagnostics)

    new, old = library(), handwritten()
    # The same exposition, sample for sample (the writers format numbers differently).
    assert parse_prometheus(new) == parse_prometheus(old)
    rounds = 5 if quick else 30
    benchmark.pedantic(library, rounds=rounds, iterations=1)
    library_ms = _best_ms(library, rounds)
    handwritten_ms = _best_ms(handwritten, rounds)
    for writer, ms, text in (
        ("prometheus_client", library_ms, new),
        ("hand-written (before)", handwritten_ms, old),
    ):
        report.row(
            writer=writer,
            sessions=SESSIONS,
            turns_per_session=TURNS,
            ms_per_scrape=round(ms, 2),
            kb=round(len(text) / 1000, 1),
            lines=text.count("\n"),
        )
    report.figure("library_ms", round(library_ms, 2))
    report.figure("handwritten_ms", round(handwritten_ms, 2))
    report.figure("library_vs_handwritten", round(library_ms / handwritten_ms, 2))
    # A scrape blocks the event loop: it must stay far below the 20 ms audio frame.
    report.figure("target_library_ms_le_20", library_ms <= 20.0)
