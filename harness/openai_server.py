"""Real HTTP/1.1 servers on 127.0.0.1 that speak the OpenAI-compatible API: a scripted one
for the provider tests, a fast streaming one in a subprocess for the provider benchmark.

The network providers are tested against real sockets, real HTTP framing (keep-alive,
chunked transfer) and real server-sent events, not a mocked transport. Each test scripts
the replies of one path, in order (``server.script("/v1/chat/completions", reply, ...)``);
a reply is a status, headers and a body made of steps:

* ``bytes``: sent at once as one HTTP chunk (one network write);
* ``Pause(s)``: wait ``s`` seconds;
* ``Gate(event)``: wait until the test sets the ``threading.Event``;
* ``Stall()``: hold the response open until the client closes the connection;
* ``Reset()``: abort the connection with a TCP RST.

Every request is recorded (``server.requests``) with its headers, body, client port (to
check connection reuse) and a ``disconnected`` event set when the server saw the client
close the connection during the reply (to check that cancellation closes the stream).
The server runs in threads (stdlib ``http.server``) so the Trio test drives the client alone.

``StreamingServer`` runs ``python -m harness.openai_server`` instead: a server in its own
process (so that it does not compete for the client's GIL) that streams canned chat deltas
as fast as it can, one network write each: ``{"max_tokens": n}`` streams n deltas then
``[DONE]``; ``{"stall": true}`` streams ``STALL_AFTER`` and waits for the client to close,
and reports when it saw it go (``closed_at``, on ``CLOCK_MONOTONIC``, the same clock in
every process).
"""

from __future__ import annotations

import contextlib
import io
import json
import select
import socket
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Final

from harness import subprocess_env

__all__ = [
    "STALL_AFTER",
    "Gate",
    "OpenAIServer",
    "Pause",
    "Received",
    "Reply",
    "Reset",
    "Stall",
    "StreamingServer",
    "chat_chunk",
    "chat_reply",
    "error_reply",
    "json_reply",
    "sse",
]


@dataclass(frozen=True)
class Pause:
    """Wait ``seconds`` before the next step."""

    seconds: float


@dataclass(frozen=True)
class Gate:
    """Wait until the test sets ``event``."""

    event: threading.Event


@dataclass(frozen=True)
class Stall:
    """Hold the response open (send nothing) until the client closes the connection."""


@dataclass(frozen=True)
class Reset:
    """Abort the connection with a TCP RST (SO_LINGER 0, then close)."""


Step = bytes | Pause | Gate | Stall | Reset


