"""Conversations that survive their connection (issue 14): the record, the stores (memory and
a real Redis), and resuming over real WebSocket connections: on the same server, and on
another server sharing the Redis store."""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
import trio
from websockets.exceptions import ConnectionClosed

from harness import redis_server
from harness.caller import call, missing_entries
from harness.client import hello
from harness.redis_server import RedisServer
from harness.speech import noise, voice
from voicecore.config import ServerConfig, VoicecoreConfig
from voicecore.engine.conversation import ConversationRecord
from voicecore.engine.history import ConversationHistory, Message
from voicecore.exceptions import ConversationRecordError
from voicecore.pipeline import scripted_pipeline
from voicecore.protocol import ErrorCode, ProtocolSession, Ready, serialize
from voicecore.server.app import RESUMED_ELSEWHERE_REASON, VoiceServer
from voicecore.server.conversations import (
    MemoryConversations,
    RedisConversations,
    Saved,
    new_token,
    open_store,
)
from voicecore.server.websocket import WebSocket, connect

needs_redis = pytest.mark.skipif(
    not redis_server.available(),
    reason="redis-server is not installed (make fleet-deps, or apt-get install redis-server)",
)

# --- the record ----------------------------------------------------------------------------


def test_a_record_round_trips_and_restores_the_history() -> None:
    history = ConversationHistory("system")
    history.add_user("What time is it?")
    history.add_agent("It is noon.")
    history.add_user("And the date?")
    record = ConversationRecord.of(history, next_turn_id=3, speaking="It is the seventh,")
    assert [m.role for m in record.messages] == ["user", "assistant", "user", "assistant"]
    assert record.messages[-1].content == "It is the seventh…"  # heard up to there, cut
    back = ConversationRecord.from_json(json.loads(json.dumps(record.to_json())))
    assert back == record
    fresh = ConversationHistory("system")
    back.restore(fresh)
    assert fresh.messages() == [Message("system", "system"), *record.messages]
    assert back.said()[0] == {"role": "user", "text": "What time is it?"}


def test_a_restored_history_keeps_its_budget_and_tells_its_store() -> None:
    changes: list[int] = []
    history = ConversationHistory("", token_budget=40)
    history.on_change = lambda: changes.append(history.dropped_turns)
    messages = [Message("user", "word " * 20), Message("assistant", "reply " * 20)] * 3
    history.restore(messages, dropped_turns=2)
    assert history.turns == 1
    assert history.dropped_turns == 4
    assert changes == [4]
    history.add_user("more")  # over the budget: the restored turn goes too
    assert changes == [4, 5]


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"version": 99, "messages": [], "dropped_turns": 0, "next_turn_id": 1},
        {"version": 1, "messages": [{"role": "robot", "content": "x"}], "dropped_turns": 0,
         "next_turn_id": 1},
        {"version": 1, "messages": [], "dropped_turns": -1, "next_turn_id": 1},
        {"version": 1, "messages": [], "dropped_turns": 0, "next_turn_id": 0},
        {"version": 1, "messages": "no", "dropped_turns": 0, "next_turn_id": 1},
    ],
)  # fmt: skip
def test_a_malformed_record_is_refused(data: dict[str, Any]) -> None:
    with pytest.raises(ConversationRecordError):
        ConversationRecord.from_json(data)


def test_resume_tokens_are_checked_on_the_wire() -> None:
    session = ProtocolSession("s", frame_ms=20, cushion_ms=200)
    step = session.receive(hello(client="t", resume="has spaces"))
    assert step.message is None
    assert any(getattr(r, "code", None) is ErrorCode.INVALID_MESSAGE for r in step.replies)
    session = ProtocolSession("s", frame_ms=20, cushion_ms=200)
    token = new_token()
    step = session.receive(hello(client="t", resume=token))
    assert getattr(step.message, "resume", None) == token
    ready = json.loads(str(serialize(Ready("s", 16000, 24000, 20, 200))))
    assert "history" not in ready
    assert "conversation" not in ready


