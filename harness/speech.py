"""Mic audio for tests and benchmarks: the real speech corpus and a synthetic voice.

Real speech lives beside the checkout, in ``../shared/data/speech`` (16 kHz mono PCM16 WAVs
and ``transcripts.tsv``); a user's fresh clone lacks it. ``load_corpus`` raises
``SpeechMissingError`` then (the root ``conftest.py`` turns that into a skip that says where the
data goes); the benchmark clients fall back on the synthetic voice instead and say so.

The synthetic voice needs no data: a harmonic sound (150 Hz and its harmonics,
amplitude-modulated at 4 Hz like syllables) over a faint noise floor, which the energy VAD
detects as speech with sample-accurate boundaries.

Held-out sounds are synthesized: ``espeak_speech`` (sentences in espeak-ng's voices, exactly
trimmed to the speech) and ``cough`` (a shaped noise burst with no words).
"""

from __future__ import annotations

import functools
import re
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio

from harness import ROOT
from voicecore._core import Resampler
from voicecore.providers.espeak import EspeakTTS

__all__ = [
    "RATE",
    "SPEECH_DIR",
    "SpeechMissingError",
    "Utterance",
    "cough",
    "espeak_speech",
    "load_corpus",
    "mic_clips",
    "noise",
    "normalize",
    "one_utterance",
    "voice",
    "word_ends",
    "word_errors",
]

SPEECH_DIR: Final = ROOT.parent / "shared" / "data" / "speech"
"""The real speech corpus beside the checkout (absent in a user's fresh clone)."""

RATE: Final = 16000
"""The corpus's rate and the synthetic voice's default, Hz (the engine's own rate)."""

_rng = np.random.default_rng(1234)


class SpeechMissingError(FileNotFoundError):
    """The real speech corpus is not there (its message says where it belongs)."""


@dataclass(frozen=True)
class Utterance:
    """One recording of real speech with its reference transcript."""

    name: str
    samples: npt.NDArray[np.int16]
    sample_rate: int
    transcript: str


def _read_wav(path: Path) -> tuple[npt.NDArray[np.int16], int]:
    """(samples, rate) of a mono 16-bit PCM WAV.

    Raises:
        ValueError: another format.
    """
    with wave.open(str(path), "rb") as wav:
        if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
            raise ValueError(f"{path.name}: expected mono 16-bit PCM")
        frames = wav.readframes(wav.getnframes())
        return np.frombuffer(frames, dtype="<i2").astype(np.int16), wav.getframerate()


def load_corpus(speech_dir: Path = SPEECH_DIR) -> list[Utterance]:
    """Every recording listed in ``speech_dir/transcripts.tsv``, by file name.

    Raises:
        SpeechMissingError: the folder (or its transcripts) is absent.
        ValueError: a recording is not mono 16-bit PCM.
    """
    transcripts = speech_dir / "transcripts.tsv"
    if not transcripts.exists():
        raise SpeechMissingError(
            f"real speech data not found at {speech_dir}; it ships beside the repository as "
            "../shared/data/speech (absent in a user's fresh clone)"
        )
    listed = dict(
        line.split("\t", 1) for line in transcripts.read_text().splitlines()[1:] if line.strip()
    )
    utterances = []
    for name, text in sorted(listed.items()):
        samples, rate = _read_wav(speech_dir / name)
        utterances.append(Utterance(name, samples, rate, text.strip()))
    return utterances


def mic_clips(
    speech_dir: Path | None = None, rate: int = RATE
) -> tuple[list[npt.NDArray[np.int16]], str]:
    """The utterances a simulated client speaks, and where they come from.

    Reads every 16-bit mono WAV at ``rate`` Hz in ``speech_dir`` (default :data:`SPEECH_DIR`);
    when there is none, one synthetic utterance (:func:`voice`, 1.5 s).

    Returns:
        ``(utterances, source)``: PCM16 arrays at ``rate`` Hz, and ``"speech:<dir>"`` or
        ``"synthetic"``.
    """
    folder = speech_dir or SPEECH_DIR
    clips: list[npt.NDArray[np.int16]] = []
    for path in sorted(folder.glob("*.wav")) if folder.is_dir() else []:
        try:
            samples, found_rate = _read_wav(path)
        except ValueError:
            continue
        if found_rate == rate:
            clips.append(samples)
    if clips:
        return clips, f"speech:{folder}"
    return [np.frombuffer(voice(1500, rate), dtype="<i2").astype(np.int16)], "synthetic"


def one_utterance(max_s: float = 1.5, name: str = "librivox-0880.wav") -> npt.NDArray[np.int16]:
    """One recording of the corpus at :data:`RATE`, at most ``max_s`` long (the synthetic
    voice when the corpus is absent)."""
    path = SPEECH_DIR / name
    if path.is_file():
        samples, rate = _read_wav(path)
        if rate == RATE:
            return samples[: int(max_s * RATE)].copy()
    return np.frombuffer(voice(max_s * 1000), dtype="<i2").astype(np.int16)


def noise(ms: float, rate: int = RATE) -> bytes:
    """A faint noise floor (about -60 dBFS), PCM16 bytes."""
    return _rng.normal(0, 30, int(rate * ms / 1000)).astype("<i2").tobytes()


