"""``voicecore serve``: the voice agent server, on one port.

* ``/`` and every other path: the browser client's static files from ``web/`` (MIME types
  a browser accepts for ES modules and WebAssembly, and the cross-origin isolation headers
  ``SharedArrayBuffer`` needs: ``Cross-Origin-Opener-Policy: same-origin`` and
  ``Cross-Origin-Embedder-Policy: require-corp``), never a file outside that folder;
* ``/ws``: the WebSocket endpoint speaking protocol v1 (``voicecore.protocol``,
  ``docs/protocol.md``), one ``voicecore.Session`` per connection;
* ``/healthz``: readiness as JSON: HTTP 200 while the server takes new conversations, 503
  when it is full or shutting down; its capacity, conversations, refusals, memory
  (``health()``; docs/deployment.md describes every field);
* ``/metrics``: Prometheus text, written by ``prometheus_client`` (live and recently finished
  sessions, admission, process diagnostics and memory).

One Rust ``FramePacer`` thread paces the agent audio of every session, through one
``PlayoutRouter`` task. The sessions run in the server's nursery (the WebSocket handlers'),
so when the server stops, every session has ended and every task, channel and pacer stream
is gone.

Admission (``voicecore.server.admission``): the server knows how many conversations it
carries (``server.max_sessions``, or ``server.capacity_per_core`` times the cores, or the cost
of a conversation measured at start-up: ``voicecore.server.calibration``) and refuses the
next one with a ``busy`` error and close 1013 before anyone already talking notices. A
conversation's slot is taken at ``hello``: a socket that has said nothing holds only a
pending place, for ``hello_timeout_s`` from its TCP connection; one client address holds at
most ``max_connections_per_address`` connections. After conversations end, their memory is
given back to the system (``voicecore.server.memory``).

Other limits and safety: a message size limit (close 1009), an Origin allow-list (HTTP 403:
no cross-site WebSocket hijacking), an optional bearer token (``Authorization: Bearer`` or
``?token=``, since a browser cannot set WebSocket headers; close 1008), a bounded send queue
per client (a client that stops reading is told ``too_slow`` and closed with 4000).
SIGINT/SIGTERM shut down gracefully: stop accepting, cancel the agents' turns, close every
session with 1001, exit 0.

Example (in a Trio program; ``voicecore serve`` does this)::

    config = voicecore.config.load_config()                 # file, environment: [server]...
    pipeline = voicecore.pipeline.build_pipeline(config)    # the configured providers
    server = VoiceServer(pipeline)                          # listens as config.server says
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)                     # measures, then listens
        ...                                                # server.url, server.capacity
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
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.process_collector import ProcessCollector
from websockets.http11 import Request, Response

from voicecore._core import FramePacer
from voicecore.config import ServerConfig
from voicecore.diagnostics import Diagnostics, Timeline, TimelineRecorder
from voicecore.engine.pacing import Pacer
from voicecore.engine.playout import PlayoutRouter
from voicecore.engine.session import Session
from voicecore.metrics import SessionMetrics
from voicecore.pipeline import Pipeline
from voicecore.protocol import CloseCode, ErrorCode, ProtocolSession
from voicecore.server.admission import (
    Admission,
    Capacity,
    Refusal,
    Ticket,
    available_cores,
    client_address,
)
from voicecore.server.calibration import Calibration, calibrate
from voicecore.server.conversations import (
    REDIS_TIMEOUT_S,
    ConversationStore,
    Saved,
    new_token,
    open_store,
)
from voicecore.server.http import (
    PROMETHEUS_CONTENT_TYPE,
    default_origins,
    response,
    static_response,
    text_response,
)
from voicecore.server.ledger import LeastConnectionsListener, Ledger, WorkerState
from voicecore.server.memory import MemoryReleaser, rss_bytes
from voicecore.server.reporting import ServerCollector, health_report
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

READY_BUCKETS_S: Final = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Upper bounds (s) of the ``hello`` to ``ready`` histogram."""

DRAINING_REASON: Final = "server draining: reconnect"
"""The reason of the 1001 close of a draining server: the client reconnects (to another
server) at once and resumes its conversation."""

RESUMED_ELSEWHERE_REASON: Final = "conversation resumed elsewhere"
"""The reason of the 1000 close of a session whose conversation another connection resumed
(a client does not reconnect after 1000)."""

QUIET_CLOSE_MARGIN_S: Final = 0.5
QUIET_POLL_S: Final = 0.05
"""A drained conversation waits for a quiet moment (polled this often) for the shutdown
timeout less the close timeout and this margin: its close must still complete in time."""

# --- the server ------------------------------------------------------------------------------


