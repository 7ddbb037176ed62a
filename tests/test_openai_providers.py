"""The OpenAI-compatible providers against a real HTTP server on 127.0.0.1.

Every test speaks real HTTP/1.1 (keep-alive, chunked transfer, server-sent events) over a
loopback socket to ``harness/openai_server.py``; nothing is mocked and no external network is
used. Timeouts are short (tenths of a second) so that each test takes well under a second.
"""

from __future__ import annotations

import email.parser
import email.policy
import io
import socket
import threading
import time
import wave
from collections.abc import AsyncIterator, Iterator, Sequence

import numpy as np
import pytest
import trio
from hypothesis import given
from hypothesis import strategies as st

from harness.openai_server import (
    Gate,
    OpenAIServer,
    Pause,
    Reply,
    Reset,
    Stall,
    chat_chunk,
    chat_reply,
    error_reply,
    json_reply,
    sse,
)
from harness.speech import RATE, noise, voice
from session_helpers import is_event, receive_until, start
from voicecore import FramePacer
from voicecore.engine.history import Message
from voicecore.engine.session import Session, SessionConfig
from voicecore.engine.stages import LLM, STT, TTS, AudioFrame, TurnContext
from voicecore.engine.transport import memory_transport
from voicecore.exceptions import (
    ConfigError,
    ProviderAuthError,
    ProviderConnectionError,
    ProviderError,
    ProviderHTTPError,
    ProviderResponseError,
    StageTimeoutError,
    VoicecoreError,
)
from voicecore.protocol import AgentDone, Clear
from voicecore.providers._http import SSEDecoder, SSEEvent
from voicecore.providers.openai import OpenAILLM, OpenAISTT, OpenAITTS

CHAT = "/v1/chat/completions"
SPEECH = "/v1/audio/speech"
TRANSCRIPTIONS = "/v1/audio/transcriptions"
MESSAGES = [Message("system", "Be brief."), Message("user", "Hello?")]
FAST = {"retry_backoff_s": 0.01, "max_retry_backoff_s": 0.05}
"""Short backoffs."""


def ctx() -> TurnContext:
    return TurnContext.standalone("test")


@pytest.fixture
def server() -> Iterator[OpenAIServer]:
    srv = OpenAIServer()
    yield srv
    srv.close()
    assert not srv.errors, srv.errors


def llm(server: OpenAIServer, **kwargs: object) -> OpenAILLM:
    options: dict[str, object] = {
        "base_url": server.base_url,
        "api_key": "test-key",
        "first_token_timeout_s": 2.0,
        "token_timeout_s": 1.0,
        **FAST,
    }
    options.update(kwargs)
    return OpenAILLM("test-model", **options)  # type: ignore[arg-type]


def tts(server: OpenAIServer, **kwargs: object) -> OpenAITTS:
    options: dict[str, object] = {
        "base_url": server.base_url,
        "api_key": "test-key",
        "first_audio_timeout_s": 2.0,
        "chunk_timeout_s": 1.0,
        **FAST,
    }
    options.update(kwargs)
    return OpenAITTS("test-tts", "nova", **options)  # type: ignore[arg-type]


def stt(server: OpenAIServer, **kwargs: object) -> OpenAISTT:
    options: dict[str, object] = {
        "base_url": server.base_url,
        "api_key": "test-key",
        "timeout_s": 2.0,
        **FAST,
    }
    options.update(kwargs)
    return OpenAISTT("test-stt", **options)  # type: ignore[arg-type]


async def collect(iterator: AsyncIterator[str]) -> list[str]:
    return [item async for item in iterator]


async def collect_into(iterator: AsyncIterator[str], out: list[str]) -> None:
    """Appends each item to ``out`` as it comes (what came before an error stays in it)."""
    async for item in iterator:
        out.append(item)


async def wait_disconnect(event: threading.Event, timeout_s: float = 1.0) -> bool:
    """Waits (without blocking Trio) for the server to see the client close the connection."""
    deadline = time.monotonic() + timeout_s
    while not event.is_set() and time.monotonic() < deadline:
        await trio.sleep(0.005)
    return event.is_set()


