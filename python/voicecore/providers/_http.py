"""HTTP plumbing of the network providers: errors, settings, retries, streamed bodies, SSE.

Private: the public names are re-exported by ``voicecore.providers.openai``.

Three rules shape this module:

* **Deadlines are Trio's, not httpx's.** httpx only bounds connecting (``connect_timeout_s``);
  every other wait (response headers, first token, gap between tokens) is a Trio cancel
  scope around one ``await``, so a deadline can span retries ("first token within 10 s of the
  call, retries included") and can count what matters (text deltas, not keep-alive bytes).
* **Retries happen only before the first item is handed to the caller.** Once a token or an
  audio chunk has been yielded, a retry would repeat it; a failure after that point ends the
  call with an error.
* **Every body is closed at once, whatever happens.** A cancelled, timed-out or abandoned
  stream closes its TCP connection (the server sees it go), and no httpx async generator is
  left suspended: Trio warns about each one the garbage collector finds
  (``ResourceWarning``), and httpx nests seven of them per streamed body.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx
import trio

from voicecore.engine.stages import TurnContext
from voicecore.exceptions import (
    ConfigError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    StageTimeoutError,
)

__all__ = [
    "Body",
    "HttpEndpoint",
    "SSEDecoder",
    "SSEEvent",
]

T = TypeVar("T")

DEFAULT_BASE_URL = "https://api.openai.com/v1"

MAX_ERROR_BODY = 64 * 1024
"""Bytes of an error response read for its message (bodies of errors are small; a broken
server must not make us buffer megabytes)."""


def positive(name: str, value: float) -> float:
    """``value`` if it is a finite number > 0, else a ``ConfigError`` naming ``name``."""
    if not value > 0 or value == float("inf"):
        raise ConfigError(f"{name} must be a finite number > 0, got {value!r}")
    return value


@dataclass(frozen=True, slots=True)
class SSEEvent:
    """One server-sent event: its type (``event:`` field, "message" by default) and data."""

    event: str
    data: str


class SSEDecoder:
    """Incremental server-sent-events decoder (sans-IO: bytes in, events out).

    Follows the WHATWG event-stream format (lines end with CRLF, LF or CR; ``data:`` lines
    accumulate until a blank line dispatches the event; ``:`` starts a comment; one space
    after the colon is dropped), with two deliberate differences, because a chat stream that
    silently loses text is worse than one that fails:

    * a line that is not one of the four SSE fields (``data``, ``event``, ``id``, ``retry``)
      nor a comment is an error (the spec ignores it), e.g. a JSON body or an HTML error
      page sent where a stream was expected;
    * at the end of the stream a pending event without its blank line is still dispatched.

    Args:
        max_line_bytes: longest line accepted, in bytes (a server that never ends a line
            must not make us buffer without bound).
    """

    _FIELDS = frozenset({"data", "event", "id", "retry"})

    def __init__(self, max_line_bytes: int = 1 << 20) -> None:
        self._buffer = bytearray()
        self._data: list[str] = []
        self._event = ""
        self._max_line_bytes = max_line_bytes

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Adds received bytes; returns the events they complete, in order.

        Raises:
            ValueError: a line that is not SSE, is not UTF-8, or is too long.
        """
        self._buffer += chunk
        events: list[SSEEvent] = []
        self._drain(events, final=False)
        return events

    def close(self) -> list[SSEEvent]:
        """Ends the stream; returns the events still pending (see the class notes)."""
        events: list[SSEEvent] = []
        self._drain(events, final=True)
        if self._buffer:
            self._line(bytes(self._buffer), events)
            self._buffer.clear()
        if self._data:
            events.append(self._dispatch())
        return events

    def _drain(self, events: list[SSEEvent], *, final: bool) -> None:
        """Parses the complete lines in the buffer, appending the events they complete."""
        buffer = self._buffer
        if b"\r" not in buffer:  # the common case, LF only: one split instead of a scan
            end = buffer.rfind(b"\n")
            if end >= 0:
                for raw in bytes(buffer[:end]).split(b"\n"):
                    self._line(raw, events)
                del buffer[: end + 1]
        else:
            start = 0
            while True:
                lf = buffer.find(b"\n", start)
                cr = buffer.find(b"\r", start, lf if lf >= 0 else len(buffer))
                if cr >= 0:
                    if cr + 1 == len(buffer) and not final:
                        break  # a CR at the end may be the first half of a CRLF
                    end, skip = cr, 2 if buffer[cr + 1 : cr + 2] == b"\n" else 1
                elif lf >= 0:
                    end, skip = lf, 1
                else:
                    break
                self._line(bytes(buffer[start:end]), events)
                start = end + skip
            del buffer[:start]
        if len(buffer) > self._max_line_bytes:
            raise ValueError(f"an SSE line longer than {self._max_line_bytes} bytes")

    def _line(self, raw: bytes, events: list[SSEEvent]) -> None:
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ValueError(f"an SSE line that is not UTF-8: {raw[:200]!r}") from exc
        if not line:
            if self._data:
                events.append(self._dispatch())
            return
        if line[0] == ":":
            return
        name, _, value = line.partition(":")
        if name == "data":
            self._data.append(value[1:] if value[:1] == " " else value)
        elif name == "event":
            self._event = value[1:] if value[:1] == " " else value
        elif name not in self._FIELDS:
            raise ValueError(f"not a server-sent-events line: {line[:200]!r}")

    def _dispatch(self) -> SSEEvent:
        event = SSEEvent(self._event or "message", "\n".join(self._data))
        self._data.clear()
        self._event = ""
        return event


