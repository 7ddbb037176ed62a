"""Fixtures shared by tests/ and benches/: the real speech corpus in ../shared/data/speech."""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

SPEECH_DIR = Path(__file__).resolve().parent.parent / "shared" / "data" / "speech"


@dataclass(frozen=True)
class Utterance:
    """One recording of real speech with its reference transcript."""

    name: str
    samples: npt.NDArray[np.int16]
    sample_rate: int
    transcript: str


def load_speech() -> list[Utterance]:
    """Reads every WAV in ../shared/data/speech, or skips the test if the folder is absent."""
    if not (SPEECH_DIR / "transcripts.tsv").exists():
        pytest.skip(
            f"real speech data not found at {SPEECH_DIR}; it ships beside the repository as "
            "../shared/data/speech (absent in a user's fresh clone)"
        )
    transcripts = dict(
        line.split("\t", 1)
        for line in (SPEECH_DIR / "transcripts.tsv").read_text().splitlines()[1:]
        if line.strip()
    )
    utterances = []
    for name, text in sorted(transcripts.items()):
        with wave.open(str(SPEECH_DIR / name), "rb") as wav:
            if wav.getsampwidth() != 2 or wav.getnchannels() != 1:
                raise ValueError(f"{name}: expected mono 16-bit PCM")
            samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2").astype(np.int16)
            utterances.append(Utterance(name, samples, wav.getframerate(), text.strip()))
    return utterances


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """The folder of real speech WAVs (skips with a clear message when ../shared is absent)."""
    load_speech()
    return SPEECH_DIR


@pytest.fixture(scope="session")
def speech() -> list[Utterance]:
    """The real speech corpus (skips with a clear message when ../shared is absent)."""
    return load_speech()