def closed_port() -> int:
    """A loopback port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# --- SSE decoding (sans-IO) -------------------------------------------------------------------


def test_sse_decoder_follows_the_event_stream_format() -> None:
    decoder = SSEDecoder()
    stream = (
        b": keep-alive comment\n"
        b"data: one\r\n\r\n"
        b"event: error\rdata:two\rdata:  three\r\r"
        b"id: 7\nretry: 100\ndata\n\n"
        b"data: last"
    )
    assert decoder.feed(stream) == [
        SSEEvent("message", "one"),
        SSEEvent("error", "two\n three"),
        SSEEvent("message", ""),
    ]
    assert decoder.close() == [SSEEvent("message", "last")]


@given(st.lists(st.integers(0, 120), max_size=12))
def test_sse_decoder_gives_the_same_events_however_the_bytes_are_split(cuts: list[int]) -> None:
    stream = 'data: {"a": "é"}\r\n\r\ndata: x\n\n: c\rdata: y\r\rdata: [DONE]\n\n'.encode()
    whole = SSEDecoder()
    expected = whole.feed(stream) + whole.close()
    decoder = SSEDecoder()
    events: list[SSEEvent] = []
    previous = 0
    for cut in sorted({min(c, len(stream)) for c in cuts}):
        events += decoder.feed(stream[previous:cut])
        previous = cut
    events += decoder.feed(stream[previous:]) + decoder.close()
    assert events == expected
    assert [e.data for e in expected] == ['{"a": "é"}', "x", "y", "[DONE]"]


@pytest.mark.parametrize(
    "line",
    [b"<html>Bad gateway</html>\n", b'{"choices": []}\n', b"data: \xff\xfe\n", b"x" * 2000],
)
def test_sse_decoder_rejects_what_is_not_sse(line: bytes) -> None:
    decoder = SSEDecoder(max_line_bytes=1000)
    with pytest.raises(ValueError, match=r"SSE|server-sent"):
        decoder.feed(line)


# --- LLM ------------------------------------------------------------------------------------


async def test_llm_streams_deltas_in_order_as_they_arrive(server: OpenAIServer) -> None:
    gate = threading.Event()
    reply = chat_reply(["Hel", "lo", " world", "!"])
    reply.body.insert(3, Gate(gate))  # hold the stream after the second delta
    server.script(CHAT, reply)
    async with llm(server, extra_body={"temperature": 0.5}) as provider:
        assert isinstance(provider, LLM)
        deltas = provider.generate(MESSAGES, ctx())
        # The first two deltas arrive while the server still holds the rest: streamed.
        assert [await deltas.__anext__(), await deltas.__anext__()] == ["Hel", "lo"]
        gate.set()
        assert await collect(deltas) == [" world", "!"]
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer test-key"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {
        "model": "test-model",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Hello?"},
        ],
        "temperature": 0.5,
        "stream": True,
    }


async def test_llm_reuses_its_connection(server: OpenAIServer) -> None:
    server.script(CHAT, chat_reply(["a"]), chat_reply(["b"]))
    async with llm(server) as provider:
        assert await collect(provider.generate(MESSAGES, ctx())) == ["a"]
        assert await collect(provider.generate(MESSAGES, ctx())) == ["b"]
    first, second = server.requests
    assert first.client_port == second.client_port


async def test_llm_joins_events_split_anywhere_across_network_writes(server: OpenAIServer) -> None:
    stream = b"".join(
        [sse(chat_chunk("Bon")).replace(b"\n", b"\r\n"), sse(chat_chunk("jour")), sse("[DONE]")]
    )
    body: list[bytes | Pause] = []
    for offset in range(0, len(stream), 7):
        body += [stream[offset : offset + 7], Pause(0.001)]
    server.script(CHAT, Reply(headers={"Content-Type": "text/event-stream"}, body=body))
    async with llm(server) as provider:
        assert await collect(provider.generate(MESSAGES, ctx())) == ["Bon", "jour"]


async def test_llm_retries_a_500_before_the_first_token(server: OpenAIServer) -> None:
    server.script(CHAT, error_reply(500, "upstream hiccup"), chat_reply(["ok"]))
    turn = ctx()
    async with llm(server) as provider:
        assert await collect(provider.generate(MESSAGES, turn)) == ["ok"]
    assert len(server.requests) == 2
    assert turn.session_metrics.edge_counters["llm.retries"] == 1


async def test_llm_gives_up_on_500_after_its_retries(server: OpenAIServer) -> None:
    server.script(CHAT, *[error_reply(500, "model crashed")] * 3)
    async with llm(server, max_retries=2) as provider:
        with pytest.raises(ProviderHTTPError, match="model crashed") as caught:
            await collect(provider.generate(MESSAGES, ctx()))
    assert caught.value.status == 500
    assert "gave up after 3 attempts" in str(caught.value)
    assert len(server.requests) == 3


async def test_llm_401_is_a_clear_error_and_not_retried(server: OpenAIServer) -> None:
    server.script(CHAT, error_reply(401, "Incorrect API key provided"))
    async with llm(server) as provider:
        with pytest.raises(
            ProviderAuthError,
            match=r"Incorrect API key provided \(check the API key: the one sent was refused; "
            r"voicecore's configuration sets it as llm\.api_key\)",
        ):
            await collect(provider.generate(MESSAGES, ctx()))
    assert len(server.requests) == 1


async def test_llm_400_carries_the_server_message(server: OpenAIServer) -> None:
    server.script(CHAT, error_reply(400, "model 'test-model' not found"))
    async with llm(server) as provider:
        with pytest.raises(ProviderHTTPError) as caught:
            await collect(provider.generate(MESSAGES, ctx()))
    assert caught.value.status == 400
    assert caught.value.server_message == "model 'test-model' not found"
    assert not isinstance(caught.value, ProviderAuthError)
    assert len(server.requests) == 1


async def test_llm_429_waits_for_retry_after(server: OpenAIServer) -> None:
    server.script(CHAT, error_reply(429, "slow down", **{"Retry-After": "0.2"}), chat_reply(["x"]))
    async with llm(server) as provider:
        start = trio.current_time()
        assert await collect(provider.generate(MESSAGES, ctx())) == ["x"]
        assert trio.current_time() - start >= 0.2
    assert len(server.requests) == 2


async def test_llm_does_not_retry_when_the_deadline_would_pass_first(
    server: OpenAIServer,
) -> None:
    server.script(CHAT, error_reply(429, "quota", **{"Retry-After": "30"}), chat_reply(["x"]))
    async with llm(server, first_token_timeout_s=0.5) as provider:
        start = trio.current_time()
        with pytest.raises(StageTimeoutError, match=r"no time left for retry.*quota"):
            await collect(provider.generate(MESSAGES, ctx()))
        assert trio.current_time() - start < 0.3  # failed at once, did not sleep 30 s
    assert len(server.requests) == 1


async def test_llm_malformed_sse_data_is_an_error(server: OpenAIServer) -> None:
    body = [sse(chat_chunk("Hi")), b"data: {not json\n\n", sse("[DONE]")]
    server.script(CHAT, Reply(headers={"Content-Type": "text/event-stream"}, body=body))
    got: list[str] = []
    async with llm(server) as provider:
        with pytest.raises(ProviderResponseError, match=r"malformed SSE data.*not json"):
            await collect_into(provider.generate(MESSAGES, ctx()), got)
    assert got == ["Hi"]


async def test_llm_a_line_that_is_not_sse_is_an_error_not_retried(server: OpenAIServer) -> None:
    body = [b"this is not an event stream\n\n"]
    server.script(CHAT, Reply(headers={"Content-Type": "text/event-stream"}, body=body))
    async with llm(server) as provider:
        with pytest.raises(ProviderResponseError, match="not a server-sent-events line"):
            await collect(provider.generate(MESSAGES, ctx()))
    assert len(server.requests) == 1


async def test_llm_refuses_a_body_that_is_not_an_event_stream(server: OpenAIServer) -> None:
    server.script(CHAT, json_reply({"choices": [{"message": {"content": "whole"}}]}))
    async with llm(server) as provider:
        with pytest.raises(ProviderResponseError, match="expected a text/event-stream"):
            await collect(provider.generate(MESSAGES, ctx()))


async def test_llm_error_event_mid_stream_is_raised(server: OpenAIServer) -> None:
    body = [sse(chat_chunk("Hi")), sse({"error": {"message": "model overloaded"}})]
    server.script(CHAT, Reply(headers={"Content-Type": "text/event-stream"}, body=body))
    async with llm(server) as provider:
        with pytest.raises(ProviderError, match="model overloaded"):
            await collect(provider.generate(MESSAGES, ctx()))


async def test_llm_stream_cut_before_done_is_an_error(server: OpenAIServer) -> None:
    truncated = Reply(headers={"Content-Type": "text/event-stream"}, body=[sse(chat_chunk("a"))])
    finished_without_done = chat_reply(["b"], done=False)
    server.script(CHAT, truncated, finished_without_done)
    async with llm(server) as provider:
        with pytest.raises(ProviderResponseError, match=r"ended before data: \[DONE\]"):
            await collect(provider.generate(MESSAGES, ctx()))
        # A finish_reason without [DONE] (some servers) is a complete answer.
        assert await collect(provider.generate(MESSAGES, ctx())) == ["b"]


async def test_llm_stall_mid_answer_hits_the_token_timeout(server: OpenAIServer) -> None:
    server.script(CHAT, chat_reply(["a", "b"], between=[Stall()]))
    got: list[str] = []
    async with llm(server, token_timeout_s=0.3) as provider:
        start = trio.current_time()
        with pytest.raises(StageTimeoutError, match="next LLM token"):
            await collect_into(provider.generate(MESSAGES, ctx()), got)
        assert 0.3 <= trio.current_time() - start < 0.8
    assert got == ["a"]
    assert await wait_disconnect(server.requests[0].disconnected)


async def test_llm_first_token_timeout_spans_the_whole_call(server: OpenAIServer) -> None:
    server.script(CHAT, Reply(headers={"Content-Type": "text/event-stream"}, body=[Stall()]))
    async with llm(server, first_token_timeout_s=0.3) as provider:
        start = trio.current_time()
        with pytest.raises(StageTimeoutError, match="first LLM token"):
            await collect(provider.generate(MESSAGES, ctx()))
        assert 0.3 <= trio.current_time() - start < 0.8
    assert len(server.requests) == 1
    assert await wait_disconnect(server.requests[0].disconnected)


async def test_llm_reset_mid_answer_fails_without_retry(server: OpenAIServer) -> None:
    server.script(CHAT, chat_reply(["a", "b"], between=[Reset()]), chat_reply(["never"]))
    got: list[str] = []
    async with llm(server) as provider:
        with pytest.raises(ProviderConnectionError, match="connection lost"):
            await collect_into(provider.generate(MESSAGES, ctx()), got)
    assert got == ["a"]
    assert len(server.requests) == 1


async def test_llm_reset_before_the_first_token_is_retried(server: OpenAIServer) -> None:
    reset = Reply(headers={"Content-Type": "text/event-stream"}, body=[Reset()])
    server.script(CHAT, reset, chat_reply(["fine"]))
    async with llm(server) as provider:
        assert await collect(provider.generate(MESSAGES, ctx())) == ["fine"]
    assert len(server.requests) == 2


async def test_llm_unreachable_server_is_a_connection_error() -> None:
    provider = OpenAILLM("m", base_url=f"http://127.0.0.1:{closed_port()}/v1", **FAST)  # type: ignore[arg-type]
    async with provider:
        with pytest.raises(ProviderConnectionError, match=r"cannot reach.*3 attempts"):
            await collect(provider.generate(MESSAGES, ctx()))


async def test_llm_closing_the_stream_closes_the_connection_at_once(server: OpenAIServer) -> None:
    server.script(CHAT, chat_reply(["a", "b", "c"], between=[Pause(0.01)]))
    server.replies[CHAT][0].body.insert(4, Stall())
    async with llm(server) as provider:
        deltas = provider.generate(MESSAGES, ctx())
        assert [await deltas.__anext__(), await deltas.__anext__()] == ["a", "b"]
        closed_at = time.monotonic()
        await deltas.aclose()  # what the engine does on barge-in
        assert await wait_disconnect(server.requests[0].disconnected)
    seen_at = server.requests[0].disconnected_at
    assert seen_at is not None
    assert seen_at - closed_at < 0.3


async def test_llm_cancelled_while_waiting_closes_the_connection(server: OpenAIServer) -> None:
    server.script(CHAT, chat_reply(["a", "b"], between=[Stall()]), chat_reply(["next"]))
    got: list[str] = []
    async with llm(server) as provider:
        with trio.CancelScope() as scope:
            async for delta in provider.generate(MESSAGES, ctx()):
                got.append(delta)
                scope.deadline = trio.current_time() + 0.05  # cancelled mid-stream
        assert scope.cancelled_caught
        assert got == ["a"]
        assert await wait_disconnect(server.requests[0].disconnected)
        # The provider is still usable after a cancelled call.
        assert await collect(provider.generate(MESSAGES, ctx())) == ["next"]


async def test_concurrent_calls_share_one_provider(server: OpenAIServer) -> None:
    gate = threading.Event()
    held = chat_reply(["one"])
    held.body.insert(1, Gate(gate))  # the first answer waits until the second is done
    server.script(CHAT, held, chat_reply(["two"]))
    results: dict[str, list[str]] = {}
    async with llm(server) as provider:

        async def call(name: str) -> None:
            results[name] = await collect(provider.generate(MESSAGES, ctx()))
            gate.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(call, "first")
            await trio.sleep(0.05)
            nursery.start_soon(call, "second")
    assert results == {"first": ["one"], "second": ["two"]}
    first, second = server.requests
    assert first.client_port != second.client_port  # two connections from one pool


async def test_aclose_closes_the_pooled_connections(server: OpenAIServer) -> None:
    server.script(CHAT, chat_reply(["a"]))
    provider = llm(server)
    assert await collect(provider.generate(MESSAGES, ctx())) == ["a"]
    assert len(server.connections) == 1  # kept alive in the pool
    await provider.aclose()
    deadline = time.monotonic() + 1.0
    while server.connections and time.monotonic() < deadline:
        await trio.sleep(0.005)
    assert not server.connections


def test_errors_fit_the_exception_tree() -> None:
    assert issubclass(ProviderError, VoicecoreError)
    assert issubclass(ProviderConnectionError, ConnectionError)
    assert issubclass(ProviderAuthError, ProviderHTTPError)
    assert issubclass(ProviderResponseError, ValueError)
    assert issubclass(StageTimeoutError, TimeoutError)
    for error in (ProviderConnectionError, ProviderHTTPError, ProviderResponseError):
        assert issubclass(error, ProviderError)


# --- configuration --------------------------------------------------------------------------


async def test_providers_read_no_environment_variable(
    server: OpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Their settings are their arguments: the configuration reads the environment."""
    monkeypatch.setenv("VOICECORE_LLM_BASE_URL", "http://192.0.2.1/v1")
    monkeypatch.setenv("VOICECORE_LLM_MODEL", "env-model")
    monkeypatch.setenv("OPENAI_API_KEY", "env-key")
    monkeypatch.setenv("OPENAI_BASE_URL", "http://192.0.2.1/v1")
    server.script(CHAT, chat_reply(["a"]))
    async with OpenAILLM(base_url=server.base_url) as provider:
        assert await collect(provider.generate(MESSAGES, ctx())) == ["a"]
    (request,) = server.requests
    assert request.json()["model"] == "gpt-4o-mini"
    assert "authorization" not in request.headers
    async with OpenAITTS() as tts, OpenAISTT() as stt:
        assert tts.base_url == stt.base_url == "https://api.openai.com/v1"
        assert (tts.model, tts.voice, stt.model) == ("gpt-4o-mini-tts", "alloy", "whisper-1")


