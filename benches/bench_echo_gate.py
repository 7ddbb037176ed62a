"""The echo gate's cost beside the energy VAD's on the same audio, and what it detects.

Cost: CPU time (``time.process_time``) per second of mic audio for ``EchoGate.process``
in 10 ms and 20 ms chunks while the far end plays and its echo is in the mic (the gate's
busiest case: every block updates every lag's statistics), and while the agent is silent
(most of a conversation: no far-end spectrum, nothing to learn), beside ``EnergyVad.process``
(20 ms frames, the engine's VAD) on the same audio in the same chunks: the baseline the
gate adds to. Rounds are interleaved so that load from other processes hits both alike;
the ratio is the figure that holds on a busy machine.

Detection (the issue's acceptance): on the real speech corpus (as recorded and moved in
pitch), the echo alone at -10 dB, at -6 dB and through a mildly reverberant room, over
delays 40-150 ms in 10 ms steps: runs of near-end activity of 20 ms or more (false ducks,
before and after the delay is found; must be 0), and the time to find the delay. Double
talk (echo at -10 dB, the user -10, -5 and 0 dB relative to the far end): the share of the
user's onsets heard within 30 ms of where the gate hears them with no echo (headphones).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np

from harness.echo import (
    RATE,
    corpus_voices,
    derived_far_ends,
    double_talk_table,
    echo_grid,
    room,
    scene,
    to_pcm16,
)
from harness.speech import Utterance
from voicecore import EchoGate, EnergyVad


def cpu_seconds(run: Callable[[], object]) -> float:
    start = time.process_time()
    run()
    return time.process_time() - start


def test_echo_gate_cost_and_detection(
    speech: list[Utterance], quick: bool, benchmark: Any, report: Any
) -> None:
    rng = np.random.default_rng(12)
    far_ends = list(derived_far_ends(speech, rng))
    the_scene = scene(far_ends[0], delay_ms=83.0, echo_db=-10.0, noise_dbfs=-60.0, rng=rng)
    far = to_pcm16(the_scene.far)
    mic = to_pcm16(the_scene.mic)
    audio_s = len(mic) / RATE

    def gate_in(chunk: int, playing: bool = True) -> Callable[[], object]:
        def run() -> None:
            gate = EchoGate(RATE)
            if playing:
                gate.far_audio(far)
                gate.set_playing(True)
            for i in range(0, len(mic), chunk):
                gate.process(mic[i : i + chunk])

        return run

    def vad_in(chunk: int) -> Callable[[], object]:
        def run() -> None:
            vad = EnergyVad(RATE, 20)
            for i in range(0, len(mic), chunk):
                vad.process(mic[i : i + chunk])

        return run

    contenders = {
        "EchoGate, 10 ms chunks": gate_in(160),
        "EchoGate, 20 ms chunks": gate_in(320),
        "EchoGate, agent silent, 20 ms chunks": gate_in(320, playing=False),
        "EnergyVad, 20 ms chunks": vad_in(320),
    }
    rounds = 3 if quick else 10
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, run in contenders.items():
            times[name].append(cpu_seconds(run))
    benchmark.pedantic(gate_in(320), rounds=rounds, iterations=1)
    vad_ms = 1000 * min(times["EnergyVad, 20 ms chunks"]) / audio_s
    for name, samples in times.items():
        ms_per_s = 1000 * min(samples) / audio_s
        report.row(
            contender=name,
            cpu_ms_per_audio_s=round(ms_per_s, 3),
            over_energy_vad=round(ms_per_s / vad_ms, 2),
        )
    gate_ms = 1000 * min(times["EchoGate, 20 ms chunks"]) / audio_s
    report.figure("echo_gate_cpu_ms_per_audio_s", round(gate_ms, 3))
    report.figure("energy_vad_cpu_ms_per_audio_s", round(vad_ms, 3))
    report.figure("echo_gate_over_energy_vad", round(gate_ms / vad_ms, 2))
    report.figure("echo_gate_share_of_one_core", round(gate_ms / 1000, 5))

    conditions: dict[str, dict[str, Any]] = {
        "-10 dB": {"echo_db": -10.0},
        "-6 dB": {"echo_db": -6.0},
        "-10 dB, room 300 ms": {"echo_db": -10.0, "room_response": room(300, 8, seed=1)},
    }
    if quick:
        conditions = {"-10 dB": conditions["-10 dB"]}
    false_ducks = 0
    for name, condition in conditions.items():
        rows = echo_grid(far_ends, condition, seed=7)
        ducks = sum(r["longest_before_ms"] >= 20 or r["longest_after_ms"] >= 20 for r in rows)
        false_ducks += ducks
        converged = [r["converged_after_ms"] for r in rows if r["converged_after_ms"] is not None]
        report.row(
            contender=f"echo alone, {name}",
            scenes=len(rows),
            false_ducks=ducks,
            delay_found=sum(r["found_ms"] is not None for r in rows),
            median_ms_to_find_delay=float(np.median(converged)) if converged else None,
        )
    report.figure("false_ducks", false_ducks)

    far_pool, users = corpus_voices(speech)
    if quick:
        users = dict(list(users.items())[:2])
    for row in double_talk_table(far_pool, users, echo_db=-10.0, seed=11):
        report.row(
            contender=f"double talk, user {row['user_db']:+.0f} dB",
            onsets=row["onsets"],
            heard_within_30ms=row["within_30ms"],
            heard_within_50ms=row["within_50ms"],
            user_energy_kept=row["user_energy_kept"],
        )
        report.figure(f"double_talk_{row['user_db']:+.0f}db_within_30ms", row["within_30ms"])
    assert false_ducks == 0
