"""``voicecore serve --workers N``: N worker processes on one port, supervised.

One Python process has one event loop and one GIL: past a core's worth of conversations its
loop is the bottleneck, whatever the machine has. So the server runs as N workers (default:
one per usable core), each a whole ``VoiceServer`` with its own loop, models and pacer
thread, all accepting from one listening socket that this supervisor opened and they
inherited: the kernel hands each new connection to a worker waiting in ``accept``, so a
worker whose loop is busy takes fewer. The workers share their books
(``voicecore.server.ledger``): the capacity, measured once by the first worker, is the
machine's, and admission counts every worker's conversations.

The supervisor itself loads no model and serves nothing. It:

* starts worker 0 and waits until it has found the capacity (it may measure it), then the
  others, and prints ``serving on ...`` once every worker serves;
* restarts a worker that dies (a crash, the OOM killer, a SIGKILL), at once the first time
  and with a growing pause if it keeps dying within seconds of its start; after
  :data:`MAX_QUICK_DEATHS` such deaths in a row it stops the server (exit 1): a worker
  that cannot start is a configuration problem, not bad luck;
* passes SIGTERM (drain: ``server.drain_timeout_s``) and SIGINT (stop now, also during a
  drain) on to the workers, waits for them (a worker still there ``drain_timeout_s +
  shutdown_timeout_s +`` :data:`EXIT_GRACE_S` later is killed) and exits 0.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Final

from voicecore.config import ServerConfig
from voicecore.server.ledger import Ledger, WorkerState

__all__ = ["WORKER_FLAG", "Supervisor", "WorkerSpec"]

_log = logging.getLogger("voicecore.server.supervisor")

WORKER_FLAG: Final = "--worker"
"""The hidden flag that makes ``voicecore serve`` a worker: ``INDEX:FDS:LEDGER``."""
POLL_S: Final = 0.1
QUICK_DEATH_S: Final = 10.0
"""A worker that dies within this of its start died "quickly" (it may not be able to start)."""
MAX_QUICK_DEATHS: Final = 5
EXIT_GRACE_S: Final = 10.0
START_TIMEOUT_S: Final = 300.0
"""How long the workers may take to serve (loading models, measuring the capacity)."""


@dataclass(frozen=True)
class WorkerSpec:
    """What a worker is told by its supervisor (the ``--worker`` flag's value).

    Attributes:
        index: its slot in the ledger, 0 to N-1.
        fds: the listening sockets it inherited.
        ledger: the ledger file.
    """

    index: int
    fds: tuple[int, ...]
    ledger: Path

    def flag(self) -> str:
        """The ``--worker`` flag's value."""
        return f"{self.index}:{','.join(map(str, self.fds))}:{self.ledger}"

    @classmethod
    def parse(cls, value: str) -> WorkerSpec:
        """Reads :meth:`flag`'s value back.

        Raises:
            ValueError: not such a value.
        """
        index, fds, ledger = value.split(":", 2)
        return cls(int(index), tuple(int(fd) for fd in fds.split(",")), Path(ledger))

    def sockets(self) -> list[socket.socket]:
        """The inherited listening sockets."""
        return [socket.socket(fileno=fd) for fd in self.fds]


def listening_sockets(host: str, port: int) -> list[socket.socket]:
    """Listening TCP sockets on ``host`` (every address it resolves to, like Trio's
    ``open_tcp_listeners``; empty or ``0.0.0.0``: every interface) and ``port`` (0: a free
    one, the same for all), inheritable by the workers.

    Raises:
        OSError: the port is taken, the address is not this machine's.
    """
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in infos:
            if port == 0 and sockets:  # every address on the port the first one got
                address = (address[0], sockets[0].getsockname()[1], *address[2:])
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            sock.bind(address)
            sock.listen(socket.SOMAXCONN)
            sock.set_inheritable(True)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


class Supervisor:
    """Runs ``workers`` copies of ``voicecore serve`` on one set of listening sockets.

    Args:
        argv: the ``voicecore serve`` arguments (without ``serve``) each worker gets, plus
            its ``--worker`` flag.
        settings: the server's settings (address, drain and shutdown timeouts).
        workers: how many.
    """

    def __init__(self, argv: list[str], settings: ServerConfig, workers: int) -> None:
        self.argv = argv
        self.settings = settings
        self.workers = workers
        self.restarts = 0
        self._stop_signal: int | None = None
        self._procs: dict[int, subprocess.Popen[bytes]] = {}
        self._started: dict[int, float] = {}
        self._quick_deaths: dict[int, int] = {}

    def run(self) -> int:
        """Serves until SIGTERM/SIGINT; returns the exit status (0, or 1 if the workers
        could not start)."""
        sockets = listening_sockets(self.settings.host, self.settings.port)
        port = sockets[0].getsockname()[1]
        folder = Path(tempfile.mkdtemp(prefix="voicecore-workers-"))
        ledger = Ledger.create(folder / "ledger", self.workers)
        fds = tuple(s.fileno() for s in sockets)
        previous = {
            signum: signal.signal(signum, self._on_signal)
            for signum in (signal.SIGTERM, signal.SIGINT)
        }
        try:
            status = self._serve(ledger, fds, port)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            self._stop_all()
            ledger.close()
            for sock in sockets:
                sock.close()
            with contextlib.suppress(OSError):
                (folder / "ledger").unlink()
                folder.rmdir()
        print("voicecore: stopped", flush=True)
        return status

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # SIGTERM drains, SIGINT stops now (also a drain under way).
        self._stop_signal = signum if self._stop_signal != signal.SIGINT else signal.SIGINT
        name = signal.Signals(signum).name
        print(
            f"voicecore: {name}: "
            + ("draining the workers" if self._stop_signal == signal.SIGTERM else "stopping"),
            flush=True,
        )
        for proc in self._procs.values():
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(self._stop_signal)

    def _spawn(self, index: int, fds: tuple[int, ...], ledger: Ledger) -> None:
        spec = WorkerSpec(index, fds, ledger.path)
        command = [sys.executable, "-m", "voicecore", "serve", *self.argv, WORKER_FLAG, spec.flag()]
        self._procs[index] = subprocess.Popen(command, pass_fds=fds)
        self._started[index] = time.monotonic()

    def _serve(self, ledger: Ledger, fds: tuple[int, ...], port: int) -> int:
        # The first worker alone, while it finds (maybe measures) the capacity: measuring
        # with the others loading their models beside it would misjudge the machine.
        self._spawn(0, fds, ledger)
        if not self._wait(lambda: ledger.capacity() is not None):
            return self._failed_start()
        for index in range(1, self.workers):
            self._spawn(index, fds, ledger)
        if not self._wait(lambda: all(s is WorkerState.SERVING for s in ledger.states())):
            return self._failed_start()
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        print(
            f"voicecore: serving on http://{host}:{port}/ with {self.workers} workers "
            "(Ctrl-C to stop)",
            flush=True,
        )
        while self._stop_signal is None:
            time.sleep(POLL_S)
            for index, proc in list(self._procs.items()):
                code = proc.poll()
                if code is None or self._stop_signal is not None:
                    continue
                if not self._restart(index, code, fds, ledger):
                    return 1
        return 0

    def _wait(self, ready: Callable[[], bool]) -> bool:
        """Waits until ``ready()`` (or a worker exits, or a stop signal, or the start-up
        timeout); returns whether it became true."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self._stop_signal is not None or time.monotonic() > deadline:
                return False
            if any(proc.poll() is not None for proc in self._procs.values()):
                return False
            time.sleep(POLL_S)
        return True

    def _failed_start(self) -> int:
        """The exit status when the workers did not start: a worker's own (2: a bad
        setting, which it has explained), else 1."""
        if self._stop_signal is not None:
            return 0
        codes = {i: p.poll() for i, p in self._procs.items()}
        failed = [code for code in codes.values() if code]
        if not failed:
            print(
                f"voicecore serve: the workers did not serve within {START_TIMEOUT_S:g} s",
                file=sys.stderr,
            )
        return failed[0] if failed and failed[0] > 0 else 1

    def _restart(self, index: int, code: int, fds: tuple[int, ...], ledger: Ledger) -> bool:
        """Worker ``index`` exited with ``code``: frees its slot and starts it again (after a
        pause if it keeps dying young); False when it should not be restarted any more."""
        ledger.reset(index)
        lived = time.monotonic() - self._started[index]
        how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        quick = self._quick_deaths.get(index, 0) + 1 if lived < QUICK_DEATH_S else 0
        self._quick_deaths[index] = quick
        if quick >= MAX_QUICK_DEATHS:
            print(
                f"voicecore serve: worker {index} died {quick} times within "
                f"{QUICK_DEATH_S:g} s of starting ({how}); stopping",
                file=sys.stderr,
                flush=True,
            )
            return False
        pause = 0.0 if quick <= 1 else min(8.0, 0.5 * 2 ** (quick - 2))
        print(
            f"voicecore: worker {index} (pid {self._procs[index].pid}) died ({how}) after "
            f"{lived:.1f} s; restarting" + (f" in {pause:g} s" if pause else ""),
            flush=True,
        )
        time.sleep(pause)
        self.restarts += 1
        self._spawn(index, fds, ledger)
        return True

    def _stop_all(self) -> None:
        """Waits for every worker to exit (they drain and shut down on the signal they got);
        kills one still there after the drain, the shutdown and a grace period."""
        for proc in self._procs.values():
            if proc.poll() is None and self._stop_signal is None:
                proc.send_signal(signal.SIGINT)
        bound = self.settings.drain_timeout_s + self.settings.shutdown_timeout_s + EXIT_GRACE_S
        deadline = time.monotonic() + bound
        for index, proc in self._procs.items():
            try:
                proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                print(f"voicecore: worker {index} did not exit in {bound:g} s; killed", flush=True)
                proc.kill()
                proc.wait()
