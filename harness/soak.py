"""Soak test: many turns with barge-ins and reconnects against ``voicecore serve``, with the
server's memory and open file descriptors sampled over time (issues 6 and 13).

The server runs as ``python -m harness.serve --providers scripted`` in a subprocess
(``harness.launcher``: its own process group, 127.0.0.1, an ephemeral port), so what is
measured is voicecore's own footprint: sessions, turns, cancellations, pacer streams,
connections. With ``providers="config"`` it runs the offline pipeline instead (Silero,
Moonshine, the responder, Piper): the models' runtimes, their arenas and worker pools are
soaked too, and the clients speak real speech. ``sessions`` clients converse over real
WebSockets in a loop:

* a turn: the client speaks one utterance (scripted: a loud voiced sound; offline: a
  recording of real speech, so the recognizer has words to decode), then silence long enough
  to end the turn, sent at once (turn-taking runs on the sample clock, so this is a turn at
  full speed; offline, the mic then streams the noise floor in real time, as a live one
  does: Silero's verdicts are collected as later audio arrives); the agent answers
  (scripted: a canned reply of about 3 s; offline: the responder's answer spoken by Piper);
* most turns are barged in: as soon as the reply's first audio frame arrives the client
  speaks again, which interrupts the reply (``clear``, ``agent_done`` interrupted) and is
  itself the next turn's utterance; the others play out to ``agent_done``;
* every ``reconnect_every`` turns the client leaves, alternately with ``bye`` and by
  dropping the connection without a close handshake, and connects again.

The client reports playout (``buffered_ms``) 4 times a second from the page's player
(``harness.player``). The
server's VmRSS (``/proc/<pid>/status``) and open descriptors (``/proc/<pid>/fd``) are
sampled every ``sample_interval_s``. Growth is the least-squares slope against completed
turns after warm-up (by default the first half of the run: allocator pools, caches, the
first sessions, the ``/metrics`` history of recent sessions filling up), reported per
1,000 turns. The target is no growth: less than 1 MB (and less than 1 descriptor) per
1,000 turns.

RSS alone cannot tell a leak from the allocator's high-water mark: objects that die in
reference cycles wait for a full collection, and the heap grows to hold each pile of them.
So the server's cycle-collector counters are scraped from ``/metrics`` every
``metrics_interval_s`` too: ``gc_collected_per_turn`` is how many objects the collector
(not reference counting) had to free per turn over the run; a finished session that
frees itself leaves about none. ``server_env`` runs the server with extra environment
variables, e.g. ``MALLOC_ARENA_MAX=2`` or ``PYTHONMALLOC=malloc``, to tell allocator
fragmentation from a leak.

Long calls (``--reconnect-every 1000000``: one connection per client for the whole run)
need a longer warm-up: each session's bounded windows fill for minutes (the last 10,000
frames' lateness, ~200 s of agent audio; 3,000 timeline events; the history up to its token
budget), and that filling is not a leak.

Run: ``python -m harness.soak --duration-s 600 --sessions 8 --json soak.json``
(``--server-env MALLOC_ARENA_MAX=2`` to vary the server's allocator; ``--providers config``
for the offline pipeline: fewer turns per second, so a longer run for the same turns).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import re
import signal
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import trio
from websockets.exceptions import ConnectionClosed
from websockets.trio.client import ClientConnection, connect

from harness.client import BYE, FRAME_MS, MIC_RATE, REPORT_PERIOD_S, hello, playout_report
from harness.launcher import ServerProcess
from harness.player import PlayoutModel
from harness.speech import noise, one_utterance, voice

__all__ = [
    "GcSample",
    "Sample",
    "SoakResult",
    "growth_per_1000_turns",
    "main",
    "parse_prometheus",
    "run_soak",
    "utterance_of",
]

TURN_TIMEOUT_S = 15.0
"""A turn that produces no ``agent_done`` within this is counted as stuck; the client then
reconnects (the full scripted reply is about 3 s)."""
RSS_TARGET_MB_PER_1000 = 1.0
"""The target: RSS growth after warm-up below 1 MB per 1,000 turns."""
FD_TARGET_PER_1000 = 1.0
"""Open descriptors growth after warm-up below 1 per 1,000 turns (a leak leaks per turn or
per connection, so any real leak shows as at least several per 1,000 turns)."""


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
class GcSample:
    """The server's cycle-collector counters (``/metrics``) at one moment.

    Attributes:
        elapsed_s: seconds since the clients started.
        turns: turns completed by then (all clients).
        collected: objects the cycle collector has freed since the server started.
        collections: collections run so far, per generation (0, 1, 2).
    """

    elapsed_s: float
    turns: int
    collected: int
    collections: tuple[int, int, int]


@dataclass
class _Counters:
    open_connections: int = 0
    turns: int = 0
    barge_ins: int = 0
    full_replies: int = 0
    reconnects: int = 0
    abrupt_disconnects: int = 0
    stuck_turns: int = 0
    connection_errors: int = 0
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
        connection_errors: connections that failed to open or ended with an error the client
            did not cause (e.g. the server closed with ``too_slow``; should be 0).
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
        gc_collected_per_turn: objects the server's cycle collector freed per turn over the
            run (reference counting frees the rest): about 0 when every finished session
            and turn frees itself; about 10 when each session (20 turns) dies in a reference
            cycle with its ~200 container objects. None if ``/metrics`` has no collector
            counters.
        gc_full_collections: full (generation 2) collections during the run (None: unknown).
        target_met: both slopes below their targets and no descriptor left open at the end.
        server_exit_code: the server's exit status after SIGTERM (0: graceful).
        errors: the first protocol errors or unexpected events the clients saw.
        samples: every sample taken.
        gc_samples: every scrape of the collector counters.
        warmup_fraction: the share of the run (of its samples) counted as warm-up.
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
    connection_errors: int
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
    gc_collected_per_turn: float | None
    gc_full_collections: int | None
    target_met: bool
    server_exit_code: int | None
    errors: list[str]
    samples: list[Sample]
    gc_samples: list[GcSample] = field(default_factory=list)
    warmup_fraction: float = 0.5

    def summary(self) -> dict[str, Any]:
        """The figures without the samples (a report row)."""
        figures = asdict(self)
        del figures["samples"]
        del figures["gc_samples"]
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


_SAMPLE_LINE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{([^}]*)\})?\s+(\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """The samples of a Prometheus text exposition: ``{(name, labels): value}``, where
    ``labels`` is a frozenset of (label, value) pairs (empty without labels). Comments and
    lines that are not samples are skipped."""
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        match = _SAMPLE_LINE.match(line.strip())
        if match is None:
            continue
        name, labels, value = match.groups()
        try:
            number = float(value)
        except ValueError:
            continue
        samples[(name, frozenset(_LABEL.findall(labels or "")))] = number
    return samples


# --- the clients ----------------------------------------------------------------------------


_QUIET_LOGGER = logging.getLogger("harness.soak.abrupt")
_QUIET_LOGGER.setLevel(logging.CRITICAL + 1)
_QUIET_LOGGER.propagate = False


async def _send_utterance(ws: ClientConnection, pcm: bytes) -> None:
    frame = 2 * MIC_RATE * FRAME_MS // 1000
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
    cushion_ms: float,
    mic_open: bool,
) -> None:
    """Up to ``turns`` turns on one connection; returns when they are done or time is up.
    With ``mic_open``, the mic streams the noise floor in real time between utterances, as a
    live one does (the offline VAD reports its verdicts as later audio arrives)."""
    player = PlayoutModel(cushion_ms, FRAME_MS)
    speaking = False
    floor = noise(FRAME_MS)

    async def say() -> None:
        nonlocal speaking
        speaking = True
        try:
            await _send_utterance(ws, utterance)
        finally:
            speaking = False

    async def report_playout() -> None:
        while True:
            await trio.sleep(REPORT_PERIOD_S)
            await ws.send(playout_report(player, trio.current_time()))

    async def keep_mic_open() -> None:
        deadline = trio.current_time()
        while True:
            deadline += FRAME_MS / 1000
            await trio.sleep_until(deadline)
            if not speaking:
                await ws.send(floor)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(report_playout)
        if mic_open:
            nursery.start_soon(keep_mic_open)
        await say()
        done = 0
        while done < turns and trio.current_time() < stop_at:
            barge_in = rng.random() < barge_in_ratio
            interrupted_turn: int | None = None
            with trio.move_on_after(TURN_TIMEOUT_S) as timeout:
                while True:
                    message = await ws.recv()
                    if isinstance(message, bytes):
                        counters.frames += 1
                        player.frame(trio.current_time())
                        if barge_in and interrupted_turn is None:
                            # Speak over the reply: the barge-in, and the next utterance.
                            interrupted_turn = -1
                            await say()
                        continue
                    event = json.loads(message)
                    kind = event.get("type")
                    if kind == "clear":
                        player.clear(trio.current_time())
                        counters.barge_ins += 1
                    elif kind == "pause":
                        player.pause(trio.current_time())
                    elif kind == "resume":
                        player.resume(trio.current_time())
                    elif kind == "error" and len(counters.errors) < 20:
                        counters.errors.append(f"{event.get('code')}: {event.get('message')}")
                    elif kind == "agent_done":
                        player.done(trio.current_time())
                        counters.turns += 1
                        done += 1
                        if not event.get("interrupted"):
                            counters.full_replies += 1
                            if interrupted_turn is None:
                                # A reply heard to its end: the user speaks next.
                                await say()
                        break
            if timeout.cancelled_caught:
                counters.stuck_turns += 1
                break
        nursery.cancel_scope.cancel()


def utterance_of(providers: str) -> bytes:
    """What a soak client says in a turn, PCM16 at 16 kHz: 300 ms of the noise floor (the
    energy VAD judges speech against it), the speech (longer than the 300 ms a barge-in
    needs), then 700 ms of noise, longer than the end-of-turn silence (500 ms), so the turn
    ends. Scripted: 600 ms of the synthetic voice; offline: 1.5 s of a real recording (the
    synthetic voice when the corpus is absent)."""
    if providers == "scripted":
        speech = voice(600)
    else:
        speech = one_utterance(max_s=1.5).astype("<i2").tobytes()
    return noise(300) + speech + noise(700)


async def _client(
    url: str,
    index: int,
    reconnect_every: int,
    barge_in_ratio: float,
    counters: _Counters,
    stop_at: float,
    utterance: bytes,
    mic_open: bool,
) -> None:
    """One simulated user: connects, converses ``reconnect_every`` turns, leaves, again."""
    rng = np.random.default_rng(index)
    greeting = hello(client=f"voicecore-soak/{index}")

    async def converse_once(ws: ClientConnection, abrupt: bool) -> None:
        """One connection: hello, turns, then leave with bye or (``abrupt``) vanish."""
        await ws.send(greeting)
        ready = json.loads(await ws.recv())
        if ready.get("type") != "ready":
            counters.errors.append(f"no ready: {ready}")
            await trio.sleep(1)
            return
        await _converse(
            ws,
            reconnect_every,
            barge_in_ratio,
            utterance,
            rng,
            counters,
            stop_at,
            float(ready["cushion_ms"]),
            mic_open,
        )
        if trio.current_time() >= stop_at:
            await ws.send(BYE)
        elif abrupt:
            # Vanish: the TCP connection goes without a close handshake.
            counters.abrupt_disconnects += 1
            await ws.close_stream()
        else:
            await ws.send(BYE)

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
        except* (ConnectionClosed, OSError, trio.BrokenResourceError) as group:
            # except*: a connection closed by the server (``too_slow``, an internal error)
            # surfaces from inside ``_converse``'s nursery, in an exception group.
            if not abrupt or trio.current_time() < stop_at:
                counters.connection_errors += 1
                if len(counters.errors) < 20:
                    counters.errors.append(f"client {index}: {_leaf(group)!r}")
            await trio.sleep(0.2)
        if trio.current_time() < stop_at:
            counters.reconnects += 1


def _leaf(error: BaseException) -> BaseException:
    """The first exception inside (possibly nested) exception groups."""
    while isinstance(error, BaseExceptionGroup):
        error = error.exceptions[0]
    return error


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


async def _http_get(port: int, path: str, timeout_s: float = 5.0) -> str:
    """The body of ``GET path`` from the server on 127.0.0.1 (read to its Content-Length)."""
    request = f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
    with trio.fail_after(timeout_s):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with stream:
            await stream.send_all(request.encode())
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    raise RuntimeError(f"GET {path}: the connection closed before the headers")
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            length = re.search(rb"(?im)^content-length:\s*(\d+)", head)
            if length is None:
                raise RuntimeError(f"GET {path}: no Content-Length in the response")
            while len(body) < int(length.group(1)):
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                body += chunk
    return body.decode()


async def _scrape_gc(port: int, counters: _Counters, started: float) -> GcSample | None:
    """The server's collector counters from ``/metrics`` (None if it exports none)."""
    metrics = parse_prometheus(await _http_get(port, "/metrics"))
    collected = metrics.get(("voicecore_gc_collected_objects_total", frozenset()))
    if collected is None:
        return None
    collections = tuple(
        int(metrics.get(("voicecore_gc_collections_total", frozenset({("generation", g)})), 0))
        for g in "012"
    )
    return GcSample(
        elapsed_s=round(trio.current_time() - started, 3),
        turns=counters.turns,
        collected=int(collected),
        collections=(collections[0], collections[1], collections[2]),
    )


