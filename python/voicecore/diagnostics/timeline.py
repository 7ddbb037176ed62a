"""The timeline: one bounded, thread-safe record of timestamped events on one clock.

Every probe of ``voicecore.diagnostics`` and the engine's stage events are recorded on a
``Timeline``, so that an audio gap can be lined up with its cause (``causes_near``); it dumps
to JSON and loads back for offline analysis (``voicecore diagnose``). See the package's
docstring for the one-clock rule.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

__all__ = [
    "CAUSE_KINDS",
    "Timeline",
]

CAUSE_KINDS: Final[frozenset[str]] = frozenset({"loop_lag", "gc_pause", "cpu_throttled"})
"""Timeline kinds that explain an audio gap (see ``Timeline.causes_near``)."""


class Timeline:
    """A bounded, thread-safe record of timestamped events on one clock.

    Each event is a dict ``{"t": seconds, "kind": str, **fields}``. Kinds used by voicecore:
    a reply's lifecycle (``"agent_audible"``: its first frame released; ``"turn_end"`` /
    ``"turn_cancelled"``: played out / cut), ``"frame_late"`` (a frame released more than the
    pacer's late threshold after its deadline, with ``lateness_ms``; on-time frames are not
    recorded), ``"client_cushion"``, ``"loop_lag"``, ``"gc_pause"``, ``"cpu_throttled"`` and
    the engine's stage events (``"speech_start"``, ``"speech_end"``, ``"stt_final"``,
    ``"llm_first_token"``, ``"tts_first_audio"``, ``"turn_start"``, ``"barge_in"``, ...).

    When full, the oldest events are evicted (counted in ``evicted``): a long session keeps
    its recent history at a bounded memory cost.

    Thread safety: ``record`` may be called from any thread (the GC callback runs in whatever
    thread triggered the collection, possibly while that thread is inside ``record``). The
    event dict is built before taking the lock, and the critical section allocates no object
    the garbage collector tracks, so a collection cannot start inside it; the lock is
    re-entrant anyway, so a nested ``record`` from a GC callback could never deadlock.

    Args:
        clock: returns now in seconds; ``time.monotonic`` (the pacer's clock) by default,
            ``trio.current_time`` under a ``MockClock`` in tests.
        max_events: capacity in events (>= 1).

    Raises:
        ValueError: ``max_events`` < 1.
    """

    def __init__(
        self, *, clock: Callable[[], float] = time.monotonic, max_events: int = 100_000
    ) -> None:
        if max_events < 1:
            raise ValueError(f"max_events must be >= 1, got {max_events}")
        self.clock = clock
        self.max_events = max_events
        self._events: deque[dict[str, Any]] = deque(maxlen=max_events)
        self._lock = threading.RLock()
        self._evicted = 0

    def __repr__(self) -> str:
        return (
            f"Timeline(events={len(self._events)}, max_events={self.max_events}, "
            f"evicted={self._evicted})"
        )

    def __len__(self) -> int:
        return len(self._events)

    @property
    def evicted(self) -> int:
        """Events evicted because the timeline was full."""
        return self._evicted

    def now(self) -> float:
        """Now on the timeline's clock, in seconds."""
        return self.clock()

    def record(self, kind: str, **fields: Any) -> None:
        """Records an event of ``kind`` at now (the timeline's clock) with extra ``fields``.

        ``fields`` must not use the keys ``t`` and ``kind``; values should be JSON-serialisable
        (others are exported with ``str``).
        """
        self._append({"t": self.clock(), "kind": kind, **fields})

    def record_at(self, t: float, kind: str, **fields: Any) -> None:
        """Records an event that happened at ``t`` (seconds, on the timeline's clock), e.g. a
        pacer frame at ``frame.released_ns / 1e9`` or a GC pause at its start."""
        self._append({"t": t, "kind": kind, **fields})

    def _append(self, event: dict[str, Any]) -> None:
        with self._lock:
            if len(self._events) == self.max_events:
                self._evicted += 1
            self._events.append(event)

    def events(
        self, kind: str | None = None, *, since: float | None = None, until: float | None = None
    ) -> list[dict[str, Any]]:
        """Events in time order (recording order among equal times), optionally only those of
        ``kind`` and with ``since <= t <= until`` (seconds)."""
        with self._lock:
            snapshot = list(self._events)
        return sorted(
            (
                e
                for e in snapshot
                if (kind is None or e["kind"] == kind)
                and (since is None or e["t"] >= since)
                and (until is None or e["t"] <= until)
            ),
            key=lambda e: float(e["t"]),
        )

    def causes_near(self, t: float, window_s: float = 0.2) -> list[dict[str, Any]]:
        """Events of ``CAUSE_KINDS`` (loop lag, GC pause, CPU throttling) within ``window_s``
        seconds before or after ``t``: what to look at when the audio had a gap at ``t``.

        A loop-lag event is recorded when the canary wakes, i.e. at the *end* of the stall it
        measured (``t - lag_ms / 1000`` is when it began); a GC pause at its start.
        """
        return [
            e
            for e in self.events(since=t - window_s, until=t + window_s)
            if e["kind"] in CAUSE_KINDS
        ]

    def clear(self) -> None:
        """Forgets every event (and the eviction count)."""
        with self._lock:
            self._events.clear()
            self._evicted = 0

    def to_json(self) -> str:
        """The timeline as JSON: ``{"clock": ..., "evicted": n, "events": [...]}``, events in
        time order, times in seconds."""
        clock_name = getattr(self.clock, "__qualname__", type(self.clock).__qualname__)
        return json.dumps(
            {"clock": clock_name, "evicted": self._evicted, "events": self.events()},
            default=str,
        )

    def dump(self, path: str | os.PathLike[str]) -> None:
        """Writes ``to_json()`` to ``path``."""
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def from_json(cls, text: str, *, max_events: int | None = None) -> Timeline:
        """A timeline holding the events of ``to_json()`` output, for offline analysis (e.g.
        ``causes_near``); its clock is ``time.monotonic``, its capacity ``max_events`` or the
        number of events (at least 1).

        Raises:
            ValueError: the text is not JSON of a timeline (``json.JSONDecodeError`` is a
                ``ValueError``), or an event lacks ``t`` or ``kind``.
        """
        data = json.loads(text)
        events = data.get("events") if isinstance(data, dict) else None
        if not isinstance(events, list):
            raise ValueError("not a timeline: expected an object with an 'events' list")
        timeline = cls(max_events=max_events or max(len(events), 1))
        for event in events:
            if not isinstance(event, dict) or "t" not in event or "kind" not in event:
                raise ValueError(f"not a timeline event: {event!r}")
            timeline._append(event)
        timeline._evicted += int(data.get("evicted", 0))
        return timeline


def event_fields(event: dict[str, Any]) -> dict[str, Any]:
    """An event's fields beyond its time and kind: the keyword arguments ``record_at`` takes
    to record a copy of it on another timeline (a window of it, a merge of several)."""
    return {k: v for k, v in event.items() if k not in ("t", "kind")}