def voice(ms: float, rate: int = RATE) -> bytes:
    """A loud voiced sound: 150 Hz harmonics modulated at 4 Hz over the noise floor, PCM16
    bytes."""
    t = np.arange(int(rate * ms / 1000)) / rate
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 15))
    x = 3000 * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) + _rng.normal(0, 30, t.size)
    return bytes(x.astype("<i2").tobytes())


# --- synthesized sounds: held-out speech and coughs -------------------------------------------


def _audible(samples: npt.NDArray[np.int16], floor: int = 64) -> npt.NDArray[np.int16]:
    """``samples`` without the silence before and after them (samples below ``floor``,
    about -54 dBFS)."""
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) >= floor)
    return samples[loud[0] : loud[-1] + 1] if loud.size else samples[:0]


def espeak_speech(text: str, voice: str = "en-us", rate_wpm: int = 175) -> npt.NDArray[np.int16]:
    """``text`` said by espeak-ng (``voice``: a voice with an optional variant, e.g.
    ``"en-us+f3"``; ``rate_wpm``: words per minute) at :data:`RATE`, from its first audible
    sample to its last: the speech starts and ends exactly where the array does.

    Held-out speech for benchmarks: sentences nobody recorded, in voices and at rates the
    models were not tuned on.

    Raises:
        voicecore.exceptions.ConfigError: an unknown voice.
    """
    tts = EspeakTTS(voice, rate_wpm=rate_wpm)

    async def synthesize() -> list[npt.NDArray[np.int16]]:
        return [np.asarray(chunk.pcm) async for chunk in tts.synthesize(text, None)]

    pcm = np.concatenate(trio.run(synthesize))
    resampler = Resampler(tts.sample_rate, RATE)
    at_rate = np.concatenate([np.asarray(resampler.process(pcm)), np.asarray(resampler.flush())])
    return _audible(at_rate[resampler.latency :].astype(np.int16))


def cough(
    duration_ms: float, *, peak_dbfs: float = -12.0, seed: int = 0, rate: int = RATE
) -> npt.NDArray[np.int16]:
    """A synthesized cough, ``duration_ms`` long, peaking at ``peak_dbfs``.

    A cough is an explosive burst of turbulent noise, not a voice: noise band-limited to
    200-4000 Hz (where a cough's energy lies, a throat's and a mouth's resonances
    shaping it), with a 10 ms attack and an exponential decay (to 2 % by the end). It has
    no words: an STT hears nothing in it, a VAD may or may not call it speech.
    """
    n = round(duration_ms * rate / 1000)
    rng = np.random.default_rng(seed)
    spectrum = np.fft.rfft(rng.normal(size=n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[(freqs < 200) | (freqs > 4000)] = 0
    burst = np.fft.irfft(spectrum, n)
    t = np.arange(n) / rate
    attack_s = 0.01
    decay_s = max(duration_ms / 1000 - attack_s, 1e-3) / 4
    envelope = np.where(t < attack_s, t / attack_s, np.exp(-(t - attack_s) / decay_s))
    shaped = burst * envelope
    peak = 32767 * 10 ** (peak_dbfs / 20)
    scaled: npt.NDArray[np.int16] = np.round(shaped * peak / np.abs(shaped).max()).astype(np.int16)
    return scaled


# --- scoring what a recognizer heard ---------------------------------------------------------

_SPELLED: Final = {"mr": "mister", "mrs": "missus", "dr": "doctor"}


def normalize(text: str) -> list[str]:
    """Lower-case words, punctuation and hyphens dropped, titles spelled out: what a word
    error rate compares."""
    return [_SPELLED.get(w, w) for w in re.findall(r"[a-z']+", text.lower())]


def word_errors(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions + deletions + insertions); divided by
    ``len(reference)`` it is the word error rate."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref in enumerate(reference, 1):
        current = [i]
        for j, hyp in enumerate(hypothesis, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ref != hyp)))
        previous = current
    return previous[-1]


@functools.lru_cache(maxsize=1)
def _aligner() -> Any:
    from pocketsphinx import Decoder

    return Decoder(samprate=RATE, loglevel="FATAL")


def word_ends(samples: npt.NDArray[np.int16], text: str) -> list[int] | None:
    """Where each word of ``text`` ends in ``samples`` (16 kHz): the sample index after it,
    from PocketSphinx's forced alignment of the known words (10 ms resolution); None when
    it cannot align them (a word missing from its dictionary, audio that does not fit).

    The audio gets a faint dither first (about -60 dBFS): runs of digital silence, which
    espeak-ng writes between words, made the alignment fail on 15 of 36 of its sentences.
    """
    words = normalize(text)
    dither = np.random.default_rng(0).normal(0, 30, len(samples))
    pcm = np.clip(samples + dither, -32768, 32767).astype("<i2")
    decoder = _aligner()
    try:
        decoder.set_align_text(" ".join(words))
        decoder.start_utt()
        decoder.process_raw(pcm.tobytes(), full_utt=True)
        decoder.end_utt()
    except RuntimeError:
        return None
    segments = decoder.seg()  # None when the search did not reach the last word
    found = [
        (re.sub(r"\(\d+\)$", "", segment.word), (segment.end_frame + 1) * RATE // 100)
        for segment in segments or ()
        if segment.word not in ("<s>", "</s>", "<sil>")
    ]
    if [word for word, _ in found] != words:
        return None
    return [end for _, end in found]
