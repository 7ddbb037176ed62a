"""Bursts and hostile connections against the voice server (issue 13: admission).

* :func:`open_conversation`: one caller that connects (from a chosen loopback address),
  says ``hello``, and records what it got (``ready`` and how long it took, or the refusal's
  error code and close code); admitted, it talks: real speech streamed in real time with a
  pause after each utterance, playout reported as the page does, the replies counted.
* :func:`burst`: ``n`` such callers at once.
* :func:`attack`: hostile connections coming and going for a while, each slot cycling
  through what a careless or hostile client does: a TCP socket that never sends a byte, a
  WebSocket that never says ``hello``, garbage instead of ``hello``, a connection dropped
  right after ``hello``, and a caller that talks for a few seconds and vanishes without
  closing. They come from their own loopback addresses (``127.0.0.2``...), so the server
  tells them from a caller on ``127.0.0.1``.
* :class:`RssSampler`: the server's resident memory, sampled while the rest runs.

Everything targets 127.0.0.1 (and its ``127.0.0.x`` aliases) and is bounded in time.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import math
import random
import statistics
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio
from websockets.exceptions import ConnectionClosed, WebSocketException

from harness.client import BYE, REPORT_PERIOD_S, hello, playout_report
from harness.launcher import ServerProcess
from harness.player import PlayoutModel
from voicecore.exceptions import SendBufferFullError
from voicecore.server.websocket import WebSocket, connect

__all__ = [
    "HOSTILE_KINDS",
    "AttackStats",
    "Outcome",
    "RssSampler",
    "attack",
    "burst",
    "healthz",
    "open_conversation",
    "quantile",
    "silent_socket",
    "summarize",
]

FRAME_S: Final = 0.02
MIC_RATE: Final = 16000
QUIET_S: Final = 3.0
"""After its script, a caller streams silence until neither side has spoken for this long
(a turn still in flight, the user's or the agent's, is answered or finished first)."""
SETTLE_MAX_S: Final = 15.0
"""...but no longer than this."""
HOSTILE_KINDS: Final = ("idle_socket", "silent_websocket", "garbage", "drop_after_hello", "talk")
"""What the hostile slots of :func:`attack` do, in turn."""


def quantile(values: list[float], q: float) -> float:
    """The ``q`` quantile (0-1) of ``values``; NaN for none."""
    return float(np.quantile(np.asarray(values), q)) if values else math.nan


@dataclass
class Outcome:
    """What one caller got.

    Attributes:
        ready_s: ``hello`` sent to ``ready`` received, s (None: not admitted).
        refused: the ``error`` code the server refused with (``busy``...), or None.
        close_code: the close code the server closed with (None: the caller closed).
        failure: a connection that failed otherwise (refused handshake, reset...), or "".
        replies: agent replies heard to their end (``agent_done``).
        v2v_ms: the server's voice-to-voice figure of each reply, ms.
        errors: ``error`` codes received during the conversation (``provider``...).
    """

    ready_s: float | None = None
    refused: str | None = None
    close_code: int | None = None
    failure: str = ""
    replies: int = 0
    v2v_ms: list[float] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


async def _closed_with(ws: WebSocket, outcome: Outcome, timeout_s: float = 10.0) -> None:
    """Reads until the server closes; records the error code and the close code."""
    with trio.move_on_after(timeout_s):
        try:
            while True:
                message = await ws.receive()
                if isinstance(message, str):
                    data = json.loads(message)
                    if data.get("type") == "error" and outcome.refused is None:
                        outcome.refused = data.get("code")
        except ConnectionClosed as closed:
            outcome.close_code = closed.rcvd.code if closed.rcvd is not None else None


async def open_conversation(
    url: str,
    *,
    speech: list[npt.NDArray[np.int16]],
    talk_s: float = 0.0,
    pause_s: float = 3.0,
    local_address: str | None = None,
    client: str = "voicecore-burst/1",
    seed: int = 0,
) -> Outcome:
    """One caller: connects, says ``hello``, records ``ready`` or the refusal; admitted, talks
    for ``talk_s`` (``speech`` utterances in turn, each followed by ``pause_s`` of silence,
    in real time, from a point of the script that ``seed`` picks: callers that arrive
    together do not speak in lockstep), streams silence until its last turn is answered
    (:data:`QUIET_S`, at most :data:`SETTLE_MAX_S`), then says ``bye``."""
    outcome = Outcome()
    try:
        ws = await connect(url, local_address=local_address)
    except (OSError, WebSocketException) as exc:
        outcome.failure = f"{type(exc).__name__}: {exc}"
        return outcome
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.run_writer)
        try:
            sent = trio.current_time()
            # A server refusing at the door may have closed already: its refusal is still
            # there to read.
            with contextlib.suppress(ConnectionClosed):
                ws.send_nowait(hello(client=client, input_rate=MIC_RATE, output_rate=48000))
            first = json.loads(await ws.receive())
            if first.get("type") == "ready":
                outcome.ready_s = trio.current_time() - sent
                if talk_s > 0:
                    await _talk(ws, first, speech, talk_s, pause_s, outcome, seed)
                with contextlib.suppress(ConnectionClosed, SendBufferFullError):
                    ws.send_nowait(BYE)
            elif first.get("type") == "error":
                outcome.refused = first.get("code")
            await _closed_with(ws, outcome)
        except (ConnectionClosed, SendBufferFullError) as exc:
            outcome.failure = outcome.failure or f"{type(exc).__name__}: {exc}"
        finally:
            await ws.aclose()
            nursery.cancel_scope.cancel()
    return outcome


async def _talk(
    ws: WebSocket,
    ready: dict[str, Any],
    speech: list[npt.NDArray[np.int16]],
    talk_s: float,
    pause_s: float,
    outcome: Outcome,
    seed: int,
) -> None:
    frame = MIC_RATE // 50
    silence = np.zeros(int(pause_s * MIC_RATE), dtype=np.int16)
    script = np.concatenate([part for clip in speech for part in (clip, silence)])
    script = np.roll(script, -random.Random(seed).randrange(len(script) // frame) * frame)
    pcm = script[: len(script) // frame * frame].astype("<i2").tobytes()
    player = PlayoutModel(float(ready["cushion_ms"]), float(ready["frame_ms"]))
    start = trio.current_time()
    end = start + talk_s

    last_activity = start  # the last time either side was mid-turn

    def busy(now: float) -> None:
        nonlocal last_activity
        last_activity = now

    speaking = {"user": False, "agent": False}

    async def mic() -> None:
        # The script for ``talk_s``, then silence until the conversation is quiet: a caller
        # hangs up after its last turn is answered, not in the middle of it.
        silent = bytes(2 * frame)
        for index in itertools.count():
            deadline = start + index * FRAME_S
            if deadline >= end:
                if any(speaking.values()):
                    busy(deadline)
                if deadline - last_activity >= QUIET_S or deadline >= end + SETTLE_MAX_S:
                    return
            await trio.sleep_until(deadline)
            offset = index * 2 * frame % len(pcm)
            ws.send_nowait(pcm[offset : offset + 2 * frame] if deadline < end else silent)

    async def reports() -> None:
        while True:
            await trio.sleep(REPORT_PERIOD_S)
            ws.send_nowait(playout_report(player, trio.current_time()))

    async def listen() -> None:
        while True:
            message = await ws.receive()
            now = trio.current_time()
            if isinstance(message, bytes):
                player.frame(now)
                busy(now)
                continue
            data = json.loads(message)
            kind = data.get("type")
            busy(now)
            if kind == "speech_start":
                speaking["user"] = True
            elif kind == "speech_end":
                speaking["user"] = False
            elif kind == "agent_text":
                speaking["agent"] = True
            elif kind == "agent_done":
                player.done(now)
                speaking["agent"] = False
                outcome.replies += 1
            elif kind == "clear":
                player.clear(now)
                speaking["agent"] = False
            elif kind == "metrics" and data.get("voice_to_voice_ms") is not None:
                outcome.v2v_ms.append(float(data["voice_to_voice_ms"]))
            elif kind == "error":
                outcome.errors.append(str(data.get("code")))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(reports)
        nursery.start_soon(listen)
        await mic()
        nursery.cancel_scope.cancel()


async def burst(
    url: str, n: int, *, addresses: tuple[str, ...] = ("127.0.0.1",), **caller: Any
) -> list[Outcome]:
    """``n`` callers (:func:`open_conversation` with ``caller``'s arguments) at once, caller
    ``i`` from ``addresses[i % len(addresses)]``."""
    outcomes = [Outcome() for _ in range(n)]
    async with trio.open_nursery() as nursery:
        for index in range(n):

            async def one(index: int = index) -> None:
                address = addresses[index % len(addresses)]
                outcomes[index] = await open_conversation(
                    url, local_address=address, seed=index, **caller
                )

            nursery.start_soon(one)
    return outcomes


# --- hostile connections ----------------------------------------------------------------------


@dataclass
class AttackStats:
    """What :func:`attack`'s hostile connections got.

    Attributes:
        connections: hostile connections opened (or tried).
        by_kind: of those, per behaviour.
        refused: ``error`` codes the server refused them with, counted.
        admitted: hostile callers that got ``ready``.
        cut_s: how long the server let a socket that never said ``hello`` live, s.
    """

    connections: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    admitted: int = 0
    cut_s: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        """The figures for a report row."""
        return {
            "hostile_connections": self.connections,
            "hostile_admitted": self.admitted,
            "hostile_refused": dict(self.refused),
            "idle_cut_s_max": round(max(self.cut_s), 2) if self.cut_s else None,
        }


async def _hostile_websocket(url: str, kind: str, local_address: str, stats: AttackStats) -> None:
    ws = await connect(url, local_address=local_address)
    outcome = Outcome()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(ws.run_writer)
        try:
            if kind == "garbage":
                ws.send_nowait(b"\x00\x01" * 320)
            elif kind != "silent_websocket":
                ws.send_nowait(hello(client="hostile/1", input_rate=MIC_RATE, output_rate=48000))
            if kind in ("drop_after_hello", "talk"):
                first = json.loads(await ws.receive())
                if first.get("type") == "ready":
                    stats.admitted += 1
                    if kind == "talk":
                        noise = np.random.default_rng().normal(0, 3000, MIC_RATE // 50)
                        for _ in range(150):  # 3 s of loud noise: the VAD's and STT's work
                            await trio.sleep(FRAME_S)
                            ws.send_nowait(noise.astype("<i2").tobytes())
                    await ws.stream.aclose()  # vanish: no close handshake
                    return
                outcome.refused = first.get("code")
            opened = trio.current_time()
            await _closed_with(ws, outcome, timeout_s=30)
            if kind == "silent_websocket":
                stats.cut_s.append(trio.current_time() - opened)
        except (ConnectionClosed, SendBufferFullError, trio.BrokenResourceError, ValueError):
            pass
        finally:
            if outcome.refused is not None:
                stats.refused[outcome.refused] = stats.refused.get(outcome.refused, 0) + 1
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await ws.aclose()
            nursery.cancel_scope.cancel()


async def attack(
    server: ServerProcess,
    *,
    connections: int = 30,
    duration_s: float = 20.0,
    addresses: tuple[str, ...] = ("127.0.0.2", "127.0.0.3", "127.0.0.4"),
) -> AttackStats:
    """Keeps ``connections`` hostile connections coming and going for ``duration_s``: slot
    ``i`` connects from ``addresses[i % len(addresses)]`` and cycles through
    :data:`HOSTILE_KINDS`, one behaviour after the other."""
    stats = AttackStats()
    end = trio.current_time() + duration_s

    async def slot(index: int) -> None:
        address = addresses[index % len(addresses)]
        for turn in itertools.count(index):
            if trio.current_time() >= end:
                return
            kind = HOSTILE_KINDS[turn % len(HOSTILE_KINDS)]
            stats.connections += 1
            stats.by_kind[kind] = stats.by_kind.get(kind, 0) + 1
            try:
                if kind == "idle_socket":
                    await silent_socket(server.port, stats.cut_s, local_address=address)
                else:
                    await _hostile_websocket(server.ws_url, kind, address, stats)
            except (OSError, WebSocketException):
                await trio.sleep(0.1)  # refused at the door: come back

    with trio.move_on_after(duration_s + 35):  # the last connections wind down
        async with trio.open_nursery() as nursery:
            for index in range(connections):
                nursery.start_soon(slot, index)
    return stats


async def healthz(port: int) -> tuple[int, dict[str, Any]]:
    """``GET /healthz`` of the server on 127.0.0.1:``port``: (HTTP status, its JSON)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        data = b""
        with trio.fail_after(10):
            while chunk := await stream.receive_some():
                data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


async def silent_socket(
    port: int, cut: list[float], hold_s: float = 30.0, local_address: str | None = None
) -> None:
    """A TCP connection to 127.0.0.1:``port`` (from ``local_address``) that never sends a
    byte; appends to ``cut`` how long the server kept it (at most ``hold_s``)."""
    opened = trio.current_time()
    stream = await trio.open_tcp_stream("127.0.0.1", port, local_address=local_address)
    async with stream:
        with trio.move_on_after(hold_s), contextlib.suppress(trio.BrokenResourceError):
            while await stream.receive_some():
                pass
    cut.append(trio.current_time() - opened)


# --- memory -----------------------------------------------------------------------------------


class RssSampler:
    """Samples a server process' resident memory every ``interval_s`` while :meth:`run` runs
    (a task); :attr:`peak_mb` is the largest seen."""

    def __init__(self, server: ServerProcess, interval_s: float = 0.1) -> None:
        self.server = server
        self.interval_s = interval_s
        self.peak_mb = 0.0
        self.samples: list[float] = []

    def now_mb(self) -> float:
        """The server's resident memory now, MB (10^6 B)."""
        mb = self.server.rss_kb() * 1024 / 1e6
        self.peak_mb = max(self.peak_mb, mb)
        return mb

    async def run(self) -> None:
        """Samples until cancelled."""
        while True:
            self.samples.append(self.now_mb())
            await trio.sleep(self.interval_s)


def summarize(outcomes: list[Outcome]) -> dict[str, Any]:
    """The figures of a burst: admitted, refused by code, ready p50/max (ms), replies."""
    ready = [o.ready_s * 1000 for o in outcomes if o.ready_s is not None]
    refused: dict[str, int] = {}
    for o in outcomes:
        if o.refused is not None:
            refused[o.refused] = refused.get(o.refused, 0) + 1
    v2v = [x for o in outcomes for x in o.v2v_ms]
    return {
        "callers": len(outcomes),
        "admitted": len(ready),
        "refused": refused,
        "failures": sum(bool(o.failure) for o in outcomes),
        "ready_p50_ms": round(statistics.median(ready), 1) if ready else None,
        "ready_max_ms": round(max(ready), 1) if ready else None,
        "replies": sum(o.replies for o in outcomes),
        "provider_errors": sum(o.errors.count("provider") for o in outcomes),
        "v2v_p50_ms": round(quantile(v2v, 0.5), 1) if v2v else None,
    }
