"""The books the workers of one server share: capacity, conversations, each worker's state.

``voicecore serve --workers N`` runs N worker processes behind one listening socket
(``voicecore.server.supervisor``). The CPU they share is the machine's, so the capacity is
the machine's too: a conversation is admitted when *all* the workers together carry fewer
than the capacity, whichever worker the connection landed on, and ``/healthz`` of any worker
says whether the server (not only that worker) takes one more.

The books are a small file mapped into every worker (``mmap``): a header with the capacity
(measured once, by the first worker, and published here for the others) and one slot per
worker (its pid, its open conversations, its state, its connections).

They also balance the workers: every worker accepts from the one listening socket, and left
to itself the kernel hands most connections to whichever worker waited last (measured: 2 of
18 conversations on one worker, 16 on the other). :class:`LeastConnectionsListener` makes a
worker step back from ``accept`` while another serving worker holds fewer connections, so
the next connection goes to the least loaded one. A worker writes only its own slot;
taking a conversation slot reads every worker's count and writes its own under an exclusive
``flock`` (a few microseconds), so two workers cannot both take the last one. The lock dies
with a killed process; the supervisor zeroes a dead worker's slot before restarting it.
"""

from __future__ import annotations

import enum
import fcntl
import json
import mmap
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Final

import trio

__all__ = ["ACCEPT_BACKOFF_S", "LeastConnectionsListener", "Ledger", "WorkerState"]

ACCEPT_BACKOFF_S: Final = 0.01
"""How often a worker that steps back from ``accept`` looks at the balance again."""
MAX_STEP_BACK_S: Final = 0.1
"""How long it steps back at most before it waits in ``accept`` again (for
:data:`ACCEPT_WINDOW_S`): a less loaded worker whose loop is stalled must not leave a
connection in the backlog for longer."""
ACCEPT_WINDOW_S: Final = 0.01
"""How long a worker that is not the least loaded waits in ``accept`` before it looks at the
balance again."""

_MAGIC: Final = b"VCLEDGR1"
_HEADER: Final = struct.Struct("<8sqq")  # magic, workers, capacity JSON length
_CAPACITY_BYTES: Final = 1024
_SLOT: Final = struct.Struct("<qqqq")  # pid, sessions, state, connections
_SLOTS_AT: Final = _HEADER.size + _CAPACITY_BYTES


class WorkerState(enum.IntEnum):
    """A worker's state in its slot."""

    STARTING = 0
    """Loading models, measuring the capacity: not serving yet."""
    SERVING = 1
    """Accepting conversations."""
    DRAINING = 2
    """Shutting down: running conversations go on, no new one."""
    GONE = 3
    """Exited or died (the supervisor restarts it unless the server is stopping)."""