def _retry_after(response: httpx.Response) -> float | None:
    """The server's requested delay in seconds (``retry-after-ms`` or numeric
    ``Retry-After``), or None (an HTTP-date ``Retry-After`` is ignored)."""
    for header, scale in (("retry-after-ms", 1e-3), ("retry-after", 1.0)):
        value = response.headers.get(header)
        if value is not None:
            try:
                seconds = float(value) * scale
            except ValueError:
                continue
            if seconds >= 0:
                return seconds
    return None


def server_message(raw: bytes) -> str:
    """The human-readable message in an error body: OpenAI's ``{"error": {"message": ..}}``,
    Ollama's ``{"error": ".."}``, FastAPI's ``{"detail": ..}``, else the text itself."""
    text = raw.decode("utf-8", errors="replace").strip()
    try:
        payload = json.loads(text)
    except ValueError:
        return text[:500]
    if isinstance(payload, dict):
        error = payload.get("error", payload.get("detail"))
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return str(error["message"])[:500]
        if isinstance(error, str):
            return error[:500]
        if error is not None:
            return json.dumps(error)[:500]
    return text[:500]


class Body:
    """A streamed response body, read chunk by chunk under deadlines, closable at any point.

    Args:
        response: a response from ``AsyncClient.send(..., stream=True)``.
        what: the call, for messages (e.g. ``"LLM POST http://.../chat/completions"``).
    """

    def __init__(self, response: httpx.Response, what: str) -> None:
        self.response = response
        self.what = what
        self._chunks: AsyncIterator[bytes] = response.aiter_bytes()

    async def read(self, deadline: float, waiting_for: str) -> bytes | None:
        """The next chunk of the body (any size > 0), or None at its end.

        Args:
            deadline: Trio time by which it must arrive.
            waiting_for: what the caller waits for, for the timeout message.

        Raises:
            StageTimeoutError: nothing arrived by ``deadline``.
            ProviderConnectionError: the connection broke (retryable).
        """
        with trio.CancelScope(deadline=deadline):
            try:
                return await self._chunks.__anext__()
            except StopAsyncIteration:
                return None
            except httpx.TransportError as exc:
                raise ProviderConnectionError(
                    f"{self.what}: connection lost while waiting for {waiting_for}: "
                    f"{_describe(exc)}",
                    url=str(self.response.request.url),
                    retryable=True,
                ) from exc
        raise StageTimeoutError(f"{self.what}: timed out waiting for {waiting_for}")

    async def read_all(self, deadline: float, limit: int, waiting_for: str) -> bytes:
        """The rest of the body, at most ``limit`` bytes (more raises ProviderResponseError)."""
        data = bytearray()
        while (chunk := await self.read(deadline, waiting_for)) is not None:
            data += chunk
            if len(data) > limit:
                raise ProviderResponseError(
                    f"{self.what}: response larger than {limit} bytes",
                    url=str(self.response.request.url),
                )
        return bytes(data)

    async def aclose(self) -> None:
        """Closes the body now, even in a cancelled scope.

        A body read to its end leaves its connection in the pool for the next request. A
        body cut short closes its connection. To leave no httpx generator suspended, the
        rest of the chain is driven once more inside an already-cancelled scope: whatever
        is buffered comes out without waiting, and the first network read raises
        ``Cancelled``, which unwinds (and finishes) every generator of the chain; httpcore
        then closes the socket.
        """
        with trio.CancelScope(shield=True):
            with trio.CancelScope() as drain:
                drain.cancel()
                try:
                    while True:
                        await self._chunks.__anext__()
                except (StopAsyncIteration, httpx.HTTPError, httpx.StreamError):
                    pass
            await self.response.aclose()

    async def http_error(self, deadline: float, key_hint: str) -> ProviderHTTPError:
        """The error to raise for this response's error status, with the server's message
        (read within ``deadline``; a body that does not come in time is left out).
        ``key_hint`` says what to check about the API key (for a 401)."""
        try:
            raw = await self.read_all(deadline, MAX_ERROR_BODY, "the error body")
        except (ProviderError, StageTimeoutError):
            raw = b""
        status = self.response.status_code
        message = server_message(raw) or self.response.reason_phrase
        url = str(self.response.request.url)
        error_type = ProviderAuthError if status in (401, 403) else ProviderHTTPError
        hint = f" (check the API key: {key_hint})" if status == 401 else ""
        return error_type(
            f"{self.what}: HTTP {status}: {message}{hint}",
            url=url,
            status=status,
            server_message=message,
            retry_after_s=_retry_after(self.response),
        )


