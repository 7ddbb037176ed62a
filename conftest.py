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


PIPER_VOICE = "piper-joe-medium"
"""The Piper voice the tests and benchmarks use (its registry name)."""


def find_model(name: str) -> Path | None:
    """The folder of registry model ``name`` (``voicecore.models``), or None when it has not
    been fetched."""
    from voicecore import models
    from voicecore.exceptions import ModelNotFoundError

    try:
        return models.require(name)
    except ModelNotFoundError:
        return None


@pytest.fixture(scope="session")
def piper_voice_dir() -> Path:
    """The Piper voice's folder (skips with a clear message when it is absent)."""
    found = find_model(PIPER_VOICE)
    if found is None:
        pytest.skip(f"the Piper voice {PIPER_VOICE!r} is not fetched: run `make models`")
    return found


@pytest.fixture(scope="session")
def moonshine_model_dir() -> Path:
    """The Moonshine base-en model's folder (skips with a clear message when it is absent)."""
    found = find_model("moonshine-base-en")
    if found is None:
        pytest.skip("the Moonshine model 'moonshine-base-en' is not fetched: run `make models`")
    return found


@pytest.fixture(scope="session")
def smart_turn_model_path() -> Path:
    """The Smart Turn v3.2 model file (skips with a clear message when it is absent)."""
    found = find_model("smart-turn-v3.2")
    if found is None:
        pytest.skip("the Smart Turn model 'smart-turn-v3.2' is not fetched: run `make models`")
    return found / "smart-turn-v3.2-cpu.onnx"
