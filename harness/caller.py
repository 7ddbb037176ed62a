"""A caller that stays in its conversation when its server goes away (issue 14: scale-out).

:func:`call` talks like the web page: real speech streamed in real time from a script of
utterances and pauses, playout reported as the page does (``PlayoutModel``), replies
played. When the connection ends without its ``bye`` (1001 from a draining server, a dead
server's reset, a refused connect), it reconnects at once and then with a short backoff,
sends ``hello.resume`` with its conversation token, and goes on from where its script is
by then (the mic audio of the outage is dropped, as the page drops it).

What it keeps, to prove nothing was lost: every final transcript of its words and every
reply it heard (``agent_done.heard``; for a reply the outage cut, the ``agent_text`` it had
received), in order; its words count once a reply to them begins (words that get none, a
backchannel, are not the conversation's). On each resumed ``ready`` it checks that record against
``ready.history`` (:func:`missing_entries`); :attr:`CallerResult.history_lost` counts the
entries missing.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import random
import re
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio
from websockets.exceptions import ConnectionClosed, WebSocketException

from harness.client import BYE, REPORT_PERIOD_S, hello, playout_report
from harness.player import PlayoutModel
from harness.speech import noise
from voicecore.exceptions import SendBufferFullError
from voicecore.server.websocket import WebSocket, connect

__all__ = ["CallerResult", "Connection", "call", "missing_entries"]

FRAME_S: Final = 0.02
MIC_RATE: Final = 16000
BACKOFF_S: Final = (0.0, 0.05, 0.1, 0.2, 0.4, 0.8)
"""Pauses before each reconnect attempt (then the last, again): the first at once."""
GIVE_UP_S: Final = 20.0
"""A caller that cannot get back in for this long gives up (counted as a failure)."""


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9']+", text.lower()))


def missing_entries(record: list[tuple[str, str]], history: list[dict[str, str]]) -> int:
    """How many of ``record``'s ``(role, text)`` entries are not in ``history``
    (``ready.history``), matched in order; an entry matches a history message of its role
    whose words start with its words (a reply cut by the outage may go on in the history:
    the server sent a chunk the caller never received)."""
    found = 0
    position = 0
    for role, text in record:
        words = _words(text)
        for index in range(position, len(history)):
            message = history[index]
            if message["role"] == role and _words(message["text"]).startswith(words):
                found += 1
                position = index + 1
                break
    return len(record) - found


@dataclass
class Connection:
    """One connection of a caller.

    Attributes:
        resumed: its ``ready`` said the conversation continued.
        close_code: how it ended (1000 after the caller's ``bye``; None: reset).
        underruns: the player ran dry inside a reply and audio then resumed.
        turn_ids: the turns it saw (``speech_start``).
    """

    resumed: bool = False
    close_code: int | None = None
    underruns: int = 0
    turn_ids: list[int] = field(default_factory=list)


@dataclass
class CallerResult:
    """What one caller went through.

    Attributes:
        connections: each connection, in order.
        reconnect_s: each outage: from the connection's end to the next ``ready``.
        history_lost: record entries a resumed ``ready.history`` did not hold (must be 0).
        not_resumed: reconnects that got a new conversation instead of the old one.
        replies: replies heard to their end.
        refused: connection attempts refused (``busy``, handshake or connect failure).
        failure: the caller gave up (it could not get back in), or "".
        record: what it said and heard, in order.
    """

    connections: list[Connection] = field(default_factory=list)
    reconnect_s: list[float] = field(default_factory=list)
    history_lost: int = 0
    not_resumed: int = 0
    replies: int = 0
    refused: int = 0
    failure: str = ""
    record: list[tuple[str, str]] = field(default_factory=list)

    @property
    def reconnects(self) -> int:
        """Connections after the first."""
        return max(0, len(self.connections) - 1)


def _closed(group: BaseExceptionGroup[BaseException]) -> ConnectionClosed | None:
    """The ``ConnectionClosed`` in what a nursery raised, if that is all it raised."""
    matched, rest = group.split((ConnectionClosed, SendBufferFullError))
    if matched is None or rest is not None:
        return None
    error: BaseException = matched
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error if isinstance(error, ConnectionClosed) else ConnectionClosed(None, None)


async def call(
    url: str,
    speech: list[npt.NDArray[np.int16]],
    *,
    talk_s: float,
    pause_s: float = 2.0,
    seed: int = 0,
    local_address: str | None = None,
) -> CallerResult:
    """One caller: talks for ``talk_s`` (``speech`` utterances, each followed by
    ``pause_s`` of silence, from a point ``seed`` picks; from ``local_address``, a loopback
    alias), reconnecting and resuming whenever the connection drops, then says ``bye``.
    Never raises for what the server does."""
    frame = MIC_RATE // 50
    # A real mic's silence: a faint noise floor, never digital zeros.
    silence = np.frombuffer(noise(1000 * pause_s), dtype=np.int16)
    script = np.concatenate([part for clip in speech for part in (clip, silence)])
    script = np.roll(script, -random.Random(seed).randrange(len(script) // frame) * frame)
    pcm = script[: len(script) // frame * frame].astype("<i2").tobytes()
    result = CallerResult()
    start = trio.current_time()
    end = start + talk_s
    token: str | None = None
    dropped_at: float | None = None
    attempt = 0
    while trio.current_time() < end:
        if dropped_at is not None:
            if trio.current_time() - dropped_at > GIVE_UP_S:
                result.failure = f"could not get back in within {GIVE_UP_S:g} s"
                return result
            await trio.sleep(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)])
            attempt += 1
        try:
            ws = await connect(url, local_address=local_address)
        except (OSError, WebSocketException, trio.BrokenResourceError):
            result.refused += 1
            dropped_at = dropped_at if dropped_at is not None else trio.current_time()
            continue
        try:
            outcome = await _connection(ws, token, pcm, start, end, result, dropped_at)
        finally:
            await ws.aclose()
        if outcome is None:  # refused
            result.refused += 1
            dropped_at = dropped_at if dropped_at is not None else trio.current_time()
            continue
        token, finished = outcome
        if finished:
            return result
        attempt = 0
        dropped_at = trio.current_time()
    return result


async def _connection(
    ws: WebSocket,
    token: str | None,
    pcm: bytes,
    start: float,
    end: float,
    result: CallerResult,
    dropped_at: float | None,
) -> tuple[str | None, bool] | None:
    """One connection: ``hello`` (resuming ``token``), then the conversation until ``end``
    or the connection drops. Returns None if refused, else the conversation's token and
    whether the caller finished (said ``bye``)."""
    connection = Connection()
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ws.run_writer)
            with contextlib.suppress(ConnectionClosed):
                ws.send_nowait(hello(client="voicecore-caller/1", resume=token))
            try:
                ready = json.loads(await ws.receive())
            except ConnectionClosed:
                nursery.cancel_scope.cancel()
                return None
            if ready.get("type") != "ready":
                nursery.cancel_scope.cancel()
                return None
            if dropped_at is not None:
                result.reconnect_s.append(trio.current_time() - dropped_at)
                if ready.get("resumed"):
                    history = list(ready.get("history") or [])
                    result.history_lost += missing_entries(result.record, history)
                else:
                    result.not_resumed += 1
            connection.resumed = bool(ready.get("resumed"))
            token = ready.get("conversation")
            result.connections.append(connection)
            await _converse(ws, ready, pcm, start, end, connection, result)
            with contextlib.suppress(ConnectionClosed, SendBufferFullError):
                ws.send_nowait(BYE)
            connection.close_code = await _closing(ws)
            nursery.cancel_scope.cancel()
        return token, True
    except BaseExceptionGroup as group:
        closed = _closed(group)
        if closed is None:
            raise
        connection.close_code = closed.rcvd.code if closed.rcvd is not None else None
        return token, False
    except (ConnectionClosed, SendBufferFullError) as closed:
        connection.close_code = (
            closed.rcvd.code
            if isinstance(closed, ConnectionClosed) and closed.rcvd is not None
            else None
        )
        return token, False


async def _closing(ws: WebSocket) -> int | None:
    with trio.move_on_after(5):
        try:
            while True:
                await ws.receive()
        except ConnectionClosed as closed:
            return closed.rcvd.code if closed.rcvd is not None else None
    return None


async def _converse(
    ws: WebSocket,
    ready: dict[str, Any],
    pcm: bytes,
    start: float,
    end: float,
    connection: Connection,
    result: CallerResult,
) -> None:
    """Streams the script (from where the clock says it is) and plays the replies until
    ``end``, or raises ``ConnectionClosed`` (in a group) when the connection ends."""
    frame_bytes = 2 * MIC_RATE // 50
    player = PlayoutModel(float(ready["cushion_ms"]), float(ready["frame_ms"]))
    heard_now: dict[int, list[str]] = {}  # turn -> agent_text received (a reply in flight)
    # turn -> the final transcript, until the reply to it begins (words that get no reply,
    # a backchannel, are not the conversation's).
    said: dict[int, str] = {}

    async def mic() -> None:
        first = int((trio.current_time() - start) / FRAME_S) + 1
        for index in itertools.count(first):
            deadline = start + index * FRAME_S
            if deadline >= end:
                return
            await trio.sleep_until(deadline)
            offset = index * frame_bytes % len(pcm)
            ws.send_nowait(pcm[offset : offset + frame_bytes])

    async def reports() -> None:
        while True:
            await trio.sleep(REPORT_PERIOD_S)
            ws.send_nowait(playout_report(player, trio.current_time()))

    async def listen() -> None:
        try:
            while True:
                await _heard(await ws.receive())
        except ConnectionClosed:
            # The reply the outage cut: what arrived of it was heard (the page plays it).
            for texts in heard_now.values():
                result.record.append(("assistant", " ".join(texts)))
            raise

    async def _heard(message: str | bytes) -> None:
        now = trio.current_time()
        if isinstance(message, bytes):
            player.frame(now)
            return
        data = json.loads(message)
        kind = data.get("type")
        if kind == "speech_start":
            connection.turn_ids.append(int(data["turn_id"]))
        elif kind == "transcript" and data.get("final") and data.get("text", "").strip():
            said[int(data["turn_id"])] = data["text"]
        elif kind == "agent_text":
            turn = int(data["turn_id"])
            if turn in said:  # answered: the words are the conversation's now
                result.record.append(("user", said.pop(turn)))
            heard_now.setdefault(turn, []).append(data["text"])
        elif kind == "agent_done":
            player.done(now)
            heard_now.pop(int(data["turn_id"]), None)
            if data.get("heard", "").strip():
                result.record.append(("assistant", data["heard"]))
            result.replies += not data.get("interrupted")
        elif kind == "clear":
            player.clear(now)
        elif kind == "pause":
            player.pause(now)
        elif kind == "resume":
            player.resume(now)
        connection.underruns = player.underruns

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports)
        nursery.start_soon(listen)
        await mic()
        nursery.cancel_scope.cancel()
