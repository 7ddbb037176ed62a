"""Network impairment for the system benchmarks: a delaying, jittering, stalling TCP proxy,
a one-session protocol-v1 client that models the page's playout buffer, and the runs.

Why a proxy and not ``tc netem``: netem needs the ``sch_netem`` kernel module, which many
containers and CI machines lack (this one did: ``tc qdisc add ... netem`` answers "Specified
qdisc kind is unknown"). On TCP, what a listener hears of a lost packet is not a hole but
a stall: the bytes behind it wait for the retransmission. The proxy reproduces that
directly on the byte stream, in both directions, on 127.0.0.1 only:

* every chunk read is forwarded ``delay_ms`` later, plus a uniform jitter of
  ``+-jitter_ms``, never before the chunk ahead of it (TCP does not reorder bytes);
* with probability ``stall_probability`` a chunk (and so everything behind it) is held
  ``stall_ms`` more: a lost segment's retransmission.

The client (``run_client``) speaks protocol v1 like the web page: it streams 20 ms mic
frames of real speech on a real-time clock, plays the agent's frames into a simulated
buffer (the buffer drains at real time from the first frame of a reply; a frame that
arrives after it ran dry, within the same reply, is an underrun, and the time it was dry
is the gap), sends ``playout`` reports 4 times a second, barges in on every other reply,
and measures voice-to-voice and barge-in latency at the client.

Run: ``python -m harness.impair --duration 30`` (prints a table and writes JSON).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import connect

from harness import subprocess_env
from voicecore.engine.contracts import PLAYOUT_TO_CLIENT

__all__ = [
    "PROFILES",
    "ClientResult",
    "ImpairingProxy",
    "PlayoutModel",
    "Profile",
    "find_min_cushion",
    "launch_server",
    "load_speech",
    "main",
    "measure",
    "run_client",
]

SPEECH_DIR: Final = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
"""Real speech beside the checkout (16 kHz mono PCM16 WAV); a synthetic voice otherwise."""

MIC_RATE: Final = 16000
OUTPUT_RATE: Final = 24000
FRAME_MS: Final = 20
CLOSE_GRACE_S: Final = 15.0
"""Time a client run may take beyond its duration to say goodbye and close."""
REPORT_PERIOD_S: Final = 0.25
"""The playout report's period: 4 times a second, as the protocol asks."""


@dataclass(frozen=True)
class Profile:
    """A network condition, applied to each direction of the byte stream.

    Attributes:
        name: the profile's name.
        delay_ms: one-way delay added to every chunk, ms.
        jitter_ms: uniform jitter around the delay (+-), ms.
        stall_probability: chance that a chunk is held back (a lost segment on TCP).
        stall_ms: how long a held-back chunk waits for its retransmission, ms.
    """

    name: str
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    stall_probability: float = 0.0
    stall_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.delay_ms < 0 or self.jitter_ms < 0 or self.stall_ms < 0:
            raise ValueError(f"{self.name}: delays must be >= 0 ms")
        if not 0 <= self.stall_probability < 1:
            raise ValueError(f"{self.name}: stall_probability must be in [0, 1)")
        if self.jitter_ms > self.delay_ms:
            raise ValueError(f"{self.name}: jitter_ms must not exceed delay_ms")


PROFILES: Final[dict[str, Profile]] = {
    "clean": Profile("clean"),
    # ~50 ms added latency with jitter; 1 % of segments lost, each recovered by a
    # retransmission after Linux's minimum RTO (200 ms), which holds the stream behind it.
    "moderate": Profile("moderate", 50.0, 15.0, 0.01, 200.0),
    # ~150 ms, 5 % lost; a longer recovery (RTO backoff on a slow path).
    "degraded": Profile("degraded", 150.0, 40.0, 0.05, 300.0),
}
"""The issue's three profiles (delays one way, in each direction)."""


# --- the proxy ----------------------------------------------------------------------------


