"""The ``voicecore`` command: the demo runs the real core end to end."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import wave
from pathlib import Path


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "voicecore", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=env,
    )


def test_demo_on_real_speech_finds_speech_and_paces_every_frame(speech_dir: Path) -> None:
    result = run_cli("demo", "--wav", str(speech_dir / "librivox-0880.wav"), "--seconds", "1")
    assert result.returncode == 0, result.stderr
    starts = re.findall(r"speech start at\s+([\d.]+) s", result.stdout)
    assert starts, result.stdout
    assert 0.0 <= float(starts[0]) < 1.0
    released = re.search(r"frames released\s+(\d+)", result.stdout)
    assert released is not None, result.stdout
    assert int(released.group(1)) == 50  # 1 s of agent audio in 20 ms frames
    assert "lateness" in result.stdout


def test_demo_rejects_a_stereo_wav(tmp_path: Path) -> None:
    wav = tmp_path / "stereo.wav"
    with wave.open(str(wav), "wb") as out:
        out.setnchannels(2)
        out.setsampwidth(2)
        out.setframerate(16000)
        out.writeframes(b"\0\0\0\0" * 160)
    result = run_cli("demo", "--wav", str(wav))
    assert result.returncode != 0
    assert "mono 16-bit" in result.stderr


def test_models_path_says_how_to_fetch_when_missing(tmp_path: Path) -> None:
    env = {**os.environ, "VOICECORE_CACHE_DIR": str(tmp_path)}
    result = run_cli("models", "path", "silero-vad", env=env)
    assert result.returncode == 1
    assert "voicecore models fetch" in result.stderr


def test_unknown_command_is_a_usage_error() -> None:
    result = run_cli("bogus")
    assert result.returncode == 2
    assert "invalid choice" in result.stderr
