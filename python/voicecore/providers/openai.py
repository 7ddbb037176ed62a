"""OpenAI-compatible network providers: streaming LLM, streaming TTS and per-utterance STT.

The HTTP APIs that OpenAI defined and that most model servers now speak (OpenAI itself,
Ollama, vLLM, llama.cpp's server, LM Studio for chat; OpenAI, Kokoro-FastAPI, Speaches and
other speech servers for audio):

* :class:`OpenAILLM`: ``POST {base_url}/chat/completions`` with ``"stream": true``; the
  answer arrives as server-sent events, one ``data: {chunk}`` per delta, then
  ``data: [DONE]``.
* :class:`OpenAITTS`: ``POST {base_url}/audio/speech`` with ``"response_format": "pcm"``;
  raw 16-bit little-endian mono PCM (24 kHz at OpenAI) streamed as it is synthesized.
* :class:`OpenAISTT`: ``POST {base_url}/audio/transcriptions``, a multipart upload of the
  utterance as a WAV file once it has ended; one final transcript comes back.

Configuration. Each provider takes its settings as arguments and reads no environment
variable: ``voicecore.pipeline.build_pipeline`` passes them from the configuration
(``voicecore.config``: the ``stt``, ``llm`` and ``tts`` sections, where ``VOICECORE_*`` and
the OpenAI SDK's ``OPENAI_API_KEY`` / ``OPENAI_BASE_URL`` are read). Left out, the base URL
is ``https://api.openai.com/v1``, the models ``gpt-4o-mini``, ``gpt-4o-mini-tts`` and
``whisper-1``, the voice ``alloy``. The base URL includes the API version (``/v1``) as the
OpenAI SDK's does. Without a key no ``Authorization`` header is sent (local servers need
none).

Timeouts, retries, cancellation (the same for the three):

* ``connect_timeout_s`` bounds opening a connection; the first output (token, audio chunk,
  transcript) must come within the first-output timeout of the call, retries included;
  the following ones within the gap timeout of each other. Missed: ``StageTimeoutError``.
* Connection failures, HTTP 5xx, 408, 409 and 429 are retried, up to ``max_retries`` times
  with exponential backoff (honouring ``Retry-After``), but only before the first output
  was yielded: after it, a failure ends the call (a retry would say things twice).
  401/403 raise :class:`ProviderAuthError`, other 4xx :class:`ProviderHTTPError` with the
  server's message; a malformed answer raises :class:`ProviderResponseError`.
* Closing the iterator or cancelling the call closes its HTTP connection at once (the
  server sees it go); a completed call leaves its connection in the pool for the next one.

Each provider owns one ``httpx.AsyncClient``; use it within one Trio run and ``aclose()`` it
(or ``async with provider:``) when done.
"""

from __future__ import annotations

import io
import wave
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx
import numpy as np
import trio

from voicecore.engine.history import Message
from voicecore.engine.stages import AudioChunk, AudioFrame, Hypothesis, TurnContext
from voicecore.exceptions import (
    ConfigError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    StageTimeoutError,
)
from voicecore.providers._http import (
    DEFAULT_BASE_URL,
    Body,
    HttpEndpoint,
    SSEDecoder,
    SSEEvent,
    json_object,
    positive,
)

__all__ = [
    "OpenAILLM",
    "OpenAISTT",
    "OpenAITTS",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
]

DEFAULT_LLM_MODEL = "gpt-4o-mini"
DEFAULT_TTS_MODEL = "gpt-4o-mini-tts"
DEFAULT_TTS_VOICE = "alloy"
DEFAULT_STT_MODEL = "whisper-1"
OPENAI_PCM_RATE = 24000
"""The rate (Hz) of OpenAI's ``pcm`` speech format."""

_MAX_TRANSCRIPT_BYTES = 1 << 20

_END_GRACE_S = 0.25
"""After ``data: [DONE]``, how long (s) to wait for the end of the HTTP body, so that the
connection can be reused; a server that keeps it open past this costs a new connection,
never a late end of the answer."""