class ImpairingProxy:
    """A loopback TCP proxy that forwards to ``127.0.0.1:upstream_port`` through ``profile``.

    Args:
        upstream_port: the server's port.
        profile: the impairment of both directions.
        seed: the random generator's seed (runs are repeatable in what they inject).

    Attributes:
        port: the port the proxy listens on (once ``run`` has started).
        chunks: chunks forwarded (both directions).
        stalls: chunks held back for a retransmission.
    """

    def __init__(self, upstream_port: int, profile: Profile, *, seed: int = 1) -> None:
        self.upstream_port = upstream_port
        self.profile = profile
        self.port: int | None = None
        self.chunks = 0
        self.stalls = 0
        self._rng = random.Random(seed)

    def __repr__(self) -> str:
        return f"ImpairingProxy({self.port} -> {self.upstream_port}, {self.profile.name})"

    async def run(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        """Listens on 127.0.0.1 (a free port) and proxies every connection until cancelled."""
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        self.port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as nursery:
            task_status.started(self.port)
            await trio.serve_listeners(self._connection, listeners, handler_nursery=nursery)

    async def _connection(self, client: trio.SocketStream) -> None:
        async with client:
            upstream = await trio.open_tcp_stream("127.0.0.1", self.upstream_port)
            async with upstream, trio.open_nursery() as nursery:
                # Either side closing ends the pair: a half-open proxy would hide it.
                nursery.start_soon(self._pump, client, upstream, nursery.cancel_scope)
                nursery.start_soon(self._pump, upstream, client, nursery.cancel_scope)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, scope: trio.CancelScope
    ) -> None:
        send, receive = trio.open_memory_channel[tuple[float, bytes]](math.inf)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._deliver, receive, sink)
            async with send:
                last_due = 0.0
                while True:
                    try:
                        chunk = await source.receive_some(65536)
                    except (trio.BrokenResourceError, trio.ClosedResourceError):
                        chunk = b""
                    if not chunk:
                        break
                    due = max(last_due, trio.current_time() + self._delay_s())
                    self.chunks += 1
                    if self._rng.random() < self.profile.stall_probability:
                        self.stalls += 1
                        due += self.profile.stall_ms / 1000
                    last_due = due
                    send.send_nowait((due, chunk))
        scope.cancel()

    def _delay_s(self) -> float:
        p = self.profile
        return (p.delay_ms + self._rng.uniform(-p.jitter_ms, p.jitter_ms)) / 1000

    @staticmethod
    async def _deliver(
        receive: trio.MemoryReceiveChannel[tuple[float, bytes]], sink: trio.SocketStream
    ) -> None:
        async with receive:
            async for due, chunk in receive:
                await trio.sleep_until(due)
                try:
                    await sink.send_all(chunk)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return


# --- the server ---------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def launch_server(
    *,
    cushion_ms: int = PLAYOUT_TO_CLIENT.bound,
    env: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
    startup_timeout_s: float = 30.0,
) -> AsyncIterator[tuple[trio.Process, int]]:
    """Starts ``voicecore serve --providers scripted`` on a free loopback port in its own
    process group; yields (the process, its port); always stops it (SIGTERM, then SIGKILL).

    Args:
        cushion_ms: ``--session-cushion-ms``.
        env: extra environment variables (e.g. ``VOICECORE_FAULTS``).
        command: another server command to run instead (it must print
            ``serving on http://127.0.0.1:PORT/`` on stdout).
        startup_timeout_s: how long the server may take to listen.
    """
    if command is None:
        command = [
            sys.executable, "-m", "harness.serve", "--providers", "scripted",
            "--host", "127.0.0.1", "--port", "0", "--session-cushion-ms", str(cushion_ms),
        ]  # fmt: skip
    log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in the finally below
    process = await trio.lowlevel.open_process(
        list(command),
        stdout=subprocess.PIPE,
        stderr=log,
        env=subprocess_env(env),
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        seen = b""
        port = None
        with trio.move_on_after(startup_timeout_s):
            while port is None:
                data = await process.stdout.receive_some(4096)
                if not data:
                    break
                seen += data
                found = re.search(rb"serving on http://127\.0\.0\.1:(\d+)/", seen)
                if found:
                    port = int(found.group(1))
        if port is None:
            log.seek(0)
            raise RuntimeError(
                f"the server did not start: {seen.decode(errors='replace')}"
                f"{log.read()[-2000:].decode(errors='replace')}"
            )
        yield process, port
    finally:
        with trio.CancelScope(shield=True):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGCONT)  # a fault may have left it stopped
                os.killpg(process.pid, signal.SIGTERM)
            with trio.move_on_after(5):
                await process.wait()
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            log.close()


# --- the client ---------------------------------------------------------------------------


def load_speech(max_s: float = 1.5) -> npt.NDArray[np.int16]:
    """One utterance of real speech at 16 kHz, at most ``max_s`` long (a synthetic voiced
    signal when the speech folder is absent)."""
    path = SPEECH_DIR / "librivox-0880.wav"
    if path.is_file():
        with wave.open(str(path), "rb") as wav:
            if wav.getframerate() == MIC_RATE and wav.getnchannels() == 1:
                samples = np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16)
                return samples[: int(max_s * MIC_RATE)].copy()
    t = np.arange(int(max_s * MIC_RATE)) / MIC_RATE
    voice = sum(np.sin(2 * np.pi * 140 * k * t) / k for k in range(1, 6))
    envelope = 0.5 + 0.5 * np.sin(2 * np.pi * 4 * t)
    return (6000 * voice * envelope).astype(np.int16)


