"""``voicecore serve`` (the product's command line) as subprocesses for the browser tests,
started by ``harness.launcher``."""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import pytest

from harness.launcher import ServerProcess, ServerStartError

SERVER_START_TIMEOUT_S = 60.0
SERVER_STOP_TIMEOUT_S = 15.0
#: The final-transcript deadline the test servers use (the default is 3 s; see Servers).
STT_FINAL_TIMEOUT_S = 15.0


def metrics(server: ServerProcess) -> dict[str, float]:
    """The server's unlabelled Prometheus figures (``/metrics``), by name."""
    with urllib.request.urlopen(f"{server.url}/metrics", timeout=5) as response:
        text = response.read().decode()
    figures = {}
    for line in text.splitlines():
        name, _, value = line.partition(" ")
        if line and not line.startswith("#") and "{" not in name:
            figures[name] = float(value)
    return figures


def diagnostics(server: ServerProcess) -> dict[str, float]:
    """What may have held the server's audio back, worst case over its life: its event
    loop's lag, its longest GC pause, CPU throttling (ms, ms, s)."""
    m = metrics(server)
    return {
        "server_loop_lag_max_ms": round(m.get("voicecore_loop_lag_max_seconds", 0) * 1000, 1),
        "server_gc_pause_max_ms": round(m.get("voicecore_gc_pause_max_seconds", 0) * 1000, 1),
        "server_cpu_throttled_s": m.get("voicecore_cpu_throttled_seconds_total", 0.0),
    }


class Servers:
    """Starts ``voicecore serve`` processes on demand, one per set of settings, and stops
    them all at the end of the run."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.running: dict[tuple[tuple[str, str], ...], ServerProcess] = {}
        self.failed: dict[tuple[tuple[str, str], ...], str] = {}

    def get(self, **settings: str) -> ServerProcess:
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

    def _start(self, settings: dict[str, str]) -> ServerProcess:
        # The defaults (the offline pipeline), whatever the developer's environment sets,
        # and one change: on a CI machine busy with other jobs PocketSphinx can miss the
        # default 3 s deadline for a final transcript; these tests measure the audio path.
        base = {k: v for k, v in os.environ.items() if not k.startswith("VOICECORE_")}
        server = ServerProcess(
            cli=True,
            base_env=base,
            env={"VOICECORE_SESSION_STT_FINAL_TIMEOUT_S": str(STT_FINAL_TIMEOUT_S), **settings},
            log=self.workdir / f"serve-{len(self.running)}.log",
            start_timeout_s=SERVER_START_TIMEOUT_S,
            stop_timeout_s=SERVER_STOP_TIMEOUT_S,
        )
        try:
            server.start()
        except ServerStartError as error:
            pytest.fail(str(error))
        try:
            with urllib.request.urlopen(f"{server.url}/healthz", timeout=5) as response:
                health = json.load(response)
            assert health["status"] == "ok", health
        except BaseException:
            server.stop()
            raise
        return server

    def diagnostics(self) -> dict[str, dict[str, float | str]]:
        """Each running server's :func:`diagnostics`, by its settings."""
        found: dict[str, dict[str, float | str]] = {}
        for key, server in self.running.items():
            label = ", ".join(f"{k}={v}" for k, v in key) or "defaults"
            try:
                found[label] = {**diagnostics(server)}
            except OSError as error:  # a server that died says so in its log
                found[label] = {"unavailable": str(error)}
        return found

    def stop_all(self) -> None:
        """Stops every server (SIGCONT first: a stall test must not leave one frozen)."""
        for server in self.running.values():
            server.stop()
            if server.killed:
                print(
                    f"voicecore serve ignored SIGTERM for {SERVER_STOP_TIMEOUT_S} s:\n"
                    f"{server.log_tail()}"
                )
