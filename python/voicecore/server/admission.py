"""Admission: how many conversations the server carries, and who gets one.

A voice server that takes one conversation too many does not slow down gracefully: every
conversation's recognizer and voice share the same cores, so the overload lands on everyone
already talking (a reply seconds late, a final transcript past its deadline). So the server
refuses *before* that, cleanly: a ``busy`` error and close 1013, which the client can show.

* **Capacity** (:class:`Capacity`): the conversations the process carries with the configured
  pipeline. ``server.max_sessions`` sets it outright; else ``server.capacity_per_core`` times
  the cores this process may use (:func:`available_cores`: its CPU affinity, bounded by a
  cgroup quota); else it is measured at start-up (``voicecore.server.calibration``): the CPU
  one conversation second costs, and as many conversations as fit in ``server.cpu_budget`` of
  the cores.
* **Slots are taken at hello** (:class:`Admission`): a socket that has not said ``hello`` holds
  no conversation slot, only a *pending* place (``server.max_pending`` of them; one more is
  closed at once), and only for ``server.hello_timeout_s`` from its TCP connection.
* **Per client address**: one address holds at most ``server.max_connections_per_address``
  ``/ws`` connections, pending or talking (a burst from one host cannot take the server);
  behind a reverse proxy the address comes from ``X-Forwarded-For`` when the proxy is listed
  in ``server.trusted_proxies`` (:func:`client_address`).

:class:`Admission` is bookkeeping without I/O or clock (the server calls it as connections
come and go), so every rule is a plain unit test.
"""

from __future__ import annotations

import enum
import ipaddress
import math
import os
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal

from voicecore.server.ledger import Ledger

__all__ = [
    "MAX_CAPACITY",
    "Admission",
    "Capacity",
    "Refusal",
    "Ticket",
    "available_cores",
    "client_address",
]

MAX_CAPACITY: Final = 1000
"""The most conversations a measured capacity allows one process (each holds a socket, a
few tasks and a pacer stream: beyond this, open files and the event loop's fairness are the
limit, not the CPU); ``server.max_sessions`` may set more."""


