"""Fixtures shared by tests/ and benches/: the real speech corpus in ../shared/data/speech
(``harness.speech``), skipped with a clear message where it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.speech import SPEECH_DIR, SpeechMissingError, Utterance, load_corpus


def _corpus() -> list[Utterance]:
    try:
        return load_corpus()
    except SpeechMissingError as missing:
        pytest.skip(str(missing))


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """The folder of real speech WAVs (skips with a clear message when ../shared is absent)."""
    _corpus()
    return SPEECH_DIR


@pytest.fixture(scope="session")
def speech() -> list[Utterance]:
    """The real speech corpus (skips with a clear message when ../shared is absent)."""
    return _corpus()