def test_missing_entries_matches_in_order_and_allows_a_longer_cut_reply() -> None:
    history = [
        {"role": "user", "text": "What can you do?"},
        {"role": "assistant", "text": "I can talk. And sing…"},
    ]
    assert (
        missing_entries([("user", "what can you do"), ("assistant", "I can talk.")], history) == 0
    )
    assert (
        missing_entries([("assistant", "I can talk."), ("user", "What can you do?")], history) == 1
    )
    assert missing_entries([("user", "Something else")], history) == 1


# --- the stores ----------------------------------------------------------------------------


async def test_the_memory_store_forgets_the_oldest_and_the_expired() -> None:
    store = MemoryConversations(ttl_s=3600, max_conversations=2)
    tokens = [new_token() for _ in range(3)]
    for number, token in enumerate(tokens, 1):
        assert await store.save(token, ConversationRecord(next_turn_id=number)) is Saved.SAVED
    assert await store.load(tokens[0]) is None  # the least recently saved went
    loaded = await store.load(tokens[2])
    assert loaded is not None
    assert loaded.next_turn_id == 3
    short = MemoryConversations(ttl_s=0.05)
    await short.save(tokens[0], ConversationRecord())
    await trio.sleep(0.1)
    assert await short.load(tokens[0]) is None
    assert await store.load("never-given") is None


@needs_redis
async def test_the_redis_store_keeps_records_by_hashed_token_with_a_ttl() -> None:
    with RedisServer() as server:
        store = await open_store(server.url, ttl_s=60)
        assert isinstance(store, RedisConversations)
        token = new_token()
        record = ConversationRecord((Message("user", "hello"),), 0, 2)
        assert await store.save(token, record) is Saved.SAVED
        assert await store.load(token) == record
        client = redis.Redis.from_url(server.url)
        keys = [k.decode() for k in client.keys("*")]
        assert keys == [f"voicecore:conversation:{hashlib.sha256(token.encode()).hexdigest()}"]
        assert token not in json.dumps(keys)
        assert 0 < client.pttl(keys[0]) <= 60_000
        client.set(keys[0], b"not json")
        assert await store.load(token) is None
        assert store.errors == 1
        client.close()
        await store.aclose()


@needs_redis
async def test_a_redis_store_that_goes_away_fails_softly() -> None:
    with RedisServer() as server:
        store = await open_store(server.url, ttl_s=60)
    # Redis is gone: saves fail (counted), loads find nothing; nothing raises.
    assert await store.save(new_token(), ConversationRecord()) is Saved.FAILED
    assert await store.load(new_token()) is None
    assert store.errors == 2
    await store.aclose()
    with pytest.raises(OSError, match="does not answer"):
        await open_store(f"redis://:secret@127.0.0.1:{redis_server.free_port()}/0", ttl_s=1)


async def _one_owner_at_a_time(store: MemoryConversations | RedisConversations) -> None:
    token = new_token()
    old, new = ConversationRecord(owner="old"), ConversationRecord(next_turn_id=5, owner="new")
    assert await store.save(token, old, take=True) is Saved.SAVED
    assert await store.save(token, old) is Saved.SAVED  # its own: saved
    assert await store.save(token, new) is Saved.SUPERSEDED  # not taken: refused
    assert await store.save(token, new, take=True) is Saved.SAVED  # a resume takes it
    assert await store.save(token, old) is Saved.SUPERSEDED  # the old session is done
    assert await store.load(token) == new


async def test_the_memory_store_lets_one_session_own_a_conversation() -> None:
    await _one_owner_at_a_time(MemoryConversations(ttl_s=60))


@needs_redis
async def test_the_redis_store_lets_one_session_own_a_conversation() -> None:
    with RedisServer() as server:
        store = await open_store(server.url, ttl_s=60)
        assert isinstance(store, RedisConversations)
        await _one_owner_at_a_time(store)
        await store.aclose()


# --- resuming over real connections ---------------------------------------------------------


