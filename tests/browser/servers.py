"""``voicecore serve`` as a subprocess, for the browser tests."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 15.0
#: The final-transcript deadline the test servers use (the default is 3 s; see Servers).
STT_FINAL_TIMEOUT_S = 15.0
SERVE_COMMAND = [sys.executable, "-m", "voicecore", "serve"]


class Server:
    """A running ``voicecore serve`` process."""

    def __init__(self, process: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.process = process
        self.url = url
        self.log = log

    @property
    def pid(self) -> int:
        """The server's process id (for SIGSTOP/SIGCONT)."""
        return self.process.pid

    def metrics(self) -> dict[str, float]:
        """The server's unlabelled Prometheus figures (``/metrics``), by name."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        figures = {}
        for line in text.splitlines():
            name, _, value = line.partition(" ")
            if line and not line.startswith("#") and "{" not in name:
                figures[name] = float(value)
        return figures

    def diagnostics(self) -> dict[str, float]:
        """What may have held the server's audio back, worst case over its life: its event
        loop's lag, its longest GC pause, CPU throttling (ms, ms, s)."""
        m = self.metrics()
        return {
            "server_loop_lag_max_ms": round(m.get("voicecore_loop_lag_max_seconds", 0) * 1000, 1),
            "server_gc_pause_max_ms": round(m.get("voicecore_gc_pause_max_seconds", 0) * 1000, 1),
            "server_cpu_throttled_s": m.get("voicecore_cpu_throttled_seconds_total", 0.0),
        }

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's output."""
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


class Servers:
    """Starts ``voicecore serve`` processes on demand, one per set of settings, and stops
    them all at the end of the run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[tuple[tuple[str, str], ...], Server] = {}
        self.failed: dict[tuple[tuple[str, str], ...], str] = {}

    def get(self, **settings: str) -> Server:
        """The server run with these ``VOICECORE_*`` environment settings on top of the
        defaults (started on first use)."""
        key = tuple(sorted(settings.items()))
        if key in self.failed:  # tried already in this run: fail fast, with the same reason
            pytest.fail(self.failed[key])
        if key not in self.running:
            try:
                self.running[key] = self._start(settings)
            except pytest.fail.Exception as failure:
                self.failed[key] = str(failure)
                raise
        return self.running[key]

    def _start(self, settings: dict[str, str]) -> Server:
        log = self.workdir / f"serve-{len(self.running)}.log"
        # The defaults (the offline pipeline), whatever the developer's environment sets,
        # and one change: on a CI machine busy with other jobs PocketSphinx can miss the
        # default 3 s deadline for a final transcript; these tests measure the audio path.
        env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECORE_")}
        env["VOICECORE_SESSION_STT_FINAL_TIMEOUT_S"] = str(STT_FINAL_TIMEOUT_S)
        env.update(settings)
        command = [*SERVE_COMMAND, "--host", "127.0.0.1", "--port", "0"]
        with log.open("wb") as out:
            process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            server = Server(process, _wait_listening(process, log), log)
            _wait_healthy(server)
        except BaseException:
            process.kill()
            process.wait()
            raise
        return server

    def diagnostics(self) -> dict[str, dict[str, float | str]]:
        """Each running server's :meth:`Server.diagnostics`, by its settings."""
        found: dict[str, dict[str, float | str]] = {}
        for key, server in self.running.items():
            label = ", ".join(f"{k}={v}" for k, v in key) or "defaults"
            try:
                found[label] = {**server.diagnostics()}
            except OSError as error:  # a server that died says so in its log
                found[label] = {"unavailable": str(error)}
        return found

    def stop_all(self) -> None:
        """SIGTERM to every server (after SIGCONT: a stall test must not leave one frozen)."""
        for server in self.running.values():
            process = server.process
            os.kill(process.pid, signal.SIGCONT)
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=SERVER_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                print(
                    f"voicecore serve ignored SIGTERM for {SERVER_STOP_TIMEOUT_S} s:\n"
                    f"{server.log_tail()}"
                )


def _wait_listening(process: subprocess.Popen[bytes], log: Path) -> str:
    """The URL the server printed once listening (it picked a free port: ``--port 0``)."""
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while time.monotonic() < deadline:
        found = re.search(r"serving on (http://[\w.:]+)", log.read_text(errors="replace"))
        if found:
            return found[1].rstrip("/")
        if process.poll() is not None:
            break
        time.sleep(0.05)
    pytest.fail(
        f"voicecore serve did not start (exit status {process.poll()}):\n"
        f"{log.read_text(errors='replace')[-4000:]}"
    )


def _wait_healthy(server: Server) -> None:
    with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
        health = json.load(response)
    assert health["status"] == "ok", health
