"""The protocol-v1 client side of the benchmarks: the messages every simulated client sends,
and the one-session conversing client of the impairment, stall and timeline benchmarks.

Every client (this one, ``harness.loadgen``'s lean many-session clients, ``harness.soak``'s
reconnecting ones) says ``hello`` and reports its playout with the messages built here, and
plays the agent's audio into ``harness.player.PlayoutModel``, the page's player.

``run_client`` speaks like the web page: it streams 20 ms mic frames on a real-time clock
(an utterance when it speaks, silence otherwise), plays the agent's frames into the player,
sends ``playout`` reports 4 times a second, barges in on every other reply (unless told
not to), and measures voice-to-voice and barge-in latency at the client.
"""

from __future__ import annotations

import contextlib
import json
import statistics
from dataclasses import dataclass, field
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect

from harness.player import PlayoutModel

__all__ = [
    "BYE",
    "FRAME_MS",
    "MIC_RATE",
    "OUTPUT_RATE",
    "ClientResult",
    "hello",
    "playout_report",
    "run_client",
]

MIC_RATE: Final = 16000
"""The clients' mic rate, Hz (the engine's own rate: no resampling on the way in)."""
OUTPUT_RATE: Final = 24000
"""The agent audio rate the clients ask for by default, Hz (the scripted TTS's rate)."""
FRAME_MS: Final = 20
"""The mic and agent frame, ms (the server's default)."""
REPORT_PERIOD_S: Final = 0.25
"""The playout report's period: 4 times a second, as the protocol asks."""
CLOSE_GRACE_S: Final = 15.0
"""Time a client run may take beyond its duration to say goodbye and close."""
BYE: Final = json.dumps({"type": "bye"})
"""The client's goodbye."""


def hello(
    *,
    client: str,
    input_rate: int = MIC_RATE,
    output_rate: int = OUTPUT_RATE,
    frame_ms: int = FRAME_MS,
    capabilities: tuple[str, ...] = ("pause",),
    resume: str | None = None,
) -> str:
    """The ``hello`` that opens a session (docs/protocol.md); like the web page, the client
    obeys ``pause``/``resume`` unless ``capabilities`` says otherwise; ``resume``: the
    ``conversation`` token of an earlier ``ready``, to continue it."""
    message: dict[str, object] = {
        "type": "hello",
        "protocol": 1,
        "input_rate": input_rate,
        "output_rate": output_rate,
        "frame_ms": frame_ms,
        "client": client,
        "capabilities": list(capabilities),
    }
    if resume is not None:
        message["resume"] = resume
    return json.dumps(message)


def playout_report(player: PlayoutModel, now: float) -> str:
    """The ``playout`` report of ``player`` at ``now`` (it plays out up to ``now`` first)."""
    player.advance(now)
    return json.dumps(
        {
            "type": "playout",
            "buffered_ms": round(player.buffered_ms, 1),
            "played_ms": round(player.played_ms, 1),
            "underruns": player.underruns,
        }
    )


@dataclass
class ClientResult:
    """What one client session measured (times in ms, audio in s).

    Attributes:
        agent_audio_s: agent audio received.
        frames: agent frames received.
        underruns: frames that arrived after the player ran dry, within a reply.
        gaps_ms: how long the player was dry before each of those frames.
        v2v_client_ms: end of the user's speech (last speech frame sent) to the reply's
            first frame received.
        v2v_server_ms: the server's ``voice_to_voice_ms`` (from its VAD's end of speech).
        barge_client_ms: first barge-in speech frame sent to the agent silenced at the client
            (``pause`` or ``clear`` received, whichever came first).
        barge_server_ms: the server's ``barge_in_ms``.
        replies: replies that started; clears: ``clear`` messages.
        cushion_ms: the cushion the server announced.
        errors: ``error`` messages received.
    """

    agent_audio_s: float = 0.0
    frames: int = 0
    underruns: int = 0
    gaps_ms: list[float] = field(default_factory=list)
    v2v_client_ms: list[float] = field(default_factory=list)
    v2v_server_ms: list[float] = field(default_factory=list)
    barge_client_ms: list[float] = field(default_factory=list)
    barge_server_ms: list[float] = field(default_factory=list)
    replies: int = 0
    clears: int = 0
    cushion_ms: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def underruns_per_min(self) -> float:
        """Underruns per minute of agent audio."""
        return self.underruns / (self.agent_audio_s / 60) if self.agent_audio_s else 0.0

    def summary(self) -> dict[str, Any]:
        """The figures a report row shows (medians and maxima, ms)."""

        def med(values: list[float]) -> float | None:
            return round(statistics.median(values), 1) if values else None

        return {
            "agent_audio_s": round(self.agent_audio_s, 1),
            "underruns": self.underruns,
            "underruns_per_min": round(self.underruns_per_min, 2),
            "gap_max_ms": round(max(self.gaps_ms), 1) if self.gaps_ms else 0.0,
            "gap_median_ms": med(self.gaps_ms) or 0.0,
            "v2v_client_ms": med(self.v2v_client_ms),
            "v2v_server_ms": med(self.v2v_server_ms),
            "barge_client_ms": med(self.barge_client_ms),
            "barge_server_ms": med(self.barge_server_ms),
            "replies": self.replies,
        }


