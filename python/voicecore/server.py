"""``voicecore serve``: the voice agent server, on one port.

* ``/`` and every other path: the browser client's static files from ``web/`` (MIME types
  a browser accepts for ES modules and WebAssembly, and the cross-origin isolation headers
  ``SharedArrayBuffer`` needs: ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``), never a file outside that folder;
* ``/ws``: the WebSocket endpoint speaking protocol v1 (``voicecore.protocol``,
  ``docs/protocol.md``), one ``voicecore.Session`` per connection;
* ``/healthz``: liveness as JSON (sessions open, the limit, the pacer's scheduling);
* ``/metrics``: Prometheus text (live and recently finished sessions, process diagnostics).

One Rust ``FramePacer`` thread paces the agent audio of every session, through one
``PlayoutRouter`` task. The sessions run in the server's nursery (the WebSocket handlers'),
so when the server stops, every session has ended and every task, channel and pacer stream
is gone.

Limits and safety: a message size limit (close 1009), a session limit (close 1013 with a
``busy`` error the client can show), an Origin allow-list (HTTP 403: no cross-site
WebSocket hijacking), an optional bearer token (``Authorization: Bearer`` or ``?token=``,
since a browser cannot set WebSocket headers; close 1008), a bounded send queue per client
(a client that stops reading is told ``too_slow`` and closed with 4000), a ``hello``
deadline. SIGINT/SIGTERM shut down gracefully: stop accepting, cancel the agents' turns,
close every session with 1001, exit 0.

Example (in a Trio program; ``voicecore serve`` does this)::

    pipeline = voicecore.config.build_pipeline()          # the offline default pipeline
    server = VoiceServer(pipeline, ServerSettings(port=8000))
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        ...                                                # server.url, server.sessions
        server.shutdown()                                  # graceful; run() then returns
"""

from __future__ import annotations

import argparse
import hmac
import http
import ipaddress
import json
import logging
import os
import signal
import socket
import sys
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import trio
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from voicecore import config, protocol
from voicecore._core import FramePacer, SocketSink
from voicecore.bench import faults as bench_faults
from voicecore.bench import trio_pacer as bench_trio_pacer
from voicecore.config import Pipeline, VoicecoreConfig
from voicecore.diagnose import TimelineRecorder
from voicecore.diagnostics import Diagnostics, Timeline
from voicecore.exceptions import ConfigError, SendBufferFullError
from voicecore.metrics import SessionMetrics, prometheus_text
from voicecore.pacing import Pacer
from voicecore.playout import PlayoutRouter
from voicecore.protocol import (
    CloseCode,
    ErrorCode,
    Hello,
    ProtocolSession,
    ServerMessage,
    Step,
)
from voicecore.session import Session
from voicecore.stages import STT_SAMPLE_RATE
from voicecore.transport import AgentAudio, Clear, ClientMessage, Event, MicAudio, PlayoutReport
from voicecore.transport import ServerMessage as EngineMessage
from voicecore.websocket import WebSocket, accept

__all__ = [
    "ServerSettings",
    "VoiceServer",
    "WebSocketTransport",
    "add_serve_arguments",
    "default_origins",
    "run_server",
    "scripted_pipeline",
    "serve_command",
    "static_response",
]

_log = logging.getLogger("voicecore.server")

WEB_ROOT: Final = Path(__file__).resolve().parents[2] / "web"
"""The browser client's folder in a checkout (``--web-root`` serves another)."""

WS_PATH: Final = "/ws"
"""The WebSocket endpoint's path."""

MIME_TYPES: Final[dict[str, str]] = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json",
    ".map": "application/json",
    ".wasm": "application/wasm",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".ico": "image/x-icon",
    ".webmanifest": "application/manifest+json",
    ".woff2": "font/woff2",
    ".wav": "audio/wav",
    ".txt": "text/plain; charset=utf-8",
}
"""Content types by file suffix (a browser refuses a module script served with another
type than JavaScript's, and ``WebAssembly.instantiateStreaming`` needs ``application/wasm``)."""

ISOLATION_HEADERS: Final[tuple[tuple[str, str], ...]] = (
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Cross-Origin-Embedder-Policy", "require-corp"),
    ("Cross-Origin-Resource-Policy", "same-origin"),
    ("X-Content-Type-Options", "nosniff"),
)
"""On every HTTP response: the first two make the page cross-origin isolated (so the audio
worklet may share a ``SharedArrayBuffer`` ring with the socket worker), the third lets only
this origin embed the files, the fourth stops MIME sniffing."""

KEEPALIVE_INTERVAL_S: Final = 20.0
KEEPALIVE_TIMEOUT_S: Final = 20.0
"""Every connection is pinged this often, and cut when a ping is not answered this fast: a
client that vanished without closing (a killed tab, a dropped network) frees its session."""

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