@dataclass
class ClientResult:
    """What one client session measured (times in ms, audio in s).

    Attributes:
        agent_audio_s: agent audio received.
        frames: agent frames received.
        underruns: frames that arrived after the buffer ran dry, within a reply.
        gaps_ms: how long the buffer was dry before each of those frames.
        v2v_client_ms: end of the user's speech (last speech frame sent) to the reply's
            first frame received.
        v2v_server_ms: the server's ``voice_to_voice_ms`` (from its VAD's end of speech).
        barge_client_ms: first barge-in speech frame sent to ``clear`` received.
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


class PlayoutModel:
    """The page's playout buffer, on the client's clock (s): ``play_end`` is when the audio
    held now has played out; it drains at real time from the first frame of a reply.

    Args:
        result: where frames, replies, underruns and gaps are counted.
    """

    def __init__(self, result: ClientResult) -> None:
        self.result = result
        self.in_reply = False
        self.play_end = 0.0
        self.played_s = 0.0
        self.reply_started = trio.Event()
        self.reply_done = trio.Event()

    def frame(self, now: float) -> bool:
        """Plays a frame received at ``now``; True if it starts a reply."""
        frame_s = FRAME_MS / 1000
        self.result.frames += 1
        self.result.agent_audio_s += frame_s
        started = not self.in_reply
        if started:
            self.in_reply = True
            self.play_end = now
            self.result.replies += 1
            self.reply_started.set()
        elif now > self.play_end:
            self.result.underruns += 1
            self.result.gaps_ms.append((now - self.play_end) * 1000)
            self.play_end = now
        self.play_end += frame_s
        return started

    def stop(self, now: float, *, drop: bool) -> None:
        """Ends the reply: ``clear`` drops the buffer (``drop``), ``agent_done`` lets it play."""
        if drop:
            self.play_end = min(self.play_end, now)
        self.in_reply = False
        self.reply_done.set()

    def buffered_ms(self, now: float) -> float:
        """Agent audio (ms) received and not played yet at ``now``."""
        return max(0.0, self.play_end - now) * 1000


async def run_client(
    port: int, duration_s: float, *, speech: npt.NDArray[np.int16], converse: bool = True
) -> ClientResult:
    """Talks to the server at ``ws://127.0.0.1:port/ws`` for ``duration_s`` of real time:
    asks, listens, barges in on every other reply; returns what it measured.

    With ``converse=False`` the client only listens (its mic sends silence): for a server
    that talks on its own, such as the pacing baseline of ``harness.stalls``."""
    result = ClientResult()
    model = PlayoutModel(result)
    # A hard deadline: a closing handshake stuck behind the proxy must not hang the run.
    with trio.move_on_after(duration_s + CLOSE_GRACE_S) as deadline:
        await _converse(port, duration_s, speech, converse, result, model)
    if deadline.cancelled_caught:
        result.errors.append("close_timeout")
    return result


async def _converse(
    port: int,
    duration_s: float,
    speech: npt.NDArray[np.int16],
    converse: bool,
    result: ClientResult,
    model: PlayoutModel,
) -> None:
    mic_speech: list[npt.NDArray[np.int16]] = []  # the utterance being "spoken", if any
    spoken = {"end": 0.0, "start": 0.0}
    barge_pending: list[bool] = []  # a barge-in is under way, its clear not yet seen
    v2v_pending: list[float] = []
    frame_samples = MIC_RATE * FRAME_MS // 1000
    silence = bytes(2 * frame_samples)
    speech_done = trio.Event()
    async with connect(
        f"ws://127.0.0.1:{port}/ws",
        compression=None,
        max_size=2**20,
        open_timeout=20,
        close_timeout=3,
    ) as ws:
        hello = {
            "type": "hello", "protocol": 1, "input_rate": MIC_RATE,
            "output_rate": OUTPUT_RATE, "frame_ms": FRAME_MS, "client": "voicecore-bench/1",
        }  # fmt: skip
        await ws.send(json.dumps(hello))
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            raise RuntimeError(f"no ready: {ready}")
        result.cushion_ms = int(ready["cushion_ms"])

        async def mic() -> None:
            nonlocal speech_done
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
                now = trio.current_time()
                report = {
                    "type": "playout",
                    "buffered_ms": round(model.buffered_ms(now), 1),
                    "played_ms": round(
                        max(0.0, result.agent_audio_s * 1000 - model.buffered_ms(now)), 1
                    ),
                    "underruns": result.underruns,
                }
                await ws.send(json.dumps(report))

        async def receive() -> None:
            async for message in ws:
                now = trio.current_time()
                if isinstance(message, bytes):
                    if model.frame(now) and v2v_pending:
                        result.v2v_client_ms.append((now - v2v_pending.pop()) * 1000)
                    continue
                event = json.loads(message)
                kind = event.get("type")
                if kind == "clear":
                    result.clears += 1
                    model.stop(now, drop=True)
                    if barge_pending:
                        # From the barge-in utterance's first frame on the wire.
                        barge_pending.clear()
                        result.barge_client_ms.append((now - spoken["start"]) * 1000)
                elif kind == "agent_done":
                    model.stop(now, drop=False)
                elif kind == "metrics":
                    if event.get("voice_to_voice_ms") is not None:
                        result.v2v_server_ms.append(float(event["voice_to_voice_ms"]))
                    if event.get("barge_in_ms") is not None:
                        result.barge_server_ms.append(float(event["barge_in_ms"]))
                elif kind == "error":
                    result.errors.append(str(event.get("code")))

        async def conversation() -> None:
            barge = False
            while True:
                model.reply_started = trio.Event()
                model.reply_done = trio.Event()
                await say()
                v2v_pending[:] = [spoken["end"]]
                with trio.move_on_after(10):
                    await model.reply_started.wait()
                if barge:
                    await trio.sleep(0.8)
                    # The barge-in speech is also the next question.
                    model.reply_started = trio.Event()
                    model.reply_done = trio.Event()
                    barge_pending[:] = [True]
                    await say()
                    v2v_pending[:] = [spoken["end"]]
                    with trio.move_on_after(10):
                        await model.reply_started.wait()
                with trio.move_on_after(15):
                    await model.reply_done.wait()
                await trio.sleep(0.4)
                barge = not barge

        with trio.move_on_after(duration_s):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(mic)
                nursery.start_soon(reports)
                nursery.start_soon(receive)
                if converse:
                    nursery.start_soon(conversation)
        with contextlib.suppress(ConnectionClosed), trio.move_on_after(2):
            await ws.send(json.dumps({"type": "bye"}))


# --- runs ---------------------------------------------------------------------------------


async def measure(
    profile: Profile,
    *,
    cushion_ms: int = PLAYOUT_TO_CLIENT.bound,
    duration_s: float = 30.0,
    seed: int = 1,
) -> dict[str, Any]:
    """One server, one proxy with ``profile``, one client for ``duration_s``: the summary
    row (see ``ClientResult.summary``) with the profile's name and the cushion."""
    speech = load_speech()
    # Bounded: a run that hangs fails (the server is still stopped) instead of blocking.
    with trio.fail_after(duration_s + CLOSE_GRACE_S + 60):
        async with (
            launch_server(cushion_ms=cushion_ms) as (_process, port),
            trio.open_nursery() as nursery,
        ):
            proxy = ImpairingProxy(port, profile, seed=seed)
            proxy_port = await nursery.start(proxy.run)
            result = await run_client(proxy_port, duration_s, speech=speech)
            nursery.cancel_scope.cancel()
    row: dict[str, Any] = {"profile": profile.name, "cushion_ms": result.cushion_ms}
    row.update(result.summary())
    row["stalls_injected"] = proxy.stalls
    if result.errors:
        row["errors"] = ",".join(result.errors)
    return row


