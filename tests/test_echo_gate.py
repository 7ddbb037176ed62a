"""The echo gate: the agent's echo in a speakerphone's mic never reads as the user, the user
talking over the agent does, and without an echo nothing changes.

Scenes (``harness.echo``): the far end at -20 dBFS, its echo ``delay_ms`` later at
``echo_db``, white room noise, and for double talk another talker. Real speech comes from
``../shared/data/speech`` (skipped with a message where it is absent), in derived versions
too (moved in pitch by resampling, other gains and noise levels), and the synthetic talker of
``harness.echo`` covers the same ground with no data. The tables print with ``pytest -s``.

A run of near-end activity of 20 ms is what the engine ducks on: "false activity" below is a
run of two blocks or more while only the echo is there.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt
import pytest

from harness.echo import (
    BLOCK,
    RATE,
    at_level,
    corpus_voices,
    derived_far_ends,
    double_talk_table,
    echo_grid,
    floats,
    room,
    run_gate,
    scene,
    talker,
    to_pcm16,
)
from harness.speech import Utterance
from voicecore import (
    AudioFormatError,
    AudioTypeError,
    ConfigError,
    EchoGate,
    EchoStats,
    EnergyVad,
    UnsupportedSampleRateError,
)

Floats = npt.NDArray[np.float64]

ECHO_CONDITIONS: dict[str, dict[str, Any]] = {
    "-10 dB": {"echo_db": -10.0},
    "-6 dB": {"echo_db": -6.0},
    "-10 dB, room 300 ms": {"echo_db": -10.0, "room_response": room(300, 8, seed=1)},
    "-10 dB, small loudspeaker": {"echo_db": -10.0, "small_loudspeaker": True},
}
"""Echo paths: plain, louder, through a mildly reverberant room (a 300 ms tail 8 dB below the
direct sound), and through a small loudspeaker (high-pass at 250 Hz and soft clipping)."""


def print_table(title: str, rows: list[dict[str, Any]]) -> None:
    columns = list(dict.fromkeys(key for row in rows for key in row))
    cells = [[str(row.get(column, "")) for column in columns] for row in rows]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
    print(f"\n{title}")
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for r in cells:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)))


# --- the echo alone --------------------------------------------------------------------------


def check_echo_grid(rows: list[dict[str, Any]], echo_db: float, linear: bool) -> None:
    for row in rows:
        assert row["longest_before_ms"] < 20, row
        assert row["longest_after_ms"] < 20, row
        assert row["found_ms"] is not None, row
        # The delay to the block, or the next (the analysis window spans two blocks).
        assert -10 <= row["found_ms"] - row["delay_ms"] <= 10, row
        if linear:
            assert abs(row["gain_db"] - echo_db) < 4.0, row


@pytest.mark.parametrize("condition", list(ECHO_CONDITIONS))
def test_real_speech_echo_never_reads_as_the_user(speech: list[Utterance], condition: str) -> None:
    rng = np.random.default_rng(2024)
    rows = echo_grid(list(derived_far_ends(speech, rng)), ECHO_CONDITIONS[condition], seed=7)
    print_table(f"echo alone, real speech, {condition}", rows)
    check_echo_grid(
        rows,
        ECHO_CONDITIONS[condition]["echo_db"],
        linear="loudspeaker" not in condition and "room" not in condition,
    )


def test_synthetic_echo_never_reads_as_the_user() -> None:
    far_ends = [talker(10.0, (90.0 + 20 * k, 170.0 + 20 * k), seed=k) for k in range(3)]
    for name, condition in ECHO_CONDITIONS.items():
        rows = echo_grid(far_ends, condition, seed=11)
        print_table(f"echo alone, synthetic talker, {name}", rows)
        check_echo_grid(
            rows, condition["echo_db"], linear="loudspeaker" not in name and "room" not in name
        )


def test_the_vad_behind_the_gate_hears_no_speech_in_the_echo(speech: list[Utterance]) -> None:
    """No false barge-in: the engine's energy VAD, on the gated mic, confirms no speech while
    only the echo is there (on the raw mic it does), at low and high room noise. The comfort
    noise keeps its noise floor where it was."""
    rng = np.random.default_rng(5)
    far_ends = list(derived_far_ends(speech, rng))
    rows = []
    for noise_dbfs in (-65.0, -50.0, -40.0):
        starts_raw = starts_gated = 0
        for delay_ms, far in zip((50.0, 100.0, 150.0), far_ends, strict=True):
            the_scene = scene(
                far, delay_ms=delay_ms + 3.7, echo_db=-10.0, noise_dbfs=noise_dbfs, rng=rng
            )
            run = run_gate(the_scene)
            after_play = the_scene.play_block * BLOCK
            for audio, counter in ((to_pcm16(the_scene.mic), "raw"), (run.output, "gated")):
                events = EnergyVad(RATE, 20).process(audio[: len(run.output)])
                starts = sum(1 for e in events if e.kind == "start" and e.sample >= after_play)
                if counter == "raw":
                    starts_raw += starts
                else:
                    starts_gated += starts
        rows.append(
            {
                "noise_dbfs": noise_dbfs,
                "vad_starts_raw": starts_raw,
                "vad_starts_gated": starts_gated,
            }
        )
    print_table("energy VAD speech starts during the echo alone (3 scenes each)", rows)
    assert all(row["vad_starts_gated"] == 0 for row in rows), rows
    assert all(row["vad_starts_raw"] > 0 for row in rows), rows


# --- double talk -----------------------------------------------------------------------------


@pytest.mark.slow
def test_real_speech_user_over_the_echo_is_heard(speech: list[Utterance]) -> None:
    """The issue's target is 95 % of onsets heard within 30 ms. Measured: met with the user
    5 dB above the echo; with the user *at* the echo's level (-10 dB here) about one onset in
    five comes later, because a 10 ms block where the two voices are as loud in every band
    cannot be told apart by energy (a gate knowing the true echo of every block, with the
    same margin, measured 72-88 % there in the prototype)."""
    far_pool, users = corpus_voices(speech)
    rows = double_talk_table(far_pool, users, echo_db=-10.0, seed=11)
    print_table("double talk, echo at -10 dB (user level relative to the far end)", rows)
    for row in rows:
        # Blocks judged near end pass untouched (after the 2 ms fade out of suppression).
        assert row["near_blocks_untouched"] == 1.0, row
        assert row["missed_500ms"] <= 1, row
        assert row["within_50ms"] >= (0.75 if row["user_db"] < -5 else 0.85), row
    onsets = sum(row["onsets"] for row in rows)
    within_30 = sum(row["within_30ms"] * row["onsets"] for row in rows) / onsets
    assert within_30 >= 0.85, rows
    # Where the user is louder than the echo, most of their voice passes.
    assert rows[-1]["user_energy_kept"] >= 0.85, rows


@pytest.mark.slow
def test_real_speech_user_with_no_echo_reaching_the_mic_is_heard(speech: list[Utterance]) -> None:
    """The browser's echo canceller works (no echo in the mic) while the gate is fed the far
    end: the gate learns there is nothing to suppress and hears the user as with headphones."""
    far_pool, users = corpus_voices(speech)
    rows = double_talk_table(far_pool, users, echo_db=-200.0, seed=12)
    print_table("double talk, no echo in the mic", rows)
    for row in rows:
        assert row["near_blocks_untouched"] == 1.0, row
        assert row["missed_500ms"] == 0, row
        assert row["within_50ms"] >= 0.85, row
        assert row["user_energy_kept"] >= 0.9, row


def test_synthetic_user_over_the_echo_is_heard() -> None:
    far_pool = {
        f"agent{k}": talker(6.0, (90.0 + 15 * k, 150.0 + 15 * k), seed=100 + k) for k in range(3)
    }
    users = {
        f"user{k}": talker(3.0, (170.0 + 20 * k, 260.0 + 20 * k), seed=200 + k) for k in range(3)
    }
    rows = double_talk_table(far_pool, users, echo_db=-10.0, seed=13)
    print_table("double talk, synthetic talkers, echo at -10 dB", rows)
    for row in rows:
        assert row["near_blocks_untouched"] == 1.0, row
        assert row["within_50ms"] >= 0.85, row


# --- no echo to suppress ---------------------------------------------------------------------


def test_headphones_the_mic_passes_bit_for_bit(speech: list[Utterance]) -> None:
    rng = np.random.default_rng(3)
    mic = to_pcm16(
        at_level(floats(speech[0]), -25.0) + rng.standard_normal(len(speech[0].samples)) * 1e-3
    )
    gate = EchoGate(24000)
    assert gate.process(mic).tobytes() == mic.tobytes()
    stats = gate.stats()
    assert stats.near_end_blocks > 50
    assert stats.echo_blocks == 0


@pytest.mark.parametrize("far_end", ["digital silence", "empty queue"])
def test_a_silent_far_end_changes_nothing(far_end: str) -> None:
    rng = np.random.default_rng(4)
    mic = to_pcm16(talker(4.0, (120.0, 220.0), seed=9) + rng.standard_normal(4 * RATE) * 1e-3)
    gate = EchoGate(RATE)
    if far_end == "digital silence":
        gate.far_audio(bytes(2 * RATE))
    gate.set_playing(True)
    assert gate.process(mic.tobytes()) == mic.tobytes()
    assert gate.stats().echo_blocks == 0


# --- the API ---------------------------------------------------------------------------------


def echo_scene_pcm(seconds: float = 6.0) -> tuple[npt.NDArray[np.int16], npt.NDArray[np.int16]]:
    """(far, mic) PCM16 at 16 kHz: a synthetic far end and its echo 80 ms later at -10 dB."""
    rng = np.random.default_rng(8)
    the_scene = scene(
        talker(seconds, (100.0, 160.0), seed=8),
        delay_ms=80.0,
        echo_db=-10.0,
        noise_dbfs=-60.0,
        rng=rng,
        lead_s=0.0,
    )
    return to_pcm16(the_scene.far), to_pcm16(the_scene.mic)


def test_output_keeps_the_input_type_and_length() -> None:
    far, mic = echo_scene_pcm()
    for audio in (mic.tobytes(), bytearray(mic.tobytes()), memoryview(mic.tobytes())):
        gate = EchoGate(RATE)
        gate.far_audio(far.tobytes())
        gate.set_playing(True)
        out = gate.process(audio)
        assert isinstance(out, bytes)
        assert len(out) == len(mic.tobytes())
    gate = EchoGate(RATE)
    out16 = gate.process(mic)
    assert out16.dtype == np.int16
    assert out16.shape == mic.shape
    gate = EchoGate(RATE)
    out32 = gate.process(mic.astype(np.float32) / 32768)
    assert out32.dtype == np.float32
    assert out32.shape == mic.shape


def test_whole_block_chunks_of_any_size_give_the_same_output() -> None:
    far, mic = echo_scene_pcm()

    def gated(chunk: int) -> bytes:
        gate = EchoGate(RATE)
        gate.far_audio(far)
        gate.set_playing(True)
        return b"".join(
            gate.process(mic[i : i + chunk].tobytes()) for i in range(0, len(mic), chunk)
        )

    assert gated(160) == gated(320) == gated(480) == gated(len(mic))
    # Any other size: the same length out.
    gate = EchoGate(RATE)
    gate.far_audio(far)
    gate.set_playing(True)
    sizes = [1, 7, 159, 161, 333, 0]
    at = 0
    while at < len(mic):
        size = min(sizes[at % len(sizes)], len(mic) - at) or 1
        assert len(gate.process(mic[at : at + size])) == size
        at += size


def test_the_echo_is_suppressed_and_the_delay_learnt() -> None:
    far, mic = echo_scene_pcm()
    gate = EchoGate(RATE)
    gate.far_audio(far)
    gate.set_playing(True)
    out = gate.process(mic)
    stats = gate.stats()
    assert isinstance(stats, EchoStats)
    assert stats.converged
    assert stats.delay_ms in (80, 90)
    assert stats.echo_gain_db is not None
    assert abs(stats.echo_gain_db + 10) < 3
    assert stats.near_end_blocks == 0
    assert stats.echo_blocks > 200
    assert gate.near_end_ms == 0
    # After convergence the echo is gone: the output sits at the room noise (-60 dBFS).
    tail = out[3 * RATE :].astype(np.float64) / 32768
    assert 10 * np.log10(np.mean(tail**2)) < -57
    assert "delay_ms=" in repr(stats)


def test_near_end_ms_counts_the_current_run() -> None:
    gate = EchoGate(RATE)
    loud = to_pcm16(talker(2.0, (150.0, 200.0), seed=3) * 3)
    quiet = np.zeros(RATE // 2, dtype=np.int16)
    gate.process(quiet)
    assert gate.near_end_ms == 0
    longest = 0
    for i in range(0, len(loud), BLOCK):
        gate.process(loud[i : i + BLOCK])
        assert gate.near_end_ms % 10 == 0
        longest = max(longest, gate.near_end_ms)
    assert longest >= 100
    gate.process(quiet)
    assert gate.near_end_ms == 0


def test_the_far_queue_plays_on_the_mic_clock_and_is_bounded() -> None:
    gate = EchoGate(48000, max_far_ms=1000)
    assert gate.far_rate == 48000
    assert not gate.playing
    gate.far_audio(np.full(48000 * 3 // 2, 1000, dtype=np.int16))
    stats = gate.stats()
    # 1.5 s at 48 kHz, resampled: 1 s kept, the rest refused and counted (the resampler
    # holds back its 1.4 ms of look-ahead).
    assert stats.far_queued_ms == 1000.0
    assert 498.0 <= stats.far_rejected_ms <= 500.0
    gate.process(bytes(2 * RATE // 10))
    assert gate.stats().far_queued_ms == 1000.0  # not playing: nothing taken
    gate.set_playing(True)
    assert gate.playing
    gate.process(bytes(2 * RATE // 10))
    assert gate.stats().far_queued_ms == 900.0
    gate.clear_far()
    assert gate.stats().far_queued_ms == 0.0


def test_realign_forgets_the_delay_until_it_is_found_again() -> None:
    far, mic = echo_scene_pcm(seconds=10.0)
    gate = EchoGate(RATE)
    gate.far_audio(far)
    gate.set_playing(True)
    gate.process(mic[: 4 * RATE])
    found = gate.stats().delay_ms
    assert found in (80, 90)
    gate.realign()
    assert gate.stats().delay_ms is None
    gate.process(mic[4 * RATE :])
    assert gate.stats().delay_ms == found


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"far_rate": 7}, UnsupportedSampleRateError, "far_rate = 7 Hz"),
        ({"far_rate": -16000}, ConfigError, "far_rate = -16000"),
        ({"far_rate": 16000, "max_delay_ms": 5}, ConfigError, "max_delay_ms = 5"),
        ({"far_rate": 16000, "max_delay_ms": -1}, ConfigError, "max_delay_ms = -1"),
        ({"far_rate": 16000, "margin_db": float("nan")}, ConfigError, "margin_db = NaN"),
        ({"far_rate": 16000, "suppression_db": 6.0}, ConfigError, "suppression_db = 6"),
        ({"far_rate": 16000, "onset_db": 61.0}, ConfigError, "onset_db = 61"),
        ({"far_rate": 16000, "min_level_dbfs": 1.0}, ConfigError, "min_level_dbfs = 1"),
        ({"far_rate": 16000, "tail_ms": -5.0}, ConfigError, "tail_ms = -5"),
        ({"far_rate": 16000, "initial_gain_db": 30.0}, ConfigError, "initial_gain_db = 30"),
        ({"far_rate": 16000, "max_far_ms": 10}, ConfigError, "max_far_ms = 10"),
    ],
)
def test_bad_settings_are_refused_with_their_values(
    kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message) as raised:
        EchoGate(**kwargs)
    assert isinstance(raised.value, ValueError)


def test_bad_audio_is_refused() -> None:
    gate = EchoGate(RATE)
    with pytest.raises(AudioFormatError):
        gate.process(b"\x00\x00\x00")
    with pytest.raises(AudioFormatError):
        gate.far_audio(np.zeros((2, 160), dtype=np.int16))
    with pytest.raises(AudioTypeError):
        gate.process(np.zeros(160, dtype=np.float64))
    with pytest.raises(AudioTypeError):
        gate.far_audio([0, 1, 2])  # type: ignore[arg-type]


def test_repr_and_constants() -> None:
    gate = EchoGate(24000, tail_ms=200.0)
    assert EchoGate.SAMPLE_RATE == 16000
    assert gate.max_delay_ms == 600
    assert repr(gate).startswith("EchoGate(far_rate=24000, max_delay_ms=600,")
    assert "tail_ms=200" in repr(gate)
