"""The simulated client player every benchmark client plays the agent's audio into.

``PlayoutModel`` is the web page's player (``web/lib/ring.mjs``) in continuous time, driven
by the protocol's events: agent frames, ``agent_done``, ``clear``, ``pause`` and ``resume``
(the user talked over the agent: playback stops with everything kept, then goes on from the
same sample). It starts a reply once
``start_ms`` is buffered (or after waiting ``start_ms``), drains in real time, and counts an
underrun when it ran dry inside a reply and audio then resumed (dry at the reply's end,
``agent_done``, is the reply ending, not a gap).

For each agent frame that arrives while a reply plays, it records the frame's *lateness*:
``cushion_ms - buffered_ms`` at its arrival. 0 means the frame arrived with a full cushion
still ahead of it; ``cushion_ms`` means it arrived just as the player needed it; above the
cushion, the player had been silent for the excess (an underrun).
"""

from __future__ import annotations

__all__ = ["PlayoutModel"]


class PlayoutModel:
    """The web page's player in continuous time (``web/lib/ring.mjs``), driven by events.

    States: idle (between replies), waiting (a reply's first audio is buffering: the page
    starts once ``start_ms`` is buffered, the reply is complete, or it has waited
    ``start_ms``), playing (draining ``buffered_ms`` in real time), starved (dry inside a
    reply). All times are in seconds of one monotonic clock, all durations in ms.

    Args:
        cushion_ms: the server's cushion (``ready.cushion_ms``), the lateness reference.
        frame_ms: the duration of one agent frame.
        start_ms: the page's start threshold (``startMs``, 40 ms by default).
    """

    def __init__(self, cushion_ms: float, frame_ms: float, start_ms: float = 40.0) -> None:
        self.cushion_ms = cushion_ms
        self.frame_ms = frame_ms
        self.start_ms = start_ms
        self.buffered_ms = 0.0
        self.played_ms = 0.0
        self.underruns = 0
        self.underrun_ms = 0.0
        self.lateness_ms: list[float] = []
        """Lateness of every frame that arrived while a reply played (see the module doc)."""
        self.gaps: list[tuple[int, float]] = []
        """Each underrun as (index of the frame that ended it within its reply, gap in ms)."""
        self._reply_frames = 0
        self._state = "idle"
        self._last = 0.0
        self._dry_at = 0.0
        self._wait_until = 0.0
        self._written_ms = 0.0
        self._done_at_ms = -1.0
        self.paused = False
        """Between a ``pause`` and its ``resume`` (or a ``clear``): nothing drains."""
        self.pauses = 0

    def __repr__(self) -> str:
        return (
            f"PlayoutModel({self._state}, buffered={self.buffered_ms:.0f} ms, "
            f"underruns={self.underruns})"
        )

    def advance(self, now: float) -> None:
        """Plays out the audio due between the last event and ``now`` (seconds)."""
        if self.paused:
            self._last = now
            return
        if self._state == "waiting" and now >= self._wait_until:
            self._state = "playing"  # waited the threshold's duration: playback began then
            self._last = self._wait_until
        if self._state == "playing":
            elapsed_ms = max(0.0, (now - self._last) * 1000.0)
            if self.buffered_ms >= elapsed_ms:
                self.buffered_ms -= elapsed_ms
                self.played_ms += elapsed_ms
            else:
                self._dry_at = self._last + self.buffered_ms / 1000.0
                self.played_ms += self.buffered_ms
                self.buffered_ms = 0.0
                # Dry exactly at the reply's end is the reply finishing (ring.mjs: DONE_AT).
                self._state = "idle" if self._written_ms == self._done_at_ms else "starved"
        self._last = now

    def frame(self, now: float) -> None:
        """An agent frame arrived at ``now``: records its lateness, counts a gap it ends."""
        self.advance(now)
        if self._state == "playing":
            self.lateness_ms.append(self.cushion_ms - self.buffered_ms)
        elif self._state == "starved":
            gap_ms = (now - self._dry_at) * 1000.0
            self.lateness_ms.append(self.cushion_ms + gap_ms)
            self.underruns += 1
            self.underrun_ms += gap_ms
            self.gaps.append((self._reply_frames, gap_ms))
        elif self._state == "idle":
            self._reply_frames = 0
            self._state = "waiting"
            self._wait_until = now + self.start_ms / 1000.0
        self._reply_frames += 1
        self.buffered_ms += self.frame_ms
        self._written_ms += self.frame_ms
        if self._state == "starved" or (
            self._state == "waiting" and self.buffered_ms >= self.start_ms
        ):
            self._state = "playing"

    def done(self, now: float) -> None:
        """``agent_done``: the reply ends where the audio received so far ends."""
        self.advance(now)
        self._done_at_ms = self._written_ms
        if self._state == "starved":
            self._state = "idle"
        elif self._state == "waiting":
            self._state = "playing"  # the whole reply is there: no reason to wait

    def clear(self, now: float) -> None:
        """``clear`` (barge-in): the buffered audio is dropped, the player goes idle (a
        pause ends)."""
        self.advance(now)
        self.buffered_ms = 0.0
        self._state = "idle"
        self.paused = False

    def pause(self, now: float) -> None:
        """``pause``: playback stops at ``now``; what is buffered stays, frames keep coming."""
        self.advance(now)
        if not self.paused:
            self.paused = True
            self.pauses += 1

    def resume(self, now: float) -> None:
        """``resume``: playback goes on from where it paused."""
        self.advance(now)
        self.paused = False
