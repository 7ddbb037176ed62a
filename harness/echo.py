"""Speakerphone scenes for the echo gate's tests and benchmark.

A *scene* is what a speakerphone's mic hears at 16 kHz: the agent's audio (the far end),
played from some block on, coming back ``delay_ms`` later at ``echo_db`` (through a room and
a small loudspeaker if asked), the room's noise, and, in a double-talk scene, the user's
voice. ``run_gate`` passes a scene through ``voicecore.EchoGate`` in 10 ms chunks, as the
engine would after resampling, and records the gate's near-end verdict per block.

Levels are *active* levels: the 90th percentile of a clip's 10 ms block energies, so that a
recording's pauses do not make it look quieter than it speaks. The far end is put at -20 dBFS
(a TTS's usual level), the echo ``echo_db`` below it, the user ``user_db`` relative to the far
end.

Derived clips (so that no figure rests on the corpus's four recordings as they are): other
gains, other noise levels, and voices moved in pitch by resampling (``pitch_shift``: a factor
of 1.12 makes a talker sound like another, faster and higher).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

import numpy as np
import numpy.typing as npt
from scipy import signal

from harness.speech import Utterance
from voicecore import EchoGate, EchoStats

__all__ = [
    "BLOCK",
    "DELAYS_MS",
    "FAR_DBFS",
    "RATE",
    "GateRun",
    "Scene",
    "active_level",
    "agent_reply",
    "at_level",
    "corpus_voices",
    "derived_far_ends",
    "double_talk",
    "double_talk_table",
    "echo_grid",
    "floats",
    "heard_onsets",
    "longest_run",
    "loudspeaker",
    "onset_latencies",
    "pitch_shift",
    "room",
    "run_gate",
    "scene",
    "speech_blocks",
    "talker",
    "to_pcm16",
    "without_room_noise",
]

RATE: Final = 16000
"""The mic's rate (the gate's), Hz."""
BLOCK: Final = 160
"""The gate's block: 10 ms."""
FAR_DBFS: Final = -20.0
"""The far end's active level."""
DELAYS_MS: Final = range(40, 160, 10)
"""The issue's grid of echo delays: 40 to 150 ms in 10 ms steps."""

Floats = npt.NDArray[np.float64]


def active_level(samples: Floats) -> float:
    """The 90th percentile of the 10 ms block energies (mean square, full scale 1.0)."""
    n = len(samples) // BLOCK
    energies = (samples[: n * BLOCK].reshape(n, BLOCK) ** 2).mean(axis=1)
    return float(np.percentile(energies, 90))


def at_level(samples: Floats, dbfs: float) -> Floats:
    """``samples`` scaled to an active level of ``dbfs``."""
    scaled: Floats = samples * np.sqrt(10 ** (dbfs / 10) / active_level(samples))
    return scaled


def talker(seconds: float, pitch_hz: tuple[float, float], seed: int) -> Floats:
    """A synthetic talker (no data needed): syllables of 80-300 ms (voiced: a pitch glide
    with harmonics shaped by two random formants; one in five a fricative of differentiated
    noise) between pauses of 30-400 ms. Unlike ``harness.speech.voice``, whose steady 4 Hz
    beat would make every 250 ms look like the echo's delay, its envelope never repeats."""
    rng = np.random.default_rng(seed)
    n = round(seconds * RATE)
    out = np.zeros(n)
    t = round(rng.uniform(0.0, 0.2) * RATE)
    while t < n:
        length = round(rng.uniform(0.08, 0.3) * RATE)
        end = min(t + length, n)
        progress = np.arange(end - t) / length
        level = 0.1 * rng.uniform(0.3, 1.0)
        if rng.random() < 0.2:
            noise = np.diff(rng.standard_normal(end - t + 1))
            out[t:end] = 0.4 * level * np.sin(np.pi * progress) * noise
        else:
            f0 = np.linspace(*rng.uniform(*pitch_hz, size=2), end - t)
            phase = np.cumsum(2 * np.pi * f0 / RATE)
            formants = (rng.uniform(300, 900), rng.uniform(900, 2500))
            voiced = np.zeros(end - t)
            for harmonic in range(1, int(7000 / pitch_hz[1]) + 1):
                f = f0 * harmonic
                shape = sum(1 / (1 + ((f - fm) / 150) ** 2) for fm in formants) + 0.02
                voiced += shape * np.sin(harmonic * phase) / harmonic
            out[t:end] = level * np.sin(np.pi * progress) ** 0.7 * voiced
        t = end + round(rng.uniform(0.03, 0.4) * RATE)
    return out