@dataclass
class Reply:
    """One scripted response: status, headers and body steps (chunked unless ``chunked`` is
    False, then sent with a Content-Length)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: list[Step] = field(default_factory=list)
    chunked: bool = True


@dataclass
class Received:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int
    disconnected: threading.Event = field(default_factory=threading.Event)
    disconnected_at: float | None = None
    """``time.monotonic()`` when the server saw the client go, if it did."""

    def json(self) -> Any:
        """The body parsed as JSON."""
        return json.loads(self.body)


def sse(payload: dict[str, Any] | str) -> bytes:
    """One server-sent event: ``data: <json or text>`` and its blank line."""
    data = payload if isinstance(payload, str) else json.dumps(payload)
    return f"data: {data}\n\n".encode()


def chat_chunk(content: str | None = None, *, finish: str | None = None) -> dict[str, Any]:
    """A ``chat.completion.chunk`` carrying ``content`` (None: a role-only first chunk)."""
    delta: dict[str, Any] = {"role": "assistant"} if content is None else {"content": content}
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "model": "test-model",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


def chat_reply(deltas: Iterable[str], *, between: Iterable[Step] = (), done: bool = True) -> Reply:
    """A streamed chat answer: a role chunk, one chunk per delta (``between`` steps after
    each), a finish chunk and ``data: [DONE]``."""
    gaps = list(between)
    body: list[Step] = [sse(chat_chunk())]
    for delta in deltas:
        body += [sse(chat_chunk(delta)), *gaps]
    body.append(sse(chat_chunk("", finish="stop")))
    if done:
        body.append(sse("[DONE]"))
    return Reply(headers={"Content-Type": "text/event-stream"}, body=body)


def error_reply(status: int, message: str, **headers: str) -> Reply:
    """An OpenAI-shaped JSON error: ``{"error": {"message": ..}}``."""
    body = json.dumps({"error": {"message": message, "type": "test_error"}}).encode()
    return Reply(status, {"Content-Type": "application/json", **headers}, [body], chunked=False)


def json_reply(payload: dict[str, Any]) -> Reply:
    """A 200 JSON answer with a Content-Length."""
    return Reply(200, {"Content-Type": "application/json"}, [json.dumps(payload).encode()], False)


class _Server(ThreadingHTTPServer):
    daemon_threads = False  # server_close() joins every handler thread
    block_on_close = True
    owner: OpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:
        error = sys.exc_info()[1]
        if error is not None:
            self.owner.errors.append(error)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive and chunked replies
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the tests assert on ``requests``, not on a log."""

    def setup(self) -> None:
        super().setup()
        self.server.owner.connections.add(self.connection)

    def finish(self) -> None:
        self.server.owner.connections.discard(self.connection)
        super().finish()

    def handle(self) -> None:
        # A client that closes its connection with a reply still unread (a body it did not
        # need) makes the read of the next request see a reset: not a server error.
        with contextlib.suppress(ConnectionResetError):
            super().handle()

    def do_POST(self) -> None:
        owner = self.server.owner
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        received = Received(
            "POST",
            self.path,
            {name.lower(): value for name, value in self.headers.items()},
            body,
            self.client_address[1],
        )
        with owner.lock:
            owner.requests.append(received)
            queue = owner.replies.get(self.path)
            reply = (
                queue.popleft() if queue else error_reply(404, f"nothing scripted for {self.path}")
            )
        try:
            self._send(reply, received)
        except (BrokenPipeError, ConnectionResetError):
            self._gone(received)

    def _send(self, reply: Reply, received: Received) -> None:
        self.send_response(reply.status)
        for name, value in reply.headers.items():
            self.send_header(name, value)
        if reply.chunked:
            self.send_header("Transfer-Encoding", "chunked")
        else:
            length = sum(len(step) for step in reply.body if isinstance(step, bytes))
            self.send_header("Content-Length", str(length))
        self.end_headers()
        closing = self.server.owner.closing
        for step in reply.body:
            if isinstance(step, bytes):
                self.wfile.write(b"%x\r\n%s\r\n" % (len(step), step) if reply.chunked else step)
            elif isinstance(step, Pause):
                closing.wait(step.seconds)
            elif isinstance(step, Gate):
                while not step.event.wait(0.01) and not closing.is_set():
                    pass
            elif isinstance(step, Stall):
                self._wait_for_disconnect(received)
                return
            else:
                self._reset()
                return
        if reply.chunked:
            self.wfile.write(b"0\r\n\r\n")

    def _wait_for_disconnect(self, received: Received) -> None:
        """Polls the socket until the client closes it (readable with nothing to read)."""
        while not self.server.owner.closing.is_set():
            readable, _, _ = select.select([self.connection], [], [], 0.005)
            if readable:
                try:
                    data = self.connection.recv(1, socket.MSG_PEEK)
                except OSError:
                    data = b""
                if not data:
                    self._gone(received)
                    return
                time.sleep(0.005)
        self.close_connection = True

    def _gone(self, received: Received) -> None:
        received.disconnected_at = time.monotonic()
        received.disconnected.set()
        self.close_connection = True

    def _reset(self) -> None:
        """Closes the socket with SO_LINGER 0, which sends a RST instead of a FIN. The file
        objects over the socket are swapped for dummies first: while they are open the
        socket's descriptor would stay open."""
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        rfile, wfile = self.rfile, self.wfile
        self.rfile, self.wfile = io.BytesIO(), io.BytesIO()
        rfile.close()
        wfile.close()
        self.connection.close()
        self.close_connection = True


