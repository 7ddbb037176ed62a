"""Model files voicecore can use but does not ship: where they are cached and how to fetch them.

Silero VAD is the neural VAD that voicecore's energy VAD is measured against (and that a
pipeline may put behind the energy gate). Its ONNX model ships inside the ``silero-vad``
wheel on PyPI, whose Python code needs torch; voicecore needs only the 2.3 MB ``.onnx``
file, run with onnxruntime. So we let pip download the wheel (no dependencies, nothing
installed) and extract that one file into a cache directory.

The cache directory is, in order of preference: ``$VOICECORE_CACHE_DIR``,
``$XDG_CACHE_HOME/voicecore``, ``~/.cache/voicecore``. Models go under ``models/``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from voicecore.exceptions import ModelFetchError

__all__ = [
    "SILERO_VAD_VERSION",
    "cache_dir",
    "fetch_silero_vad",
    "silero_vad_path",
]

#: The silero-vad release whose model voicecore uses (inputs: ``input`` float32 [1, 576],
#: ``state`` float32 [2, 1, 128], ``sr`` int64; outputs: probability [1, 1], next state).
SILERO_VAD_VERSION = "6.2.3"

_SILERO_MEMBER = "silero_vad/data/silero_vad.onnx"
_SILERO_FILE = "silero_vad.onnx"


def cache_dir() -> Path:
    """The directory voicecore caches downloaded files in (not created here)."""
    explicit = os.environ.get("VOICECORE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "voicecore"
    return Path.home() / ".cache" / "voicecore"


def _model_path(cache: Path | None) -> Path:
    return (cache if cache is not None else cache_dir()) / "models" / _SILERO_FILE


def silero_vad_path(cache_dir: Path | str | None = None) -> Path | None:
    """The cached Silero VAD model file, or None if it has not been fetched yet.

    Args:
        cache_dir: the cache directory to look in; default :func:`cache_dir`.
    """
    path = _model_path(Path(cache_dir) if cache_dir is not None else None)
    return path if path.is_file() else None


def fetch_silero_vad(cache_dir: Path | str | None = None) -> Path:
    """Makes sure the Silero VAD ONNX model is in the cache and returns its path.

    Idempotent: when the file is already cached this returns at once, without network.
    Otherwise it runs ``python -m pip download --no-deps --only-binary=:all:
    silero-vad==6.2.3`` into a temporary directory (so pip's own index settings, proxies
    and certificates apply) and extracts ``silero_vad/data/silero_vad.onnx`` from the wheel
    into ``<cache_dir>/models/silero_vad.onnx``. The file is written under a temporary name
    and renamed, so a concurrent or interrupted fetch never leaves a truncated model.

    Args:
        cache_dir: where to cache it; default :func:`cache_dir`.

    Raises:
        ModelFetchError: if pip fails (no network, no such version) or the wheel does not
            contain the model.
    """
    target = _model_path(Path(cache_dir) if cache_dir is not None else None)
    if target.is_file():
        return target
    with tempfile.TemporaryDirectory(prefix="voicecore-fetch-") as download:
        command = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "--disable-pip-version-check",
            "--quiet",
            f"silero-vad=={SILERO_VAD_VERSION}",
            "-d",
            download,
        ]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            detail = (result.stderr or result.stdout).strip()
            raise ModelFetchError(
                f"could not download silero-vad=={SILERO_VAD_VERSION} with pip "
                f"(exit status {result.returncode}): {detail}"
            )
        wheels = sorted(Path(download).glob("silero_vad-*.whl"))
        if not wheels:
            raise ModelFetchError(
                f"pip reported success but left no silero-vad wheel in {download}"
            )
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(f"{target.name}.{os.getpid()}.part")
        try:
            with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(_SILERO_MEMBER) as source:
                partial.write_bytes(source.read())
        except (KeyError, zipfile.BadZipFile) as error:
            partial.unlink(missing_ok=True)
            raise ModelFetchError(
                f"{wheels[0].name} does not contain {_SILERO_MEMBER}: {error}"
            ) from error
        partial.replace(target)
    return target