def without_room_noise(voice: Floats) -> Floats:
    """``voice`` with its recording's own room noise gated out: 10 ms blocks more than 30 dB
    below its active level are silenced, with 10 ms fades. A recording's noise would
    otherwise start and stop with the clip, 15-25 dB above the scene's noise, and look like
    an event of its own."""
    n = len(voice) // BLOCK
    energies = (voice[: n * BLOCK].reshape(n, BLOCK) ** 2).mean(axis=1)
    keep = (energies >= active_level(voice) / 1000).astype(np.float64)
    gains = np.interp(np.arange(n * BLOCK), np.arange(n) * BLOCK + BLOCK / 2, keep)
    gated: Floats = voice[: n * BLOCK] * gains
    return gated


def pitch_shift(samples: Floats, factor: float) -> Floats:
    """``samples`` played ``factor`` times faster (pitch and tempo up by ``factor``)."""
    shifted: Floats = signal.resample_poly(samples, 1000, round(1000 * factor))
    return shifted


def room(t60_ms: float, direct_to_reverb_db: float, seed: int) -> Floats:
    """A room's impulse response: the direct sound, then from 3 ms on a noise tail decaying
    60 dB in ``t60_ms``, ``direct_to_reverb_db`` below the direct sound in energy."""
    rng = np.random.default_rng(seed)
    n = int(RATE * t60_ms / 1000)
    t = np.arange(n) / RATE
    tail = rng.standard_normal(n) * 10 ** (-3 * t / (t60_ms / 1000))
    tail[: int(0.003 * RATE)] = 0.0
    tail *= np.sqrt(10 ** (-direct_to_reverb_db / 10) / (tail**2).sum())
    tail[0] = 1.0
    return tail


def loudspeaker(samples: Floats, cutoff_hz: float = 250.0) -> Floats:
    """A small loudspeaker: second-order high-pass at ``cutoff_hz``, and soft clipping of
    the peaks (its distortion, which no linear echo canceller models)."""
    b, a = signal.butter(2, cutoff_hz / (RATE / 2), "high")
    filtered: Floats = signal.lfilter(b, a, samples)
    peak = float(np.max(np.abs(filtered))) or 1.0
    clipped: Floats = np.tanh(filtered / (0.5 * peak)) * 0.5 * peak
    return clipped


@dataclass(frozen=True)
class Scene:
    """One speakerphone scene (float64 signals, full scale 1.0, at 16 kHz).

    Attributes:
        mic: what the mic hears (echo + noise + user).
        far: the far end's audio, as queued.
        play_block: the block from which the far end plays.
        user: the user's share of ``mic`` (zeros when the user is silent).
        noise: the room noise's share of ``mic``.
    """

    mic: Floats
    far: Floats
    play_block: int
    user: Floats
    noise: Floats


