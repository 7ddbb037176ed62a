"""What a ``VoiceServer`` says about itself: ``/healthz``'s JSON and its own ``/metrics``
families.

Both read the server's books (admission, capacity, the workers' ledger, the conversation
store, the pacer, memory) at the moment they are asked, and change nothing.
``docs/deployment.md`` describes every field and family; fields are only ever added within
a :data:`HEALTH_SCHEMA`.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Final

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from voicecore.metrics import diagnostics_families, session_families
from voicecore.server.admission import Refusal
from voicecore.server.memory import rss_bytes

if TYPE_CHECKING:  # the server holds its reporter: importing it here would be a cycle
    from voicecore.server.app import VoiceServer

__all__ = ["HEALTH_SCHEMA", "ServerCollector", "health_report", "server_families"]

HEALTH_SCHEMA: Final = 1
"""The version of ``/healthz``'s JSON (docs/deployment.md); fields are only ever added
within a version."""


def health_report(server: VoiceServer) -> dict[str, Any]:
    """What ``/healthz`` reports (a JSON object; docs/deployment.md describes each field)."""
    stats = server.pacer.stats()
    admission = server.admission.to_json() if server.admission is not None else None
    capacity = server.capacity
    status = server.status()
    live = server.live_sessions()
    settings = server.settings
    store = server.conversations
    return {
        "schema": HEALTH_SCHEMA,
        "status": status,
        "ready": status == "ok",
        "sessions": server.sessions,
        "max_sessions": None if capacity is None else capacity.max_sessions,
        "available": (
            None if capacity is None else max(0, capacity.max_sessions - server.server_sessions)
        ),
        "server": {
            "sessions": server.server_sessions,
            "workers": None if server.ledger is None else server.ledger.to_json()["workers"],
        },
        "pending": None if admission is None else admission["pending"],
        "capacity": None if capacity is None else capacity.to_json(),
        "limits": {
            "max_pending": settings.max_pending,
            "max_connections_per_address": settings.max_connections_per_address,
            "hello_timeout_s": settings.hello_timeout_s,
        },
        "admission": admission,
        "pacer": {
            "scheduling": stats.scheduling,
            "open_streams": stats.open_streams,
            "starved_frames": stats.underruns,
        },
        "conversations": {
            "store": None if store is None else store.kind,
            "store_errors": None if store is None else store.errors,
            **server.conversation_counts,
        },
        "clients": {
            "underruns": server.finished_client_underruns
            + sum(s.metrics.client_underruns for s in live),
        },
        "memory": {
            "rss_bytes": rss_bytes(),
            "start_rss_bytes": server.start_rss_bytes,
            "releases": server.memory.stats.releases,
            "last_freed_bytes": server.memory.stats.last_freed_bytes,
        },
    }


def server_families(server: VoiceServer) -> Iterator[Metric]:
    """The server's own metric families, collected at each scrape."""
    live = [session.metrics for session in server.live_sessions()]
    yield from session_families([*live, *server.recent], open_sessions=len(live))
    if server.diagnostics is not None:
        yield from diagnostics_families(server.diagnostics)
    admission, capacity = server.admission, server.capacity
    yield GaugeMetricFamily(
        "voicecore_server_sessions",
        "Conversations open in all the server's workers (a pod's load: scale on this).",
        value=server.server_sessions,
    )
    if admission is not None and capacity is not None:
        yield GaugeMetricFamily(
            "voicecore_capacity_sessions",
            "Conversations the server carries at once, all its workers together (more "
            "are refused with busy).",
            value=capacity.max_sessions,
        )
        yield GaugeMetricFamily(
            "voicecore_pending_connections",
            "Connections not yet in a conversation (awaiting their request or hello).",
            value=admission.pending,
        )
        refused = CounterMetricFamily(
            "voicecore_admission_refusals",
            "Connections refused, by reason: capacity and address (busy), pending "
            "(closed at once), hello_timeout.",
            labels=["reason"],
        )
        for reason in Refusal:
            refused.add_metric([reason.value], admission.refused[reason])
        yield refused
        yield CounterMetricFamily(
            "voicecore_admitted_sessions",
            "Conversations admitted since the server started.",
            value=admission.admitted,
        )
    yield CounterMetricFamily(
        "voicecore_memory_releases",
        "Times the server gave memory back to the system after conversations ended.",
        value=server.memory.stats.releases,
    )


class ServerCollector(Collector):
    """Collects a ``VoiceServer``'s own families at each scrape (``prometheus_client``)."""

    def __init__(self, server: VoiceServer) -> None:
        self._server = server

    def collect(self) -> Iterator[Metric]:
        return server_families(self._server)
