"""The GC policy's effect on the event loop and the audio hand-off while the agent speaks.

One scenario, run twice in the same process (four times outside ``--quick``): without any
policy (CPython's automatic collections, the baseline every Python server has), then with
``GcPolicy`` (heap frozen after warm-up, automatic collections deferred while the agent speaks
and run when it stops).

The scenario, on the real clock:

* a long-lived heap of ~250k tracked objects (what a server holds after loading its modules,
  caches and the Python side of its models), built before the run;
* a "chatty" LLM/TTS stage task allocating small reference cycles every 5 ms (token and chunk
  objects pointing at their parent), about one in eight of them kept until the end of the
  turn (the reply being built): those survive young collections, get promoted to the oldest
  generation and eventually trigger full collections, which traverse the whole heap;
* the agent speaks 2 s, then is silent 0.25 s, over and over (speaking ~90% of the run); each
  turn pushes its audio into a real-clock ``FramePacer`` stream (16 kHz, 20 ms frames) and a
  Trio task consumes the released frames, as a session sends them to its client;
* a ``LoopLagCanary`` (5 ms interval) and a ``GcMonitor`` record onto one ``Timeline``.

Figures, over the agent's speech only (the windows between ``agent_speech_start`` and
``agent_speech_end`` on the timeline): GC pauses (count, total, max), event-loop lag
(p99/max), and the hand-off delay of released frames to the Trio consumer (p99/max: how late
frames reach the client-facing side; the client cushion must absorb it). The Rust pacer's own
release lateness is reported too: its thread never takes the GIL, so a GC pause cannot delay
it, with or without the policy. Ratios are policy / no policy (lower is better). Outside
``--quick``, two more runs show what each half of the policy buys alone: ``freeze only`` and
``defer only``.

Expected effect: no automatic collection, hence no full collection, during speech with the
policy; the deferred collection runs in the silence after each turn, where its pause
(``gc_silence_max_ms``) delays only the user's side (input audio waits in its ring buffer):
the cost is moved out of the agent's audio, not removed.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from typing import Any

import numpy as np
import trio

from voicecore import FramePacer, GcMonitor, GcPolicy, LoopLagCanary, Timeline
from voicecore.engine.pacing import push, released_frames
from voicecore.metrics import percentile

SAMPLE_RATE = 16_000
SPEAK_S = 2.0
SILENCE_S = 0.25
CANARY_INTERVAL_S = 0.005
STAGE_TICK_S = 0.005
CYCLES_PER_TICK = 120  # x 3 tracked objects each: ~72k objects/s of garbage
KEEP_ONE_IN = 8  # kept until the end of the turn: promoted, then garbage in the old gen
HEAP_RECORDS = 125_000  # x 2 tracked objects: ~250k long-lived objects


class Chunk:
    """A token/chunk of a streamed reply: a reference cycle with its parent (like a parser's
    node or a message part pointing at its message)."""

    __slots__ = ("children", "parent", "text")

    def __init__(self, parent: Chunk | None, text: str) -> None:
        self.parent = parent
        self.text = text
        self.children: list[Chunk] = []
        if parent is not None:
            parent.children.append(self)


def build_heap() -> list[dict[str, Any]]:
    """The server's long-lived state: about 2 tracked objects per record."""
    return [{"id": i, "tags": [i, i + 1]} for i in range(HEAP_RECORDS)]


@dataclass
class RunFigures:
    """Figures of one run, over the agent's speech, in ms unless stated."""

    gc_pauses: int
    gc_total_ms: float
    gc_max_ms: float
    full_collections: int
    gc_pauses_in_silence: int
    gc_silence_max_ms: float
    lag_p99_ms: float
    lag_max_ms: float
    handoff_p99_ms: float
    handoff_max_ms: float
    pacer_p99_ms: float
    turns: int
    deferred_collections: int
    forced_collections: int


def in_windows(t: float, windows: list[tuple[float, float]]) -> bool:
    return any(start <= t <= end for start, end in windows)


def p99_max(values: list[float]) -> tuple[float, float]:
    if not values:
        return 0.0, 0.0
    ordered = sorted(values)
    return percentile(ordered, 99), ordered[-1]


async def scenario(
    duration_s: float,
    timeline: Timeline,
    policy: GcPolicy | None,
    handoffs: list[tuple[float, float]],
) -> float:
    """Runs the conversation for ``duration_s``; returns the pacer's p99 lateness (ms)."""
    turn_buffer: list[Chunk] = []
    speaking = False

    async def chatty_stage() -> None:
        while True:
            await trio.sleep(STAGE_TICK_S)
            if not speaking:
                continue
            root = Chunk(None, "reply")
            for i in range(CYCLES_PER_TICK):
                chunk = Chunk(root, "tok")
                if i % KEEP_ONE_IN == 0:
                    turn_buffer.append(chunk)
            if policy is not None:
                policy.tick()

    async def consume(pacer: FramePacer) -> None:
        async for batch in released_frames(pacer):
            now_ns = time.monotonic_ns()
            for frame in batch:
                handoffs.append((frame.released_ns / 1e9, (now_ns - frame.released_ns) / 1e6))

    speech = np.zeros(int(SPEAK_S * SAMPLE_RATE), dtype=np.int16)
    canary = LoopLagCanary(timeline, interval_s=CANARY_INTERVAL_S, threshold_ms=0.0)
    with FramePacer(frame_ms=20, clock="real") as pacer:
        stream = pacer.open_stream(SAMPLE_RATE, cushion_ms=60, queue_ms=3000)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(canary.run)
            nursery.start_soon(consume, pacer)
            nursery.start_soon(chatty_stage)
            deadline = trio.current_time() + duration_s
            while trio.current_time() < deadline:
                speaking = True
                if policy is not None:
                    policy.agent_speaking(True)
                timeline.record("agent_speech_start")
                await push(stream, speech)
                stream.finish()
                await trio.sleep(SPEAK_S)
                timeline.record("agent_speech_end")
                speaking = False
                turn_buffer.clear()  # the turn is over: its reply becomes garbage
                if policy is not None:
                    policy.agent_speaking(False)
                await trio.sleep(SILENCE_S)
            nursery.cancel_scope.cancel()
        return pacer.stats().lateness_p99_ms