@asynccontextmanager
async def running(web_root: Path, **settings: Any) -> AsyncIterator[VoiceServer]:
    server = VoiceServer(
        scripted_pipeline(VoicecoreConfig()),
        ServerConfig(port=0, web_root=web_root, diagnostics=False, max_sessions=10, **settings),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        try:
            yield server
        finally:
            server.shutdown(drain_timeout_s=0)


UTTERANCE = noise(300) + voice(1000) + noise(700)
"""One utterance (the scripted STT hears "What can you do?" in it)."""


@asynccontextmanager
async def _session(
    port: int, resume: str | None = None
) -> AsyncIterator[tuple[WebSocket, dict[str, Any]]]:
    """A connection that said ``hello`` (resuming ``resume``): its socket and ``ready``."""
    ws = await connect(f"ws://127.0.0.1:{port}/ws")
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.run_writer)
            ws.send_nowait(hello(client="test", resume=resume))
            yield ws, json.loads(await ws.receive())
            nursery.cancel_scope.cancel()
    finally:
        await ws.aclose()


async def _speak(ws: WebSocket) -> None:
    """The utterance in real time, then the noise floor for ever."""
    for offset in range(0, len(UTTERANCE), 640):
        ws.send_nowait(UTTERANCE[offset : offset + 640])
        await trio.sleep(0.02)
    while True:
        ws.send_nowait(noise(20))
        await trio.sleep(0.02)


async def _one_turn(port: int, resume: str | None = None) -> dict[str, Any]:
    """Connects (resuming ``resume``), says one utterance, waits for the whole reply, says
    bye; returns its ``ready`` plus the turn ids it saw and the reply heard."""
    async with _session(port, resume) as (ws, ready), trio.open_nursery() as nursery:
        seen: dict[str, Any] = {"ready": ready, "turns": [], "heard": None}
        nursery.start_soon(_speak, ws)
        with trio.fail_after(20):
            while True:
                message = await ws.receive()
                if isinstance(message, bytes):
                    continue
                data = json.loads(message)
                if data["type"] == "speech_start":
                    seen["turns"].append(data["turn_id"])
                if data["type"] == "agent_done":
                    seen["heard"] = data["heard"]
                    break
        ws.send_nowait(json.dumps({"type": "bye"}))
        nursery.cancel_scope.cancel()
    return seen


async def test_a_client_resumes_its_conversation_with_its_history_and_turn_numbers(
    tmp_path: Path,
) -> None:
    async with running(tmp_path) as server:
        assert server.port is not None
        first = await _one_turn(server.port)
        ready = first["ready"]
        assert ready["resumed"] is False
        assert "history" not in ready
        token = ready["conversation"]
        second = await _one_turn(server.port, resume=token)
        again = second["ready"]
        assert again["resumed"] is True
        assert again["conversation"] == token
        assert again["history"] == [
            {"role": "user", "text": "What can you do?"},
            {"role": "assistant", "text": first["heard"]},
        ]
        assert min(second["turns"]) > max(first["turns"])  # the numbering goes on
        async with _session(server.port, resume=new_token()) as (_, unknown):
            pass
        assert unknown["resumed"] is False
        assert unknown["conversation"] != token
        health = server.health()["conversations"]
        assert (health["store"], health["resumed"], health["new"]) == ("memory", 1, 2)


async def test_a_reply_cut_by_the_connection_is_kept_as_far_as_it_was_sent(tmp_path: Path) -> None:
    async with running(tmp_path) as server:
        assert server.port is not None
        texts: list[str] = []
        async with _session(server.port) as (ws, ready), trio.open_nursery() as nursery:
            nursery.start_soon(_speak, ws)
            with trio.fail_after(10):
                while not texts:
                    message = await ws.receive()
                    if isinstance(message, str) and json.loads(message)["type"] == "agent_text":
                        texts.append(json.loads(message)["text"])
            nursery.cancel_scope.cancel()
        # The connection is gone in the middle of the reply.
        with trio.fail_after(5):
            while server.sessions:
                await trio.sleep(0.02)
        async with _session(server.port, resume=ready["conversation"]) as (_, again):
            pass
        assert again["resumed"] is True
        last = again["history"][-1]
        assert last["role"] == "assistant"
        assert last["text"].startswith(texts[0])


