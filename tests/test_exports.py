"""The public surface: what `voicecore` exports, and that each export is documented."""

from __future__ import annotations

import inspect

import voicecore
import voicecore._core
import voicecore.exceptions


def test_all_names_exist_and_are_sorted() -> None:
    for name in voicecore.__all__:
        assert hasattr(voicecore, name), name
    assert voicecore.__all__ == sorted(voicecore.__all__)


def test_no_public_name_left_out_of_all() -> None:
    public = {
        name
        for name, value in vars(voicecore).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert public <= set(voicecore.__all__), public - set(voicecore.__all__)


def test_every_public_class_and_method_has_a_docstring() -> None:
    for name in voicecore.__all__:
        value = getattr(voicecore, name)
        if not inspect.isclass(value):
            continue
        assert inspect.getdoc(value), f"{name} has no docstring"
        for attr, member in vars(value).items():
            if attr.startswith("_") or not callable(member):
                continue
            assert inspect.getdoc(member), f"{name}.{attr} has no docstring"


def test_pacer_surface() -> None:
    # The engine's lifecycle path: stream events beside released frames.
    assert voicecore.StreamEvent is voicecore._core.StreamEvent
    assert "StreamEvent" in voicecore.__all__
    assert callable(voicecore.FramePacer.take_events)


def test_native_classes_live_in_the_private_module() -> None:
    for name in voicecore.__all__:
        value = getattr(voicecore, name)
        if inspect.isclass(value) and value.__module__.startswith("voicecore._core"):
            assert getattr(voicecore._core, name) is value


def test_exception_tree() -> None:
    exc = voicecore.exceptions
    assert issubclass(exc.ConfigError, exc.VoicecoreError)
    assert issubclass(exc.ConfigError, ValueError)
    assert issubclass(exc.UnsupportedSampleRateError, exc.ConfigError)
    assert issubclass(exc.AudioFormatError, ValueError)
    assert issubclass(exc.AudioTypeError, TypeError)
    assert issubclass(exc.UnknownStreamError, exc.PacerError)
    assert issubclass(exc.UnknownStreamError, KeyError)
    assert issubclass(exc.PacerStoppedError, RuntimeError)
    for name in exc.__all__:
        assert issubclass(getattr(exc, name), exc.VoicecoreError)
    assert str(exc.UnknownStreamError("stream 3 does not exist")) == "stream 3 does not exist"
