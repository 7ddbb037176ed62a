"""Where conversations live between connections: the stores behind ``hello.resume``.

A new conversation gets a token (:func:`new_token`, 192 random bits) which ``ready`` gives
the client; the store keys the conversation by the token's SHA-256, so a store's contents
(a Redis dump, a key listing) name no conversation anyone could resume. A client that
reconnects sends the token back and, if the store still holds the conversation, goes on
with its history (``voicecore.engine.conversation.ConversationRecord``).

* :class:`MemoryConversations` (``server.conversation_store = "memory"``): this process only,
  bounded (the least recently saved are forgotten first, and any untouched for
  ``conversation_ttl_s``). A reconnect that lands on another worker starts afresh.
* :class:`RedisConversations` (a ``redis://`` URL): shared by every worker of every machine;
  each save is one ``SET`` with the TTL, in a worker thread (redis-py's client is
  blocking; a save is well under a millisecond on a LAN, and one conversation saves a few
  times per turn).

A store that fails (Redis down) does not end a conversation: the failure is logged and
counted (``errors``), the conversation goes on, and the next change saves it again.

**One owner at a time.** A record names the session that holds the conversation (the latest
to start or resume it: its save *takes* it); a store refuses the save of any other session
(:attr:`Saved.SUPERSEDED`), atomically (in Redis, one Lua script). Without it, a connection
that outlived its client (the network blinked: the client reconnected and resumed before
the server noticed the old connection was gone) would overwrite, with its last save, what
the resumed conversation said since.
"""

from __future__ import annotations

import enum
import hashlib
import json
import logging
import secrets
import time
import urllib.parse
from collections import OrderedDict
from typing import Any, Final, Protocol

import trio

from voicecore.engine.conversation import ConversationRecord
from voicecore.exceptions import ConversationRecordError

__all__ = [
    "MAX_MEMORY_CONVERSATIONS",
    "ConversationStore",
    "MemoryConversations",
    "RedisConversations",
    "Saved",
    "new_token",
    "open_store",
]

_log = logging.getLogger("voicecore.server.conversations")

MAX_MEMORY_CONVERSATIONS: Final = 10_000
"""Conversations the memory store keeps at most (a few kB each)."""

REDIS_KEY_PREFIX: Final = "voicecore:conversation:"
REDIS_TIMEOUT_S: Final = 2.0
"""A Redis call that takes longer fails (and is retried at the next change): a store that
hangs must not hold a session's keeper forever."""


def new_token() -> str:
    """A fresh conversation token: 32 URL-safe characters (192 random bits)."""
    return secrets.token_urlsafe(24)


class Saved(enum.Enum):
    """What a save did."""

    SAVED = "saved"
    SUPERSEDED = "superseded"
    """Refused: another session holds the conversation now (it was resumed elsewhere)."""
    FAILED = "failed"
    """The store failed (logged, counted): the next change saves again."""


_SAVE_SCRIPT: Final = """
local current = redis.call('GET', KEYS[1])
if current and ARGV[3] == '0' then
  local ok, record = pcall(cjson.decode, current)
  if ok and type(record) == 'table' and record['owner'] and record['owner'] ~= ARGV[2] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[4])
return 1
"""
"""Redis: SET the record (ARGV[1]) with its TTL (ARGV[4], ms) unless another owner than
ARGV[2] holds it and the save does not take it (ARGV[3] '0'); 1 if saved, 0 if refused."""


