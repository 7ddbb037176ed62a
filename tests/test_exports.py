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


def test_every_exception_class_lives_in_the_one_tree() -> None:
    # exceptions.py is the one home of voicecore's exception (and warning) classes.
    import voicecore.engine.session
    import voicecore.pipeline
    import voicecore.protocol
    import voicecore.providers.espeak
    import voicecore.providers.openai
    import voicecore.providers.silero
    import voicecore.providers.sphinx
    import voicecore.server.app

    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    ours = [
        c
        for c in subclasses(Exception)
        if c.__module__.startswith("voicecore") and c.__module__ != "voicecore._core"
    ]
    assert ours
    assert {c.__module__ for c in ours} == {"voicecore.exceptions"}, ours
    for cls in ours:
        if not issubclass(cls, Warning):
            assert issubclass(cls, voicecore.VoicecoreError), cls
        assert getattr(voicecore, cls.__name__) is cls


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
    assert issubclass(exc.VadFallbackWarning, RuntimeWarning)
    for name in exc.__all__:
        value = getattr(exc, name)
        if isinstance(value, type) and not issubclass(value, Warning):
            assert issubclass(value, exc.VoicecoreError), name
    assert str(exc.UnknownStreamError("stream 3 does not exist")) == "stream 3 does not exist"


def test_the_product_never_imports_its_test_tooling() -> None:
    # harness/ (shared by tests and benches) is not in the wheel: importing every module of
    # the product must not pull it in.
    import pkgutil
    import subprocess
    import sys

    modules = [m.name for m in pkgutil.walk_packages(voicecore.__path__, "voicecore.")]
    assert "voicecore.server.app" in modules
    assert "voicecore.engine.session" in modules
    code = (
        "import importlib, sys\n"
        f"for name in {modules!r}:\n"
        "    if name != 'voicecore.__main__':\n"
        "        importlib.import_module(name)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('harness', 'pytest')))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]", out.stdout