class Ledger:
    """One server's shared books (see the module doc).

    Create it once in the supervisor (:meth:`create`), open it in each worker
    (:meth:`open`) with that worker's index.

    Attributes:
        path: the file.
        workers: the number of worker slots.
        index: this process' slot (None in the supervisor).
    """

    def __init__(self, path: Path, *, index: int | None = None) -> None:
        self.path = path
        self.index = index
        self._fd = os.open(path, os.O_RDWR)
        self._map = mmap.mmap(self._fd, 0)
        magic, self.workers, _ = _HEADER.unpack_from(self._map, 0)
        if magic != _MAGIC:
            raise ValueError(f"{path} is not a voicecore worker ledger")
        if index is not None and not 0 <= index < self.workers:
            raise ValueError(f"worker index {index} is outside 0-{self.workers - 1}")

    @classmethod
    def create(cls, path: Path, workers: int) -> Ledger:
        """A fresh ledger for ``workers`` workers at ``path`` (created or truncated)."""
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        size = _SLOTS_AT + workers * _SLOT.size
        with path.open("wb") as file:
            file.write(_HEADER.pack(_MAGIC, workers, 0).ljust(size, b"\0"))
        return cls(path)

    @classmethod
    def open(cls, path: Path, index: int) -> Ledger:
        """A worker's view of the supervisor's ledger."""
        return cls(path, index=index)

    def close(self) -> None:
        """Unmaps the file (it stays for the others)."""
        self._map.close()
        os.close(self._fd)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    # --- the capacity, published once ---------------------------------------------------------

    def publish_capacity(self, capacity: dict[str, Any]) -> None:
        """Publishes the server's capacity (``Capacity.to_json()``) for every worker."""
        data = json.dumps(capacity).encode()
        if len(data) > _CAPACITY_BYTES:
            raise ValueError("the capacity's JSON is too long for the ledger")
        with self._locked():
            self._map[_HEADER.size : _HEADER.size + len(data)] = data
            _HEADER.pack_into(self._map, 0, _MAGIC, self.workers, len(data))

    def capacity(self) -> dict[str, Any] | None:
        """The published capacity, or None before the first worker has found it."""
        _, _, length = _HEADER.unpack_from(self._map, 0)
        if not length:
            return None
        data: dict[str, Any] = json.loads(self._map[_HEADER.size : _HEADER.size + length])
        return data

    # --- the slots ----------------------------------------------------------------------------

    def _slot(self, index: int) -> tuple[int, int, WorkerState, int]:
        pid, sessions, state, connections = _SLOT.unpack_from(
            self._map, _SLOTS_AT + index * _SLOT.size
        )
        return pid, sessions, WorkerState(state), connections

    def _write(
        self, index: int, pid: int, sessions: int, state: WorkerState, connections: int
    ) -> None:
        _SLOT.pack_into(
            self._map, _SLOTS_AT + index * _SLOT.size, pid, sessions, state, connections
        )

    def _own(self) -> int:
        if self.index is None:
            raise RuntimeError("only a worker holds a slot")
        return self.index

    def set_state(self, state: WorkerState) -> None:
        """This worker's state."""
        index = self._own()
        with self._locked():
            _, sessions, _, connections = self._slot(index)
            self._write(index, os.getpid(), sessions, state, connections)

    def reset(self, index: int) -> None:
        """Frees worker ``index``'s slot (it died: its conversations are gone)."""
        with self._locked():
            self._write(index, 0, 0, WorkerState.GONE, 0)

    def take(self, max_sessions: int) -> bool:
        """Takes a conversation slot for this worker if all the workers together hold fewer
        than ``max_sessions``; returns whether it did."""
        index = self._own()
        with self._locked():
            if self.sessions() >= max_sessions:
                return False
            pid, sessions, state, connections = self._slot(index)
            self._write(index, pid, sessions + 1, state, connections)
            return True

    def give_back(self) -> None:
        """Frees one of this worker's conversation slots."""
        index = self._own()
        with self._locked():
            pid, sessions, state, connections = self._slot(index)
            self._write(index, pid, max(0, sessions - 1), state, connections)

    def connected(self, change: int) -> None:
        """This worker's connections (pending or in a conversation) changed by ``change``."""
        index = self._own()
        with self._locked():
            pid, sessions, state, connections = self._slot(index)
            self._write(index, pid, sessions, state, max(0, connections + change))

    def busier_than_another(self) -> bool:
        """Whether another serving worker holds fewer connections than this one (read
        without the lock: a stale figure costs one connection's balance, never a slot)."""
        index = self._own()
        mine = self._slot(index)[3]
        return any(
            connections < mine
            for i in range(self.workers)
            if i != index
            for _, _, state, connections in [self._slot(i)]
            if state is WorkerState.SERVING
        )

    def sessions(self) -> int:
        """Conversations open in all the workers."""
        return sum(self._slot(i)[1] for i in range(self.workers))

    def states(self) -> list[WorkerState]:
        """Each worker's state, by index."""
        return [self._slot(i)[2] for i in range(self.workers)]

    def to_json(self) -> dict[str, Any]:
        """The workers as ``/healthz`` reports them (``server.workers``)."""
        return {
            "workers": [
                {
                    "index": i,
                    "pid": pid,
                    "sessions": sessions,
                    "connections": connections,
                    "state": state.name.lower(),
                }
                for i in range(self.workers)
                for pid, sessions, state, connections in [self._slot(i)]
            ],
            "sessions": self.sessions(),
        }


class LeastConnectionsListener(trio.abc.Listener[trio.SocketStream]):
    """A worker's view of the shared listening socket: a worker that is not the least loaded
    (another serving worker holds fewer connections) stays out of ``accept`` for up to
    :data:`MAX_STEP_BACK_S` at a time, then waits in it only :data:`ACCEPT_WINDOW_S`, so the
    next connection almost always goes to the least loaded worker, and one whose loop
    stalled still has its connections taken by the others within a tenth of a second."""

    def __init__(self, listener: trio.SocketListener, ledger: Ledger) -> None:
        self.listener = listener
        self._ledger = ledger

    @property
    def socket(self) -> trio.socket.SocketType:
        """The listening socket."""
        return self.listener.socket

    async def accept(self) -> trio.SocketStream:
        while True:
            stepped_back = 0.0
            while self._ledger.busier_than_another() and stepped_back < MAX_STEP_BACK_S:
                await trio.sleep(ACCEPT_BACKOFF_S)
                stepped_back += ACCEPT_BACKOFF_S
            if not self._ledger.busier_than_another():
                return await self.listener.accept()
            with trio.move_on_after(ACCEPT_WINDOW_S):
                return await self.listener.accept()

    async def aclose(self) -> None:
        await self.listener.aclose()
