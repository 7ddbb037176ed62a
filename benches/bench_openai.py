"""The OpenAI-compatible LLM provider's own cost, against a loopback SSE server.

A model server is not measured here (the server, ``harness.openai_server.StreamingServer``,
in its own process so that it does not compete for this one's GIL, streams canned chunks as
fast as it can);
what is measured is what ``OpenAILLM`` adds on top of the HTTP client, beside the baseline a
user would write instead: httpx's ``client.stream`` + ``aiter_lines`` + ``json.loads`` in an
async generator, with no deadlines, no retries and no strict parsing.

* **Per-delta cost**: a 2,000-delta answer, one network write per delta (as model servers
  flush token by token); wall time per delta in µs (bounded by the server's pace) and the
  client thread's CPU time per delta (the client's own cost).
* **Time to first token** on loopback with a warm connection: the request, the response
  headers and the first event, in ms.
* **Cancellation**: the answer stalls after a few deltas and the consumer closes the stream
  (a barge-in); the time until the server's blocking ``recv`` sees the connection end, in ms.
  Beside it, the httpx async generators each approach leaves suspended (Trio reports each
  with a ``ResourceWarning`` when the garbage collector finds it).
"""

from __future__ import annotations

import gc
import json
import statistics
import time
import warnings
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import trio

from harness.openai_server import STALL_AFTER, StreamingServer
from voicecore.engine.history import Message
from voicecore.engine.stages import TurnContext
from voicecore.metrics import percentile
from voicecore.providers.openai import OpenAILLM

MESSAGES = [Message("user", "Tell me a story.")]


def _ctx() -> TurnContext:
    return TurnContext.standalone("bench")


async def _baseline(client: httpx.AsyncClient, body: dict[str, Any]) -> AsyncIterator[str]:
    """What one would write with httpx alone."""
    async with client.stream("POST", "chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                data = line[6:]
                if data == "[DONE]":
                    return
                content = json.loads(data)["choices"][0]["delta"].get("content")
                if content:
                    yield content


async def _measure(
    base_url: str, closed_at: list[float], deltas: int, rounds: int, cancels: int
) -> dict[str, Any]:
    """The figures of both clients (``closed_at``: the server's disconnect times)."""
    results: dict[str, Any] = {}
    llm = OpenAILLM("bench", base_url=base_url, extra_body={"max_tokens": deltas})
    first_llm = OpenAILLM("bench", base_url=base_url, extra_body={"max_tokens": 1})
    stall_llm = OpenAILLM("bench", base_url=base_url, extra_body={"stall": True})
    client = httpx.AsyncClient(base_url=base_url + "/")  # httpx default timeouts (5 s)

    def baseline(**body: Any) -> AsyncIterator[str]:
        return _baseline(client, {"model": "bench", "messages": [], "stream": True, **body})

    subjects = {
        "voicecore": (
            lambda: llm.generate(MESSAGES, _ctx()),
            lambda: first_llm.generate(MESSAGES, _ctx()),
            lambda: stall_llm.generate(MESSAGES, _ctx()),
        ),
        "httpx_baseline": (
            lambda: baseline(max_tokens=deltas),
            lambda: baseline(max_tokens=1),
            lambda: baseline(stall=True),
        ),
    }
    for name, (full, one, stalling) in subjects.items():
        gc.collect()
        # The baseline leaves httpx generators suspended whenever it stops reading before
        # the chain ends (at [DONE], on close); count Trio's warnings instead of failing.
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ResourceWarning)
            results[name] = await _measure_one(
                full, one, stalling, closed_at, deltas, rounds, cancels
            )
            gc.collect()
            await trio.sleep(0.05)  # Trio reports abandoned generators from a system task
        results[name]["abandoned_generators"] = sum(
            issubclass(w.category, ResourceWarning) for w in caught
        )
    await llm.aclose()
    await first_llm.aclose()
    await stall_llm.aclose()
    await client.aclose()
    return results


async def _measure_one(
    full: Callable[[], AsyncIterator[str]],
    one: Callable[[], AsyncIterator[str]],
    stalling: Callable[[], AsyncIterator[str]],
    closed_at: list[float],
    deltas: int,
    rounds: int,
    cancels: int,
) -> dict[str, Any]:
    """One client's figures."""
    # Warm-up: a connection in the pool, code paths hot.
    assert len([d async for d in full()]) == deltas
    per_delta = []
    cpu_per_delta = []
    for _ in range(rounds):
        start, cpu_start = time.perf_counter(), time.thread_time()
        count = len([d async for d in full()])
        per_delta.append((time.perf_counter() - start) / count * 1e6)
        cpu_per_delta.append((time.thread_time() - cpu_start) / count * 1e6)
    first = []
    for _ in range(rounds * 5):
        start = time.perf_counter()
        stream = one()
        await stream.__anext__()
        first.append((time.perf_counter() - start) * 1e3)
        async for _ in stream:
            pass
    cancel_ms = []
    for _ in range(cancels):
        stream = stalling()
        for _ in range(STALL_AFTER):
            await stream.__anext__()
        seen = len(closed_at)
        start = time.monotonic()
        await stream.aclose()  # what the engine does on barge-in
        while len(closed_at) == seen:
            await trio.sleep(0.0002)
        cancel_ms.append((closed_at[-1] - start) * 1e3)
    return {
        "per_delta_us": statistics.median(per_delta),
        "cpu_per_delta_us": statistics.median(cpu_per_delta),
        "ttft_ms": statistics.median(first),
        "cancel_p50_ms": percentile(sorted(cancel_ms), 50),
        "cancel_max_ms": max(cancel_ms),
    }


def test_llm_streaming_overhead(benchmark: Any, report: Any, quick: bool) -> None:
    server = StreamingServer()
    base_url = server.base_url
    deltas, rounds, cancels = (500, 3, 10) if quick else (2000, 9, 50)
    results: dict[str, Any] = {}

    def run() -> None:
        results.update(trio.run(_measure, base_url, server.closed_at, deltas, rounds, cancels))

    try:
        benchmark.pedantic(run, rounds=1, iterations=1)
    finally:
        server.close()
    ours, base = results["voicecore"], results["httpx_baseline"]
    for name, figures in results.items():
        report.row(client=name, deltas=deltas, **figures)
    report.figure("per_delta_ratio_vs_httpx", ours["per_delta_us"] / base["per_delta_us"])
    report.figure(
        "cpu_per_delta_ratio_vs_httpx", ours["cpu_per_delta_us"] / base["cpu_per_delta_us"]
    )
    report.figure("ttft_ratio_vs_httpx", ours["ttft_ms"] / base["ttft_ms"])
    report.figure("cancel_p50_ms", ours["cancel_p50_ms"])
    report.figure("cancel_p50_ratio_vs_httpx", ours["cancel_p50_ms"] / base["cancel_p50_ms"])
    report.figure("abandoned_generators", ours["abandoned_generators"])
    report.figure("baseline_abandoned_generators", base["abandoned_generators"])
    assert ours["abandoned_generators"] == 0
    assert ours["cancel_max_ms"] < 100