async def test_defaults_and_no_key_sends_no_authorization(server: OpenAIServer) -> None:
    async with OpenAILLM() as provider:
        assert provider.base_url == "https://api.openai.com/v1"
        assert provider.model == "gpt-4o-mini"
    server.script(CHAT, chat_reply(["a"]))
    async with OpenAILLM(base_url=server.base_url + "/") as provider:
        assert await collect(provider.generate(MESSAGES, ctx())) == ["a"]
    assert "authorization" not in server.requests[0].headers


async def test_repr_never_shows_the_key() -> None:
    async with OpenAILLM(api_key="sk-secret") as provider:
        assert "sk-secret" not in repr(provider)
        assert "api_key=set" in repr(provider)


@pytest.mark.parametrize(
    ("make", "field"),
    [
        (lambda: OpenAILLM(base_url="ftp://host/v1"), "base_url"),
        (lambda: OpenAILLM(first_token_timeout_s=0), "first_token_timeout_s"),
        (lambda: OpenAILLM(token_timeout_s=-1), "token_timeout_s"),
        (lambda: OpenAILLM(connect_timeout_s=float("nan")), "connect_timeout_s"),
        (lambda: OpenAILLM(max_retries=-1), "max_retries"),
        (lambda: OpenAILLM(retry_backoff_s=5, max_retry_backoff_s=1), "retry_backoff_s"),
        (lambda: OpenAILLM(""), "model must not be empty"),
        (lambda: OpenAITTS(voice=" "), "voice must not be empty"),
        (lambda: OpenAITTS(sample_rate=4000), "sample_rate"),
        (lambda: OpenAITTS(speed=0), "speed"),
        (lambda: OpenAITTS(chunk_timeout_s=0), "chunk_timeout_s"),
        (lambda: OpenAISTT(timeout_s=0), "timeout_s"),
    ],
)
def test_bad_settings_name_the_field(make: object, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        make()  # type: ignore[operator]


# --- TTS ------------------------------------------------------------------------------------


def pcm_parts(samples: np.ndarray, sizes: Sequence[int]) -> list[bytes | Pause]:
    """The samples' bytes cut into pieces of ``sizes`` (cycled), each its own network write."""
    data = samples.astype("<i2").tobytes()
    parts: list[bytes | Pause] = []
    offset = 0
    index = 0
    while offset < len(data):
        size = sizes[index % len(sizes)]
        parts += [data[offset : offset + size], Pause(0.002)]
        offset += size
        index += 1
    return parts


SAMPLES = (np.arange(-600, 600) * 27).astype(np.int16)


async def test_tts_streams_pcm_split_at_odd_byte_boundaries(server: OpenAIServer) -> None:
    body = pcm_parts(SAMPLES, [1, 2, 3, 5, 1, 7, 301, 1])
    server.script(SPEECH, Reply(headers={"Content-Type": "audio/pcm"}, body=body))
    async with tts(server, sample_rate=22050, speed=1.25) as provider:
        assert isinstance(provider, TTS)
        chunks = [chunk async for chunk in provider.synthesize("Hello there.", ctx())]
    assert len(chunks) > 10
    assert all(chunk.sample_rate == 22050 and len(chunk.pcm) > 0 for chunk in chunks)
    assert all(chunk.pcm.dtype == np.int16 for chunk in chunks)
    np.testing.assert_array_equal(np.concatenate([c.pcm for c in chunks]), SAMPLES)
    assert server.requests[0].json() == {
        "model": "test-tts",
        "input": "Hello there.",
        "voice": "nova",
        "response_format": "pcm",
        "speed": 1.25,
    }


async def test_tts_yields_the_first_audio_before_the_rest_exists(server: OpenAIServer) -> None:
    gate = threading.Event()
    data = SAMPLES.tobytes()
    body: list[bytes | Gate] = [data[:101], Gate(gate), data[101:]]
    server.script(SPEECH, Reply(headers={"Content-Type": "audio/pcm"}, body=body))
    async with tts(server) as provider:
        audio = provider.synthesize("Hi.", ctx())
        first = await audio.__anext__()
        assert len(first.pcm) == 50  # 101 bytes: 50 samples, one byte carried over
        gate.set()
        rest = [chunk.pcm async for chunk in audio]
    np.testing.assert_array_equal(np.concatenate([first.pcm, *rest]), SAMPLES)


async def test_tts_retries_500_then_succeeds(server: OpenAIServer) -> None:
    server.script(
        SPEECH,
        error_reply(503, "warming up"),
        Reply(headers={"Content-Type": "audio/pcm"}, body=[SAMPLES.tobytes()]),
    )
    async with tts(server) as provider:
        chunks = [chunk async for chunk in provider.synthesize("Hi.", ctx())]
    np.testing.assert_array_equal(np.concatenate([c.pcm for c in chunks]), SAMPLES)
    assert len(server.requests) == 2


async def test_tts_401_and_bad_formats_are_clear_errors(server: OpenAIServer) -> None:
    server.script(
        SPEECH,
        error_reply(401, "invalid key"),
        Reply(headers={"Content-Type": "audio/mpeg"}, body=[b"ID3\x04"]),
        Reply(headers={"Content-Type": "audio/pcm"}, body=[b"\x01\x02\x03"]),
    )
    async with tts(server) as provider:
        with pytest.raises(ProviderAuthError, match="invalid key"):
            await collect(provider.synthesize("a", ctx()))  # type: ignore[arg-type]
        with pytest.raises(ProviderResponseError, match="expected raw PCM, got 'audio/mpeg'"):
            await collect(provider.synthesize("b", ctx()))  # type: ignore[arg-type]
        with pytest.raises(ProviderResponseError, match="odd number of PCM16 bytes"):
            await collect(provider.synthesize("c", ctx()))  # type: ignore[arg-type]
    assert len(server.requests) == 3


async def test_tts_stall_hits_the_chunk_timeout_and_closes(server: OpenAIServer) -> None:
    body = [SAMPLES[:100].tobytes(), Stall()]
    server.script(SPEECH, Reply(headers={"Content-Type": "audio/pcm"}, body=body))
    async with tts(server, chunk_timeout_s=0.3) as provider:
        with pytest.raises(StageTimeoutError, match="next TTS audio"):
            await collect(provider.synthesize("Hi.", ctx()))  # type: ignore[arg-type]
    assert await wait_disconnect(server.requests[0].disconnected)


async def test_tts_closing_mid_sentence_closes_the_connection(server: OpenAIServer) -> None:
    body = [SAMPLES[:100].tobytes(), Stall()]
    server.script(SPEECH, Reply(headers={"Content-Type": "audio/pcm"}, body=body))
    async with tts(server) as provider:
        audio = provider.synthesize("A long sentence.", ctx())
        await audio.__anext__()
        await audio.aclose()
        assert await wait_disconnect(server.requests[0].disconnected, timeout_s=0.2)


async def test_tts_blank_text_sends_nothing(server: OpenAIServer) -> None:
    async with tts(server) as provider:
        assert [chunk async for chunk in provider.synthesize("  \n", ctx())] == []
    assert server.requests == []


# --- STT ------------------------------------------------------------------------------------


async def frames(samples: np.ndarray, rate: int = 16000, ms: int = 20) -> AsyncIterator[AudioFrame]:
    step = rate * ms // 1000
    for offset in range(0, len(samples), step):
        yield AudioFrame(samples[offset : offset + step].astype("<i2").tobytes(), rate, offset)


def multipart_fields(request_headers: dict[str, str], body: bytes) -> dict[str, bytes]:
    """The form fields of a multipart/form-data body, parsed as a server would."""
    head = f"Content-Type: {request_headers['content-type']}\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + body)
    assert message.is_multipart()
    fields = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        assert isinstance(name, str)
        assert isinstance(payload, bytes)
        fields[name] = payload
    return fields


async def test_stt_uploads_the_utterance_as_a_wav(server: OpenAIServer) -> None:
    samples = np.random.default_rng(4).integers(-20000, 20000, 16000 + 123).astype(np.int16)
    server.script(TRANSCRIPTIONS, json_reply({"text": " What time is it? "}))
    async with stt(server, language="en", prompt="Time questions.") as provider:
        assert isinstance(provider, STT)
        transcripts = [t async for t in provider.transcribe(frames(samples), ctx())]
    assert [(t.text, t.is_final) for t in transcripts] == [("What time is it?", True)]
    (request,) = server.requests
    assert request.headers["authorization"] == "Bearer test-key"
    fields = multipart_fields(request.headers, request.body)
    assert fields["model"] == b"test-stt"
    assert fields["response_format"] == b"json"
    assert fields["language"] == b"en"
    assert fields["prompt"] == b"Time questions."
    with wave.open(io.BytesIO(fields["file"]), "rb") as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 16000)
        uploaded = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    np.testing.assert_array_equal(uploaded, samples)