@needs_redis
async def test_a_conversation_moves_to_another_server_through_redis(tmp_path: Path) -> None:
    with RedisServer() as store:
        async with (
            running(tmp_path, conversation_store=store.url) as one,
            running(tmp_path, conversation_store=store.url) as other,
        ):
            assert one.port is not None
            assert other.port is not None
            first = await _one_turn(one.port)
            second = await _one_turn(other.port, resume=first["ready"]["conversation"])
            assert second["ready"]["resumed"] is True
            assert [m["role"] for m in second["ready"]["history"]] == ["user", "assistant"]
            assert min(second["turns"]) > max(first["turns"])
            assert other.health()["conversations"]["store"] == "redis"


@needs_redis
async def test_a_caller_on_a_draining_server_comes_back_and_loses_nothing(tmp_path: Path) -> None:
    """A caller talks to a server that drains (SIGTERM's path: 1001 after the drain
    timeout); a new server with the same Redis store comes up on the port; the caller
    reconnects by itself, resumes, and every word it said and heard is in the history."""
    utterance = np.frombuffer(UTTERANCE, dtype=np.int16)
    with RedisServer() as store:

        def server(port: int) -> VoiceServer:
            return VoiceServer(
                scripted_pipeline(VoicecoreConfig()),
                ServerConfig(
                    port=port,
                    web_root=tmp_path,
                    diagnostics=False,
                    max_sessions=10,
                    conversation_store=store.url,
                    drain_timeout_s=0.5,
                ),
            )

        results: list[Any] = []
        first = server(0)
        async with trio.open_nursery() as nursery:
            await nursery.start(first.run)
            assert first.port is not None
            url = f"ws://127.0.0.1:{first.port}/ws"

            async def caller() -> None:
                results.append(await call(url, [utterance], talk_s=16, pause_s=4.5))

            nursery.start_soon(caller)
            await trio.sleep(6)  # a turn or two
            assert first.health()["ready"] is True
            first.shutdown()
            assert first.health()["status"] == "draining"  # not ready at once
            done = trio.Event()

            async def run_first_out() -> None:
                while first.sessions:
                    await trio.sleep(0.02)
                done.set()

            nursery.start_soon(run_first_out)
            await done.wait()
            await trio.sleep(0.2)  # the first server's listener closes
            second = server(first.port)
            await nursery.start(second.run)
            while not results:
                await trio.sleep(0.1)
            second.shutdown(drain_timeout_s=0)
        (result,) = results
        assert result.failure == ""
        assert result.reconnects >= 1
        assert result.not_resumed == 0
        assert [c.close_code for c in result.connections[:-1]] == [1001] * result.reconnects
        assert result.history_lost == 0, result.record
        assert result.replies >= 1, result
        assert len(result.record) >= 4, result
        print(f"reconnects {result.reconnects}, reconnect_s {result.reconnect_s}")


async def test_an_old_connection_cannot_overwrite_a_resumed_conversation(tmp_path: Path) -> None:
    """The network blinked: the client resumed on a new connection while the server still
    held the old one. The old session's saves, its last one too, are refused: what the
    resumed conversation said since is kept; the old session is closed (1000)."""
    async with running(tmp_path) as server:
        assert server.port is not None
        async with _session(server.port) as (old, ready):
            token = ready["conversation"]
            resumed = await _one_turn(server.port, resume=token)  # the old one still open
            assert resumed["ready"]["resumed"] is True
            async with trio.open_nursery() as nursery:  # the old one changes the record
                nursery.start_soon(_speak, old)
                with trio.fail_after(15):
                    code = reason = None
                    while code is None:
                        try:
                            await old.receive()
                        except ConnectionClosed as closed:
                            received = closed.rcvd
                            code, reason = (received.code, received.reason) if received else (0, "")
                nursery.cancel_scope.cancel()
            assert (code, reason) == (1000, RESUMED_ELSEWHERE_REASON)
        async with _session(server.port, resume=token) as (_, last):
            pass
        history = last["history"]
        assert [m["role"] for m in history] == ["user", "assistant"]  # the resumed turn
        assert history[1]["text"] == resumed["heard"]