def scene(
    far: Floats,
    *,
    delay_ms: float,
    echo_db: float,
    noise_dbfs: float,
    rng: np.random.Generator,
    user: Floats | None = None,
    user_db: float = 0.0,
    user_at_s: float = 0.0,
    room_response: Floats | None = None,
    small_loudspeaker: bool = False,
    lead_s: float = 1.0,
) -> Scene:
    """The mic of a speakerphone whose loudspeaker plays ``far`` from ``lead_s`` on.

    Args:
        far: the far end (any level; put at :data:`FAR_DBFS`).
        delay_ms: from the far end's playing (on the mic's clock) to its echo; any value,
            not only whole blocks.
        echo_db: the echo's active level relative to the far end's.
        noise_dbfs: the room noise's level (white).
        rng: the noise's source.
        user: the user's voice, or None; put ``user_db`` relative to the far end, starting
            ``user_at_s`` into the mic, without its recording's room noise.
        room_response: the room's impulse response, or None (the direct sound only).
        small_loudspeaker: the echo through :func:`loudspeaker`.
        lead_s: mic audio before the far end plays (a whole number of blocks).
    """
    far = at_level(far, FAR_DBFS)
    start = round(lead_s * RATE) // BLOCK * BLOCK
    delay = round(delay_ms * RATE / 1000)
    user_part = np.zeros(0)
    if user is not None:
        user_part = np.concatenate(
            [
                np.zeros(round(user_at_s * RATE)),
                at_level(without_room_noise(user), FAR_DBFS + user_db),
            ]
        )
    n = max(start + delay + len(far) + RATE // 2, len(user_part))
    echo = far
    if small_loudspeaker:
        echo = loudspeaker(echo)
    if room_response is not None:
        echo = np.convolve(echo, room_response)
    echo = echo * np.sqrt(10 ** (echo_db / 10))
    echo_part = np.zeros(n)
    echo_part[start + delay : start + delay + len(echo)] = echo[: n - start - delay]
    noise = rng.standard_normal(n) * 10 ** (noise_dbfs / 20)
    user_full = np.zeros(n)
    user_full[: len(user_part)] = user_part
    return Scene(echo_part + noise + user_full, far, start // BLOCK, user_full, noise)


def to_pcm16(samples: Floats) -> npt.NDArray[np.int16]:
    """Float samples (full scale 1.0) as PCM16, rounded and saturated."""
    return np.clip(np.round(samples * 32768), -32768, 32767).astype(np.int16)


@dataclass(frozen=True)
class GateRun:
    """What the gate made of a scene.

    Attributes:
        near: the gate's near-end activity after each 10 ms block.
        output: the gated mic (PCM16).
        stats: the gate's stats at the end.
        converged_block: the first block after which the delay was known (None: never).
    """

    near: npt.NDArray[np.bool_]
    output: npt.NDArray[np.int16]
    stats: EchoStats
    converged_block: int | None


def run_gate(the_scene: Scene, *, far_end: bool = True, **settings: Any) -> GateRun:
    """Passes ``the_scene``'s mic through a new ``EchoGate(16000, **settings)`` in 10 ms
    chunks; the far end is queued and played at ``play_block`` (never, without ``far_end``:
    the headphones case, or a gate that is not told)."""
    gate = EchoGate(RATE, **settings)
    pcm = to_pcm16(the_scene.mic)
    blocks = len(pcm) // BLOCK
    near = np.zeros(blocks, dtype=bool)
    output = np.empty(blocks * BLOCK, dtype=np.int16)
    converged: int | None = None
    for block in range(blocks):
        if far_end and block == the_scene.play_block:
            gate.far_audio(to_pcm16(the_scene.far))
            gate.set_playing(True)
        output[block * BLOCK : (block + 1) * BLOCK] = gate.process(
            pcm[block * BLOCK : (block + 1) * BLOCK]
        )
        near[block] = gate.near_end_ms > 0
        if converged is None and block % 10 == 0 and gate.stats().converged:
            converged = block
    return GateRun(near, output, gate.stats(), converged)


def longest_run(near: npt.NDArray[np.bool_]) -> int:
    """The longest run of True, in blocks."""
    longest = run = 0
    for value in near:
        run = run + 1 if value else 0
        longest = max(longest, run)
    return longest


def heard_onsets(near: npt.NDArray[np.bool_], min_gap_blocks: int = 20) -> list[int]:
    """Where near-end activity starts: the first block of two active in a row after at
    least ``min_gap_blocks`` without."""
    onsets: list[int] = []
    last = -(10**9)
    for block in range(len(near) - 1):
        if near[block] and near[block + 1]:
            if block - last > min_gap_blocks:
                onsets.append(block)
            last = block + 1
    return onsets


def speech_blocks(voice: Floats) -> npt.NDArray[np.bool_]:
    """The 10 ms blocks of ``voice`` within 20 dB of its active level: its speech, not the
    room noise a recording carries."""
    n = len(voice) // BLOCK
    energies = (voice[: n * BLOCK].reshape(n, BLOCK) ** 2).mean(axis=1)
    speech: npt.NDArray[np.bool_] = energies >= active_level(voice) / 100
    return speech


def onset_latencies(
    reference: npt.NDArray[np.bool_], near: npt.NDArray[np.bool_], speech: npt.NDArray[np.bool_]
) -> list[int]:
    """For each onset the gate heard in ``reference`` where ``speech`` starts within 30 ms,
    the blocks until ``near`` is active (0: in the onset's own block), or -1 when it is not
    within 0.5 s."""
    latencies = []
    for onset in heard_onsets(reference):
        if not speech[onset : onset + 3].any():
            continue
        hits = np.flatnonzero(near[onset : onset + 50])
        latencies.append(int(hits[0]) if len(hits) else -1)
    return latencies


# --- measurements shared by the tests and the benchmark --------------------------------------


def floats(utterance: Utterance) -> Floats:
    """A recording of the corpus as float samples (full scale 1.0)."""
    return utterance.samples.astype(np.float64) / 32768


def agent_reply(voices: list[Floats], rng: np.random.Generator) -> Floats:
    """The voices in a random order with 0.2-0.6 s pauses: an agent's reply."""
    parts: list[Floats] = []
    for index in rng.permutation(len(voices)):
        parts += [at_level(voices[index], -20.0), np.zeros(round(rng.uniform(0.2, 0.6) * RATE))]
    return np.concatenate(parts)


def derived_far_ends(speech: list[Utterance], rng: np.random.Generator) -> Iterator[Floats]:
    """Far ends made of the corpus: as recorded, and moved up and down in pitch."""
    voices = [floats(u) for u in speech]
    for factor in (1.0, 1.12, 0.89):
        moved = voices if factor == 1.0 else [pitch_shift(v, factor) for v in voices]
        yield agent_reply(moved, rng)


def echo_grid(far_ends: list[Floats], condition: dict[str, Any], seed: int) -> list[dict[str, Any]]:
    """The gate over every delay of the grid, cycling through ``far_ends``."""
    rng = np.random.default_rng(seed)
    rows = []
    for index, delay_ms in enumerate(DELAYS_MS):
        # Delays between whole blocks too: the gate's blocks do not know where the echo is.
        true_delay = delay_ms + rng.uniform(0.0, 10.0)
        the_scene = scene(
            far_ends[index % len(far_ends)],
            delay_ms=true_delay,
            noise_dbfs=-65.0 + 10 * rng.random(),
            rng=rng,
            **condition,
        )
        run = run_gate(the_scene)
        converged = run.converged_block
        before = run.near[the_scene.play_block : converged]
        after = run.near[converged:] if converged is not None else run.near[:0]
        rows.append(
            {
                "delay_ms": round(true_delay, 1),
                "found_ms": run.stats.delay_ms,
                "gain_db": None
                if run.stats.echo_gain_db is None
                else round(run.stats.echo_gain_db, 1),
                "converged_after_ms": None
                if converged is None
                else (converged - the_scene.play_block) * 10,
                "longest_before_ms": longest_run(before) * 10,
                "longest_after_ms": longest_run(after) * 10,
            }
        )
    return rows


def double_talk(
    far_voices: list[Floats],
    user: Floats,
    user_db: float,
    echo_db: float,
    delay_ms: float,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """One double-talk scene: the user's onsets (where the gate hears them with no far end:
    the headphones case) and how late the gate hears them with the agent's echo in the mic;
    the untouched blocks; the user's energy that passes."""
    far = agent_reply(far_voices, rng)
    room_for_user = len(far) / RATE - len(user) / RATE - 0.5
    user_at_s = 1.0 + rng.uniform(1.5, max(room_for_user, 1.6))
    the_scene = scene(
        far,
        delay_ms=delay_ms,
        echo_db=echo_db,
        noise_dbfs=-60.0,
        rng=rng,
        user=user,
        user_db=user_db,
        user_at_s=user_at_s,
    )
    headphones = Scene(
        the_scene.user + the_scene.noise, far, the_scene.play_block, the_scene.user, the_scene.noise
    )
    alone = run_gate(headphones, far_end=False)
    run = run_gate(the_scene)
    speech_mask = speech_blocks(the_scene.user)[: len(run.near)]
    latencies = onset_latencies(alone.near, run.near, speech_mask)
    mic = to_pcm16(the_scene.mic)[: len(run.output)]
    blocks = len(run.near)
    untouched = [
        bool(
            np.array_equal(
                run.output[b * BLOCK + 32 : (b + 1) * BLOCK], mic[b * BLOCK + 32 : (b + 1) * BLOCK]
            )
        )
        for b in np.flatnonzero(run.near)
    ]
    user_energy = (the_scene.user[: blocks * BLOCK].reshape(blocks, BLOCK) ** 2).sum(axis=1)
    gain = (run.output.astype(np.float64).reshape(blocks, BLOCK) ** 2).sum(axis=1) / np.maximum(
        (mic.astype(np.float64).reshape(blocks, BLOCK) ** 2).sum(axis=1), 1e-9
    )
    kept = float(
        (user_energy * np.minimum(gain, 1.0))[speech_mask].sum() / user_energy[speech_mask].sum()
    )
    return {"latencies": latencies, "untouched": untouched, "kept": kept}


def double_talk_table(
    far_pool: dict[str, Floats], users: dict[str, Floats], echo_db: float, seed: int
) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    rows = []
    for user_db in (-10.0, -5.0, 0.0):
        latencies: list[int] = []
        untouched: list[bool] = []
        kept: list[float] = []
        for user_name, user in users.items():
            far_voices = [
                voice
                for name, voice in far_pool.items()
                if name.split("@")[0] != user_name.split("@")[0]
            ]
            for delay_ms in (50.0, 130.0):
                result = double_talk(
                    far_voices, user, user_db, echo_db, delay_ms + rng.uniform(0, 10), rng
                )
                latencies += result["latencies"]
                untouched += result["untouched"]
                kept.append(result["kept"])
        heard = np.array(latencies)
        rows.append(
            {
                "user_db": user_db,
                "onsets": len(heard),
                "within_30ms": round(float(np.mean((heard >= 0) & (heard <= 2))), 3),
                "within_50ms": round(float(np.mean((heard >= 0) & (heard <= 4))), 3),
                "missed_500ms": int(np.sum(heard < 0)),
                "near_blocks_untouched": round(float(np.mean(untouched)), 4),
                "user_energy_kept": round(float(np.mean(kept)), 3),
            }
        )
    return rows


def corpus_voices(speech: list[Utterance]) -> tuple[dict[str, Floats], dict[str, Floats]]:
    """Far-end voices (as recorded and 12 % higher) and users (as recorded and 11 % lower),
    keyed by clip so that a user never talks over their own voice."""
    far_pool: dict[str, Floats] = {}
    users: dict[str, Floats] = {}
    for u in speech:
        name = u.name.removesuffix(".wav")
        far_pool[name] = floats(u)
        far_pool[f"{name}@1.12"] = pitch_shift(floats(u), 1.12)
        users[name] = floats(u)
        users[f"{name}@0.9"] = pitch_shift(floats(u), 0.9)
    return far_pool, users
