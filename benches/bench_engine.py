"""The conversation engine's own cost: voice-to-voice overhead and barge-in latency.

Both run a real ``Session`` over the in-memory transport with the Rust pacer on the real
clock and scripted providers, so what is measured is the engine (Trio tasks, VAD,
turn-taking, chunker, resampling, pacer hand-off, transport queue), not a model.

* **Voice-to-voice overhead**: instant providers (no delay) and a mic streamed in real time;
  voice-to-voice (end of user speech -> first agent frame released by the pacer) minus the
  configured end-of-turn silence. The energy VAD's hangover is set to a whole number of
  frames, so the end of speech falls on a frame boundary and the silence ends exactly when
  a mic frame arrives (otherwise up to one frame of waiting for audio would be counted).
  Target: <= 10 ms.
* **Barge-in latency**: the agent is speaking (TTS still synthesizing, LLM still
  generating, pacer playing) when a burst of user speech arrives; from the engine's
  confirmation of that speech to (a) the synchronous step (turn scope cancelled, playout
  flushed, ``Clear`` queued), (b) the turn fully unwound (LLM and TTS streams closed, turn
  recorded: ``TurnMetrics.barge_in_ms``) and (c) the ``Clear`` read by the client. The mic is
  fed faster than real time here (turn-taking runs on the audio clock), so many barge-ins
  fit in a short run. Target: <= 5 ms p99 for (c), which includes (a) and the writer hop.
  Baseline: what an engine without the playout flush and the ``Clear`` would leave playing
  (the audio queued in the pacer plus the client's cushion, from the flush report), beside
  the time the engine takes to stop it.
"""

from __future__ import annotations

from typing import Any

import trio

from harness.speech import RATE, noise, voice
from voicecore import EnergyVad, FramePacer
from voicecore.engine.session import Session, SessionConfig
from voicecore.engine.stages import EnergyVadStage
from voicecore.engine.transport import MemoryClient, memory_transport
from voicecore.metrics import percentile
from voicecore.protocol import AgentAudio, AgentDone, Clear
from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance

SILENCE_MS = 500.0
V2V_TARGET_MS = 10.0
BARGE_IN_TARGET_MS = 5.0


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "p50": percentile(ordered, 50),
        "p99": percentile(ordered, 99),
        "max": ordered[-1],
    }


def session_for(
    transport: Any, *, llm: ScriptedLLM, tts: ScriptedTTS, pacer: FramePacer
) -> Session:
    return Session(
        transport,
        stt=ScriptedSTT([Utterance(["hi"], "Hello there.")]),
        llm=llm,
        tts=tts,
        # A hangover of whole 20 ms frames puts the end of speech on a frame boundary.
        vad=EnergyVadStage(EnergyVad(RATE, 20, hangover_ms=160)),
        # No echo gate: the mic here never hears the agent, and the barge-ins come with the
        # reply's first frame, before a gate has learnt that (it would hold them back).
        config=SessionConfig(end_of_turn_silence_ms=SILENCE_MS, echo_gate=False),
        pacer=pacer,
    )


async def wait_for(client: MemoryClient, match: Any) -> Any:
    while True:
        message = await client.receive()
        if match(message):
            return message


def turn_end(turn_id: int) -> Any:
    return lambda m: isinstance(m, AgentDone) and m.turn_id == turn_id