def _endpoint(
    stage: str,
    *,
    base_url: str | None,
    api_key: str | None,
    connect_timeout_s: float,
    max_retries: int,
    retry_backoff_s: float,
    max_retry_backoff_s: float,
    headers: Mapping[str, str] | None,
) -> HttpEndpoint:
    return HttpEndpoint(
        stage,
        base_url=base_url if base_url is not None else DEFAULT_BASE_URL,
        api_key=api_key,
        connect_timeout_s=connect_timeout_s,
        max_retries=max_retries,
        retry_backoff_s=retry_backoff_s,
        max_retry_backoff_s=max_retry_backoff_s,
        headers=headers,
    )


def _text(name: str, value: str | None, default: str) -> str:
    """A required text setting: ``value``, or ``default`` when it is None; never blank."""
    if value is None:
        return default
    if not value.strip():
        raise ConfigError(f"{name} must not be empty")
    return value


class _Provider:
    """What the three providers share: the endpoint, ``aclose`` and ``async with``."""

    _http: HttpEndpoint

    @property
    def base_url(self) -> str:
        """The API root requests go to (e.g. ``http://localhost:11434/v1``)."""
        return self._http.base_url

    async def aclose(self) -> None:
        """Closes the HTTP client and its pooled connections."""
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class _ChatStream:
    """The text deltas of one streamed chat completion, read from its SSE body."""

    def __init__(self, body: Body) -> None:
        self._body = body
        self._url = str(body.response.request.url)
        self._decoder = SSEDecoder()
        self._pending: deque[str] = deque()
        self._done = False  # [DONE] received, or the body ended after a finish_reason
        self._finished = False  # a choice carried a finish_reason
        self._started = False  # a delta was returned

    async def next_delta(self, deadline: float) -> str | None:
        """The next non-empty text delta, or None once the answer is complete."""
        while not self._pending:
            if self._done:
                return None
            waiting_for = "the next LLM token" if self._started else "the first LLM token"
            chunk = await self._body.read(deadline, waiting_for)
            try:
                events = self._decoder.feed(chunk) if chunk is not None else self._decoder.close()
            except ValueError as exc:
                raise ProviderResponseError(f"{self._body.what}: {exc}", url=self._url) from exc
            for event in events:
                self._handle(event)
            if chunk is None and not self._done:
                if not self._finished:
                    raise ProviderResponseError(
                        f"{self._body.what}: the stream ended before data: [DONE]",
                        url=self._url,
                    )
                self._done = True
        self._started = True
        return self._pending.popleft()

    async def finish(self, grace_s: float) -> None:
        """Reads the body to its end (normally just its last bytes after ``[DONE]``) so its
        connection can be reused; gives up silently after ``grace_s``."""
        deadline = trio.current_time() + grace_s
        try:
            while await self._body.read(deadline, "the end of the body") is not None:
                pass
        except (ProviderError, StageTimeoutError):
            pass  # the answer is complete; the connection is closed instead of reused

    def _handle(self, event: SSEEvent) -> None:
        if self._done:
            return
        if event.data == "[DONE]":
            self._done = True
            return
        chunk = json_object(event.data, f"{self._body.what}: malformed SSE data", self._url)
        if event.event == "error" or chunk.get("error") is not None:
            detail = chunk.get("error", chunk)
            message = detail.get("message", detail) if isinstance(detail, dict) else detail
            raise ProviderError(
                f"{self._body.what}: the server reported an error mid-stream: {message}",
                url=self._url,
            )
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            raise ProviderResponseError(
                f"{self._body.what}: a chunk without a choices list: {event.data[:200]!r}",
                url=self._url,
            )
        if not choices:
            return  # e.g. the usage chunk of stream_options.include_usage
        choice = choices[0]
        delta = choice.get("delta") if isinstance(choice, dict) else None
        if not isinstance(delta, dict):
            raise ProviderResponseError(
                f"{self._body.what}: a choice without a delta object: {event.data[:200]!r}",
                url=self._url,
            )
        content = delta.get("content")
        if content is not None and not isinstance(content, str):
            raise ProviderResponseError(
                f"{self._body.what}: delta.content is not text: {event.data[:200]!r}",
                url=self._url,
            )
        if content:
            self._pending.append(content)
        if choice.get("finish_reason"):
            self._finished = True