async def test_stt_retries_500_and_reports_401(server: OpenAIServer) -> None:
    samples = np.zeros(3200, dtype=np.int16)
    server.script(
        TRANSCRIPTIONS,
        error_reply(500, "busy"),
        json_reply({"text": "ok"}),
        error_reply(401, "no key"),
    )
    async with stt(server) as provider:
        assert [t.text async for t in provider.transcribe(frames(samples), ctx())] == ["ok"]
        with pytest.raises(ProviderAuthError, match="no key"):
            _ = [t async for t in provider.transcribe(frames(samples), ctx())]
    assert len(server.requests) == 3
    # The retried upload carried the same audio.
    assert server.requests[0].body.count(b"RIFF") == server.requests[1].body.count(b"RIFF") == 1


async def test_stt_stall_and_malformed_answers_are_errors(server: OpenAIServer) -> None:
    samples = np.zeros(1600, dtype=np.int16)
    server.script(
        TRANSCRIPTIONS,
        Reply(headers={"Content-Type": "application/json"}, body=[Stall()]),
        Reply(headers={"Content-Type": "application/json"}, body=[b"<html>oops</html>"]),
        json_reply({"transcript": "wrong field"}),
    )
    async with stt(server, timeout_s=0.3) as provider:
        with pytest.raises(StageTimeoutError):
            _ = [t async for t in provider.transcribe(frames(samples), ctx())]
        with pytest.raises(ProviderResponseError, match=r"not a JSON object.*oops"):
            _ = [t async for t in provider.transcribe(frames(samples), ctx())]
        with pytest.raises(ProviderResponseError, match="no text string"):
            _ = [t async for t in provider.transcribe(frames(samples), ctx())]
    assert await wait_disconnect(server.requests[0].disconnected)