class OpenAIServer:
    """The scripted server; ``close()`` stops it and joins its threads."""

    def __init__(self) -> None:
        self.replies: dict[str, deque[Reply]] = {}
        self.requests: list[Received] = []
        self.errors: list[BaseException] = []
        """Exceptions raised in handler threads (a test fixture asserts there are none)."""
        self.connections: set[socket.socket] = set()
        self.lock = threading.Lock()
        self.closing = threading.Event()
        self._httpd = _Server(("127.0.0.1", 0), _Handler)
        self._httpd.owner = self
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The TCP port it listens on."""
        return int(self._httpd.server_address[1])

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, path: str, *replies: Reply) -> None:
        """Appends ``replies`` to those of ``path`` (e.g. ``"/v1/chat/completions"``)."""
        with self.lock:
            self.replies.setdefault(path, deque()).extend(replies)

    def close(self) -> None:
        """Stops serving, releases stalled replies, closes open connections, joins threads."""
        self.closing.set()
        self._httpd.shutdown()
        for connection in list(self.connections):
            with contextlib.suppress(OSError):  # already closed by its client
                connection.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        self._thread.join()


# --- the streaming server of the benchmark ----------------------------------------------------

STALL_AFTER: Final = 5
"""Deltas a ``{"stall": true}`` request gets before the server waits for the client to go."""


def _chunked(data: bytes) -> bytes:
    """``data`` as one HTTP chunk."""
    return b"%x\r\n%s\r\n" % (len(data), data)


class _StreamingHandler(BaseHTTPRequestHandler):
    """``{"max_tokens": n}`` streams n deltas then [DONE]; ``{"stall": true}`` streams a few
    and waits for the client to close, printing when it did."""

    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""

    def setup(self) -> None:
        super().setup()
        # As production servers do (asyncio, uvicorn): no Nagle delay on small writes.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if request.get("stall"):
            for index in range(STALL_AFTER):
                self.wfile.write(_chunked(sse(chat_chunk(f" w{index}"))))
            self.connection.settimeout(5.0)
            try:
                gone = self.connection.recv(1) == b""
            except OSError:
                gone = True
            if gone:  # CLOCK_MONOTONIC: the same clock in every process
                print(f"closed {time.monotonic()}", flush=True)
            self.close_connection = True
            return
        for index in range(int(request["max_tokens"])):
            self.wfile.write(_chunked(sse(chat_chunk(f" w{index}"))))
        self.wfile.write(_chunked(sse("[DONE]")) + b"0\r\n\r\n")


def _serve_streaming() -> None:
    """``python -m harness.openai_server``: prints its port, serves until stdin closes."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StreamingHandler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(f"port {server.server_address[1]}", flush=True)
    sys.stdin.read()


class StreamingServer:
    """Runs the streaming server in a child process; ``closed_at`` collects the times
    (``time.monotonic()``) at which it saw a stalled stream's client go."""

    def __init__(self) -> None:
        self._process = subprocess.Popen(
            [sys.executable, "-m", "harness.openai_server"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )
        assert self._process.stdout is not None
        self._stdout = self._process.stdout
        self.port = int(self._stdout.readline().split()[1])
        self.closed_at: list[float] = []
        self._reader = threading.Thread(target=self._read)
        self._reader.start()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>/v1``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def _read(self) -> None:
        for line in self._stdout:
            self.closed_at.append(float(line.split()[1]))

    def close(self) -> None:
        """Closes its stdin (it exits) and waits for it."""
        assert self._process.stdin is not None
        self._process.stdin.close()
        self._process.wait(timeout=10)
        self._reader.join()
        self._stdout.close()


if __name__ == "__main__":
    _serve_streaming()
