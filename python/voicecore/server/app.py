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

    config = voicecore.config.load_config()                 # file, environment: [server]...
    pipeline = voicecore.pipeline.build_pipeline(config)    # the configured providers
    server = VoiceServer(pipeline)                          # listens as config.server says
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        ...                                                # server.url, server.sessions
        server.shutdown()                                  # graceful; run() then returns
"""

from __future__ import annotations

import hmac
import http
import json
import logging
import socket
import time
import urllib.parse
import uuid
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

import trio
from websockets.http11 import Request, Response

from voicecore._core import FramePacer
from voicecore.config import ServerConfig
from voicecore.diagnose import TimelineRecorder
from voicecore.diagnostics import Diagnostics, Timeline
from voicecore.engine.pacing import Pacer
from voicecore.engine.playout import PlayoutRouter
from voicecore.engine.session import Session
from voicecore.metrics import SessionMetrics, prometheus_text
from voicecore.pipeline import Pipeline
from voicecore.protocol import (
    CloseCode,
    ErrorCode,
    ProtocolSession,
)
from voicecore.server.http import (
    PROMETHEUS_CONTENT_TYPE,
    default_origins,
    response,
    static_response,
    text_response,
)
from voicecore.server.transport import WebSocketTransport
from voicecore.server.websocket import accept

_log = logging.getLogger("voicecore.server.app")
WS_PATH: Final = "/ws"
"""The WebSocket endpoint's path."""
KEEPALIVE_INTERVAL_S: Final = 20.0
KEEPALIVE_TIMEOUT_S: Final = 20.0
"""Every connection is pinged this often, and cut when a ping is not answered this fast: a
client that vanished without closing (a killed tab, a dropped network) frees its session."""

SERVER_TIMELINE_EVENTS: Final = 3_000
"""Events each session's timeline keeps (stage events, cushion reports about four a second,
late frames; ~340 bytes an event, ~1 MB): bounds a long call's diagnostic memory. The soak
benchmark measured 20,000 (~7 MB a session) as most of the server's growth in long calls."""

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
            (``voicecore.pipeline.build_pipeline()`` for the configured providers); its
            ``config.session`` gives the frame duration and the cushion.
        settings: the ``server`` section of the configuration (address, limits,
            timeouts); None: the pipeline's own, ``pipeline.config.server``.
        pacer: the pacer shared by every session; by default a real-clock one with the
            pipeline's ``frame_ms``, whose thread starts here and stops when ``run``
            returns (a server runs once).
        tasks: run in the server's nursery for as long as it serves (an embedding program's
            own background work, or a benchmark harness's fault injector: the server itself
            knows nothing of benchmarks).

    Attributes:
        settings: the server's settings (``ServerConfig``).
        port: the port listened on (known once ``run`` has started).
        recent: metrics of the most recently finished sessions (``/metrics``).
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: ServerConfig | None = None,
        *,
        pacer: Pacer | None = None,
        tasks: Sequence[Callable[[], Awaitable[None]]] = (),
    ) -> None:
        self._tasks = tuple(tasks)
        self.settings = settings if settings is not None else pipeline.config.server
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
            if self.settings.timeline is None
            else TimelineRecorder(
                self.settings.timeline,
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
                for task in self._tasks:
                    nursery.start_soon(task)
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
                return text_response(http.HTTPStatus.FORBIDDEN, f"origin {origin} is not allowed")
            return None  # the WebSocket handshake goes on (426 if it is not an upgrade)
        if "websocket" in request.headers.get("Upgrade", "").lower():
            return text_response(http.HTTPStatus.NOT_FOUND, f"the WebSocket endpoint is {WS_PATH}")
        if path == "/healthz":
            return self._health()
        if path == "/metrics":
            return response(
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
        return response(status, body, "application/json")

    def metrics_text(self) -> str:
        """``/metrics``: Prometheus text over the live and recently finished sessions."""
        live = [session.metrics for session in self.live_sessions()]
        return prometheus_text(
            [*live, *self.recent], open_sessions=len(live), diagnostics=self._diagnostics
        )

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
        if self.settings.send_buffer_bytes:  # 0: the OS default
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
                timeline=Timeline(clock=trio.current_time, max_events=SERVER_TIMELINE_EVENTS),
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
