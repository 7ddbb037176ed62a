"""Drives the demo page in headless Chromium and records what crosses the WebSocket.

:class:`DemoSession` opens the page the server serves, connects it (the page's
``window.voicecore.connect()``, what its Connect button does), and records from
outside the page (Playwright's view of the socket worker's WebSocket) every message in both
directions with its arrival time. The agent audio it received is cut into one array per turn
(at each ``agent_done`` or ``clear``), the reference the recorded output is compared with.
The page's own recording (the client's tap worklet: the player's output and the mic, on the
AudioContext's frame clock) is fetched at the end with :meth:`DemoSession.stop_recording`.

The page's URL parameters (:func:`page_query`) choose the player's mode, whether the client
announces the ``pause`` capability, and the echo simulation (a speakerphone without echo
cancellation). What the page measured of pauses and barge-ins comes from
:meth:`DemoSession.barge_ins` and :meth:`DemoSession.ducks`, on the same frame clock as the
recording (:meth:`Recording.index`).
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from .audio_analysis import Int16Array, to_int16

if TYPE_CHECKING:
    from harness.launcher import ServerProcess

#: Longest recording the tap keeps, seconds (every scenario is shorter).
RECORDING_MAX_S = 90

# The page side, in one place: how the tests reach the demo page's client.
_CONNECT_JS = """async (maxSeconds) => {
  const hooks = window.voicecore;
  const ready = hooks.connect();
  // Record from the moment the audio graph exists, before the server is ready, so that the
  // recording holds the mic from the WAV's first utterance on.
  while (!hooks.client.tap && hooks.client.state !== "closed") {
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
  hooks.client.tap?.start(maxSeconds);
  return await ready;
}"""
_STOP_RECORDING_JS = """async () => {
  const r = await window.voicecore.client.tap.stop();
  const encode = (floats) => {
    const bytes = new Uint8Array(floats.buffer, floats.byteOffset, floats.byteLength);
    let text = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      text += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    }
    return btoa(text);
  };
  return { sampleRate: r.sampleRate, startFrame: r.startFrame, frames: r.frames,
           truncated: r.truncated, output: encode(r.output), input: encode(r.input) };
}"""
_PLAYOUT_JS = "() => window.voicecore.client.playout"
_BARGE_INS_JS = "() => window.voicecore.client.bargeIns"
_DUCKS_JS = "() => window.voicecore.client.ducks"
_STATS_JS = "() => window.voicecore.stats()"
_BUSY_LOOP_JS = """([blockMs, everyMs]) => {
  window.__busyBlocks = 0;
  window.__busyLoop = setInterval(() => {
    const until = performance.now() + blockMs;
    while (performance.now() < until) {}  // the main thread does nothing else meanwhile
    window.__busyBlocks++;
  }, everyMs);
}"""
_STOP_BUSY_LOOP_JS = "() => { clearInterval(window.__busyLoop); return window.__busyBlocks; }"


def page_query(
    *, port_mode: bool = False, pause: bool = True, echo_loop: tuple[float, float] | None = None
) -> str:
    """The demo page's URL parameters: the ``MessagePort`` player instead of the shared ring
    (``port_mode``); a client that does not announce the ``pause`` capability, as one that
    predates it (``pause=False``: the server then cuts with ``clear`` only, the baseline);
    the echo simulation, ``(gain_db, delay_ms)``: the player's output fed back into what
    the page sends, the browser's echo canceller off (the client's ``echoLoop`` option)."""
    params = []
    if port_mode:
        params.append("mode=port")
    if not pause:
        params.append("pause=0")
    if echo_loop is not None:
        gain_db, delay_ms = echo_loop
        params += [f"echo_gain_db={gain_db:g}", f"echo_delay_ms={delay_ms:g}"]
    return "&".join(params)


@dataclass(frozen=True)
class Frame:
    """One WebSocket message: ``sent`` by the page or received from the server, at ``time``
    (``time.monotonic()`` when Playwright reported it)."""

    time: float
    sent: bool
    payload: bytes | str

    @cached_property
    def message(self) -> dict[str, Any] | None:
        """The JSON message, or None for binary audio."""
        return json.loads(self.payload) if isinstance(self.payload, str) else None


@dataclass(frozen=True)
class Reply:
    """The agent audio received for one turn and the message that ended it."""

    turn_id: int | None
    ended_by: str  # "agent_done", "clear" or "open" (still going when the test looked)
    audio: Int16Array
    frame_times: tuple[float, ...]  # when each audio frame arrived
    end_time: float  # when the message that ended it arrived (inf while still open)

    @property
    def first_frame_time(self) -> float:
        """When its first audio frame arrived."""
        return self.frame_times[0]

    @property
    def max_frame_gap_ms(self) -> float:
        """The longest wait between two of its audio frames, as Playwright saw them arrive
        (ms; includes the browser's event delivery, so only a coarse view of the network)."""
        return float(np.max(np.diff(self.frame_times), initial=0.0)) * 1000


@dataclass(frozen=True)
class Recording:
    """The page's tap: what it played (``output``, int16 values) and what its mic delivered
    (``input``, floats), sample-aligned from AudioContext frame ``start_frame``."""

    rate: int
    start_frame: int
    output: Int16Array
    input: np.ndarray[Any, np.dtype[np.float32]]

    def ms(self, samples: float) -> float:
        """``samples`` at the recording's rate, in milliseconds."""
        return samples * 1000.0 / self.rate

    def index(self, frame: int) -> int:
        """The recording index of AudioContext frame ``frame`` (a ``silentFrame``,
        ``resumeFrame`` or ``clearFrame`` the page reported)."""
        return frame - self.start_frame


class DemoSession:
    """The demo page in one browser tab, and the WebSocket traffic it made."""

    def __init__(self, page: Any, server: ServerProcess) -> None:
        self.page = page
        self.server = server
        self.frames: list[Frame] = []
        self.console: list[str] = []
        self.session: dict[str, Any] | None = None
        self.closed = False  # the WebSocket closed (the session is over)
        #: Seconds from asking the page to connect to the server's ``ready``: at most how
        #: long after the mic (and its WAV) started the server began to listen.
        self.connect_s = 0.0
        page.on("websocket", self._on_websocket)
        page.on("console", lambda m: self.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.console.append(f"pageerror: {e}"))

    def _on_websocket(self, ws: Any) -> None:
        ws.on("framereceived", lambda p: self.frames.append(Frame(time.monotonic(), False, p)))
        ws.on("framesent", lambda p: self.frames.append(Frame(time.monotonic(), True, p)))
        ws.on("close", lambda _: setattr(self, "closed", True))

    def open(self, query: str = "") -> None:
        """Loads the demo page (``query``: its URL parameters, e.g. ``mode=port``)."""
        self.page.goto(f"{self.server.url}/" + (f"?{query}" if query else ""))
        self.page.wait_for_function("() => window.voicecore !== undefined", timeout=10_000)

    @property
    def capabilities(self) -> list[str]:
        """The capabilities the server confirmed in ``ready`` (none from a server that
        predates them)."""
        assert self.session is not None, "not connected"
        return list(self.session.get("capabilities") or [])

    def require_server_pause(self) -> None:
        """Skips the test unless the server will pause this client (it confirmed the
        ``pause`` capability in ``ready``)."""
        if "pause" not in self.capabilities:
            pytest.skip("the server does not pause this client (no 'pause' in ready.capabilities)")

    def connect(self) -> dict[str, Any]:
        """Connects (what the page's Connect button does), starts the tap recording as soon
        as the audio graph exists, and returns the server's ``ready`` message."""
        began = time.monotonic()
        self.session = self.page.evaluate(_CONNECT_JS, RECORDING_MAX_S)
        self.connect_s = time.monotonic() - began
        assert self.session is not None
        return self.session

    def message_log(self) -> str:
        """The server's JSON messages, one per line, with their arrival time in seconds (for
        a failed test's output); audio is summarised as the number of frames between."""
        if not self.frames:
            return "(no WebSocket traffic)"
        start = self.frames[0].time
        lines: list[str] = []
        audio = 0
        for frame in self.frames:
            if frame.sent:
                continue
            msg = frame.message
            if msg is None:
                audio += 1
                continue
            if audio:
                lines.append(f"           ({audio} audio frames)")
                audio = 0
            lines.append(f"{frame.time - start:9.3f}  {json.dumps(msg)[:160]}")
        if audio:
            lines.append(f"           ({audio} audio frames)")
        return "\n".join(lines)

    def console_text(self) -> str:
        """Everything the page logged."""
        return "\n".join(self.console)

    # -- waiting -----------------------------------------------------------------------

    def pump(self, seconds: float) -> None:
        """Lets the page and Playwright's event delivery run for ``seconds``."""
        self.page.wait_for_timeout(seconds * 1000)

    def _check_alive(self, waiting_for: str) -> None:
        """Fails at once, rather than at a timeout, when the session is over."""
        if self.closed:
            seen = [m["type"] for m in self.messages()]
            errors = self.messages("error")
            raise AssertionError(
                f"the WebSocket closed while waiting for {waiting_for}; server sent {seen}; "
                f"errors: {errors}"
            )

    def messages(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The server's JSON messages so far (of type ``kind`` if given)."""
        found = []
        for frame in self.frames:
            msg = frame.message
            if not frame.sent and msg is not None and (kind is None or msg["type"] == kind):
                found.append(msg)
        return found

    def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout_s: float, what: str
    ) -> dict[str, Any]:
        """Waits for the first server message satisfying ``predicate`` and returns it."""
        deadline = time.monotonic() + timeout_s
        while True:
            for msg in self.messages():
                if predicate(msg):
                    return msg
            if time.monotonic() > deadline:
                seen = [m["type"] for m in self.messages()]
                raise AssertionError(f"no {what} within {timeout_s} s; server sent {seen}")
            self._check_alive(what)
            self.pump(0.02)

    def wait_for_type(self, kind: str, timeout_s: float, count: int = 1) -> dict[str, Any]:
        """Waits until ``count`` messages of type ``kind`` arrived; returns the last one."""
        deadline = time.monotonic() + timeout_s
        while len(found := self.messages(kind)) < count:
            if time.monotonic() > deadline:
                seen = [m["type"] for m in self.messages()]
                raise AssertionError(
                    f"{len(found)} of {count} {kind!r} within {timeout_s} s; server sent {seen}"
                )
            self._check_alive(repr(kind))
            self.pump(0.02)
        return found[count - 1]

    def wait_until_played(self, timeout_s: float = 10.0) -> None:
        """Waits until the player holds no audio (the reply has played out)."""
        deadline = time.monotonic() + timeout_s
        while (self.player_stats() or {}).get("bufferedMs", 1) > 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the player still holds audio after {timeout_s} s")
            self.pump(0.05)
        self.pump(0.2)  # a margin for the tap to record the tail

    # -- what was sent and played ------------------------------------------------------

    def replies(self) -> list[Reply]:
        """The agent audio received, one :class:`Reply` per turn."""
        replies: list[Reply] = []
        chunks: list[bytes] = []
        times: list[float] = []

        def reply(turn_id: int | None, ended_by: str, end_time: float) -> Reply:
            audio = np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.int16)
            return Reply(turn_id, ended_by, audio, tuple(times), end_time)

        for frame in self.frames:
            if frame.sent:
                continue
            if isinstance(frame.payload, bytes):
                chunks.append(frame.payload)
                times.append(frame.time)
                continue
            msg = frame.message
            if msg is not None and msg["type"] in ("agent_done", "clear") and chunks:
                replies.append(reply(msg.get("turn_id"), msg["type"], frame.time))
                chunks, times = [], []
        if chunks:
            replies.append(reply(None, "open", float("inf")))
        return replies

    def playout_reports(self) -> list[tuple[float, dict[str, Any]]]:
        """The ``playout`` reports the page sent to the server, with their times."""
        reports = []
        for frame in self.frames:
            msg = frame.message
            if frame.sent and msg is not None and msg.get("type") == "playout":
                reports.append((frame.time, msg))
        return reports

    def buffered_during(self, reply: Reply) -> dict[str, float]:
        """The player's buffer level (ms) in the page's reports while ``reply`` streamed in:
        from its first audio frame to its ``agent_done`` (after which the buffer drains)."""
        levels = [
            msg["buffered_ms"]
            for at, msg in self.playout_reports()
            if reply.first_frame_time <= at <= reply.end_time
        ]
        if not levels:
            return {}
        return {
            "buffered_ms_min": min(levels),
            "buffered_ms_median": round(float(np.median(levels)), 1),
            "reports": len(levels),
        }

    def player_stats(self) -> dict[str, Any] | None:
        """The client's latest PlayoutStats (bufferedMs, playedMs, underruns, underrunMs...)."""
        stats: dict[str, Any] | None = self.page.evaluate(_PLAYOUT_JS)
        return stats

    def barge_ins(self) -> list[dict[str, Any]]:
        """The barge-ins the page measured: ``turnId``, ``ms`` (the user's speech onset at the
        mic to the agent's silence at the speaker, output latency included), ``silentFrame``
        (the first silent sample, an AudioContext frame), ``via`` (``"pause"``: the clear
        confirmed a pause that had silenced the agent already; ``"clear"``: the clear did),
        ``clearFrame``, ``outputLatencyMs``."""
        found: list[dict[str, Any]] = self.page.evaluate(_BARGE_INS_JS)
        return found

    def ducks(self) -> list[dict[str, Any]]:
        """The pauses a ``resume`` ended, as the page measured them: ``turnId``, ``ms`` (speech
        onset to silence; None when no onset at the mic explains the pause: echo, noise),
        ``silentFrame``, ``resumeFrame``, ``pausedMs``, ``outputLatencyMs``."""
        found: list[dict[str, Any]] = self.page.evaluate(_DUCKS_JS)
        return found

    def pauses_in(self, recording: Recording) -> tuple[tuple[int, int], ...]:
        """The resumed pauses as ``(first silent sample, resume)`` indexes of ``recording``:
        what :func:`~audio_analysis.align_reply` takes as ``pauses``."""
        return tuple(
            (recording.index(d["silentFrame"]), recording.index(d["resumeFrame"]))
            for d in self.ducks()
        )

    def page_stats(self) -> dict[str, Any]:
        """The demo page's own figures (``window.voicecore.stats()``: mode, playout, turns,
        barge-ins it measured...)."""
        stats: dict[str, Any] = self.page.evaluate(_STATS_JS)
        return stats

    def stop_recording(self) -> Recording:
        """Ends the tap recording and returns it."""
        r = self.page.evaluate(_STOP_RECORDING_JS)
        assert not r["truncated"], f"the tap stopped recording after {RECORDING_MAX_S} s"
        output = np.frombuffer(base64.b64decode(r["output"]), dtype=np.float32)
        mic = np.frombuffer(base64.b64decode(r["input"]), dtype=np.float32)
        return Recording(int(r["sampleRate"]), int(r["startFrame"]), to_int16(output), mic)

    # -- stress ------------------------------------------------------------------------

    def block_main_thread(self, block_ms: float, every_ms: float) -> None:
        """Makes the page's main thread busy-loop ``block_ms`` every ``every_ms``."""
        self.page.evaluate(_BUSY_LOOP_JS, [block_ms, every_ms])

    def main_thread_blocks(self) -> int:
        """How many times the busy loop has blocked the main thread so far."""
        return int(self.page.evaluate("() => window.__busyBlocks"))

    def unblock_main_thread(self) -> None:
        """Stops the busy loop."""
        self.page.evaluate(_STOP_BUSY_LOOP_JS)
