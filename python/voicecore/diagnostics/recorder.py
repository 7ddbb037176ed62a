"""A running server's timeline, written to a JSON file for ``voicecore diagnose``.

``voicecore serve --timeline PATH`` makes the server (``voicecore.server.app``) run a
``TimelineRecorder``: the process probes' timeline (``probes.Diagnostics``, on
``time.monotonic``) and every session's timeline (on the Trio clock) are merged onto the
probes' clock and dumped periodically and at shutdown, so that a glitch heard live can be
lined up with its cause afterwards (``analysis``, ``drawing``). It is apart from them because
it runs inside the live server, on its Trio loop, while they work offline on the file.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import deque
from pathlib import Path

import trio

from voicecore.diagnostics.timeline import Timeline, event_fields

__all__ = ["TimelineRecorder"]


class TimelineRecorder:
    """Writes a server's timeline to a JSON file: the process probes' timeline and every
    session's, merged on the probes' clock (``time.monotonic``).

    A session's timeline runs on the Trio clock (``trio.current_time``); the recorder
    measures the offset between the two clocks inside the Trio run and maps each session
    event onto ``time.monotonic``, adding a ``session`` field. Finished sessions are kept
    (the last ``keep_sessions``) so that the file still shows them.

    ``run`` dumps every ``interval_s`` seconds and once more when cancelled (the server's
    shutdown), writing to a temporary file renamed over ``path``: a reader never sees a
    half-written file.

    Args:
        path: the JSON file (``Timeline.to_json`` format, readable by ``voicecore diagnose``).
        probes: the process diagnostics' timeline, or ``None``.
        interval_s: seconds between periodic dumps (> 0).
        keep_sessions: sessions kept after they end (>= 0). Each keeps up to
            ``SERVER_TIMELINE_EVENTS`` events; a dump takes about 1 s and 10 MB per 100,000
            events (measured on the project's 2-core VM).

    Raises:
        ValueError: a parameter out of range.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        probes: Timeline | None,
        *,
        interval_s: float = 10.0,
        keep_sessions: int = 10,
    ) -> None:
        if not interval_s > 0.0:
            raise ValueError(f"interval_s must be > 0 s, got {interval_s}")
        if keep_sessions < 0:
            raise ValueError(f"keep_sessions must be >= 0, got {keep_sessions}")
        self.path = Path(path)
        self.probes = probes
        self.interval_s = interval_s
        self._live: dict[str, Timeline] = {}
        self._ended: deque[tuple[str, Timeline]] = deque(maxlen=keep_sessions)
        self._trio_minus_monotonic: float | None = None
        self.dumps = 0

    def __repr__(self) -> str:
        return (
            f"TimelineRecorder(path={str(self.path)!r}, sessions={len(self._live)}, "
            f"ended={len(self._ended)}, dumps={self.dumps})"
        )

    def add_session(self, session_id: str, timeline: Timeline) -> None:
        """Records ``timeline`` (on the Trio clock) as session ``session_id``'s."""
        self._live[session_id] = timeline

    def end_session(self, session_id: str) -> None:
        """Session ``session_id`` ended: its timeline is kept among the recent ones."""
        timeline = self._live.pop(session_id, None)
        if timeline is not None:
            self._ended.append((session_id, timeline))

    def merged(self) -> Timeline:
        """Every recorded event on ``time.monotonic``, in one timeline."""
        offset = self._trio_minus_monotonic or 0.0
        sessions = [*self._ended, *self._live.items()]
        probe_events = self.probes.events() if self.probes is not None else []
        session_events = [(sid, e) for sid, tl in sessions for e in tl.events()]
        merged = Timeline(max_events=max(len(probe_events) + len(session_events), 1))
        for event in probe_events:
            merged.record_at(event["t"], event["kind"], **event_fields(event))
        for session_id, event in session_events:
            fields = {**event_fields(event), "session": session_id}
            merged.record_at(float(event["t"]) - offset, event["kind"], **fields)
        return merged

    def dump(self) -> None:
        """Writes ``merged()`` to ``path`` atomically (temporary file, then rename)."""
        text = self.merged().to_json()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=self.path.name, dir=self.path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        self.dumps += 1

    async def run(self) -> None:
        """Dumps every ``interval_s`` seconds until cancelled, then once more.

        The periodic dumps run in a worker thread: serialising many sessions' events takes
        long enough to show up as event-loop lag (the thread still shares the GIL, but the
        loop gets it back every switch interval). The last one, on cancellation, runs on
        the loop: the server is stopping and a cancelled task cannot wait for a thread.
        """
        self._trio_minus_monotonic = _clock_offset()
        try:
            while True:
                await trio.sleep(self.interval_s)
                await trio.to_thread.run_sync(self.dump)
        finally:
            self.dump()


def _clock_offset() -> float:
    """``trio.current_time() - time.monotonic()``, from the tightest of a few readings."""
    best: tuple[float, float] | None = None
    for _ in range(5):
        before = time.monotonic()
        trio_now = trio.current_time()
        after = time.monotonic()
        if best is None or after - before < best[0]:
            best = (after - before, trio_now - (before + after) / 2.0)
    assert best is not None
    return best[1]