def _describe(exc: httpx.TransportError) -> str:
    """An httpx error as text (some have an empty message)."""
    return str(exc) or type(exc).__name__


class HttpEndpoint:
    """One OpenAI-compatible server as a provider sees it: base URL, key, client, retries.

    It owns one ``httpx.AsyncClient`` (connections are reused across calls); ``aclose()``
    closes it. Use it within one Trio run.

    Args:
        stage: ``"llm"``, ``"tts"`` or ``"stt"``: names the calls in messages, the retry
            counter (``"<stage>.retries"`` in the session metrics) and the timeline event
            (``"<stage>_retry"``).
        base_url: the API root including its version, e.g. ``http://localhost:11434/v1``.
        api_key: sent as ``Authorization: Bearer <key>``; None sends no such header.
        connect_timeout_s: time allowed to open a TCP (and TLS) connection, in seconds.
        max_retries: further attempts after a retryable failure (0 disables retries).
        retry_backoff_s: delay before the first retry, in seconds; doubles per retry.
        max_retry_backoff_s: cap of that delay, in seconds (a longer ``Retry-After`` from the
            server is honoured if the deadline allows it).
        headers: extra request headers (e.g. ``{"OpenAI-Organization": ...}``).

    Raises:
        ConfigError: a base URL that is not http(s), a timeout <= 0, a negative retry count.
    """

    def __init__(
        self,
        stage: str,
        *,
        base_url: str,
        api_key: str | None,
        connect_timeout_s: float,
        max_retries: int,
        retry_backoff_s: float,
        max_retry_backoff_s: float,
        headers: Mapping[str, str] | None,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        positive("connect_timeout_s", connect_timeout_s)
        if max_retries < 0:
            raise ConfigError(f"max_retries must be >= 0, got {max_retries}")
        if retry_backoff_s < 0 or max_retry_backoff_s < retry_backoff_s:
            raise ConfigError(
                "retry_backoff_s must be >= 0 and <= max_retry_backoff_s, got "
                f"{retry_backoff_s} and {max_retry_backoff_s}"
            )
        self.stage = stage
        self.base_url = base_url.rstrip("/")
        self.has_api_key = bool(api_key)
        self.max_retries = max_retries
        self.retry_backoff_s = retry_backoff_s
        self.max_retry_backoff_s = max_retry_backoff_s
        sent = "the one sent was refused" if api_key else "none was sent"
        self.key_hint = f"{sent}; voicecore's configuration sets it as {stage}.api_key"
        all_headers = dict(headers or {})
        if api_key:
            all_headers["Authorization"] = f"Bearer {api_key}"
        self.client = httpx.AsyncClient(
            base_url=self.base_url + "/",
            headers=all_headers,
            # Only connecting is bounded by httpx; every other wait is a Trio deadline.
            timeout=httpx.Timeout(None, connect=connect_timeout_s),
        )

    def __repr__(self) -> str:
        key = "set" if self.has_api_key else "none"
        return f"base_url={self.base_url!r}, api_key={key}"

    async def aclose(self) -> None:
        """Closes the client and its pooled connections."""
        await self.client.aclose()

    def backoff_s(self, attempt: int, retry_after_s: float | None) -> float:
        """Delay before attempt ``attempt + 1`` (seconds): exponential, capped, at least the
        server's ``Retry-After``."""
        delay = min(self.retry_backoff_s * 2.0 ** (attempt - 1), self.max_retry_backoff_s)
        return max(delay, retry_after_s or 0.0)

    async def open(
        self,
        build: Callable[[], httpx.Request],
        *,
        deadline: float,
        first: Callable[[Body], Awaitable[T]],
        ctx: TurnContext,
    ) -> tuple[Body, T]:
        """Sends a request and reads up to its first output, retrying failures before it.

        Args:
            build: makes the request (called once per attempt: a body stream is single-use).
            deadline: Trio time by which ``first`` must have returned, retries included.
            first: reads the successful response up to the first output the caller will
                hand on (a token, an audio chunk, a transcript) and returns it.
            ctx: the turn (retries are logged, counted and put on its timeline).

        Returns:
            the open body (the caller reads on and closes it) and ``first``'s result.

        Raises:
            StageTimeoutError: ``deadline`` passed (or the next retry could not finish
                before it).
            ProviderError: a non-retryable failure, or the last of ``max_retries + 1``
                attempts failed (the message says how many).
        """
        attempt = 0
        while True:
            attempt += 1
            try:
                return await self._attempt(build(), deadline, first)
            except ProviderError as exc:
                if not exc.retryable or attempt > self.max_retries:
                    if attempt > 1:
                        exc.args = (f"{exc.args[0]} (gave up after {attempt} attempts)",)
                    raise
                delay = self.backoff_s(attempt, exc.retry_after_s)
                if trio.current_time() + delay >= deadline:
                    raise StageTimeoutError(
                        f"no time left for retry {attempt} before the deadline; last failure: {exc}"
                    ) from exc
                ctx.log.warning("%s; retrying in %.3g s (attempt %d)", exc, delay, attempt + 1)
                ctx.session_metrics.count(f"{self.stage}.retries")
                ctx.record(f"{self.stage}_retry", attempt=attempt, error=str(exc))
                await trio.sleep(delay)

    async def _attempt(
        self,
        request: httpx.Request,
        deadline: float,
        first: Callable[[Body], Awaitable[T]],
    ) -> tuple[Body, T]:
        what = f"{self.stage.upper()} {request.method} {request.url}"
        response: httpx.Response | None = None
        with trio.CancelScope(deadline=deadline):
            try:
                response = await self.client.send(request, stream=True)
            except httpx.TransportError as exc:
                raise ProviderConnectionError(
                    f"{what}: cannot reach the server: {_describe(exc)}",
                    url=str(request.url),
                    retryable=True,
                ) from exc
        if response is None:
            raise StageTimeoutError(f"{what}: timed out waiting for the response")
        body = Body(response, what)
        try:
            if not response.is_success:
                raise await body.http_error(deadline, self.key_hint)
            return body, await first(body)
        except BaseException:
            await body.aclose()
            raise


def json_object(data: bytes | str, what: str, url: str) -> dict[str, Any]:
    """Parses a JSON object, or raises ProviderResponseError quoting the start of it."""
    try:
        payload = json.loads(data)
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        shown = data[:200] if isinstance(data, str) else data[:200].decode("utf-8", "replace")
        raise ProviderResponseError(f"{what}: not a JSON object: {shown!r}", url=url)
    return payload
