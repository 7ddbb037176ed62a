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


def find_piper_voice() -> Path | None:
    """The folder of the Piper voice :data:`PIPER_VOICE`: from the model registry
    (``voicecore.models.require``) where it exists and has the voice, else from
    ``$VOICECORE_PIPER_DIR``; None when neither has it."""
    import os

    from voicecore import models
    from voicecore.exceptions import ModelNotFoundError

    require = getattr(models, "require", None)
    if require is not None:
        try:
            return Path(require(PIPER_VOICE))
        except ModelNotFoundError:
            pass
    explicit = os.environ.get("VOICECORE_PIPER_DIR")
    if explicit and Path(explicit).is_dir():
        return Path(explicit)
    return None


@pytest.fixture(scope="session")
def piper_voice_dir() -> Path:
    """The Piper voice's folder (skips with a clear message when it is absent)."""
    found = find_piper_voice()
    if found is None:
        pytest.skip(
            f"the Piper voice {PIPER_VOICE!r} is absent: fetch it into the model registry "
            "(voicecore.models.require) or point $VOICECORE_PIPER_DIR at a folder holding "
            "en_US-joe-medium.onnx and en_US-joe-medium.onnx.json"
        )
    return found