def run_once(duration_s: float, policy_factory: Callable[[], GcPolicy] | None) -> RunFigures:
    """One run of the scenario with a fresh heap, under the policy made by ``policy_factory``
    (``None``: CPython's automatic collections only)."""
    heap = build_heap()
    gc.collect()
    timeline = Timeline()
    handoffs: list[tuple[float, float]] = []
    policy_cm: AbstractContextManager[GcPolicy | None] = (
        nullcontext() if policy_factory is None else policy_factory()
    )
    with GcMonitor(timeline), policy_cm as policy:
        if policy is not None:
            policy.warmed_up()
        pacer_p99_ms = trio.run(scenario, duration_s, timeline, policy, handoffs)
    del heap
    gc.collect()

    starts = [e["t"] for e in timeline.events("agent_speech_start")]
    ends = [e["t"] for e in timeline.events("agent_speech_end")]
    windows = list(zip(starts, ends, strict=False))
    # From the first turn on: the warm-up collection before it is not part of the conversation.
    pauses = timeline.events("gc_pause", since=starts[0])
    speech_pauses = [e for e in pauses if in_windows(e["t"], windows)]
    silence_pauses = [e for e in pauses if not in_windows(e["t"], windows)]
    lags = [e["lag_ms"] for e in timeline.events("loop_lag") if in_windows(e["t"], windows)]
    speech_handoffs = [delay for t, delay in handoffs if in_windows(t, windows)]
    lag_p99, lag_max = p99_max(lags)
    handoff_p99, handoff_max = p99_max(speech_handoffs)
    return RunFigures(
        gc_pauses=len(speech_pauses),
        gc_total_ms=sum(e["duration_ms"] for e in speech_pauses),
        gc_max_ms=max((e["duration_ms"] for e in speech_pauses), default=0.0),
        full_collections=sum(e["generation"] == 2 for e in speech_pauses),
        gc_pauses_in_silence=len(silence_pauses),
        gc_silence_max_ms=max((e["duration_ms"] for e in silence_pauses), default=0.0),
        deferred_collections=0 if policy is None else policy.deferred_collections,
        forced_collections=0 if policy is None else policy.forced_collections,
        lag_p99_ms=lag_p99,
        lag_max_ms=lag_max,
        handoff_p99_ms=handoff_p99,
        handoff_max_ms=handoff_max,
        pacer_p99_ms=pacer_p99_ms,
        turns=len(windows),
    )


def ratio(policy: float, baseline: float) -> float:
    """policy / baseline, with 0 / 0 = 1 (no change) and x / 0 = inf."""
    if baseline == 0.0:
        return 1.0 if policy == 0.0 else float("inf")
    return policy / baseline


def test_gc_policy_effect(benchmark: Any, report: Any, quick: bool) -> None:
    duration_s = 6.0 if quick else 20.0
    configs: dict[str, Callable[[], GcPolicy] | None] = {
        "no policy": None,
        "GcPolicy": GcPolicy,
    }
    if not quick:  # each half of the policy alone, to show what each one buys
        configs["freeze only"] = lambda: GcPolicy(defer_while_speaking=False)
        configs["defer only"] = lambda: GcPolicy(freeze_after_warmup=False)
    results: dict[str, RunFigures] = {}

    def run_all() -> None:
        for name, factory in configs.items():
            results[name] = run_once(duration_s, factory)

    benchmark.pedantic(run_all, rounds=1, iterations=1)

    for name, figures in results.items():
        report.row(
            run=name,
            turns=figures.turns,
            gc_pauses=figures.gc_pauses,
            gc_full=figures.full_collections,
            gc_total_ms=figures.gc_total_ms,
            gc_max_ms=figures.gc_max_ms,
            gc_in_silence=figures.gc_pauses_in_silence,
            gc_silence_max_ms=figures.gc_silence_max_ms,
            lag_p99_ms=figures.lag_p99_ms,
            lag_max_ms=figures.lag_max_ms,
            handoff_p99_ms=figures.handoff_p99_ms,
            handoff_max_ms=figures.handoff_max_ms,
            pacer_p99_ms=figures.pacer_p99_ms,
        )
    base, policy = results["no policy"], results["GcPolicy"]
    compared = (
        "gc_total_ms",
        "gc_max_ms",
        "lag_p99_ms",
        "lag_max_ms",
        "handoff_p99_ms",
        "handoff_max_ms",
        "pacer_p99_ms",
    )
    for name, figures in results.items():
        if figures is base:
            continue
        ratios = {m: ratio(getattr(figures, m), getattr(base, m)) for m in compared}
        report.row(run=f"ratio {name}/no policy", **ratios)
        prefix = "" if figures is policy else name.replace(" ", "_") + "_"
        for metric, value in ratios.items():
            report.figure(f"{prefix}{metric.removesuffix('_ms')}_ratio", value)
    report.figure("policy_deferred_collections", policy.deferred_collections)
    report.figure("policy_forced_collections", policy.forced_collections)
    report.figure("gc_pauses_during_speech", {name: r.gc_pauses for name, r in results.items()})
    # The policy's promise: no full collection while the agent speaks.
    report.figure("full_collections_during_speech_with_policy", policy.full_collections)
    assert policy.full_collections == 0