async def test_stt_empty_audio_sends_nothing_and_rates_must_agree(server: OpenAIServer) -> None:
    async def mixed() -> AsyncIterator[AudioFrame]:
        yield AudioFrame(b"\0\0" * 320, 16000, 0)
        yield AudioFrame(b"\0\0" * 160, 8000, 320)

    async with stt(server) as provider:
        empty = [t async for t in provider.transcribe(frames(np.zeros(0, np.int16)), ctx())]
        assert [(t.text, t.is_final) for t in empty] == [("", True)]
        audio = mixed()
        with pytest.raises(ValueError, match="share a rate"):
            _ = [t async for t in provider.transcribe(audio, ctx())]
        await audio.aclose()  # the caller owns its audio iterator
    assert server.requests == []


# --- through the engine ---------------------------------------------------------------------


def tone_pcm(ms: int, rate: int = 24000) -> bytes:
    t = np.arange(rate * ms // 1000) / rate
    return (6000 * np.sin(2 * np.pi * 220 * t)).astype("<i2").tobytes()


async def test_a_session_runs_a_turn_on_the_network_providers(server: OpenAIServer) -> None:
    server.script(TRANSCRIPTIONS, json_reply({"text": "What time is it?"}))
    server.script(CHAT, chat_reply(["It is", " nine", " o'clock", " now.", " Anything", " else?"]))
    speech = Reply(headers={"Content-Type": "audio/pcm"}, body=[tone_pcm(60), tone_pcm(60)])
    server.script(SPEECH, *[speech] * 4)
    config = SessionConfig(end_of_turn_silence_ms=300)
    async with stt(server) as s, llm(server) as lm, tts(server) as t:
        transport, client = memory_transport(RATE)
        with FramePacer(clock="real") as pacer, trio.fail_after(10):
            session = Session(
                transport, stt=s, llm=lm, tts=t, config=config, pacer=pacer, system_prompt="Hi."
            )
            async with trio.open_nursery() as nursery:
                await start(nursery, session, client, noise(200) + voice(500) + noise(1500))
                end = await receive_until(client, is_event("agent_done"))
                nursery.cancel_scope.cancel()
    assert isinstance(end, AgentDone)
    assert end.heard == "It is nine o'clock now. Anything else?"
    assert [(e["text"], e["final"]) for e in client.events("transcript")] == [
        ("What time is it?", True)
    ]
    upload, chat, *speech_requests = sorted(server.requests, key=lambda r: r.path != TRANSCRIPTIONS)
    with wave.open(io.BytesIO(multipart_fields(upload.headers, upload.body)["file"])) as wav:
        assert wav.getframerate() == RATE
        assert wav.getnframes() >= RATE * 500 // 1000  # the utterance, pre-roll included
    assert chat.json()["messages"] == [
        {"role": "system", "content": "Hi."},
        {"role": "user", "content": "What time is it?"},
    ]
    spoken = " ".join(r.json()["input"] for r in speech_requests if r.path == SPEECH)
    assert spoken == "It is nine o'clock now. Anything else?"
    assert client.audio(1)
    (turn,) = session.metrics.turns
    assert turn.llm_first_token_ms is not None
    assert turn.tts_first_audio_ms is not None


async def test_barge_in_closes_the_llm_stream_on_the_server(server: OpenAIServer) -> None:
    server.script(TRANSCRIPTIONS, json_reply({"text": "Tell me a story."}))
    server.script(TRANSCRIPTIONS, json_reply({"text": "Stop."}))
    # Turn 1's answer starts, then the model "thinks" forever: the stream stays open.
    thinking = Reply(
        headers={"Content-Type": "text/event-stream"}, body=[sse(chat_chunk()), Stall()]
    )
    server.script(CHAT, thinking, chat_reply(["Okay."]))
    server.script(SPEECH, Reply(headers={"Content-Type": "audio/pcm"}, body=[tone_pcm(60)]))
    config = SessionConfig(end_of_turn_silence_ms=300)
    async with stt(server) as s, llm(server, first_token_timeout_s=10.0) as lm, tts(server) as t:
        transport, client = memory_transport(RATE)
        with FramePacer(clock="real") as pacer, trio.fail_after(10):
            session = Session(transport, stt=s, llm=lm, tts=t, config=config, pacer=pacer)
            mic = noise(200) + voice(500) + noise(450) + voice(400) + noise(1000)
            async with trio.open_nursery() as nursery:
                await start(nursery, session, client, mic)
                clear = await receive_until(client, lambda m: isinstance(m, Clear))
                cleared_at = time.monotonic()
                await receive_until(client, is_event("agent_done", turn_id=2))
                nursery.cancel_scope.cancel()
    assert isinstance(clear, Clear)
    assert clear.turn_id == 1
    story = next(r for r in server.requests if r.path == CHAT)
    assert story.disconnected.is_set()
    assert story.disconnected_at is not None
    assert story.disconnected_at - cleared_at < 0.25  # closed in the barge-in step itself
    assert [turn.interrupted for turn in session.metrics.turns] == [True, False]
    assert client.events("agent_done")[1]["heard"] == "Okay."