async def run_client(
    port: int,
    duration_s: float,
    *,
    speech: npt.NDArray[np.int16],
    barge_in: bool = True,
    name: str = "voicecore-bench/1",
) -> ClientResult:
    """Talks to the server at ``ws://127.0.0.1:port/ws`` for ``duration_s`` of real time:
    says ``speech``, listens to the reply, and again; barges in on every other reply unless
    ``barge_in`` is False. Returns what it measured."""
    result = ClientResult()
    # A hard deadline: a closing handshake stuck behind a proxy must not hang the run.
    with trio.move_on_after(duration_s + CLOSE_GRACE_S) as deadline:
        await _converse(port, duration_s, speech, barge_in, name, result)
    if deadline.cancelled_caught:
        result.errors.append("close_timeout")
    return result


async def _converse(
    port: int,
    duration_s: float,
    speech: npt.NDArray[np.int16],
    barge_in: bool,
    name: str,
    result: ClientResult,
) -> None:
    mic_speech: list[npt.NDArray[np.int16]] = []  # the utterance being "spoken", if any
    spoken = {"end": 0.0, "start": 0.0}
    barge_pending: list[bool] = []  # a barge-in is under way, its clear not yet seen
    v2v_pending: list[float] = []
    frame_samples = MIC_RATE * FRAME_MS // 1000
    silence = bytes(2 * frame_samples)
    speech_done = trio.Event()
    reply = {"started": trio.Event(), "done": trio.Event()}
    in_reply = False
    async with connect(
        f"ws://127.0.0.1:{port}/ws",
        compression=None,
        max_size=2**20,
        open_timeout=20,
        close_timeout=3,
    ) as ws:
        await ws.send(hello(client=name))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"no ready: {ready}")
        result.cushion_ms = int(ready["cushion_ms"])
        frame_ms = float(ready.get("frame_ms", FRAME_MS))
        player = PlayoutModel(result.cushion_ms, frame_ms)

        async def mic() -> None:
            next_at = trio.current_time()
            offset = 0
            while True:
                await trio.sleep_until(next_at)
                next_at += FRAME_MS / 1000
                if mic_speech:
                    chunk = mic_speech[0][offset : offset + frame_samples]
                    if offset == 0:
                        spoken["start"] = trio.current_time()
                    offset += frame_samples
                    payload = chunk.tobytes().ljust(2 * frame_samples, b"\0")
                    await ws.send(payload)
                    if offset >= len(mic_speech[0]):
                        mic_speech.clear()
                        offset = 0
                        spoken["end"] = trio.current_time()
                        speech_done.set()
                else:
                    await ws.send(silence)

        async def say() -> None:
            nonlocal speech_done
            speech_done = trio.Event()
            mic_speech.append(speech)
            await speech_done.wait()

        async def reports() -> None:
            while True:
                await trio.sleep(REPORT_PERIOD_S)
                await ws.send(playout_report(player, trio.current_time()))

        def end_reply(now: float, *, cleared: bool) -> None:
            nonlocal in_reply
            if cleared:
                player.clear(now)
            else:
                player.done(now)
            in_reply = False
            reply["done"].set()

        async def receive() -> None:
            nonlocal in_reply
            async for message in ws:
                now = trio.current_time()
                if isinstance(message, bytes):
                    player.frame(now)
                    result.frames += 1
                    result.agent_audio_s += frame_ms / 1000
                    if not in_reply:
                        in_reply = True
                        result.replies += 1
                        reply["started"].set()
                        if v2v_pending:
                            result.v2v_client_ms.append((now - v2v_pending.pop()) * 1000)
                    continue
                event = json.loads(message)
                kind = event.get("type")
                if kind in ("clear", "pause") and barge_pending:
                    # From the barge-in utterance's first frame on the wire.
                    barge_pending.clear()
                    result.barge_client_ms.append((now - spoken["start"]) * 1000)
                if kind == "clear":
                    result.clears += 1
                    end_reply(now, cleared=True)
                elif kind == "pause":
                    player.pause(now)
                elif kind == "resume":
                    player.resume(now)
                elif kind == "agent_done":
                    end_reply(now, cleared=False)
                elif kind == "metrics":
                    if event.get("voice_to_voice_ms") is not None:
                        result.v2v_server_ms.append(float(event["voice_to_voice_ms"]))
                    if event.get("barge_in_ms") is not None:
                        result.barge_server_ms.append(float(event["barge_in_ms"]))
                elif kind == "error":
                    result.errors.append(str(event.get("code")))

        async def ask() -> None:
            """Says the utterance (a question) and waits up to 10 s for the reply to start."""
            reply["started"], reply["done"] = trio.Event(), trio.Event()
            await say()
            v2v_pending[:] = [spoken["end"]]
            with trio.move_on_after(10):
                await reply["started"].wait()

        async def conversation() -> None:
            barge = False
            while True:
                await ask()
                if barge:
                    await trio.sleep(0.8)
                    # The barge-in speech is also the next question.
                    barge_pending[:] = [True]
                    await ask()
                with trio.move_on_after(15):
                    await reply["done"].wait()
                await trio.sleep(0.4)
                barge = barge_in and not barge

        with trio.move_on_after(duration_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mic)
                nursery.start_soon(reports)
                nursery.start_soon(receive)
                nursery.start_soon(conversation)
        player.advance(trio.current_time())
        result.underruns = player.underruns
        result.gaps_ms = [gap_ms for _, gap_ms in player.gaps]
        with contextlib.suppress(ConnectionClosed), trio.move_on_after(2):
            await ws.send(BYE)
