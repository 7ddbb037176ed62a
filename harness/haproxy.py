"""HAProxy for the tests and the fleet: Debian's ``haproxy`` with the shipped configuration
(``deploy/haproxy/haproxy.cfg``) on 127.0.0.1, in front of voicecore servers on loopback.

:class:`HAProxy` runs ``haproxy -db`` (foreground) with the configuration's variables set
(its bind address, the backends, a runtime-API socket) and reads the backends' state from
the runtime API (``show stat``); :func:`haproxy_check` is ``haproxy -c``.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Final

from harness import ROOT
from harness.redis_server import free_port

__all__ = ["HAPROXY", "HAPROXY_CFG", "HAProxy", "haproxy_check", "haproxy_env"]

HAPROXY_CFG: Final = ROOT / "deploy" / "haproxy" / "haproxy.cfg"
HAPROXY: Final = shutil.which("haproxy") or shutil.which(
    "haproxy", path="/usr/sbin:/usr/local/sbin"
)
"""Debian installs it in /usr/sbin, which is not on a normal user's PATH."""


def haproxy_env(**variables: str) -> dict[str, str]:
    """The environment HAProxy runs in: this one without any VOICECORE_LB_ variable of the
    caller's, plus ``variables``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("VOICECORE_LB_")}
    return env | variables


def haproxy_check(env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    assert HAPROXY is not None
    return subprocess.run(
        [HAPROXY, "-c", "-f", str(HAPROXY_CFG)],
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


class HAProxy:
    """``haproxy -db`` (foreground) with deploy/haproxy/haproxy.cfg on 127.0.0.1, in front of
    ``backends`` (ports on 127.0.0.1), with its runtime API on a UNIX socket."""

    def __init__(self, backends: Sequence[int]) -> None:
        assert HAPROXY is not None
        self.folder = Path(tempfile.mkdtemp(prefix="vc-lb-"))  # a UNIX socket path is short
        self.socket_path = self.folder / "admin.sock"
        self.port = free_port()
        self.log = self.folder / "haproxy.log"
        env = haproxy_env(
            VOICECORE_LB_BIND=f"127.0.0.1:{self.port}",
            VOICECORE_LB_ADMIN_SOCKET=str(self.socket_path),
            **{f"VOICECORE_LB_BACKEND_{i}": f"127.0.0.1:{p}" for i, p in enumerate(backends, 1)},
        )
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [HAPROXY, "-db", "-f", str(HAPROXY_CFG)],
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.backends = [f"backend_{i}" for i in range(1, len(backends) + 1)]

    def command(self, line: str) -> str:
        """One runtime API command's answer."""
        with socket.socket(socket.AF_UNIX) as api:
            api.settimeout(5)
            api.connect(str(self.socket_path))
            api.sendall(line.encode() + b"\n")
            answer = b""
            while chunk := api.recv(65536):
                answer += chunk
        return answer.decode()

    def stats(self) -> dict[str, dict[str, str]]:
        """``show stat`` of the voicecore backend: its servers' rows and the backend's
        (``BACKEND``), by name."""
        table = self.command("show stat").removeprefix("# ")
        rows = csv.DictReader(io.StringIO(table))
        return {row["svname"]: row for row in rows if row["pxname"] == "voicecore"}

    def status(self, server: str) -> str:
        return self.stats()[server]["status"]

    def wait_for(self, condition: Callable[[], bool], what: str, timeout_s: float) -> float:
        """Polls ``condition`` until true; returns the seconds it took."""
        start = time.monotonic()
        while not condition():
            if time.monotonic() - start > timeout_s:
                raise AssertionError(f"{what}: not within {timeout_s:g} s; {self.stats()}")
            time.sleep(0.05)
        return time.monotonic() - start

    def start(self) -> HAProxy:
        def serving() -> bool:
            if self.process.poll() is not None:
                raise AssertionError(f"haproxy exited: {self.log.read_text()}")
            if not self.socket_path.exists():
                return False
            stats = self.stats()
            return all(stats.get(name, {}).get("status") == "UP" for name in self.backends)

        self.wait_for(serving, "every backend UP", timeout_s=15)
        return self

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        shutil.rmtree(self.folder, ignore_errors=True)