def _key(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class ConversationStore(Protocol):
    """Keeps conversation records by token, for ``conversation_ttl_s``.

    Attributes:
        kind: ``"memory"`` or ``"redis"`` (``/healthz``).
        errors: saves and loads that failed since start-up.
    """

    kind: str
    errors: int

    async def load(self, token: str) -> ConversationRecord | None:
        """The conversation ``token`` names, or None (unknown, expired, unreadable, or the
        store failed: the client then starts a new conversation)."""
        ...

    async def save(self, token: str, record: ConversationRecord, *, take: bool = False) -> Saved:
        """Keeps ``record`` under ``token`` for the TTL, if ``record.owner`` holds the
        conversation or ``take`` (a session starting or resuming it takes it over);
        otherwise it is refused (``SUPERSEDED``)."""
        ...

    async def aclose(self) -> None:
        """Releases the store's connections."""
        ...


class MemoryConversations:
    """The in-process store: an LRU dict of JSON records with a TTL."""

    kind = "memory"

    def __init__(self, *, ttl_s: float, max_conversations: int = MAX_MEMORY_CONVERSATIONS):
        self.errors = 0
        self._ttl_s = ttl_s
        self._max = max_conversations
        # key -> (monotonic expiry, JSON text): JSON, so a record is stored as Redis stores it.
        self._records: OrderedDict[str, tuple[float, str]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._records)

    async def load(self, token: str) -> ConversationRecord | None:
        entry = self._records.get(_key(token))
        if entry is None:
            return None
        expiry, text = entry
        if expiry < time.monotonic():
            del self._records[_key(token)]
            return None
        return _parse(text, self)

    async def save(self, token: str, record: ConversationRecord, *, take: bool = False) -> Saved:
        key = _key(token)
        held = None if take else await self.load(token)
        if held is not None and held.owner not in ("", record.owner):
            return Saved.SUPERSEDED
        self._records[key] = (time.monotonic() + self._ttl_s, json.dumps(record.to_json()))
        self._records.move_to_end(key)
        now = time.monotonic()
        while self._records and (
            len(self._records) > self._max or next(iter(self._records.values()))[0] < now
        ):
            self._records.popitem(last=False)
        return Saved.SAVED

    async def aclose(self) -> None:
        self._records.clear()


class RedisConversations:
    """The shared store: one Redis key per conversation, ``SET`` with the TTL.

    Args:
        url: ``redis://[:password@]host:port/db`` (``rediss://`` for TLS).
        ttl_s: how long an untouched conversation is kept.
    """

    kind = "redis"

    def __init__(self, url: str, *, ttl_s: float) -> None:
        import redis

        self.errors = 0
        self._ttl_ms = max(1, round(ttl_s * 1000))
        self._client = redis.Redis.from_url(
            url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
        )
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._save_script = self._client.register_script(_SAVE_SCRIPT)
        # A few threads: saves are short, and a stalled Redis must not take every thread.
        self._limiter = trio.CapacityLimiter(4)

    async def _call(self, what: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return await trio.to_thread.run_sync(
                lambda: function(*args, **kwargs), limiter=self._limiter
            )
        except self._errors as exc:
            self.errors += 1
            _log.warning("conversation store (Redis): %s failed: %s", what, exc)
            return None

    async def ping(self) -> bool:
        """Whether Redis answers (checked at start-up, so a wrong URL is said at once)."""
        return bool(await self._call("ping", self._client.ping))

    async def load(self, token: str) -> ConversationRecord | None:
        text = await self._call("load", self._client.get, REDIS_KEY_PREFIX + _key(token))
        return None if text is None else _parse(text, self)

    async def save(self, token: str, record: ConversationRecord, *, take: bool = False) -> Saved:
        done = await self._call(
            "save",
            self._save_script,
            keys=[REDIS_KEY_PREFIX + _key(token)],
            args=[json.dumps(record.to_json()), record.owner, int(take), self._ttl_ms],
        )
        if done is None:
            return Saved.FAILED
        return Saved.SAVED if done else Saved.SUPERSEDED

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self._client.close)


def _parse(
    text: str | bytes, store: MemoryConversations | RedisConversations
) -> ConversationRecord | None:
    try:
        return ConversationRecord.from_json(json.loads(text))
    except (ValueError, ConversationRecordError) as exc:
        store.errors += 1
        _log.warning("conversation store: an unreadable record (%s); a new conversation", exc)
        return None


async def open_store(setting: str, *, ttl_s: float) -> ConversationStore:
    """The store ``server.conversation_store`` names (``"memory"`` or a Redis URL).

    Raises:
        OSError: Redis does not answer at that URL.
    """
    if setting == "memory":
        return MemoryConversations(ttl_s=ttl_s)
    store = RedisConversations(setting, ttl_s=ttl_s)
    if not await store.ping():
        await store.aclose()
        raise OSError(f"the conversation store at {_redacted(setting)} does not answer")
    return store


def _redacted(url: str) -> str:
    """``url`` without its password (for messages and logs)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username or ''}:***@{parts.hostname}" + (
        f":{parts.port}" if parts.port else ""
    )
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