async def _gc_loop(
    port: int,
    counters: _Counters,
    gc_samples: list[GcSample],
    interval_s: float,
    started: float,
) -> None:
    while True:
        sample = await _scrape_gc(port, counters, started)
        if sample is None:
            return  # the server runs without diagnostics: nothing to scrape
        gc_samples.append(sample)
        await trio.sleep(interval_s)


async def _run_clients(
    server: ServerProcess,
    sessions: int,
    duration_s: float,
    reconnect_every: int,
    barge_in_ratio: float,
    sample_interval_s: float,
    metrics_interval_s: float,
    counters: _Counters,
    samples: list[Sample],
    gc_samples: list[GcSample],
    utterance: bytes,
    mic_open: bool,
) -> float:
    url = f"ws://127.0.0.1:{server.port}/ws"
    started = trio.current_time()
    stop_at = started + duration_s
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_sample_loop, server, counters, samples, sample_interval_s, started)
        nursery.start_soon(_gc_loop, server.port, counters, gc_samples, metrics_interval_s, started)
        async with trio.open_nursery() as clients:
            for index in range(sessions):
                clients.start_soon(
                    _client,
                    url,
                    index,
                    reconnect_every,
                    barge_in_ratio,
                    counters,
                    stop_at,
                    utterance,
                    mic_open,
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
        last_gc = await _scrape_gc(server.port, counters, started)
        if last_gc is not None:
            gc_samples.append(last_gc)
        nursery.cancel_scope.cancel()
    return trio.current_time() - started


def run_soak(
    duration_s: float = 30.0,
    sessions: int = 8,
    reconnect_every: int = 20,
    barge_in_ratio: float = 0.9,
    sample_interval_s: float = 0.5,
    server_args: list[str] | None = None,
    *,
    metrics_interval_s: float = 5.0,
    warmup_fraction: float = 0.5,
    server_env: dict[str, str] | None = None,
    providers: str = "scripted",
) -> SoakResult:
    """Runs a soak against a fresh ``voicecore serve --providers <providers>`` and returns
    what it measured (see the module docstring).

    Args:
        duration_s: how long the clients converse, s (the server starts before, stops after).
        sessions: concurrent clients.
        reconnect_every: turns per connection before the client leaves and comes back.
        barge_in_ratio: the share of turns the client interrupts (0..1).
        sample_interval_s: the period of the RSS/descriptor samples, s.
        server_args: extra ``voicecore serve`` flags.
        metrics_interval_s: the period of the ``/metrics`` scrapes (collector counters), s.
        warmup_fraction: the share of the run left out of the growth fits (0..0.9).
        server_env: extra environment variables of the server process.
        providers: ``"scripted"`` (voicecore's own footprint) or ``"config"`` (the offline
            pipeline, its models included).
    """
    if duration_s <= 0 or sessions < 1 or reconnect_every < 1:
        raise ValueError("duration_s > 0, sessions >= 1 and reconnect_every >= 1 are needed")
    if not 0.0 <= barge_in_ratio <= 1.0:
        raise ValueError(f"barge_in_ratio must be within 0..1, got {barge_in_ratio}")
    if not 0.0 <= warmup_fraction <= 0.9:
        raise ValueError(f"warmup_fraction must be within 0..0.9, got {warmup_fraction}")
    if not sample_interval_s > 0 or not metrics_interval_s > 0:
        raise ValueError("sample_interval_s and metrics_interval_s must be > 0 s")
    counters = _Counters()
    samples: list[Sample] = []
    gc_samples: list[GcSample] = []
    # A fixed capacity (the soak measures memory, not admission), every client on 127.0.0.1.
    if providers not in ("scripted", "config"):
        raise ValueError(f"providers must be 'scripted' or 'config', got {providers!r}")
    args = [
        "--providers", providers, "--max-sessions", str(sessions + 4),
        "--server-max-connections-per-address", "0", *(server_args or []),
    ]  # fmt: skip
    utterance = utterance_of(providers)
    with ServerProcess(args, env=server_env, stop_timeout_s=10.0, start_timeout_s=120) as server:
        elapsed = trio.run(
            _run_clients,
            server,
            sessions,
            duration_s,
            reconnect_every,
            barge_in_ratio,
            sample_interval_s,
            metrics_interval_s,
            counters,
            samples,
            gc_samples,
            utterance,
            providers == "config",
        )
    return _result(server, counters, samples, gc_samples, sessions, elapsed, warmup_fraction)


def _result(
    server: ServerProcess,
    counters: _Counters,
    samples: list[Sample],
    gc_samples: list[GcSample],
    sessions: int,
    elapsed: float,
    warmup_fraction: float,
) -> SoakResult:
    # The last sample is taken with every client gone: it shows what closing left behind
    # (fds_end against fds_start), but would skew a fit over the running samples.
    running = samples[:-1]
    warm = running[int(len(running) * warmup_fraction) :]
    turns = [s.turns for s in warm]
    rss_growth = growth_per_1000_turns(turns, [s.rss_kb * 1024 / 1e6 for s in warm])
    fd_growth = growth_per_1000_turns(
        turns, [float(s.fds) for s in warm], [float(s.connections) for s in warm]
    )
    # The collector's count moves in steps (a dead session's cycle waits for a full
    # collection, about one a minute), so it is taken over the whole run, not fitted.
    gc_per_turn: float | None = None
    gc_full: int | None = None
    if len(gc_samples) >= 2 and gc_samples[-1].turns > gc_samples[0].turns:
        first, last = gc_samples[0], gc_samples[-1]
        gc_per_turn = round((last.collected - first.collected) / (last.turns - first.turns), 2)
        gc_full = last.collections[2] - first.collections[2]

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
        connection_errors=counters.connection_errors,
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
        gc_collected_per_turn=gc_per_turn,
        gc_full_collections=gc_full,
        # Without turns in the measured half there is no growth rate to judge.
        target_met=bool(np.ptp(turns) > 0)
        and rss_growth < RSS_TARGET_MB_PER_1000
        and fd_growth < FD_TARGET_PER_1000
        and samples[-1].fds <= samples[0].fds,
        server_exit_code=server.exit_code,
        errors=counters.errors,
        samples=samples,
        gc_samples=gc_samples,
        warmup_fraction=warmup_fraction,
    )


