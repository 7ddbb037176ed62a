"""``voicecore demo``: real speech through the Rust core as the server runs it.

The capture side: a simulated 48 kHz browser mic into an overwrite ring, resampled to 16 kHz
for the energy VAD, which reports the speech boundaries. The playout side: the same speech,
as 24 kHz agent audio, through the frame pacer on the real clock, with a simulated client
reporting its playout buffer. It prints the speech events and the pacing figures.
"""

from __future__ import annotations

import time
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import trio

from voicecore._core import EnergyVad, FramePacer, Resampler, SampleRing
from voicecore.engine.pacing import push, released_frames

__all__ = ["run_demo"]

#: The speech the demo uses when a shared/data/speech folder lies beside the checkout.
_SHARED_SPEECH = (
    Path(__file__).resolve().parents[3] / "shared" / "data" / "speech" / "librivox-0870.wav"
)

_MIC_RATE = 48_000  # what a browser's AudioContext typically runs at
_VAD_RATE = 16_000
_TTS_RATE = 24_000  # a typical TTS output rate
_FRAME_MS = 20


@dataclass(frozen=True)
class _Speech:
    samples: npt.NDArray[np.int16]
    sample_rate: int
    source: str


def _load_speech(path: Path | None) -> _Speech:
    if path is None and _SHARED_SPEECH.exists():
        path = _SHARED_SPEECH
    if path is None:
        return _synthetic_speech()
    with wave.open(str(path), "rb") as wav:
        if wav.getnchannels() != 1 or wav.getsampwidth() != 2:
            raise SystemExit(f"{path}: the demo takes mono 16-bit WAV files")
        samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
        return _Speech(samples, wav.getframerate(), str(path))


def _synthetic_speech() -> _Speech:
    """Voiced-sounding bursts in faint noise, for a checkout without that folder."""
    rate = _VAD_RATE
    rng = np.random.default_rng(7)
    t = np.arange(int(4.0 * rate)) / rate
    envelope = ((t % 1.0) > 0.3) & ((t % 1.0) < 0.85)
    pitch = 120.0 + 30.0 * np.sin(2 * np.pi * 0.7 * t)
    voice = sum(np.sin(2 * np.pi * k * np.cumsum(pitch) / rate) / k for k in range(1, 12))
    signal = 0.25 * voice * envelope + 0.003 * rng.standard_normal(t.size)
    return _Speech((signal * 32767).astype(np.int16), rate, "synthetic voiced bursts")


def run_demo(path: Path | None = None, seconds: float = 5.0) -> int:
    """Runs the demo (``voicecore demo``): ``path``, a mono 16-bit WAV file (default: a
    LibriVox recording when a ``shared/data/speech`` folder lies beside the checkout, else
    synthetic voiced bursts); ``seconds`` of it paced as agent audio. Prints what happens;
    returns 0."""
    speech = _load_speech(path)
    print(f"speech: {speech.source} ({speech.samples.size / speech.sample_rate:.2f} s)")

    # Capture side: a 48 kHz mic feeding an overwrite-oldest ring in 20 ms frames; the DSP
    # side drains it, resamples to 16 kHz and runs the energy VAD.
    mic = Resampler(speech.sample_rate, _MIC_RATE).process(speech.samples)
    ring = SampleRing(2 * _MIC_RATE, "overwrite")
    to_vad = Resampler(_MIC_RATE, _VAD_RATE)
    vad = EnergyVad(sample_rate=_VAD_RATE, frame_ms=_FRAME_MS)
    mic_frame = _MIC_RATE * _FRAME_MS // 1000
    started = time.perf_counter()
    events = []
    for start in range(0, mic.size, mic_frame):
        ring.push(mic[start : start + mic_frame])
        events += vad.process(to_vad.process(ring.pop(ring.available)))
    tail = vad.flush()
    events += [tail] if tail is not None else []
    dsp_s = time.perf_counter() - started
    audio_s = mic.size / _MIC_RATE
    print(f"capture + resample + VAD: {audio_s:.2f} s of audio in {dsp_s * 1e3:.1f} ms")
    for event in events:
        print(f"  speech {event.kind:<5} at {event.time_s:7.3f} s")

    # Playout side: the same speech as "agent audio" at 24 kHz through the pacer.
    agent = Resampler(speech.sample_rate, _TTS_RATE).process(speech.samples)
    agent = agent[: int(seconds * _TTS_RATE)]
    print(f"pacing {agent.size / _TTS_RATE:.2f} s of agent audio in {_FRAME_MS} ms frames...")
    return trio.run(_pace, agent)


async def _pace(agent: npt.NDArray[np.int16]) -> int:
    frame_s = _FRAME_MS / 1000
    with FramePacer(_FRAME_MS) as pacer:
        stream = pacer.open_stream(_TTS_RATE)
        expected = -(-agent.size // stream.frame_samples)
        received = 0
        client_first_ns = 0

        async def produce() -> None:
            # Like a TTS stage: waits (without polling) whenever the playout queue is full.
            await push(stream, agent)
            stream.finish()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(produce)
            async for batch in released_frames(pacer):
                for frame in batch:
                    client_first_ns = client_first_ns or frame.released_ns
                    received += 1
                # The simulated client has played since its first frame, in real time.
                played = (time.monotonic_ns() - client_first_ns) / 1e9 / frame_s
                stream.report_playout(max(0.0, received - played) * _FRAME_MS)
                if received >= expected:
                    break
        stats = pacer.stats()
    print(f"  frames released     {stats.frames_released}")
    print(f"  underruns           {stats.underruns}")
    print(
        f"  release lateness    p50 {stats.lateness_p50_ms:.3f} ms, "
        f"p99 {stats.lateness_p99_ms:.3f} ms, max {stats.lateness_max_ms:.3f} ms"
    )
    print(f"  pacer scheduling    {stats.scheduling}")
    return 0
