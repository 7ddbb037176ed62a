"""HTTP on the voice server's port: the browser client's static files and the headers every
response carries.

Every path but ``/ws``, ``/healthz`` and ``/metrics`` is a static file from the web folder
(MIME types a browser accepts for ES modules and WebAssembly), never a file outside it; every
response is cross-origin isolated (``SharedArrayBuffer`` for the audio worklet's ring).
"""

from __future__ import annotations

import http
import ipaddress
import urllib.parse
from collections.abc import Sequence
from pathlib import Path
from typing import Final

import trio
from websockets.datastructures import Headers
from websockets.http11 import Response

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

PROMETHEUS_CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"


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


def response(
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


def text_response(status: http.HTTPStatus, text: str) -> Response:
    return response(status, (text + "\n").encode(), "text/plain; charset=utf-8")


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
        return text_response(http.HTTPStatus.NOT_FOUND, "not found")
    body = await trio.Path(path).read_bytes()  # in a thread: the loop never waits on a disk
    content_type = MIME_TYPES.get(path.suffix.lower(), "application/octet-stream")
    return response(http.HTTPStatus.OK, body, content_type)