SERVER_TIMELINE_EVENTS: Final = 3_000
"""Events each session's timeline keeps (about a minute of released frames and stage
events, ~1 MB at ~340 bytes an event): bounds a long call's diagnostic memory. The soak
benchmark measured 20,000 (~7 MB a session) as most of the server's growth in long calls."""


# --- settings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerSettings:
    """How the server listens and what it allows (durations in seconds, sizes in bytes).

    Attributes:
        host: address to listen on (``127.0.0.1``: this machine only).
        port: TCP port; 0 picks a free one (``VoiceServer.port`` tells which).
        web_root: the folder of static files served.
        allowed_origins: ``Origin`` values a browser page may open ``/ws`` from; None: the
            server's own origins (``default_origins``). Requests without ``Origin`` (not
            from a browser, so no cross-site risk) are allowed.
        max_sessions: concurrent connections on ``/ws``; more are refused (close 1013).
        max_message_bytes: largest client message (close 1009 above it).
        token: a bearer token the client must present; None: no token needed.
        hello_timeout_s: time allowed for the client's ``hello`` after the socket opens.
        send_queue_ms: how far behind (in agent audio, ``frame_ms`` per message) a client
            may fall before it is disconnected with 4000; the send queue holds
            ``send_queue_ms / frame_ms`` messages at most.
        send_buffer_bytes: the kernel send buffer of each connection (None: the OS
            default, often megabytes, which would hide a stalled client for a minute).
        close_timeout_s: time allowed to a client to complete the closing handshake.
        shutdown_timeout_s: time allowed for a graceful shutdown before the rest is cancelled.
        recent_sessions: finished sessions kept for ``/metrics``.
        diagnostics: run the process diagnostics (loop lag, GC, CPU throttling) for
            ``/metrics``.
        timeline_path: record the timeline (probes and sessions) to this JSON file, every
            10 s and at shutdown, for ``voicecore diagnose``; None: not recorded.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    web_root: Path = WEB_ROOT
    allowed_origins: tuple[str, ...] | None = None
    max_sessions: int = 20
    max_message_bytes: int = protocol.DEFAULT_MAX_MESSAGE_BYTES
    token: str | None = None
    hello_timeout_s: float = 10.0
    send_queue_ms: int = 2000
    send_buffer_bytes: int | None = 64 * 1024
    close_timeout_s: float = 2.0
    shutdown_timeout_s: float = 5.0
    recent_sessions: int = 100
    diagnostics: bool = True
    timeline_path: Path | None = None

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0-65535, got {self.port}")
        if self.max_sessions < 1:
            raise ValueError(f"max_sessions must be >= 1, got {self.max_sessions}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")
        for name in ("hello_timeout_s", "close_timeout_s", "shutdown_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 s, got {getattr(self, name)}")
        if self.send_queue_ms < 100:
            raise ValueError(f"send_queue_ms must be >= 100 ms, got {self.send_queue_ms}")
        if self.send_buffer_bytes is not None and self.send_buffer_bytes < 4096:
            raise ValueError(f"send_buffer_bytes must be >= 4096, got {self.send_buffer_bytes}")
        if self.token is not None and not self.token:
            raise ValueError("token must not be empty (None: no token)")
        if self.recent_sessions < 0:
            raise ValueError(f"recent_sessions must be >= 0, got {self.recent_sessions}")


def default_origins(host: str, port: int) -> tuple[str, ...]:
    """The origins of pages this server itself serves at ``host:port``.

    A loopback or wildcard host allows the loopback names (``localhost``, ``127.0.0.1``,
    ``[::1]``); a specific host allows its own origin. Behind a domain name or a proxy,
    list the public origin with ``--allowed-origin``.
    """
    names: list[str] = []
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        address = None
    if host in ("", "localhost") or (
        address is not None and (address.is_loopback or address.is_unspecified)
    ):
        names += ["localhost", "127.0.0.1", "[::1]"]
    if host not in ("", "localhost") and (address is None or not address.is_unspecified):
        bracketed = f"[{host}]" if address is not None and address.version == 6 else host
        if bracketed not in names:
            names.append(bracketed)
    return tuple(f"{scheme}://{name}:{port}" for name in names for scheme in ("http", "https"))


# --- static files ----------------------------------------------------------------------------


def _response(
    status: http.HTTPStatus,
    body: bytes,
    content_type: str,
    extra: Sequence[tuple[str, str]] = (),
) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("Connection", "close"),
            *ISOLATION_HEADERS,
            *extra,
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _text(status: http.HTTPStatus, text: str) -> Response:
    return _response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


def _resolve_static(web_root: Path, url_path: str) -> Path | None:
    """The file ``url_path`` names under ``web_root``, or None if it names none there.

    The path is percent-decoded first (``%2e%2e`` is ``..``), then any ``..`` segment, NUL or
    backslash refuses it outright, and the resolved path (symlinks followed) must still lie
    under the resolved root: the three checks each stop a traversal on their own.
    """
    decoded = urllib.parse.unquote(url_path, errors="strict")
    segments = [s for s in decoded.split("/") if s not in ("", ".")]
    if any(s == ".." or "\x00" in s or "\\" in s for s in segments):
        return None
    root = web_root.resolve()
    candidate = root.joinpath(*segments).resolve()
    if not candidate.is_relative_to(root):
        return None
    if candidate.is_dir():
        candidate = candidate / "index.html"
    return candidate if candidate.is_file() else None


async def static_response(web_root: Path, url_path: str) -> Response:
    """The HTTP response for ``GET url_path`` from the static folder ``web_root``: the file
    with its MIME type and the isolation headers, or 404 (also for any path that would
    leave the folder)."""
    try:
        path = _resolve_static(web_root, url_path)
    except UnicodeDecodeError:
        path = None
    if path is None:
        return _text(http.HTTPStatus.NOT_FOUND, "not found")
    body = await trio.Path(path).read_bytes()  # in a thread: the loop never waits on a disk
    content_type = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return _response(http.HTTPStatus.OK, body, content_type)


# --- the transport ---------------------------------------------------------------------------


class _SpeechTimeline(Timeline):
    """A session's timeline that also tells the client when the VAD confirms user speech
    and when it pauses (the engine records those as stage events, on its timeline only)."""

    def __init__(self, forward: Callable[[ServerMessage], None]) -> None:
        super().__init__(clock=trio.current_time, max_events=SERVER_TIMELINE_EVENTS)
        self._forward = forward

    def record(self, kind: str, **fields: Any) -> None:
        """Records the event; ``speech_start``/``speech_end`` also go to the client."""
        super().record(kind, **fields)
        if kind in ("speech_start", "speech_end") and "sample" in fields:
            event = {"type": kind, "time_s": fields["sample"] / STT_SAMPLE_RATE, **fields}
            message = protocol.engine_event_message(event)
            if message is not None:
                self._forward(message)


class WebSocketTransport:
    """A ``voicecore.transport.Transport`` over one WebSocket connection, protocol v1.

    Receive side: every message goes through the connection's ``ProtocolSession``; errors
    are answered (and, when fatal, end the connection with their close code); mic audio is
    handed to the engine at the client's ``input_rate`` (the engine resamples it to 16 kHz
    once) and playout reports as ``PlayoutReport``.

    Send side: bounded, and it never waits. Agent audio does not pass through here: the
    pacer thread writes each frame into the connection's ``SocketSink`` itself
    (``audio_sink``); ``send`` frames the other messages into the same sink. What the kernel
    does not take waits there, at most ``send_queue_ms`` of agent audio at the client's rate;
    a client that reads too slowly fills it (the sink refuses a write, the pacer's or ours),
    and the transport drops the backlog, tells it ``too_slow`` and closes with 4000, so a
    stalled client costs at most that buffer plus the kernel's.

    Args:
        websocket: the connection.
        session: the connection's protocol state machine.
        send_queue_ms: the send buffer's bound, in ms of agent audio.

    Attributes:
        playout: the client's last playout report (None before the first).
        metrics: the session's metrics, once it exists: the underruns the client reports
            are counted there (``client.underruns``, exported by ``/metrics``).
        peak_queued_bytes: the most bytes the send buffer ever held.
    """

    def __init__(
        self, websocket: WebSocket, session: ProtocolSession, *, send_queue_ms: int
    ) -> None:
        if send_queue_ms < 1:
            raise ValueError(f"send_queue_ms must be >= 1 ms, got {send_queue_ms}")
        self.protocol = session
        self.playout: protocol.Playout | None = None
        self.metrics: SessionMetrics | None = None
        self.peak_queued_bytes = 0
        self._ws = websocket
        self._send_queue_ms = send_queue_ms
        self._close: protocol.Close | None = None
        self._too_slow_decided = False
        self._closing = False
        self._closed = trio.Event()

    def __repr__(self) -> str:
        return (
            f"WebSocketTransport({self.protocol.session_id!r}, state={self.protocol.state.value},"
            f" queued={self.queued_bytes} B)"
        )

    @property
    def sample_rate(self) -> int:
        """The agent audio's rate in Hz: the client's ``output_rate``. Raises RuntimeError
        before ``hello``."""
        return self._hello().output_rate

    @property
    def input_rate(self) -> int:
        """The mic audio's rate in Hz: the client's ``input_rate``. Raises RuntimeError
        before ``hello``."""
        return self._hello().input_rate

    def _hello(self) -> Hello:
        if self.protocol.hello is None:
            raise RuntimeError("no hello yet: the audio format is not known")
        return self.protocol.hello

    @property
    def audio_sink(self) -> SocketSink:
        """The connection's writer: the pacer writes agent audio frames to it itself."""
        return self._ws.sink

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting in the send buffer."""
        return self._ws.pending_bytes

    @property
    def close_code(self) -> CloseCode | None:
        """The code the connection closes (or closed) with, once decided."""
        return self._close.code if self._close is not None else None

    # receive side

    async def _next_step(self) -> Step:
        """The protocol's verdict on the client's next message (replies already queued);
        raises ``trio.EndOfChannel`` once the connection is closing or closed."""
        if self._close is not None:
            raise trio.EndOfChannel
        try:
            data = await self._ws.receive()
        except ConnectionClosed:
            self.protocol.closed()
            raise trio.EndOfChannel from None
        self._check_backlog()
        step = self.protocol.receive(data)
        self._apply(step)
        return step

    def _check_backlog(self) -> None:
        """A write the sink refused (the pacer's frame or ours) means the client fell
        ``send_queue_ms`` behind: too slow. Checked on every message either way (~0.1 us)."""
        if self._close is None and self._ws.sink.stats().refused:
            self._too_slow()

    def _apply(self, step: Step) -> None:
        for reply in step.replies:
            self.send_message(reply)
        if step.close is not None and self._close is None:
            # The close frame follows what is queued; a client that does not answer it in
            # close_timeout_s is cut (by the connection's writer), which ends a receive.
            self._close = step.close
            self._ws.start_close(step.close.code, step.close.reason)

    async def handshake(self) -> Hello:
        """Waits for the client's ``hello`` (``ready`` is queued when it comes); raises
        ``trio.EndOfChannel`` if the connection closes first."""
        while True:
            step = await self._next_step()
            if isinstance(step.message, Hello):
                hello = step.message
                # The send bound: send_queue_ms of PCM16 at the client's rate.
                self._ws.max_pending_bytes = 2 * hello.output_rate * self._send_queue_ms // 1000
                return hello

    async def receive(self) -> ClientMessage:
        """The client's next mic audio or playout report (``Transport.receive``)."""
        while True:
            message = (await self._next_step()).message
            if isinstance(message, protocol.Audio):
                return MicAudio(message.pcm)
            if isinstance(message, protocol.Playout):
                self._count_underruns(message)
                self.playout = message
                return PlayoutReport(message.buffered_ms)

    def _count_underruns(self, report: protocol.Playout) -> None:
        previous = self.playout.underruns if self.playout is not None else None
        if report.underruns is None or self.metrics is None:
            return
        # The client's count is cumulative; a restarted player may report a smaller one.
        new = report.underruns - (previous or 0)
        if new > 0:
            self.metrics.count("client.underruns", new)

    def close_soon(self, code: CloseCode, reason: str) -> None:
        """Decides to close with ``code`` (unless a close was already decided): the close
        frame follows what is queued, and the engine's ``receive`` ends once the client
        answers it (or is cut after ``close_timeout_s``)."""
        self._apply(Step(close=self.protocol.close(code, reason)))

    def fail(self, code: ErrorCode, message: str, close: CloseCode) -> None:
        """Tells the client ``code``/``message`` in an ``error``, then closes with ``close``."""
        self._apply(self.protocol.fail(code, message, close))

    # send side

    async def send(self, message: EngineMessage) -> None:
        """Queues one engine message for the client (``Transport.send``; never waits)."""
        if isinstance(message, AgentAudio):
            self._enqueue(message.pcm)
        elif isinstance(message, Clear):
            self.send_message(protocol.Clear(message.turn_id))
        elif isinstance(message, Event):
            try:
                converted = protocol.engine_event_message(message.data)
            except (KeyError, TypeError, ValueError):
                # A malformed engine event must not end the conversation: log it, skip it.
                _log.exception("%s: cannot send event %r", self.protocol.session_id, message)
                return
            if converted is not None:
                self.send_message(converted)

    def send_message(self, message: ServerMessage) -> None:
        """Queues one protocol message for the client (never waits)."""
        self._enqueue(protocol.serialize(message))

    def _enqueue(self, data: str | bytes) -> None:
        self._check_backlog()
        if self._close is not None:
            return  # closing: what the engine still sends is not delivered
        try:
            self._ws.send_nowait(data)
        except SendBufferFullError:
            self._too_slow()
        except ConnectionClosed:
            return
        self.peak_queued_bytes = max(self.peak_queued_bytes, self._ws.pending_bytes)

    def _too_slow(self) -> None:
        if self._too_slow_decided:
            return  # the verdict being sent passes through _enqueue too
        self._too_slow_decided = True
        bound_ms = self._send_queue_ms
        self._ws.sink.discard_pending()  # stale audio: the verdict goes out next
        self._apply(
            self.protocol.fail(
                ErrorCode.TOO_SLOW,
                f"the client fell {bound_ms} ms of audio behind; disconnecting",
                CloseCode.TOO_SLOW,
            )
        )

    async def run_writer(self) -> None:
        """Writes what is queued to the socket until the connection ends (run it as a
        task)."""
        await self._ws.run_writer()

    async def aclose(self) -> None:
        """Flushes what is queued, closes with the decided code (1000 if none was), and cuts
        the socket if the client does not complete the closing handshake within the
        connection's ``close_timeout_s`` (idempotent; ``Transport.aclose``)."""
        if self._closing:
            await self._closed.wait()
            return
        self._closing = True
        self.close_soon(CloseCode.NORMAL, "session ended")
        try:
            await self._ws.aclose()
        finally:
            self.protocol.closed()
            self._closed.set()


# --- the server ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    """One client on ``/ws``: its transport and, after ``hello``, its session."""

    transport: WebSocketTransport
    opened: float = field(default_factory=time.monotonic)
    session: Session | None = None


class VoiceServer:
    """The HTTP + WebSocket server: static files, ``/ws``, ``/healthz``, ``/metrics``.

    Args:
        pipeline: makes each session's stages and the session itself
            (``voicecore.config.build_pipeline()`` for the configured providers); its
            ``config.session`` gives the frame duration and the cushion.
        settings: listening address and limits.
        pacer: the pacer shared by every session; by default a real-clock one with the
            pipeline's ``frame_ms``, whose thread starts here and stops when ``run``
            returns (a server runs once).

    Attributes:
        settings: the settings.
        port: the port listened on (known once ``run`` has started).
        recent: metrics of the most recently finished sessions (``/metrics``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: ServerSettings | None = None,
        *,
        pacer: Pacer | None = None,
    ) -> None:
        self.settings = settings if settings is not None else ServerSettings()
        self.port: int | None = None
        self.recent: deque[SessionMetrics] = deque(maxlen=self.settings.recent_sessions)
        self._pipeline = pipeline
        self._owns_pacer = pacer is None
        engine = pipeline.config.session
        self._pacer: Pacer = pacer if pacer is not None else FramePacer(engine.frame_ms)
        if self._pacer.frame_ms != engine.frame_ms:
            raise ValueError(
                f"the pacer's {self._pacer.frame_ms} ms frames differ from the sessions' "
                f"frame_ms {engine.frame_ms}"
            )
        self._frame_ms = engine.frame_ms
        self._cushion_ms = engine.cushion_ms
        self.router = PlayoutRouter(self._pacer)
        self._origins: frozenset[str] = frozenset()
        self._connections: dict[str, _Connection] = {}
        self._diagnostics = Diagnostics() if self.settings.diagnostics else None
        self._recorder = (
            None
            if self.settings.timeline_path is None
            else TimelineRecorder(
                self.settings.timeline_path,
                self._diagnostics.timeline if self._diagnostics is not None else None,
            )
        )
        self._shutdown = trio.Event()
        self._stopping = False

    def __repr__(self) -> str:
        return f"VoiceServer(url={self.url!r}, sessions={self.sessions})"

    @property
    def url(self) -> str | None:
        """The server's base URL (``http://host:port/``), once listening."""
        if self.port is None:
            return None
        host = self.settings.host
        host = f"[{host}]" if ":" in host else host
        return f"http://{host}:{self.port}/"

    @property
    def pacer(self) -> Pacer:
        """The frame pacer every session shares."""
        return self._pacer

    @property
    def sessions(self) -> int:
        """Connections open on ``/ws`` (with a session, or awaiting ``hello``)."""
        return len(self._connections)

    @property
    def allowed_origins(self) -> frozenset[str]:
        """The ``Origin`` values accepted on ``/ws`` (known once listening)."""
        return self._origins

    def transports(self) -> list[WebSocketTransport]:
        """The open connections' transports (for tests and introspection)."""
        return [c.transport for c in self._connections.values()]

    def live_sessions(self) -> list[Session]:
        """The sessions running now (connections past ``hello``)."""
        return [c.session for c in self._connections.values() if c.session is not None]

    def shutdown(self) -> None:
        """Requests a graceful shutdown; ``run`` returns once it is done."""
        self._shutdown.set()

    async def run(
        self, *, task_status: trio.TaskStatus[VoiceServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Listens, serves until ``shutdown``, then shuts down gracefully: no new connection,
        every session closed with 1001 (its agent turn cancelled), the pacer stopped.

        Use ``await nursery.start(server.run)``: it returns once the server is listening.
        """
        settings = self.settings
        try:
            listeners = await trio.open_tcp_listeners(settings.port, host=settings.host)
            self.port = listeners[0].socket.getsockname()[1]
            self._origins = frozenset(
                settings.allowed_origins
                if settings.allowed_origins is not None
                else default_origins(settings.host, self.port)
            )
            async with trio.open_nursery() as nursery:
                if self._diagnostics is not None:
                    await nursery.start(self._diagnostics.run)
                nursery.start_soon(self.router.run)
                if self._recorder is not None:
                    nursery.start_soon(self._recorder.run)  # dumps once more when cancelled
                bench_faults.start_from_env(nursery)  # benchmarks only: off unless set
                async with trio.open_nursery() as connections:
                    accepting = trio.CancelScope()

                    async def accept_connections() -> None:
                        with accepting:
                            await trio.serve_listeners(
                                self._handle, listeners, handler_nursery=connections
                            )

                    connections.start_soon(accept_connections)
                    _log.info("voicecore serving on %s", self.url)
                    task_status.started(self)
                    await self._shutdown.wait()
                    self._stop(accepting, connections)
                if connections.cancel_scope.cancelled_caught:
                    _log.warning("shutdown: sessions still open after the timeout; cancelled")
                nursery.cancel_scope.cancel()  # the router and diagnostics
        finally:
            if self._owns_pacer:
                self._pacer.stop()

    def _stop(self, accepting: trio.CancelScope, connections: trio.Nursery) -> None:
        """Stops accepting, asks every session to close with 1001, and gives them
        ``shutdown_timeout_s`` before they are cancelled."""
        self._stopping = True
        _log.info("shutting down: closing %d sessions", len(self._connections))
        accepting.cancel()
        for connection in list(self._connections.values()):
            connection.transport.close_soon(CloseCode.GOING_AWAY, "server shutting down")
        connections.cancel_scope.deadline = trio.current_time() + self.settings.shutdown_timeout_s

    # --- HTTP ---------------------------------------------------------------------------------

    async def _respond(self, request: Request) -> Response | None:
        """Answers an HTTP request: None lets the WebSocket handshake on ``/ws`` go on."""
        path = urllib.parse.urlsplit(request.path).path
        if path == WS_PATH:
            origin = request.headers.get("Origin")
            if origin is not None and origin not in self._origins:
                _log.warning("refused a WebSocket from origin %r", origin)
                return _text(http.HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed")
            return None  # the WebSocket handshake goes on (426 if it is not an upgrade)
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return _text(http.HTTPStatus.NOT_FOUND, f"the WebSocket endpoint is {WS_PATH}")
        if path == "/healthz":
            return self._health()
        if path == "/metrics":
            return _response(
                http.HTTPStatus.OK, self.metrics_text().encode(), PROMETHEUS_CONTENT_TYPE
            )
        return await static_response(self.settings.web_root, path)

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports (a JSON object)."""
        stats = self._pacer.stats()
        return {
            "status": "stopping" if self._stopping else "ok",
            "sessions": self.sessions,
            "max_sessions": self.settings.max_sessions,
            "pacer": {
                "scheduling": stats.scheduling,
                "open_streams": stats.open_streams,
                "underruns": stats.underruns,
            },
        }

    def _health(self) -> Response:
        status = http.HTTPStatus.SERVICE_UNAVAILABLE if self._stopping else http.HTTPStatus.OK
        body = json.dumps(self.health()).encode()
        return _response(status, body, "application/json")

    def metrics_text(self) -> str:
        """``/metrics``: Prometheus text over the live and recently finished sessions."""
        live = [session.metrics for session in self.live_sessions()]
        return prometheus_text([*live, *self.recent], diagnostics=self._diagnostics)

    # --- WebSocket ----------------------------------------------------------------------------

    def _token_ok(self, request: Request | None) -> bool:
        expected = self.settings.token
        if expected is None:
            return True
        if request is None:
            return False
        given = ""
        authorization = request.headers.get("Authorization", "")
        if authorization[:7].lower() == "bearer ":
            given = authorization[7:].strip()
        else:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(request.path).query)
            given = query.get("token", [""])[0]
        return hmac.compare_digest(given.encode(), expected.encode())

    async def _handle(self, stream: trio.SocketStream) -> None:
        if self.settings.send_buffer_bytes is not None:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.settings.send_buffer_bytes)
        websocket = await accept(
            stream,
            self._respond,
            max_message_bytes=2 * self.settings.max_message_bytes,
            close_timeout_s=self.settings.close_timeout_s,
            handshake_timeout_s=self.settings.hello_timeout_s,
        )
        if websocket is None:
            return  # plain HTTP, answered
        session_id = uuid.uuid4().hex[:12]
        transport = WebSocketTransport(
            websocket,
            ProtocolSession(
                session_id,
                frame_ms=self._frame_ms,
                cushion_ms=self._cushion_ms,
                max_message_bytes=self.settings.max_message_bytes,
            ),
            send_queue_ms=self.settings.send_queue_ms,
        )
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_writer)
            nursery.start_soon(websocket.keepalive, KEEPALIVE_INTERVAL_S, KEEPALIVE_TIMEOUT_S)
            try:
                await self._converse(session_id, websocket.request, transport)
            finally:
                with trio.CancelScope(shield=True):
                    await transport.aclose()
                nursery.cancel_scope.cancel()  # the keepalive's sleep

    async def _converse(
        self, session_id: str, request: Request | None, transport: WebSocketTransport
    ) -> None:
        if self._stopping:
            transport.close_soon(CloseCode.GOING_AWAY, "server shutting down")
            return
        if not self._token_ok(request):
            transport.fail(
                ErrorCode.UNAUTHORIZED,
                "a valid token is required (Authorization: Bearer or ?token=)",
                CloseCode.POLICY,
            )
            return
        if len(self._connections) >= self.settings.max_sessions:
            transport.fail(
                ErrorCode.BUSY,
                f"the server is at its limit of {self.settings.max_sessions} conversations; "
                "try again in a minute",
                CloseCode.TRY_AGAIN_LATER,
            )
            return
        connection = _Connection(transport)
        self._connections[session_id] = connection
        try:
            # Building a session's VAD and STT loads models (an ONNX session takes ~0.3 s):
            # done on the loop it would stall every other session's audio hand-off.
            providers = await trio.to_thread.run_sync(self._pipeline.providers)
            await self._pipeline.load(providers)
            with trio.move_on_after(self.settings.hello_timeout_s) as waited:
                try:
                    hello = await transport.handshake()
                except trio.EndOfChannel:
                    return
            if waited.cancelled_caught:
                transport.fail(
                    ErrorCode.HELLO_TIMEOUT,
                    f"no hello within {self.settings.hello_timeout_s:g} s",
                    CloseCode.POLICY,
                )
                return
            _log.info(
                "%s: %s, mic %d Hz, playback %d Hz",
                session_id,
                hello.client or "client",
                hello.input_rate,
                hello.output_rate,
            )
            session = self._pipeline.session(
                transport,
                providers=providers,
                pacer=self.router,
                session_id=session_id,
                timeline=_SpeechTimeline(transport.send_message),
            )
            connection.session = session
            if self._recorder is not None:
                self._recorder.add_session(session_id, session.timeline)
            transport.metrics = session.metrics
            await session.run()
        finally:
            del self._connections[session_id]
            if self._recorder is not None:
                self._recorder.end_session(session_id)
            if connection.session is not None:
                self.recent.append(connection.session.metrics)
            _log.info(
                "%s: closed (%s), %.1f s",
                session_id,
                transport.close_code or "by the client",
                time.monotonic() - connection.opened,
            )


# --- the command -----------------------------------------------------------------------------


def scripted_pipeline(settings: VoicecoreConfig | None = None) -> Pipeline:
    """A pipeline of scripted providers (``voicecore.providers.scripted``): the energy VAD,
    an STT that "hears" one fixed question, a canned reply and a tone for a voice. It needs
    no model: for trying the server and the page, and for tests.

    Args:
        settings: the configuration whose ``session`` settings the sessions use.
    """
    from voicecore.providers import ScriptedLLM, ScriptedSTT, ScriptedTTS, Utterance
    from voicecore.stages import EnergyVadStage

    return Pipeline(
        settings if settings is not None else VoicecoreConfig(),
        vad_kind="energy",
        new_vad=EnergyVadStage,
        new_stt=lambda: ScriptedSTT([Utterance(["what", "what can"], "What can you do?")]),
        llm=ScriptedLLM(
            ["This is the scripted pipeline. It plays a tone for every sentence it says."],
            first_token_delay_s=0.05,
            token_delay_s=0.01,
        ),
        tts=ScriptedTTS(sample_rate=24000, ms_per_char=40.0),
    )


_ENV = "VOICECORE_SERVER_"
"""Prefix of the server's environment variables (``VOICECORE_SERVER_PORT``...)."""


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds the server's flags (each with a ``VOICECORE_SERVER_*`` environment variable) and
    the configuration's (``voicecore.config.add_config_arguments``) to ``parser``."""
    defaults = ServerSettings()
    group = parser.add_argument_group("server settings")

    def env(name: str) -> str | None:
        return os.environ.get(_ENV + name)

    group.add_argument(
        "--host",
        default=env("HOST") or defaults.host,
        help=f"address to listen on [default {defaults.host}; env {_ENV}HOST]",
    )
    group.add_argument(
        "--port",
        default=env("PORT") or str(defaults.port),
        help=f"TCP port, 0 for any free one [default {defaults.port}; env {_ENV}PORT]",
    )
    group.add_argument(
        "--web-root",
        default=env("WEB_ROOT") or str(defaults.web_root),
        help=f"folder of the static files served [default the checkout's web/; env {_ENV}WEB_ROOT]",
    )
    group.add_argument(
        "--allowed-origin",
        action="append",
        dest="allowed_origins",
        metavar="ORIGIN",
        help="an Origin allowed to open /ws, e.g. https://voice.example.com (repeatable) "
        f"[default the server's own origins; env {_ENV}ALLOWED_ORIGINS, comma-separated]",
    )
    group.add_argument(
        "--max-sessions",
        default=env("MAX_SESSIONS") or str(defaults.max_sessions),
        help=f"concurrent conversations [default {defaults.max_sessions}; env {_ENV}MAX_SESSIONS]",
    )
    group.add_argument(
        "--max-message-bytes",
        default=env("MAX_MESSAGE_BYTES") or str(defaults.max_message_bytes),
        help=f"largest client message [default {defaults.max_message_bytes}; "
        f"env {_ENV}MAX_MESSAGE_BYTES]",
    )
    group.add_argument(
        "--token",
        default=env("TOKEN"),
        help=f"require this bearer token on /ws [default none; env {_ENV}TOKEN]",
    )
    group.add_argument(
        "--providers",
        choices=("config", "scripted"),
        default=env("PROVIDERS") or "config",
        help="'config': the providers the configuration chooses (default: the offline "
        "pipeline); 'scripted': test doubles that need no model "
        f"[default config; env {_ENV}PROVIDERS]",
    )
    group.add_argument(
        "--timeline",
        default=env("TIMELINE"),
        metavar="PATH",
        help="record the diagnostic timeline to this JSON file (every 10 s and at shutdown; "
        f"draw it with 'voicecore diagnose PATH') [default none; env {_ENV}TIMELINE]",
    )
    config.add_config_arguments(parser)


def _settings_from_args(args: argparse.Namespace) -> ServerSettings:
    origins: tuple[str, ...] | None = None
    if args.allowed_origins:
        origins = tuple(args.allowed_origins)
    elif os.environ.get(_ENV + "ALLOWED_ORIGINS"):
        origins = tuple(
            o.strip() for o in os.environ[_ENV + "ALLOWED_ORIGINS"].split(",") if o.strip()
        )

    def integer(name: str) -> int:
        text = getattr(args, name)
        try:
            return int(text)
        except ValueError:
            flag = "--" + name.replace("_", "-")
            raise ValueError(
                f"{flag} (or {_ENV}{name.upper()}) must be an integer, got {text!r}"
            ) from None

    try:
        return ServerSettings(
            host=args.host,
            port=integer("port"),
            web_root=Path(args.web_root),
            allowed_origins=origins,
            max_sessions=integer("max_sessions"),
            max_message_bytes=integer("max_message_bytes"),
            token=args.token or None,
            timeline_path=Path(args.timeline) if getattr(args, "timeline", None) else None,
        )
    except ValueError as exc:
        raise ConfigError(f"server: {exc}") from exc


def serve_command(args: argparse.Namespace) -> int:
    """``voicecore serve``: builds the pipeline and runs the server until SIGINT/SIGTERM;
    returns the exit status (0 after a graceful shutdown, 1 if it cannot listen, 2 for a bad
    setting)."""
    try:
        settings = _settings_from_args(args)
        voicecore_config = config.config_from_args(args)
        if args.providers == "scripted":
            pipeline = scripted_pipeline(voicecore_config)
        else:
            pipeline = config.build_pipeline(voicecore_config)
    except ConfigError as exc:
        print(f"voicecore serve: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    if not settings.web_root.is_dir():
        print(f"voicecore serve: no web folder at {settings.web_root}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # websockets logs every HTTP response and connection at INFO: a page load is a dozen.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    try:
        return trio.run(run_server, pipeline, settings)
    except ExceptionGroup as group:  # Trio's nurseries group what their tasks raised
        listen_errors, others = group.split(OSError)
        if listen_errors is None or others is not None:
            raise
        error: BaseException = listen_errors
        while isinstance(error, BaseExceptionGroup):
            error = error.exceptions[0]
        print(
            f"voicecore serve: cannot listen on {settings.host}:{settings.port}: {error}",
            file=sys.stderr,
        )
        return 1


async def run_server(pipeline: Pipeline, settings: ServerSettings) -> int:
    """Runs a ``VoiceServer`` until SIGINT or SIGTERM, then shuts it down gracefully and
    closes the pipeline's network clients; returns 0."""
    # Benchmarks only: VOICECORE_BENCH_PACER=trio swaps in the pure-Python pacing baseline.
    bench_pacer = bench_trio_pacer.pacer_from_env(pipeline.config.session.frame_ms)
    server = VoiceServer(pipeline, settings, pacer=bench_pacer)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(server.run)
            print(f"voicecore: serving on {server.url} (Ctrl-C to stop)", flush=True)
            async for signum in signals:
                print(f"voicecore: {signal.Signals(signum).name}: shutting down", flush=True)
                server.shutdown()
                break
    await pipeline.aclose()
    print("voicecore: stopped", flush=True)
    return 0
