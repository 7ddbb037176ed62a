"""Soak test: many turns with barge-ins and reconnects against ``voicecore serve``, with the
server's memory and open file descriptors sampled over time (issue 6).

The server runs as ``voicecore serve --providers scripted`` in a subprocess (its own process
group, 127.0.0.1, an ephemeral port), so what is measured is voicecore's own footprint:
sessions, turns, cancellations, pacer streams, connections. ``sessions`` clients converse
over real WebSockets in a loop:

* a turn: the client speaks one utterance (a loud voiced sound, then silence long enough to
  end the turn), sent at once (turn-taking runs on the sample clock, so this is a turn at
  full speed); the agent answers with the scripted reply (about 3 s of audio);
* most turns are barged in: as soon as the reply's first audio frame arrives the client
  speaks again, which interrupts the reply (``clear``, ``agent_done`` interrupted) and is
  itself the next turn's utterance; the others play out to ``agent_done``;
* every ``reconnect_every`` turns the client leaves, alternately with ``bye`` and by
  dropping the connection without a close handshake, and connects again.

The client reports playout (``buffered_ms``) from a simulated player 4 times a second. The
server's VmRSS (``/proc/<pid>/status``) and open descriptors (``/proc/<pid>/fd``) are
sampled every ``sample_interval_s``. Growth is the least-squares slope against completed
turns over the second half of the run (the first half is warm-up: allocator pools,
caches, the first sessions), reported per 1,000 turns. The target is no growth: less than
1 MB (and less than 1 descriptor) per 1,000 turns.

Run: ``python -m voicecore.bench.soak --duration-s 600 --sessions 8 --json soak.json``.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

__all__ = [
    "Sample",
    "ServerProcess",
    "SoakResult",
    "growth_per_1000_turns",
    "main",
    "run_soak",
]

INPUT_RATE = 16000
"""The clients' mic rate, Hz (the engine's own rate: no resampling on the way in)."""
OUTPUT_RATE = 24000
"""The agent audio rate the clients ask for, Hz (the scripted TTS's rate)."""
FRAME_MS = 20
"""The agent audio frame, ms (the server's default)."""
TURN_TIMEOUT_S = 15.0
"""A turn that produces no ``agent_done`` within this is counted as stuck; the client then
reconnects (the full scripted reply is about 3 s)."""
RSS_TARGET_MB_PER_1000 = 1.0
"""The target: RSS growth after warm-up below 1 MB per 1,000 turns."""
FD_TARGET_PER_1000 = 1.0
"""Open descriptors growth after warm-up below 1 per 1,000 turns (a leak leaks per turn or
per connection, so any real leak shows as at least several per 1,000 turns)."""


def _utterance(rng: np.random.Generator) -> bytes:
    """One user utterance as PCM16 at INPUT_RATE: 300 ms of a faint noise floor (the energy
    VAD judges speech against it), 600 ms of a loud voiced sound (150 Hz harmonics, 4 Hz
    modulation; longer than the 300 ms a barge-in needs), then 700 ms of the noise floor,
    longer than the end-of-turn silence (500 ms) so the turn ends."""
    t = np.arange(INPUT_RATE * 600 // 1000) / INPUT_RATE
    harmonics = sum(np.sin(2 * np.pi * 150 * k * t) / k for k in range(1, 15))
    voiced = 3000 * harmonics * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t))
    lead, silence = np.zeros(INPUT_RATE * 300 // 1000), np.zeros(INPUT_RATE * 700 // 1000)
    signal_ = np.concatenate([lead, voiced, silence])
    signal_ += rng.normal(0, 30, signal_.size)
    return bytes(signal_.astype("<i2").tobytes())


@dataclass
class Sample:
    """One measurement of the server process.

    Attributes:
        elapsed_s: seconds since the clients started.
        turns: turns completed by then (all clients).
        rss_kb: the server's resident set size, KiB (VmRSS).
        fds: the server's open file descriptors.
        connections: client connections open at that moment (each holds one server socket).
    """

    elapsed_s: float
    turns: int
    rss_kb: int
    fds: int
    connections: int


@dataclass
class _Counters:
    open_connections: int = 0
    turns: int = 0
    barge_ins: int = 0
    full_replies: int = 0
    reconnects: int = 0
    abrupt_disconnects: int = 0
    stuck_turns: int = 0
    connect_failures: int = 0
    frames: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass
class SoakResult:
    """What a soak run measured (all counts over the whole run, growth over its second half).

    Attributes:
        duration_s: the run's length, s.
        sessions: concurrent clients.
        turns: turns completed (``agent_done`` received), all clients.
        turns_per_s: turns completed per second.
        barge_ins: turns interrupted by the client (``clear`` received).
        full_replies: turns whose reply played to the end.
        reconnects: connections closed and opened again (with ``bye`` or abruptly).
        abrupt_disconnects: of those, connections dropped without a close handshake.
        stuck_turns: turns without ``agent_done`` within ``TURN_TIMEOUT_S`` (should be 0).
        agent_frames: agent audio frames received, all clients.
        rss_start_mb, rss_warm_mb, rss_end_mb, rss_max_mb: the server's RSS at the first
            sample, at the end of warm-up, after every client left (the last sample), and
            its maximum, MB (10^6 B).
        fds_start, fds_warm, fds_end: open descriptors at the same points (``fds_end`` ==
            ``fds_start``: every connection's descriptors were closed).
        rss_growth_mb_per_1000_turns: slope of RSS against turns over the second half of
            the running samples.
        fd_growth_per_1000_turns: slope of open descriptors against turns, same window,
            fitted jointly with the client connections open at each sample (see
            ``growth_per_1000_turns``).
        target_met: both slopes below their targets and no descriptor left open at the end.
        server_exit_code: the server's exit status after SIGTERM (0: graceful).
        errors: the first protocol errors or unexpected events the clients saw.
        samples: every sample taken.
    """

    duration_s: float
    sessions: int
    turns: int
    turns_per_s: float
    barge_ins: int
    full_replies: int
    reconnects: int
    abrupt_disconnects: int
    stuck_turns: int
    agent_frames: int
    rss_start_mb: float
    rss_warm_mb: float
    rss_end_mb: float
    rss_max_mb: float
    fds_start: int
    fds_warm: int
    fds_end: int
    rss_growth_mb_per_1000_turns: float
    fd_growth_per_1000_turns: float
    target_met: bool
    server_exit_code: int | None
    errors: list[str]
    samples: list[Sample]

    def summary(self) -> dict[str, Any]:
        """The figures without the samples (a report row)."""
        figures = asdict(self)
        del figures["samples"]
        figures["errors"] = len(self.errors)
        return figures


def growth_per_1000_turns(
    turns: list[int], values: list[float], covariate: list[float] | None = None
) -> float:
    """Least-squares slope of ``values`` against ``turns``, times 1,000 (0 if the turns do
    not vary).

    With ``covariate`` (the connections open at each sample) the fit is
    ``values ~ a + b * turns + c * covariate``: a connection's own descriptors (its socket,
    its session's wake-up fd) come and go with it and are not growth.
    """
    x = np.asarray(turns, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    if x.size < 2 or np.ptp(x) == 0:
        return 0.0
    columns = [np.ones_like(x), x]
    if covariate is not None and np.ptp(covariate) > 0:
        columns.append(np.asarray(covariate, dtype=np.float64))
    coefficients = np.linalg.lstsq(np.column_stack(columns), y, rcond=None)[0]
    return float(coefficients[1] * 1000)


# --- the server process ---------------------------------------------------------------------


class ServerProcess:
    """``voicecore serve --providers scripted`` on 127.0.0.1 in its own process group.

    Use as a context manager: it waits for the server to listen, and always stops it
    (SIGTERM, then SIGKILL to the group after ``stop_timeout_s``).
    """

    def __init__(self, extra_args: list[str] | None = None, stop_timeout_s: float = 10.0) -> None:
        self.args = [
            sys.executable,
            "-m",
            "voicecore",
            "serve",
            "--providers",
            "scripted",
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            *(extra_args or []),
        ]
        self.stop_timeout_s = stop_timeout_s
        self.process: subprocess.Popen[str] | None = None
        self.port = 0
        self.exit_code: int | None = None

    def __enter__(self) -> ServerProcess:
        self.process = subprocess.Popen(
            self.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            start_new_session=True,
        )
        try:
            self.port = self._wait_listening(timeout_s=30.0)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def pid(self) -> int:
        """The server's process id."""
        assert self.process is not None
        return self.process.pid

    def _wait_listening(self, timeout_s: float) -> int:
        assert self.process is not None
        assert self.process.stdout is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"voicecore serve exited with {self.process.wait()}")
            match = re.search(r"serving on http://127\.0\.0\.1:(\d+)/", line)
            if match:
                # Stop reading stdout: the server prints little more (shutdown lines), far
                # below a pipe's buffer.
                return int(match.group(1))
        raise RuntimeError("voicecore serve did not start listening in time")

    def stop(self) -> None:
        """SIGTERM (a graceful shutdown), then SIGKILL to the whole group if it lingers."""
        process = self.process
        if process is None or self.exit_code is not None:
            return
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(self.stop_timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.exit_code = process.returncode
        if process.stdout is not None:
            process.stdout.close()

    def rss_kb(self) -> int:
        """VmRSS of the server, KiB."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
        if match is None:
            raise RuntimeError("no VmRSS in /proc/<pid>/status")
        return int(match.group(1))

    def fds(self) -> int:
        """Open file descriptors of the server."""
        return len(os.listdir(f"/proc/{self.pid}/fd"))


# --- the clients ----------------------------------------------------------------------------


class _Player:
    """A simulated client player: agent audio received minus audio played on a real clock."""

    def __init__(self) -> None:
        self.buffered_ms = 0.0
        self.played_ms = 0.0
        self.underruns = 0
        self._last = time.monotonic()
        self._playing = False

    def advance(self) -> None:
        now = time.monotonic()
        elapsed_ms = (now - self._last) * 1000
        self._last = now
        played = min(elapsed_ms, self.buffered_ms)
        self.buffered_ms -= played
        self.played_ms += played
        if self._playing and played < elapsed_ms:
            self.underruns += 1
            self._playing = False

    def received(self, ms: float) -> None:
        self.advance()
        self.buffered_ms += ms
        self._playing = True

    def clear(self) -> None:
        self.advance()
        self.buffered_ms = 0.0
        self._playing = False

    def report(self) -> str:
        self.advance()
        return json.dumps(
            {
                "type": "playout",
                "buffered_ms": round(self.buffered_ms, 1),
                "played_ms": round(self.played_ms, 1),
                "underruns": self.underruns,
            }
        )


_QUIET_LOGGER = logging.getLogger("voicecore.bench.soak.abrupt")
_QUIET_LOGGER.setLevel(logging.CRITICAL + 1)
_QUIET_LOGGER.propagate = False


async def _send_utterance(ws: ClientConnection, pcm: bytes) -> None:
    frame = 2 * INPUT_RATE * FRAME_MS // 1000
    for offset in range(0, len(pcm), frame):
        await ws.send(pcm[offset : offset + frame])


async def _converse(
    ws: ClientConnection,
    turns: int,
    barge_in_ratio: float,
    utterance: bytes,
    rng: np.random.Generator,
    counters: _Counters,
    stop_at: float,
) -> None:
    """Up to ``turns`` turns on one connection; returns when they are done or time is up."""
    player = _Player()
    frame_ms = float(FRAME_MS)

    async def report_playout() -> None:
        while True:
            await trio.sleep(0.25)
            await ws.send(player.report())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_playout)
        await _send_utterance(ws, utterance)
        done = 0
        while done < turns and trio.current_time() < stop_at:
            barge_in = rng.random() < barge_in_ratio
            interrupted_turn: int | None = None
            with trio.move_on_after(TURN_TIMEOUT_S) as timeout:
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        counters.frames += 1
                        player.received(frame_ms)
                        if barge_in and interrupted_turn is None:
                            # Speak over the reply: the barge-in, and the next utterance.
                            interrupted_turn = -1
                            await _send_utterance(ws, utterance)
                        continue
                    event = json.loads(message)
                    kind = event.get("type")
                    if kind == "clear":
                        player.clear()
                        counters.barge_ins += 1
                    elif kind == "error" and len(counters.errors) < 20:
                        counters.errors.append(f"{event.get('code')}: {event.get('message')}")
                    elif kind == "agent_done":
                        counters.turns += 1
                        done += 1
                        if not event.get("interrupted"):
                            counters.full_replies += 1
                            if interrupted_turn is None:
                                # A reply heard to its end: the user speaks next.
                                await _send_utterance(ws, utterance)
                        break
            if timeout.cancelled_caught:
                counters.stuck_turns += 1
                break
        nursery.cancel_scope.cancel()


async def _client(
    url: str,
    index: int,
    reconnect_every: int,
    barge_in_ratio: float,
    counters: _Counters,
    stop_at: float,
) -> None:
    """One simulated user: connects, converses ``reconnect_every`` turns, leaves, again."""
    rng = np.random.default_rng(index)
    utterance = _utterance(rng)
    hello = json.dumps(
        {
            "type": "hello",
            "protocol": 1,
            "input_rate": INPUT_RATE,
            "output_rate": OUTPUT_RATE,
            "client": f"voicecore-soak/{index}",
        }
    )

    async def converse_once(ws: ClientConnection, abrupt: bool) -> None:
        """One connection: hello, turns, then leave with bye or (``abrupt``) vanish."""
        await ws.send(hello)
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            counters.errors.append(f"no ready: {ready}")
            await trio.sleep(1)
            return
        await _converse(ws, reconnect_every, barge_in_ratio, utterance, rng, counters, stop_at)
        if trio.current_time() >= stop_at:
            await ws.send(json.dumps({"type": "bye"}))
        elif abrupt:
            # Vanish: the TCP connection goes without a close handshake.
            counters.abrupt_disconnects += 1
            await ws.close_stream()
        else:
            await ws.send(json.dumps({"type": "bye"}))

    connection = 0
    while trio.current_time() < stop_at:
        connection += 1
        abrupt = connection % 2 == 0
        try:
            # websockets logs an "unexpected internal error" when a frame arrives after we
            # cut the stream ourselves: expected for an abrupt leave, so that one is quiet.
            logger = _QUIET_LOGGER if abrupt else None
            async with connect(url, open_timeout=10, close_timeout=2, logger=logger) as ws:
                counters.open_connections += 1
                try:
                    await converse_once(ws, abrupt)
                finally:
                    counters.open_connections -= 1
        except (ConnectionClosed, OSError, trio.BrokenResourceError) as exc:
            if not abrupt or trio.current_time() < stop_at:
                counters.connect_failures += 1
                if len(counters.errors) < 20:
                    counters.errors.append(f"client {index}: {exc!r}")
            await trio.sleep(0.2)
        if trio.current_time() < stop_at:
            counters.reconnects += 1


async def _sample_loop(
    server: ServerProcess,
    counters: _Counters,
    samples: list[Sample],
    interval_s: float,
    started: float,
) -> None:
    while True:
        samples.append(
            Sample(
                elapsed_s=round(trio.current_time() - started, 3),
                turns=counters.turns,
                rss_kb=server.rss_kb(),
                fds=server.fds(),
                connections=counters.open_connections,
            )
        )
        await trio.sleep(interval_s)


async def _run_clients(
    server: ServerProcess,
    sessions: int,
    duration_s: float,
    reconnect_every: int,
    barge_in_ratio: float,
    sample_interval_s: float,
    counters: _Counters,
    samples: list[Sample],
) -> float:
    url = f"ws://127.0.0.1:{server.port}/ws"
    started = trio.current_time()
    stop_at = started + duration_s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sample_loop, server, counters, samples, sample_interval_s, started)
        async with trio.open_nursery() as clients:
            for index in range(sessions):
                clients.start_soon(
                    _client, url, index, reconnect_every, barge_in_ratio, counters, stop_at
                )
        # One last sample with every client gone, then stop sampling.
        await trio.sleep(0.5)
        samples.append(
            Sample(
                round(trio.current_time() - started, 3),
                counters.turns,
                server.rss_kb(),
                server.fds(),
                counters.open_connections,
            )
        )
        nursery.cancel_scope.cancel()
    return trio.current_time() - started


def run_soak(
    duration_s: float = 30.0,
    sessions: int = 8,
    reconnect_every: int = 20,
    barge_in_ratio: float = 0.9,
    sample_interval_s: float = 0.5,
    server_args: list[str] | None = None,
) -> SoakResult:
    """Runs a soak against a fresh ``voicecore serve --providers scripted`` and returns what
    it measured (see the module docstring).

    Args:
        duration_s: how long the clients converse, s (the server starts before, stops after).
        sessions: concurrent clients.
        reconnect_every: turns per connection before the client leaves and comes back.
        barge_in_ratio: the share of turns the client interrupts (0..1).
        sample_interval_s: the period of the RSS/descriptor samples, s.
        server_args: extra ``voicecore serve`` flags.
    """
    if duration_s <= 0 or sessions < 1 or reconnect_every < 1:
        raise ValueError("duration_s > 0, sessions >= 1 and reconnect_every >= 1 are needed")
    if not 0.0 <= barge_in_ratio <= 1.0:
        raise ValueError(f"barge_in_ratio must be within 0..1, got {barge_in_ratio}")
    counters = _Counters()
    samples: list[Sample] = []
    with ServerProcess(server_args) as server:
        elapsed = trio.run(
            _run_clients,
            server,
            sessions,
            duration_s,
            reconnect_every,
            barge_in_ratio,
            sample_interval_s,
            counters,
            samples,
        )
    return _result(server, counters, samples, sessions, elapsed)


def _result(
    server: ServerProcess,
    counters: _Counters,
    samples: list[Sample],
    sessions: int,
    elapsed: float,
) -> SoakResult:
    # The last sample is taken with every client gone: it shows what closing left behind
    # (fds_end against fds_start), but would skew a fit over the running samples.
    running = samples[:-1]
    warm = running[len(running) // 2 :]
    turns = [s.turns for s in warm]
    rss_growth = growth_per_1000_turns(turns, [s.rss_kb * 1024 / 1e6 for s in warm])
    fd_growth = growth_per_1000_turns(
        turns, [float(s.fds) for s in warm], [float(s.connections) for s in warm]
    )

    def mb(kb: int) -> float:
        return round(kb * 1024 / 1e6, 2)

    return SoakResult(
        duration_s=round(elapsed, 1),
        sessions=sessions,
        turns=counters.turns,
        turns_per_s=round(counters.turns / elapsed, 2) if elapsed > 0 else math.nan,
        barge_ins=counters.barge_ins,
        full_replies=counters.full_replies,
        reconnects=counters.reconnects,
        abrupt_disconnects=counters.abrupt_disconnects,
        stuck_turns=counters.stuck_turns,
        agent_frames=counters.frames,
        rss_start_mb=mb(samples[0].rss_kb),
        rss_warm_mb=mb(warm[0].rss_kb),
        rss_end_mb=mb(samples[-1].rss_kb),
        rss_max_mb=mb(max(s.rss_kb for s in samples)),
        fds_start=samples[0].fds,
        fds_warm=warm[0].fds,
        fds_end=samples[-1].fds,
        rss_growth_mb_per_1000_turns=round(rss_growth, 3),
        fd_growth_per_1000_turns=round(fd_growth, 3),
        # Without turns in the measured half there is no growth rate to judge.
        target_met=bool(np.ptp(turns) > 0)
        and rss_growth < RSS_TARGET_MB_PER_1000
        and fd_growth < FD_TARGET_PER_1000
        and samples[-1].fds <= samples[0].fds,
        server_exit_code=server.exit_code,
        errors=counters.errors,
        samples=samples,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m voicecore.bench.soak``: runs a soak, prints the figures, optionally
    writes them (with every sample) as JSON; exit status 0 if the target was met, 1 if not."""
    parser = argparse.ArgumentParser(
        prog="python -m voicecore.bench.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration-s", type=float, default=300.0, help="run length, s")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent clients")
    parser.add_argument("--reconnect-every", type=int, default=20, help="turns per connection")
    parser.add_argument("--barge-in-ratio", type=float, default=0.9, help="share interrupted")
    parser.add_argument("--sample-interval-s", type=float, default=0.5, help="sample period, s")
    parser.add_argument("--json", type=Path, help="write the result (with samples) here")
    args = parser.parse_args(argv)
    # A SIGTERM becomes SystemExit, so the server subprocess is still stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run_soak(
        duration_s=args.duration_s,
        sessions=args.sessions,
        reconnect_every=args.reconnect_every,
        barge_in_ratio=args.barge_in_ratio,
        sample_interval_s=args.sample_interval_s,
    )
    for name, value in result.summary().items():
        print(f"{name:30} {value}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=1))
    return 0 if result.target_met else 1


if __name__ == "__main__":
    sys.exit(main())