async def find_min_cushion(
    profile: Profile, candidates: Sequence[int], *, duration_s: float = 30.0
) -> tuple[int | None, list[dict[str, Any]]]:
    """Runs every cushion (ms) of ``candidates`` under ``profile``; returns the smallest
    one from which on every run had zero underruns (None if the largest had some; one lucky
    clean run below a failing one does not count), and every run's row."""
    rows = []
    for cushion in sorted(candidates):
        rows.append(await measure(profile, cushion_ms=cushion, duration_s=duration_s))
    best = None
    for row in reversed(rows):
        if row["underruns"] or not row["replies"]:
            break
        best = row["cushion_ms"]
    return best, rows


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.impair``: every profile, then the cushion search."""
    parser = argparse.ArgumentParser(prog="python -m harness.impair")
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per run")
    parser.add_argument("--profiles", default=",".join(PROFILES), help="comma-separated")
    parser.add_argument("--cushions", default="80,120,160,200,240,300", help="ms")
    parser.add_argument("--json", type=Path, default=Path("impairment.json"))
    args = parser.parse_args(argv)

    async def run() -> dict[str, Any]:
        rows = [
            await measure(PROFILES[name], duration_s=args.duration)
            for name in args.profiles.split(",")
        ]
        cushions = [int(c) for c in args.cushions.split(",")]
        best, search = await find_min_cushion(
            PROFILES["moderate"], cushions, duration_s=args.duration
        )
        return {
            "profiles": {name: asdict(p) for name, p in PROFILES.items()},
            "rows": rows,
            "cushion_search": search,
            "min_cushion_ms_moderate": best,
        }

    report = trio.run(run)
    for row in [*report["rows"], *report["cushion_search"]]:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(f"smallest cushion with zero underruns (moderate): {report['min_cushion_ms_moderate']}")
    args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