def main(argv: list[str] | None = None) -> int:
    """``python -m harness.soak``: runs a soak, prints the figures, optionally
    writes them (with every sample) as JSON; exit status 0 if the target was met, 1 if not."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.soak", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--duration-s", type=float, default=300.0, help="run length, s")
    parser.add_argument("--sessions", type=int, default=8, help="concurrent clients")
    parser.add_argument("--reconnect-every", type=int, default=20, help="turns per connection")
    parser.add_argument("--barge-in-ratio", type=float, default=0.9, help="share interrupted")
    parser.add_argument("--sample-interval-s", type=float, default=0.5, help="sample period, s")
    parser.add_argument(
        "--metrics-interval-s", type=float, default=5.0, help="/metrics scrape period, s"
    )
    parser.add_argument(
        "--warmup-fraction", type=float, default=0.5, help="share of the run left out of fits"
    )
    parser.add_argument(
        "--server-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an environment variable for the server, e.g. MALLOC_ARENA_MAX=2 (repeatable)",
    )
    parser.add_argument(
        "--providers",
        choices=("scripted", "config"),
        default="scripted",
        help="the server's pipeline: scripted, or config (the offline pipeline) [scripted]",
    )
    parser.add_argument("--json", type=Path, help="write the result (with samples) here")
    args = parser.parse_args(argv)
    server_env: dict[str, str] = {}
    for item in args.server_env:
        name, equals, value = item.partition("=")
        if not equals or not name:
            parser.error(f"--server-env takes NAME=VALUE, got {item!r}")
        server_env[name] = value
    # A SIGTERM becomes SystemExit, so the server subprocess is still stopped on the way out.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    result = run_soak(
        duration_s=args.duration_s,
        sessions=args.sessions,
        reconnect_every=args.reconnect_every,
        barge_in_ratio=args.barge_in_ratio,
        sample_interval_s=args.sample_interval_s,
        metrics_interval_s=args.metrics_interval_s,
        warmup_fraction=args.warmup_fraction,
        server_env=server_env,
        providers=args.providers,
    )
    for name, value in result.summary().items():
        print(f"{name:30} {value}")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(asdict(result), indent=1))
    return 0 if result.target_met else 1


if __name__ == "__main__":
    sys.exit(main())