class OpenAILLM(_Provider):
    """Streaming chat completions from an OpenAI-compatible server (``LLM`` protocol).

    ``generate`` posts the conversation to ``{base_url}/chat/completions`` with
    ``"stream": true`` and yields the text of each ``choices[0].delta.content`` as it
    arrives (empty deltas, role-only and usage chunks are skipped). Works with OpenAI,
    Ollama (``http://localhost:11434/v1``), vLLM, llama.cpp's server, LM Studio.

    Args:
        model: the model name; None: ``"gpt-4o-mini"``.
        base_url: the API root with its version; None: ``https://api.openai.com/v1``.
        api_key: the bearer token; None: no ``Authorization`` header.
        connect_timeout_s: time allowed to connect (TCP + TLS), in seconds.
        first_token_timeout_s: time from the call to the first text delta, retries included,
            in seconds.
        token_timeout_s: time allowed between two text deltas, in seconds.
        max_retries: retries of a failed request before the first delta (0: none).
        retry_backoff_s: delay before the first retry, in seconds (doubling per retry).
        max_retry_backoff_s: the cap of that delay, in seconds.
        extra_body: more JSON fields for the request, e.g. ``{"temperature": 0.6,
            "max_tokens": 200}``.
        headers: extra HTTP headers.

    Raises:
        ConfigError: a base URL that is not http(s), a timeout <= 0, negative retries, an
            empty model.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        connect_timeout_s: float = 5.0,
        first_token_timeout_s: float = 10.0,
        token_timeout_s: float = 5.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.25,
        max_retry_backoff_s: float = 2.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.model = _text("model", model, DEFAULT_LLM_MODEL)
        self.first_token_timeout_s = positive("first_token_timeout_s", first_token_timeout_s)
        self.token_timeout_s = positive("token_timeout_s", token_timeout_s)
        self.extra_body = dict(extra_body or {})
        self._http = _endpoint(
            "llm",
            base_url=base_url,
            api_key=api_key,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            max_retry_backoff_s=max_retry_backoff_s,
            headers=headers,
        )

    def __repr__(self) -> str:
        return f"OpenAILLM(model={self.model!r}, {self._http!r})"

    async def generate(self, messages: Sequence[Message], ctx: TurnContext) -> AsyncIterator[str]:
        """Streams the reply to ``messages``, text delta by text delta.

        Raises:
            StageTimeoutError: no first delta within ``first_token_timeout_s`` of the call,
                or a gap longer than ``token_timeout_s`` between deltas.
            ProviderAuthError: HTTP 401/403.
            ProviderHTTPError: another HTTP error (after retries for 5xx/408/409/429).
            ProviderConnectionError: the server is unreachable (after retries), or the
                connection broke after the first delta.
            ProviderResponseError: a malformed stream.
        """
        payload = {
            "model": self.model,
            "messages": [message.to_dict() for message in messages],
            **self.extra_body,
            "stream": True,
        }

        def build() -> httpx.Request:
            return self._http.client.build_request("POST", "chat/completions", json=payload)

        async def first(body: Body) -> tuple[_ChatStream, str | None]:
            content_type = body.response.headers.get("content-type", "text/event-stream")
            if not content_type.startswith("text/event-stream"):
                raise ProviderResponseError(
                    f"{body.what}: expected a text/event-stream, got {content_type!r}",
                    url=str(body.response.request.url),
                )
            stream = _ChatStream(body)
            return stream, await stream.next_delta(deadline)

        deadline = trio.current_time() + self.first_token_timeout_s
        body, (stream, delta) = await self._http.open(
            build, deadline=deadline, first=first, ctx=ctx
        )
        try:
            while delta is not None:
                yield delta
                delta = await stream.next_delta(trio.current_time() + self.token_timeout_s)
            await stream.finish(_END_GRACE_S)
        finally:
            await body.aclose()


class _PcmStream:
    """PCM16 little-endian samples from a streamed body, however the bytes are split."""

    def __init__(self, body: Body) -> None:
        self._body = body
        self._odd = b""  # the first byte of a sample whose second byte has not come yet
        self._started = False  # samples were returned

    async def next_samples(self, deadline: float) -> np.ndarray[Any, np.dtype[np.int16]] | None:
        """The next samples that arrived (at least one), or None at the end of the body."""
        while True:
            waiting_for = "the next TTS audio" if self._started else "the first TTS audio"
            chunk = await self._body.read(deadline, waiting_for)
            if chunk is None:
                if self._odd:
                    raise ProviderResponseError(
                        f"{self._body.what}: the audio ended in the middle of a sample "
                        "(an odd number of PCM16 bytes)",
                        url=str(self._body.response.request.url),
                    )
                return None
            data = self._odd + chunk if self._odd else chunk
            whole = len(data) & ~1
            self._odd = data[whole:]
            if whole:
                self._started = True
                return np.frombuffer(data, dtype="<i2", count=whole // 2).astype(np.int16)


_NOT_PCM = (
    *("audio/mpeg", "audio/mp3", "audio/ogg", "audio/opus", "audio/aac", "audio/flac"),
    *("audio/wav", "audio/x-wav", "audio/wave", "application/json", "text/"),
)
"""Content types that are not raw PCM: what a server that ignores ``response_format`` sends."""


class OpenAITTS(_Provider):
    """Streaming speech from an OpenAI-compatible ``/audio/speech`` endpoint (``TTS``).

    ``synthesize`` posts ``{"model", "input", "voice", "response_format": "pcm"}`` and yields
    ``AudioChunk``s of the raw 16-bit little-endian mono PCM as its bytes arrive (a sample
    split across two network reads is joined). The server must support the ``pcm`` format
    (OpenAI, Kokoro-FastAPI, Speaches do); a compressed or WAV answer is refused with a clear
    error rather than played as noise.

    Args:
        model: the model; None: ``"gpt-4o-mini-tts"``.
        voice: the voice; None: ``"alloy"``.
        base_url: the API root with its version; None: ``https://api.openai.com/v1``.
        api_key: the bearer token; None: no ``Authorization`` header.
        sample_rate: the rate of the server's PCM in Hz (OpenAI: 24000), 8000-48000.
        speed: the ``speed`` field (OpenAI: 0.25-4.0), or None to leave it out.
        instructions: the ``instructions`` field (voice style, gpt-4o-mini-tts), or None.
        connect_timeout_s: time allowed to connect, in seconds.
        first_audio_timeout_s: time from the call to the first audio, retries included, in
            seconds.
        chunk_timeout_s: time allowed between two pieces of audio, in seconds.
        max_retries: retries of a failed request before the first audio (0: none).
        retry_backoff_s: delay before the first retry, in seconds (doubling per retry).
        max_retry_backoff_s: the cap of that delay, in seconds.
        extra_body: more JSON fields for the request (they cannot replace ``model``,
            ``input``, ``voice`` or ``response_format``).
        headers: extra HTTP headers.

    Raises:
        ConfigError: a sample rate outside 8000-48000 Hz, a speed <= 0, or as ``OpenAILLM``.
    """

    def __init__(
        self,
        model: str | None = None,
        voice: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        sample_rate: int = OPENAI_PCM_RATE,
        speed: float | None = None,
        instructions: str | None = None,
        connect_timeout_s: float = 5.0,
        first_audio_timeout_s: float = 5.0,
        chunk_timeout_s: float = 5.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.25,
        max_retry_backoff_s: float = 2.0,
        extra_body: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 8000 <= sample_rate <= 48000:
            raise ConfigError(f"sample_rate must be 8000-48000 Hz, got {sample_rate}")
        if speed is not None:
            positive("speed", speed)
        self.model = _text("model", model, DEFAULT_TTS_MODEL)
        self.voice = _text("voice", voice, DEFAULT_TTS_VOICE)
        self.sample_rate = sample_rate
        self.speed = speed
        self.instructions = instructions
        self.first_audio_timeout_s = positive("first_audio_timeout_s", first_audio_timeout_s)
        self.chunk_timeout_s = positive("chunk_timeout_s", chunk_timeout_s)
        self.extra_body = dict(extra_body or {})
        self._http = _endpoint(
            "tts",
            base_url=base_url,
            api_key=api_key,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            max_retry_backoff_s=max_retry_backoff_s,
            headers=headers,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAITTS(model={self.model!r}, voice={self.voice!r}, "
            f"sample_rate={self.sample_rate}, {self._http!r})"
        )

    async def synthesize(self, text: str, ctx: TurnContext) -> AsyncIterator[AudioChunk]:
        """Streams the speech of ``text`` as ``AudioChunk``s at ``sample_rate`` (text that is
        only whitespace yields nothing and sends no request).

        Raises:
            StageTimeoutError: no audio within ``first_audio_timeout_s`` of the call, or a
                gap longer than ``chunk_timeout_s``.
            ProviderAuthError, ProviderHTTPError, ProviderConnectionError: as for
                ``OpenAILLM.generate``.
            ProviderResponseError: a non-PCM content type, or an odd number of bytes.
        """
        if not text.strip():
            return
        payload: dict[str, Any] = {
            **self.extra_body,
            "model": self.model,
            "input": text,
            "voice": self.voice,
            "response_format": "pcm",  # what the streamed bytes are decoded as
        }
        if self.speed is not None:
            payload["speed"] = self.speed
        if self.instructions is not None:
            payload["instructions"] = self.instructions

        def build() -> httpx.Request:
            return self._http.client.build_request("POST", "audio/speech", json=payload)

        async def first(
            body: Body,
        ) -> tuple[_PcmStream, np.ndarray[Any, np.dtype[np.int16]] | None]:
            content_type = body.response.headers.get("content-type", "").lower()
            if content_type.startswith(_NOT_PCM):
                raise ProviderResponseError(
                    f"{body.what}: expected raw PCM, got {content_type!r} (does the server "
                    'support response_format "pcm"?)',
                    url=str(body.response.request.url),
                )
            stream = _PcmStream(body)
            return stream, await stream.next_samples(deadline)

        deadline = trio.current_time() + self.first_audio_timeout_s
        body, (stream, samples) = await self._http.open(
            build, deadline=deadline, first=first, ctx=ctx
        )
        try:
            while samples is not None:
                yield AudioChunk(samples, self.sample_rate)
                samples = await stream.next_samples(trio.current_time() + self.chunk_timeout_s)
        finally:
            await body.aclose()


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """``pcm`` (mono PCM16 little-endian) as the bytes of a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


