"""A TCP proxy on loopback between the browser and ``voicecore serve``, for the reconnection
tests: cutting its connections is a network failure as the browser sees it (the socket ends
with no close frame: WebSocket close code 1006), and pointing it at another server is a
server replaced behind the same address (a restart, a new pod)."""

from __future__ import annotations

import contextlib
import socket
import threading

from harness.launcher import ServerProcess


class LoopbackProxy:
    """Forwards every connection made to ``127.0.0.1:port`` to the upstream port of the
    moment, byte for byte, each direction in a thread of its own. A connection made while
    nothing listens upstream is closed at once (the browser sees a failed connection).

    The page's origin is then the proxy's: the server must allow it (``allowed_origins``),
    so a proxy is made first, and pointed at its server once that runs."""

    def __init__(self, upstream_port: int | None = None) -> None:
        #: Where connections go; None: nowhere (each is closed at once: the server is gone).
        self.upstream_port = upstream_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        threading.Thread(target=self._accept, name="proxy-accept", daemon=True).start()

    @property
    def url(self) -> str:
        """``http://127.0.0.1:port``: what the browser opens instead of the server."""
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:  # closed
                return
            try:
                if self.upstream_port is None:
                    raise ConnectionRefusedError
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port), timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := source.recv(65536):
                sink.sendall(data)
        # One side ended: end the other, as a cut cable would.
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        with self._lock:
            for end in (source, sink):
                if end in self._open:
                    self._open.remove(end)
                    end.close()

    def drop(self) -> int:
        """Cuts every connection open now, in both directions, without a WebSocket close
        frame; returns how many there were. New connections are forwarded as before."""
        with self._lock:
            cut = list(self._open)
        for end in cut:
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
        return len(cut) // 2

    def close(self) -> None:
        """Stops accepting and cuts what is open."""
        self._listener.close()
        self.drop()


class ProxiedServer:
    """What :class:`~browser_session.DemoSession` needs of a server (its ``url``, its log for
    a failed test), with the page's traffic going through ``proxy`` to ``server``."""

    def __init__(self, proxy: LoopbackProxy, server: ServerProcess) -> None:
        self.proxy = proxy
        self.server = server

    @property
    def url(self) -> str:
        """The proxy's address."""
        return self.proxy.url

    def log_tail(self) -> str:
        """The tail of the log of the server the proxy forwards to."""
        return self.server.log_tail()