def available_cores(cgroup_root: Path = Path("/sys/fs/cgroup")) -> float:
    """The CPU cores this process may use: its CPU affinity, bounded by its cgroup's CPU
    quota (``cpu.max`` in cgroup v2, ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in v1), as a
    container sees it. At least 1."""
    try:
        cores = float(len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        cores = float(os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cores = min(cores, quota)
    return max(1.0, cores)


def _cgroup_quota(root: Path) -> float | None:
    """The cgroup's CPU quota in cores, or None when there is none (or none is readable)."""
    try:
        fields = (root / "cpu.max").read_text().split()
        if len(fields) == 2 and fields[0] != "max":
            return int(fields[0]) / int(fields[1])
        return None
    except (OSError, ValueError):
        pass
    for folder in ("cpu,cpuacct", "cpu"):
        try:
            quota = int((root / folder / "cpu.cfs_quota_us").read_text())
            period = int((root / folder / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return quota / period if quota > 0 and period > 0 else None
    return None


@dataclass(frozen=True)
class Capacity:
    """The conversations the server carries at once, and where that figure comes from.

    Attributes:
        max_sessions: the limit: one more conversation is refused with ``busy``.
        source: ``"max_sessions"`` (configured outright), ``"capacity_per_core"``
            (configured per core) or ``"calibrated"`` (measured at start-up).
        cores: the cores the process may use (:func:`available_cores`).
        per_core: conversations per core (configured, or measured).
        session_cpu: CPU seconds one second of conversation costs with this pipeline, as
            measured at start-up (None unless calibrated).
        cpu_budget: the share of the cores the measured capacity lets conversations use.
    """

    max_sessions: int
    source: Literal["max_sessions", "capacity_per_core", "calibrated"]
    cores: float
    per_core: float
    session_cpu: float | None = None
    cpu_budget: float | None = None

    @classmethod
    def configured(
        cls, cores: float, *, max_sessions: int | None, capacity_per_core: float | None
    ) -> Capacity | None:
        """The capacity the settings give without measuring: ``max_sessions`` if set, else
        ``capacity_per_core`` times ``cores``; None when neither is set (measure it)."""
        if max_sessions is not None:
            return cls(max_sessions, "max_sessions", cores, max_sessions / cores)
        if capacity_per_core is not None:
            sessions = max(1, math.floor(capacity_per_core * cores))
            return cls(sessions, "capacity_per_core", cores, capacity_per_core)
        return None

    @classmethod
    def calibrated(cls, cores: float, *, session_cpu: float, cpu_budget: float) -> Capacity:
        """The capacity measured at start-up: as many conversations as fit in
        ``cpu_budget`` of ``cores`` when each costs ``session_cpu`` CPU seconds per second
        (at least 1, at most :data:`MAX_CAPACITY`).

        Raises:
            ValueError: ``session_cpu`` or ``cpu_budget`` not positive.
        """
        if not session_cpu > 0 or not cpu_budget > 0:
            raise ValueError(
                f"session_cpu and cpu_budget must be > 0, got {session_cpu}, {cpu_budget}"
            )
        sessions = max(1, min(MAX_CAPACITY, math.floor(cores * cpu_budget / session_cpu)))
        return cls(sessions, "calibrated", cores, sessions / cores, session_cpu, cpu_budget)

    def describe(self) -> str:
        """One line for the server's start-up output."""
        per_core = f"{self.per_core:.3g} per core on {self.cores:g} cores"
        if self.source == "calibrated":
            assert self.session_cpu is not None
            assert self.cpu_budget is not None
            return (
                f"capacity {self.max_sessions} conversations ({per_core}: one costs "
                f"{100 * self.session_cpu:.2g} % of a core, measured at start-up; "
                f"{100 * self.cpu_budget:g} % of the cores budgeted; "
                "--server-capacity-per-core or --max-sessions overrides)"
            )
        return f"capacity {self.max_sessions} conversations ({per_core}, from server.{self.source})"

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Capacity:
        """Reads :meth:`to_json`'s figures back (a worker adopting the capacity the first
        worker measured)."""
        return cls(
            int(data["max_sessions"]),
            data["source"],
            float(data["cores"]),
            float(data["per_core"]),
            data.get("session_cpu"),
            data.get("cpu_budget"),
        )

    def to_json(self) -> dict[str, Any]:
        """The figures as ``/healthz`` reports them (see docs/deployment.md)."""
        return {
            "max_sessions": self.max_sessions,
            "source": self.source,
            "cores": self.cores,
            "per_core": round(self.per_core, 3),
            "session_cpu": None if self.session_cpu is None else round(self.session_cpu, 4),
            "cpu_budget": self.cpu_budget,
        }


class Refusal(enum.StrEnum):
    """Why a connection was turned away (``/healthz`` and ``/metrics`` count each)."""

    CAPACITY = "capacity"
    """The server carries as many conversations as it can: ``busy``."""
    ADDRESS = "address"
    """The client's address holds as many connections as it may: ``busy``."""
    PENDING = "pending"
    """Too many connections not yet in a conversation: closed at once, unanswered."""
    HELLO_TIMEOUT = "hello_timeout"
    """No ``hello`` within ``hello_timeout_s`` of the TCP connection."""


@dataclass(eq=False)
class Ticket:
    """One connection's place in the admission books: pending, then in a conversation.

    Attributes:
        address: the client's address, once known (after the HTTP request).
        in_session: it holds a conversation slot (after ``hello``).
        released: it holds nothing any more.
    """

    address: str | None = None
    in_session: bool = False
    released: bool = False


class Admission:
    """The admission books: pending connections, conversations, connections per address.

    No I/O, no clock, no Trio: the server tells it what happens to each connection
    (:meth:`connect`, :meth:`identify`, :meth:`admit`, :meth:`release`) and does what it
    answers. Every refusal is counted in :attr:`refused`.

    Args:
        max_sessions: conversations at once.
        max_pending: connections not yet in a conversation at once.
        max_per_address: ``/ws`` connections (pending or in a conversation) one address may
            hold; 0: no limit (counted per worker).
        shared: the books of all the server's workers (``--workers``): ``max_sessions`` is
            then the limit of all of them together; None: this process alone.

    Raises:
        ValueError: ``max_sessions`` or ``max_pending`` below 1, ``max_per_address`` below 0.
    """

    def __init__(
        self,
        *,
        max_sessions: int,
        max_pending: int,
        max_per_address: int,
        shared: Ledger | None = None,
    ) -> None:
        if max_sessions < 1 or max_pending < 1 or max_per_address < 0:
            raise ValueError(
                "max_sessions and max_pending must be >= 1 and max_per_address >= 0, got "
                f"{max_sessions}, {max_pending}, {max_per_address}"
            )
        self.max_sessions = max_sessions
        self.max_pending = max_pending
        self.max_per_address = max_per_address
        self.shared = shared
        self.pending = 0
        self.sessions = 0
        self.peak_sessions = 0
        self.admitted = 0
        self.refused: Counter[Refusal] = Counter()
        self._by_address: Counter[str] = Counter()

    def __repr__(self) -> str:
        return (
            f"Admission(sessions={self.sessions}/{self.max_sessions}, "
            f"pending={self.pending}/{self.max_pending}, refused={dict(self.refused)})"
        )

    @property
    def full(self) -> bool:
        """Every conversation slot is taken (by any worker, with ``shared`` books)."""
        if self.shared is not None:
            return self.shared.sessions() >= self.max_sessions
        return self.sessions >= self.max_sessions

    def connections_from(self, address: str) -> int:
        """The ``/ws`` connections ``address`` holds now."""
        return self._by_address[address]

    def connect(self) -> Ticket | None:
        """A TCP connection arrived: its pending ticket, or None (counted) when
        ``max_pending`` connections are pending already: close it at once."""
        if self.pending >= self.max_pending:
            self.refused[Refusal.PENDING] += 1
            return None
        self.pending += 1
        if self.shared is not None:
            self.shared.connected(+1)
        return Ticket()

    def identify(self, ticket: Ticket, address: str) -> Refusal | None:
        """The connection is a WebSocket from ``address``: counts it against its address.
        Refuses (and counts) when every conversation slot is taken (no point awaiting its
        ``hello``) or the address holds ``max_per_address`` connections already."""
        if self.full:
            self.refused[Refusal.CAPACITY] += 1
            return Refusal.CAPACITY
        if self.max_per_address and self._by_address[address] >= self.max_per_address:
            self.refused[Refusal.ADDRESS] += 1
            return Refusal.ADDRESS
        ticket.address = address
        self._by_address[address] += 1
        return None

    def admit(self, ticket: Ticket) -> Refusal | None:
        """The client said ``hello``: takes a conversation slot, or refuses (and counts)
        when all are taken."""
        if ticket.released or ticket.in_session:
            raise ValueError(f"{ticket} cannot be admitted")
        taken = self.shared.take(self.max_sessions) if self.shared is not None else not self.full
        if not taken:
            self.refused[Refusal.CAPACITY] += 1
            return Refusal.CAPACITY
        self.pending -= 1
        self.sessions += 1
        self.admitted += 1
        self.peak_sessions = max(self.peak_sessions, self.sessions)
        ticket.in_session = True
        return None

    def timed_out(self, ticket: Ticket) -> None:
        """The connection said no ``hello`` in time (counted; :meth:`release` it)."""
        if not ticket.in_session:
            self.refused[Refusal.HELLO_TIMEOUT] += 1

    def release(self, ticket: Ticket) -> None:
        """The connection is gone: frees what it held (idempotent)."""
        if ticket.released:
            return
        ticket.released = True
        if self.shared is not None:
            self.shared.connected(-1)
        if ticket.in_session:
            self.sessions -= 1
            if self.shared is not None:
                self.shared.give_back()
        else:
            self.pending -= 1
        if ticket.address is not None:
            self._by_address[ticket.address] -= 1
            if not self._by_address[ticket.address]:
                del self._by_address[ticket.address]

    def to_json(self) -> dict[str, Any]:
        """The books as ``/healthz`` reports them (see docs/deployment.md)."""
        return {
            "sessions": self.sessions,
            "pending": self.pending,
            "peak_sessions": self.peak_sessions,
            "admitted": self.admitted,
            "refused": {reason.value: self.refused[reason] for reason in Refusal},
        }


def client_address(
    peer: str, forwarded_for: str | None, trusted_proxies: Iterable[str] = ()
) -> str:
    """The client's address: ``peer`` (the TCP peer), unless ``peer`` is a trusted proxy
    and ``forwarded_for`` (its ``X-Forwarded-For`` header) names one: then the right-most
    address in it that is not itself a trusted proxy (the left ones are the client's word,
    which anybody can forge).

    Args:
        peer: the TCP peer's IP address.
        forwarded_for: the ``X-Forwarded-For`` header (comma-separated addresses), if any.
        trusted_proxies: addresses or networks (``10.0.0.0/8``) of trusted proxies.
    """
    networks = [ipaddress.ip_network(p.strip(), strict=False) for p in trusted_proxies]

    def trusted(address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in network for network in networks)

    if not networks or not forwarded_for or not trusted(peer):
        return peer
    hops = [hop.strip() for hop in forwarded_for.split(",") if hop.strip()]
    for hop in reversed(hops):
        if not trusted(hop):
            return hop
    return hops[0] if hops else peer