class OpenAISTT(_Provider):
    """Transcription by an OpenAI-compatible ``/audio/transcriptions`` endpoint (``STT``).

    ``transcribe`` collects the utterance's frames while the user speaks, and once the audio
    ends uploads it as one WAV file (multipart form: ``file``, ``model``,
    ``response_format=json`` and the optional ``language`` and ``prompt``), then yields the
    returned ``text`` as one final ``Hypothesis``. No partials: this API is per utterance.
    Works with OpenAI (``whisper-1``, ``gpt-4o-mini-transcribe``), Speaches /
    faster-whisper-server, and whisper.cpp's server behind a ``/v1`` route.

    Args:
        model: the model; None: ``"whisper-1"``.
        base_url: the API root with its version; None: ``https://api.openai.com/v1``.
        api_key: the bearer token; None: no ``Authorization`` header.
        language: the ISO-639-1 language of the speech (e.g. ``"en"``), or None to let the
            model detect it.
        prompt: text that guides the model (names, spelling), or None.
        connect_timeout_s: time allowed to connect, in seconds.
        timeout_s: time from the end of the audio to the transcript, retries included, in
            seconds (keep it under ``SessionConfig.stt_final_timeout_s``).
        max_retries: retries of a failed upload (0: none).
        retry_backoff_s: delay before the first retry, in seconds (doubling per retry).
        max_retry_backoff_s: the cap of that delay, in seconds.
        headers: extra HTTP headers.

    Raises:
        ConfigError: as ``OpenAILLM``.
    """

    def __init__(
        self,
        model: str | None = None,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        language: str | None = None,
        prompt: str | None = None,
        connect_timeout_s: float = 5.0,
        timeout_s: float = 10.0,
        max_retries: int = 2,
        retry_backoff_s: float = 0.25,
        max_retry_backoff_s: float = 2.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.model = _text("model", model, DEFAULT_STT_MODEL)
        self.language = language
        self.prompt = prompt
        self.timeout_s = positive("timeout_s", timeout_s)
        self._http = _endpoint(
            "stt",
            base_url=base_url,
            api_key=api_key,
            connect_timeout_s=connect_timeout_s,
            max_retries=max_retries,
            retry_backoff_s=retry_backoff_s,
            max_retry_backoff_s=max_retry_backoff_s,
            headers=headers,
        )

    def __repr__(self) -> str:
        return f"OpenAISTT(model={self.model!r}, {self._http!r})"

    async def transcribe(
        self, audio: AsyncIterable[AudioFrame], ctx: TurnContext
    ) -> AsyncIterator[Hypothesis]:
        """Uploads the utterance once ``audio`` ends; yields its final transcript (empty
        audio yields an empty final and sends no request).

        Raises:
            ValueError: frames at different sample rates, or an odd number of PCM bytes.
            StageTimeoutError: no transcript within ``timeout_s`` of the end of the audio.
            ProviderAuthError, ProviderHTTPError, ProviderConnectionError: as for
                ``OpenAILLM.generate``.
            ProviderResponseError: an answer that is not JSON with a ``text`` string.
        """
        pcm = bytearray()
        sample_rate: int | None = None
        async for frame in audio:
            if sample_rate is None:
                sample_rate = frame.sample_rate
            elif frame.sample_rate != sample_rate:
                raise ValueError(
                    f"frames of one utterance must share a rate: {sample_rate} Hz, then "
                    f"{frame.sample_rate} Hz"
                )
            pcm += frame.pcm
        if sample_rate is None or not pcm:
            yield Hypothesis("", is_final=True)
            return
        if len(pcm) % 2:
            raise ValueError(f"PCM16 audio must have an even byte count, got {len(pcm)}")
        wav = wav_bytes(bytes(pcm), sample_rate)
        fields = {"model": self.model, "response_format": "json"}
        if self.language is not None:
            fields["language"] = self.language
        if self.prompt is not None:
            fields["prompt"] = self.prompt

        def build() -> httpx.Request:
            return self._http.client.build_request(
                "POST",
                "audio/transcriptions",
                data=fields,
                files={"file": ("utterance.wav", wav, "audio/wav")},
            )

        async def first(body: Body) -> str:
            raw = await body.read_all(deadline, _MAX_TRANSCRIPT_BYTES, "the transcript")
            answer = json_object(
                raw, f"{body.what}: malformed answer", str(body.response.request.url)
            )
            text = answer.get("text")
            if not isinstance(text, str):
                raise ProviderResponseError(
                    f"{body.what}: the answer has no text string: {raw[:200]!r}",
                    url=str(body.response.request.url),
                )
            return text

        deadline = trio.current_time() + self.timeout_s
        body, text = await self._http.open(build, deadline=deadline, first=first, ctx=ctx)
        await body.aclose()
        yield Hypothesis(text.strip(), is_final=True)