@dataclass(eq=False)
class _Connection:
    """One client on ``/ws``: its transport and, after ``hello``, its session."""

    transport: WebSocketTransport
    ticket: Ticket
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
        sockets: listening sockets to serve (a worker of ``voicecore serve --workers``
            inherits its supervisor's); empty: it listens on ``settings.host``/``port``.
        ledger: the books this worker shares with the server's other workers (the capacity,
            admission across them); None: a server of one process.

    Attributes:
        settings: the server's settings (``ServerConfig``).
        port: the port listened on (known once ``run`` has started).
        capacity: the conversations it carries and where that comes from (known once
            ``run`` has started: it may be measured first).
        calibration: the start-up measurement, when the capacity was measured (else None).
        admission: its admission books (once ``run`` has started).
        recent: metrics of the most recently finished sessions (``/metrics``).
        start_rss_bytes: the process' resident memory once started (models loaded, start-up
            garbage given back), the baseline memory returns to after a burst.
        registry: the ``prometheus_client`` registry ``/metrics`` exposes.
    """

    def __init__(
        self,
        pipeline: Pipeline,
        settings: ServerConfig | None = None,
        *,
        pacer: Pacer | None = None,
        tasks: Sequence[Callable[[], Awaitable[None]]] = (),
        sockets: Sequence[socket.socket] = (),
        ledger: Ledger | None = None,
    ) -> None:
        self._tasks = tuple(tasks)
        self._sockets = tuple(sockets)
        self.ledger = ledger
        self.settings = settings if settings is not None else pipeline.config.server
        self.port: int | None = None
        self.capacity: Capacity | None = None
        self.calibration: Calibration | None = None
        self.admission: Admission | None = None
        self.recent: deque[SessionMetrics] = deque(maxlen=self.settings.recent_sessions)
        self.start_rss_bytes: int | None = None
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
        self.finished_client_underruns = 0
        """Underruns the players of finished conversations reported (live ones add theirs)."""
        self.diagnostics = Diagnostics() if self.settings.diagnostics else None
        self._recorder = (
            None
            if self.settings.timeline is None
            else TimelineRecorder(
                self.settings.timeline,
                self.diagnostics.timeline if self.diagnostics is not None else None,
            )
        )
        self.memory = MemoryReleaser(pipeline.release_memory, self.settings.memory_release_s)
        self.registry = CollectorRegistry(auto_describe=False)
        self._ready_time = Histogram(
            "voicecore_session_ready_seconds",
            "Time from a client's hello to its ready (a place found, the session's stages "
            "built), in seconds.",
            buckets=READY_BUCKETS_S,
            registry=self.registry,
        )
        self.registry.register(ServerCollector(self))
        ProcessCollector(registry=self.registry)
        self._shutdown = trio.Event()
        self._drain_timeout_s = self.settings.drain_timeout_s
        self._draining = False
        self._sessions_gone = trio.Event()
        self.conversations: ConversationStore | None = None
        self.conversation_counts = {"resumed": 0, "new": 0}
        """Conversations since start: resumed with ``hello.resume``, and new."""

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
        """Conversations open (connections past ``hello``)."""
        return sum(c.session is not None for c in self._connections.values())

    @property
    def server_sessions(self) -> int:
        """Conversations open in all the server's workers (this process' alone without a
        ledger): what the capacity limits."""
        return self.ledger.sessions() if self.ledger is not None else self.sessions

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

    def shutdown(self, *, drain_timeout_s: float | None = None) -> None:
        """Requests a graceful shutdown; ``run`` returns once it is done. The server drains
        first: ``/healthz`` turns 503 at once, no new conversation is admitted, and the
        running ones go on for ``drain_timeout_s`` (default ``settings.drain_timeout_s``; 0:
        none; a second call may shorten it) or until they end; then the rest are closed
        with 1001 (a client reconnects elsewhere and resumes)."""
        if drain_timeout_s is not None:
            self._drain_timeout_s = min(self._drain_timeout_s, drain_timeout_s)
        self._draining = True
        self._shutdown.set()

    @property
    def draining(self) -> bool:
        """Whether a shutdown was requested (``/healthz`` says 503 ``draining``)."""
        return self._draining

    async def run(
        self, *, task_status: trio.TaskStatus[VoiceServer] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Binds its port, finds its capacity (measuring it if no setting gives it: a few
        seconds), gives the start-up memory back, serves until ``shutdown``, then shuts down
        gracefully: no new connection, every session closed with 1001 (its agent turn
        cancelled), the pacer stopped.

        Use ``await nursery.start(server.run)``: it returns once the server is listening.

        Raises:
            CalibrationError: the start-up measurement failed (set ``capacity_per_core`` or
                ``max_sessions`` to skip it).
            OSError: it cannot listen.
        """
        settings = self.settings
        try:
            # The port first: a taken one fails at once, not after the measurement (and
            # nothing is accepted until the capacity is known).
            sockets: list[trio.SocketListener] = (
                [trio.SocketListener(trio.socket.from_stdlib_socket(s)) for s in self._sockets]
                if self._sockets
                else await trio.open_tcp_listeners(settings.port, host=settings.host)
            )
            self.port = sockets[0].socket.getsockname()[1]
            listeners: list[trio.abc.Listener[trio.SocketStream]] = (
                [LeastConnectionsListener(s, self.ledger) for s in sockets]
                if self.ledger is not None
                else list(sockets)
            )
            try:
                capacity = await self._find_capacity()
            except BaseException:
                for listener in listeners:
                    await trio.aclose_forcefully(listener)
                raise
            self.capacity = capacity
            self.admission = Admission(
                max_sessions=capacity.max_sessions,
                max_pending=settings.max_pending,
                max_per_address=settings.max_connections_per_address,
                shared=self.ledger,
            )
            self.conversations = await open_store(
                settings.conversation_store, ttl_s=settings.conversation_ttl_s
            )
            await trio.to_thread.run_sync(self.memory.release_now)
            self.start_rss_bytes = rss_bytes()
            self._origins = frozenset(
                settings.allowed_origins
                if settings.allowed_origins is not None
                else default_origins(settings.host, self.port)
            )
            async with trio.open_nursery() as nursery:
                if self.diagnostics is not None:
                    await nursery.start(self.diagnostics.run)
                nursery.start_soon(self.router.run)
                nursery.start_soon(self.memory.run)
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
                    _log.info("%s", capacity.describe())
                    if self.ledger is not None:
                        self.ledger.set_state(WorkerState.SERVING)
                    task_status.started(self)
                    await self._shutdown.wait()
                    if self.ledger is not None:
                        self.ledger.set_state(WorkerState.DRAINING)
                    await self._drain()
                    self._stop(accepting, connections)
                if connections.cancel_scope.cancelled_caught:
                    _log.warning("shutdown: sessions still open after the timeout; cancelled")
                nursery.cancel_scope.cancel()  # the router, diagnostics, memory releaser
        finally:
            if self.conversations is not None:
                with trio.CancelScope(shield=True):
                    await self.conversations.aclose()
            if self._owns_pacer:
                self._pacer.stop()

    async def _drain(self) -> None:
        """Lets the running conversations go on until they end or the drain timeout passes
        (polled: a shutdown that shortens the timeout takes effect within a tick)."""
        started = trio.current_time()
        _log.info(
            "draining: %d conversations may go on for up to %g s",
            self.sessions,
            self._drain_timeout_s,
        )
        while self.sessions and trio.current_time() - started < self._drain_timeout_s:
            with trio.move_on_after(0.1):
                await self._sessions_gone.wait()
        _log.info(
            "drained after %.1f s: %d conversations left",
            trio.current_time() - started,
            self.sessions,
        )

    async def _find_capacity(self) -> Capacity:
        """The configured capacity, or the one measured by a start-up conversation (by the
        first worker, which publishes it for the others in the ledger)."""
        ledger = self.ledger
        if ledger is None or ledger.index == 0:
            capacity = ledger.capacity() if ledger is not None else None
            if capacity is not None:  # a restarted first worker: measured already
                return Capacity.from_json(capacity)
            found = await self._own_capacity()
            if ledger is not None:
                ledger.publish_capacity(found.to_json())
            return found
        while (published := ledger.capacity()) is None:
            await trio.sleep(0.1)
        return Capacity.from_json(published)

    async def _own_capacity(self) -> Capacity:
        settings = self.settings
        cores = available_cores()
        configured = Capacity.configured(
            cores,
            max_sessions=settings.max_sessions,
            capacity_per_core=settings.capacity_per_core,
        )
        if configured is not None:
            return configured
        _log.info("measuring what one conversation costs (a few seconds)...")
        self.calibration = await calibrate(self._pipeline)
        return Capacity.calibrated(
            cores, session_cpu=self.calibration.session_cpu, cpu_budget=settings.cpu_budget
        )

    def _stop(self, accepting: trio.CancelScope, connections: trio.Nursery) -> None:
        """Stops accepting, asks every session to close with 1001, and gives them
        ``shutdown_timeout_s`` before they are cancelled. After a drain, a conversation in
        the middle of a turn (the user speaking, a reply playing) is closed at its next
        quiet moment, if one comes while there is time: the user then loses no word."""
        _log.info("shutting down: closing %d connections", len(self._connections))
        accepting.cancel()
        settings = self.settings
        patience = settings.shutdown_timeout_s - settings.close_timeout_s - QUIET_CLOSE_MARGIN_S
        for connection in list(self._connections.values()):
            session = connection.session
            if self._drain_timeout_s > 0 and patience > 0 and session is not None:
                connections.start_soon(self._close_when_quiet, connection, session, patience)
            else:
                connection.transport.close_soon(CloseCode.GOING_AWAY, DRAINING_REASON)
        connections.cancel_scope.deadline = trio.current_time() + settings.shutdown_timeout_s

    @staticmethod
    async def _close_when_quiet(connection: _Connection, session: Session, patience: float) -> None:
        with trio.move_on_after(patience):
            while not session.quiet:
                await trio.sleep(QUIET_POLL_S)
        connection.transport.close_soon(CloseCode.GOING_AWAY, DRAINING_REASON)

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
        if path == "/livez":
            # Liveness: the event loop answers (also while draining, when /healthz is 503:
            # an orchestrator must not kill a draining server).
            return response(http.HTTPStatus.OK, b'{"status":"alive"}', "application/json")
        if path == "/metrics":
            return response(
                http.HTTPStatus.OK, self.metrics_text().encode(), PROMETHEUS_CONTENT_TYPE
            )
        return await static_response(self.settings.web_root, path)

    def status(self) -> str:
        """``"ok"`` (taking new conversations), ``"full"`` (every conversation slot taken)
        or ``"draining"`` (shutting down); ``"starting"`` before ``run`` has found its
        capacity."""
        if self._draining:
            return "draining"
        if self.admission is None:
            return "starting"
        return "full" if self.admission.full else "ok"

    def health(self) -> dict[str, Any]:
        """What ``/healthz`` reports (``voicecore.server.reporting.health_report``)."""
        return health_report(self)

    def _health(self) -> Response:
        health = self.health()
        status = http.HTTPStatus.OK if health["ready"] else http.HTTPStatus.SERVICE_UNAVAILABLE
        return response(status, json.dumps(health).encode(), "application/json")

    def metrics_text(self) -> str:
        """``/metrics``: Prometheus text (format 0.0.4) of :attr:`registry`: the live and
        recently finished sessions, admission, memory, the process diagnostics."""
        return generate_latest(self.registry).decode()

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
        assert self.admission is not None
        ticket = self.admission.connect()
        if ticket is None:
            # Too many connections say nothing yet: this one is not even read.
            await trio.aclose_forcefully(stream)
            return
        try:
            await self._serve_connection(stream, ticket)
        finally:
            self.admission.release(ticket)

    async def _serve_connection(self, stream: trio.SocketStream, ticket: Ticket) -> None:
        settings = self.settings
        deadline = trio.current_time() + settings.hello_timeout_s
        try:
            peer = stream.socket.getpeername()[0]
        except OSError:  # the client is gone already
            await trio.aclose_forcefully(stream)
            return
        if settings.send_buffer_bytes:  # 0: the OS default
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, settings.send_buffer_bytes)
        websocket = await accept(
            stream,
            self._respond,
            max_message_bytes=2 * settings.max_message_bytes,
            close_timeout_s=settings.close_timeout_s,
            handshake_timeout_s=settings.hello_timeout_s,
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
                max_message_bytes=settings.max_message_bytes,
            ),
            send_queue_ms=settings.send_queue_ms,
        )
        # Several X-Forwarded-For lines are legal HTTP: they read as one comma-separated list.
        hops = websocket.request.headers.get_all("X-Forwarded-For") if websocket.request else []
        forwarded = ", ".join(hops) or None
        address = client_address(peer, forwarded, settings.trusted_proxies or ())
        async with trio.open_nursery() as nursery:
            nursery.start_soon(transport.run_writer)
            nursery.start_soon(websocket.keepalive, KEEPALIVE_INTERVAL_S, KEEPALIVE_TIMEOUT_S)
            try:
                await self._converse(
                    session_id, websocket.request, transport, ticket, address, deadline
                )
            finally:
                with trio.CancelScope(shield=True):
                    await transport.aclose()
                nursery.cancel_scope.cancel()  # the keepalive's sleep

    def _refuse(self, transport: WebSocketTransport, refusal: Refusal, address: str) -> None:
        """Tells the client ``busy`` (why, and to try again later) and closes with 1013."""
        assert self.capacity is not None
        if refusal is Refusal.ADDRESS:
            message = (
                f"your address already holds {self.settings.max_connections_per_address} "
                "connections to this server; close one, or try again in a minute"
            )
            _log.info("refused a connection from %s: too many from that address", address)
        else:
            message = (
                f"the server is at its limit of {self.capacity.max_sessions} conversations; "
                "try again in a minute"
            )
        transport.fail(ErrorCode.BUSY, message, CloseCode.TRY_AGAIN_LATER)

    async def _converse(
        self,
        session_id: str,
        request: Request | None,
        transport: WebSocketTransport,
        ticket: Ticket,
        address: str,
        deadline: float,
    ) -> None:
        assert self.admission is not None
        if self._draining:
            transport.close_soon(CloseCode.GOING_AWAY, DRAINING_REASON)
            return
        if not self._token_ok(request):
            transport.fail(
                ErrorCode.UNAUTHORIZED,
                "a valid token is required (Authorization: Bearer or ?token=)",
                CloseCode.POLICY,
            )
            return
        refusal = self.admission.identify(ticket, address)
        if refusal is not None:
            self._refuse(transport, refusal, address)
            return
        connection = _Connection(transport, ticket)
        self._connections[session_id] = connection
        try:
            with trio.move_on_at(deadline) as waited:
                try:
                    hello = await transport.handshake()
                except trio.EndOfChannel:
                    return
            if waited.cancelled_caught:
                self.admission.timed_out(ticket)
                transport.fail(
                    ErrorCode.HELLO_TIMEOUT,
                    f"no hello within {self.settings.hello_timeout_s:g} s of connecting",
                    CloseCode.POLICY,
                )
                return
            hello_at = trio.current_time()
            refusal = self.admission.admit(ticket)
            if refusal is not None:
                self._refuse(transport, refusal, address)
                return
            # Building a session's VAD loads a model (an ONNX session): done on the loop it
            # would stall every other session's audio hand-off.
            providers = await trio.to_thread.run_sync(self._pipeline.providers)
            await self._pipeline.load(providers)
            assert self.conversations is not None
            record = None if hello.resume is None else await self.conversations.load(hello.resume)
            # A token the store does not know is not adopted: the server names conversations.
            token = hello.resume if record is not None and hello.resume else new_token()
            self.conversation_counts["new" if record is None else "resumed"] += 1
            _log.info(
                "%s: %s from %s, mic %d Hz, playback %d Hz",
                session_id,
                hello.client or "client",
                address,
                hello.input_rate,
                hello.output_rate,
            )
            session = self._pipeline.session(
                transport,
                providers=providers,
                pacer=self.router,
                session_id=session_id,
                timeline=Timeline(clock=trio.current_time, max_events=SERVER_TIMELINE_EVENTS),
                conversation=record,
            )
            connection.session = session
            if self._recorder is not None:
                self._recorder.add_session(session_id, session.timeline)
            transport.metrics = session.metrics
            await self.conversations.save(token, session.conversation(), take=True)
            transport.accept(
                conversation=token,
                resumed=record is not None,
                history=None if record is None else record.said(),
            )
            self._ready_time.observe(trio.current_time() - hello_at)
            async with trio.open_nursery() as keeping:
                keeping.start_soon(self._keep, session, token, transport)
                await session.run()
                keeping.cancel_scope.cancel()
            with trio.CancelScope(shield=True), trio.move_on_after(REDIS_TIMEOUT_S):
                await self.conversations.save(token, session.conversation())  # unless taken
        finally:
            del self._connections[session_id]
            if not self.sessions:
                self._sessions_gone.set()
                self._sessions_gone = trio.Event()
            if self._recorder is not None:
                self._recorder.end_session(session_id)
            if connection.session is not None:
                self.recent.append(connection.session.metrics)
                self.finished_client_underruns += connection.session.metrics.client_underruns
                self.memory.session_ended()
            _log.info(
                "%s: closed (%s), %.1f s",
                session_id,
                transport.close_code or "by the client",
                time.monotonic() - connection.opened,
            )

    async def _keep(self, session: Session, token: str, transport: WebSocketTransport) -> None:
        """Saves the conversation after every change (coalesced: one save at a time); if
        another session has resumed it meanwhile, this one is closed: its client is
        elsewhere (or a second tab took the conversation over)."""
        assert self.conversations is not None
        while True:
            await session.conversation_changed()
            saved = await self.conversations.save(token, session.conversation())
            if saved is Saved.SUPERSEDED:
                _log.info("%s: the conversation was resumed elsewhere", session.session_id)
                transport.close_soon(CloseCode.NORMAL, RESUMED_ELSEWHERE_REASON)
                return