async def voice_to_voice(turns: int) -> tuple[list[float], Session]:
    transport, client = memory_transport(RATE)
    llm = ScriptedLLM(["Sure, here it is."])
    tts = ScriptedTTS(sample_rate=24000, ms_per_char=5.0)  # ~85 ms of audio per reply
    with FramePacer(clock="real") as pacer:
        session = session_for(transport, llm=llm, tts=tts, pacer=pacer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            # The mic streams in real time: noise, then speech and silence per turn.
            mic = noise(500) + (voice(300) + noise(1200)) * turns
            nursery.start_soon(client.stream_audio, mic)
            await wait_for(client, turn_end(turns))
            nursery.cancel_scope.cancel()
    overheads = [
        t.voice_to_voice_ms - SILENCE_MS for t in session.metrics.turns if t.voice_to_voice_ms
    ]
    assert len(overheads) == turns
    return overheads, session


async def barge_ins(count: int) -> tuple[dict[str, list[float]], Session]:
    transport, client = memory_transport(RATE)
    # A long reply still being generated and synthesized when the user interrupts.
    story = "Once upon a time there was a bug. It hid in the pacer for years. " * 4
    llm = ScriptedLLM([story], token_delay_s=0.005)
    tts = ScriptedTTS(sample_rate=24000, chunk_ms=100.0, chunk_delay_s=0.05)
    figures: dict[str, list[float]] = {
        "step": [],
        "unwound": [],
        "clear_received": [],
        "stale_audio": [],
    }
    with FramePacer(clock="real") as pacer:
        session = session_for(transport, llm=llm, tts=tts, pacer=pacer)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(session.run)
            await client.send_audio(noise(500))
            for turn_id in range(1, count + 1):
                # Speech (on the first turn) then silence: the user's turn ends, the agent
                # replies; as soon as its first frame arrives, the user barges in.
                if turn_id == 1:
                    await client.send_audio(voice(400))
                await client.send_audio(noise(SILENCE_MS + 20))
                # The reply's first frame (the previous reply's frames all came before its
                # agent_done, which wait_for has read).
                await wait_for(client, lambda m: isinstance(m, AgentAudio))
                await client.send_audio(voice(400))
                clear = await wait_for(client, lambda m: isinstance(m, Clear))
                assert clear.turn_id == turn_id
                received = client.received[-1][0]
                await wait_for(client, turn_end(turn_id))
                (event,) = session.timeline.events("barge_in")[-1:]
                figures["step"].append(event["step_ms"])
                figures["stale_audio"].append(event["stale_audio_ms"])
                figures["clear_received"].append(event["step_ms"] + 1000 * (received - event["t"]))
            nursery.cancel_scope.cancel()
    figures["unwound"] = [t.barge_in_ms for t in session.metrics.turns if t.barge_in_ms is not None]
    assert len(figures["unwound"]) == count
    return figures, session


def test_voice_to_voice_overhead(benchmark: Any, report: Any, quick: bool) -> None:
    turns = 4 if quick else 20
    result: dict[str, Any] = {}

    def run() -> None:
        result["overheads"], result["session"] = trio.run(voice_to_voice, turns)

    benchmark.pedantic(run, rounds=1, iterations=1)
    stats = summary(result["overheads"])
    session: Session = result["session"]
    late = session.metrics.late_frames
    report.row(
        measure="voice-to-voice overhead beyond the silence (ms)",
        turns=turns,
        **stats,
        target_ms=V2V_TARGET_MS,
    )
    report.figure("v2v_overhead_p50_ms", stats["p50"])
    report.figure("v2v_overhead_p99_ms", stats["p99"])
    report.figure("v2v_overhead_max_ms", stats["max"])
    report.figure("v2v_overhead_p99_over_target", stats["p99"] / V2V_TARGET_MS)
    report.figure("v2v_target_met", stats["p99"] <= V2V_TARGET_MS)
    report.figure("late_frames", late)
    report.figure("pacer_scheduling", session.metrics.to_json()["pacer_lateness_ms"])


def test_barge_in_latency(benchmark: Any, report: Any, quick: bool) -> None:
    count = 30 if quick else 300
    result: dict[str, Any] = {}

    def run() -> None:
        result["figures"], result["session"] = trio.run(barge_ins, count)

    benchmark.pedantic(run, rounds=1, iterations=1)
    figures: dict[str, list[float]] = result["figures"]
    for name, label in (
        ("step", "cancel + flush + clear queued (sync step)"),
        ("clear_received", "confirmed speech -> clear read by the client"),
        ("unwound", "confirmed speech -> LLM and TTS closed, turn recorded"),
    ):
        stats = summary(figures[name])
        report.row(measure=label, barge_ins=count, **stats, target_ms=BARGE_IN_TARGET_MS)
        report.figure(f"barge_in_{name}_p50_ms", stats["p50"])
        report.figure(f"barge_in_{name}_p99_ms", stats["p99"])
        report.figure(f"barge_in_{name}_max_ms", stats["max"])
    # The baseline: without the flush and the clear, the agent's voice goes on for the
    # audio queued in the pacer plus what the client holds.
    stale = summary(figures["stale_audio"])
    report.row(
        measure="baseline: agent audio still heard without flush + clear",
        barge_ins=count,
        **stale,
        target_ms=BARGE_IN_TARGET_MS,
    )
    p99 = summary(figures["clear_received"])["p99"]
    report.figure("stale_audio_avoided_p50_ms", stale["p50"])
    report.figure(
        "stale_audio_over_clear_p50_ratio", stale["p50"] / summary(figures["clear_received"])["p50"]
    )
    report.figure("barge_in_p99_over_target", p99 / BARGE_IN_TARGET_MS)
    report.figure("barge_in_target_met", p99 <= BARGE_IN_TARGET_MS)
