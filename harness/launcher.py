"""The one way tests and benchmarks start the voice server: a subprocess on 127.0.0.1.

``ServerProcess`` runs ``python -m harness.serve`` (the real server, with faults or the Trio
pacer baseline injected from the environment: see ``harness.serve``), or ``python -m
voicecore serve`` with ``cli=True`` when what is tested is the product's own command line.
It always listens on 127.0.0.1 and an ephemeral port (``--port 0``), runs in its own process
group (so a fault can freeze it, and nothing it starts outlives it), and writes stdout and
stderr to a log file. Start-up is bounded: the port is scraped from the server's
``serving on http://127.0.0.1:PORT/`` line, and a server that exits or stays silent fails
with the tail of its log. Stopping is bounded too: SIGCONT first (a fault may have left it
frozen), then SIGTERM (or the signal asked for) to the group, then SIGKILL after
``stop_timeout_s``.

It is both a plain context manager (``with ServerProcess(...) as server``) and a Trio one
(``async with``: the waits sleep on the event loop instead of blocking it).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Final

import trio

from harness import subprocess_env

__all__ = ["ServerProcess", "ServerStartError", "pin_to"]

SERVING: Final = re.compile(r"serving on http://127\.0\.0\.1:(\d+)/")
"""The line the server prints once it listens (``voicecore.server.cli``)."""

POLL_S: Final = 0.02
_TICKS: Final = os.sysconf("SC_CLK_TCK")


class ServerStartError(RuntimeError):
    """The server exited, or did not listen within its start-up bound (the message carries
    the tail of its log)."""


class ServerProcess:
    """``voicecore serve`` in a subprocess on 127.0.0.1 and a free port.

    Args:
        args: further ``voicecore serve`` flags (``--providers scripted``, ...).
        cli: run ``python -m voicecore serve`` (the product's command line) instead of
            ``python -m harness.serve``.
        env: extra environment variables (``VOICECORE_FAULTS``, ``MALLOC_ARENA_MAX``...).
        base_env: the environment to start from (default: this process's); the checkout
            is always put on ``PYTHONPATH`` (``harness.subprocess_env``).
        cpus: pin the server to these CPUs (None: unpinned).
        log: where its output goes (kept); None: a temporary file, removed when the
            context manager exits (its tail is in the error of a failed start).
        cwd: its working directory (None: this process's).
        start_timeout_s: how long it may take to listen.
        stop_timeout_s: how long it may take to exit once signalled, before SIGKILL.

    Attributes:
        port: the port it listens on (0 until started).
        exit_code: its exit status once stopped (None before).
        killed: it ignored the stop signal and was killed.
    """

    def __init__(
        self,
        args: Sequence[str] = (),
        *,
        cli: bool = False,
        env: Mapping[str, str] | None = None,
        base_env: Mapping[str, str] | None = None,
        cpus: set[int] | None = None,
        log: Path | None = None,
        cwd: Path | None = None,
        start_timeout_s: float = 60.0,
        stop_timeout_s: float = 15.0,
    ) -> None:
        module = ["voicecore", "serve"] if cli else ["harness.serve"]
        # One worker (a test sizes what it starts) and a short drain (a test that stops the
        # server with callers on the line is not testing the drain) unless ``args`` say.
        self.command = [
            sys.executable, "-m", *module, "--host", "127.0.0.1", "--port", "0",
            "--workers", "1", "--server-drain-timeout-s", "1", *args,
        ]  # fmt: skip
        self.env = subprocess_env({"PYTHONUNBUFFERED": "1", **(env or {})}, base=base_env)
        self.cpus = cpus
        self.cwd = cwd
        self.start_timeout_s = start_timeout_s
        self.stop_timeout_s = stop_timeout_s
        self._own_log = log is None
        self.log = log or Path(tempfile.mkstemp(prefix="voicecore-serve-", suffix=".log")[1])
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.exit_code: int | None = None
        self.killed = False

    def __repr__(self) -> str:
        return f"ServerProcess({' '.join(self.command[2:])}, port={self.port})"

    # --- starting -------------------------------------------------------------------------

    def _launch(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
                start_new_session=True,
                preexec_fn=pin_to(self.cpus),
            )

    def _listening(self) -> bool:
        """Whether the log shows the server listening (sets ``port``).

        Raises:
            ServerStartError: the server exited before it listened.
        """
        assert self.process is not None
        found = SERVING.search(self.log_text())
        if found:
            self.port = int(found.group(1))
            return True
        if self.process.poll() is not None:
            raise ServerStartError(
                f"{self.command_line} exited with {self.process.returncode} before it "
                f"listened:\n{self.log_tail()}"
            )
        return False

    def _timed_out(self) -> ServerStartError:
        return ServerStartError(
            f"{self.command_line} did not listen within {self.start_timeout_s:g} s:\n"
            f"{self.log_tail()}"
        )

    def start(self) -> ServerProcess:
        """Starts the server and waits (blocking) until it listens; stops it on failure."""
        self._launch()
        try:
            deadline = time.monotonic() + self.start_timeout_s
            while not self._listening():
                if time.monotonic() > deadline:
                    raise self._timed_out()
                time.sleep(POLL_S)
        except BaseException:
            self.stop()
            raise
        return self

    async def astart(self) -> ServerProcess:
        """``start`` on the Trio event loop."""
        self._launch()
        try:
            with trio.move_on_after(self.start_timeout_s):
                while not self._listening():
                    await trio.sleep(POLL_S)
            if not self.port:
                raise self._timed_out()
        except BaseException:
            with trio.CancelScope(shield=True):
                await self.astop()
            raise
        return self

    # --- stopping -------------------------------------------------------------------------

    def _signal(self, signum: int) -> None:
        assert self.process is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGCONT)  # a fault may have left it stopped
            os.killpg(self.process.pid, signum)

    def _kill(self) -> None:
        assert self.process is not None
        self.killed = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)

    def _finish(self) -> int | None:
        assert self.process is not None
        self.exit_code = self.process.wait()
        # Anything left in the group (nothing, normally) goes with it.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        return self.exit_code

    def stop(self, signum: int = signal.SIGTERM) -> int | None:
        """Sends ``signum`` (after SIGCONT) and waits ``stop_timeout_s``, then SIGKILL;
        returns the exit status (None if it never started)."""
        if self.process is None or self.exit_code is not None:
            return self.exit_code
        if self.process.poll() is None:
            self._signal(signum)
            try:
                self.process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                self._kill()
        return self._finish()

    async def astop(self, signum: int = signal.SIGTERM) -> int | None:
        """``stop`` on the Trio event loop."""
        if self.process is None or self.exit_code is not None:
            return self.exit_code
        if self.process.poll() is None:
            self._signal(signum)
            with trio.move_on_after(self.stop_timeout_s):
                while self.process.poll() is None:
                    await trio.sleep(POLL_S)
            if self.process.poll() is None:
                self._kill()
        return self._finish()

    # --- context managers -----------------------------------------------------------------

    def __enter__(self) -> ServerProcess:
        try:
            return self.start()
        except BaseException:
            self._discard_log()
            raise

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.stop()
        finally:
            self._discard_log()

    async def __aenter__(self) -> ServerProcess:
        try:
            return await self.astart()
        except BaseException:
            self._discard_log()
            raise

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with trio.CancelScope(shield=True):
                await self.astop()
        finally:
            self._discard_log()

    def _discard_log(self) -> None:
        """Removes the log if it is a temporary file (one the caller named stays)."""
        if self._own_log:
            self.log.unlink(missing_ok=True)

    # --- what it is -----------------------------------------------------------------------

    @property
    def command_line(self) -> str:
        """The command, as a user would type it."""
        return " ".join(["python", *self.command[1:]])

    @property
    def pid(self) -> int:
        """The server's process id (also its process group's)."""
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        """The protocol's WebSocket URL, ``ws://127.0.0.1:PORT/ws``."""
        return f"ws://127.0.0.1:{self.port}/ws"

    def log_text(self) -> str:
        """Everything the server has printed so far."""
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        """The last ``lines`` lines of the server's output."""
        return "\n".join(self.log_text().splitlines()[-lines:])

    def processes(self) -> list[int]:
        """The server's processes: itself and, with ``--workers N``, its workers (its
        process group), by pid."""
        pids = [self.pid]
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) == self.pid:
                continue
            with contextlib.suppress(OSError, IndexError):  # gone meanwhile
                if int(_stat(int(entry))[2]) == self.pid:  # its process group
                    pids.append(int(entry))
        return pids

    def cpu_seconds(self) -> float:
        """User + system CPU time the server has used, s: every process of its group
        (``/proc/<pid>/stat``), with the children they have reaped."""
        total = 0
        for pid in self.processes():
            try:
                fields = _stat(pid)
            except OSError:
                if pid == self.pid:
                    raise
                continue  # a worker gone meanwhile (the server reaps it: its cutime)
            total += sum(int(value) for value in fields[11:15])  # utime..cstime (14-17)
        return total / _TICKS

    def rss_kb(self) -> int:
        """The server's resident memory (VmRSS), KiB: every process of its group summed
        (pages the workers share are counted once per worker)."""
        total = 0
        for pid in self.processes():
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                if pid == self.pid:
                    raise
                continue  # a worker gone meanwhile
            found = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
            if found is None:
                raise RuntimeError(f"no VmRSS in /proc/{pid}/status")
            total += int(found.group(1))
        return total

    def fds(self) -> int:
        """The server's open file descriptors."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))


def _stat(pid: int) -> list[str]:
    """``/proc/<pid>/stat``'s fields after the command name: proc(5)'s field k at k - 3."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` that pins a child process to ``cpus`` (None when unpinned)."""
    if not cpus:
        return None

    def pin() -> None:
        os.sched_setaffinity(0, cpus)

    return pin
