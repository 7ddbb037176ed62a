"""Sessions per core: a load generator of simulated voice clients over real WebSockets.

Each simulated client speaks the wire protocol (docs/protocol.md) like the web page does:
``hello``, then 20 ms mic frames of real speech (../shared/data/speech, looped with a pause
after each utterance so the agent can answer) on a real-time clock with absolute deadlines,
``playout`` reports about 4 times a second, and the page's player (``harness.player``:
underruns, and each frame's lateness against the cushion).

The clients run in worker subprocesses (each a Trio run of many clients), pinned to a CPU
apart from the server's. :func:`ramp` starts the server (``harness.launcher``) pinned to one
core (or, ``pinned=False``, the server and the clients both on every CPU: a machine's
figure, ``--workers N`` included), runs growing numbers of clients against it, and reads the
server's CPU time and RSS from ``/proc`` (all its processes) and its pacer and loop figures
from ``/metrics``.

Run ``python -m harness.loadgen --help``. Everything listens on and targets
127.0.0.1; every process started is killed (its whole process group) before returning.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import random
import re
import resource
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from harness import subprocess_env
from harness.client import BYE, hello, playout_report
from harness.launcher import ServerProcess, pin_to
from harness.player import PlayoutModel
from harness.speech import mic_clips

__all__ = [
    "ClientStats",
    "LoadConfig",
    "StepResult",
    "main",
    "ramp",
    "run_clients",
    "run_step",
]

FULL_STEPS = (10, 25, 50, 100, 150, 200, 300)
"""Session counts of a full ramp with instant providers."""

OFFLINE_STEPS = (2, 5, 10, 20, 30)
"""Session counts of a full ramp with the offline defaults (Sphinx, espeak: far heavier)."""


# --- one client -------------------------------------------------------------------------------


@dataclass
class LoadConfig:
    """What one worker process runs. Rates in Hz, durations in seconds unless ``_ms``.

    Attributes:
        url: the server's WebSocket URL (``ws://127.0.0.1:PORT/ws``).
        clients: clients this worker runs.
        first_index: index of its first client among all workers (seeds and audio choice).
        duration_s: how long each client stays connected once connected.
        connect_spread_s: the clients connect evenly over this much time.
        input_rate: mic rate sent in ``hello`` (the speech corpus is 16 kHz).
        output_rate: agent audio rate asked in ``hello`` (the web page asks 48 kHz).
        pause_s: silence after each utterance, long enough for the agent's reply.
        report_every_s: ``playout`` report period.
        speech_dir: where the WAVs are; None: :data:`harness.speech.SPEECH_DIR`.
    """

    url: str
    clients: int
    first_index: int = 0
    duration_s: float = 20.0
    connect_spread_s: float = 2.0
    input_rate: int = 16000
    output_rate: int = 48000
    pause_s: float = 5.0
    report_every_s: float = 0.25
    speech_dir: str | None = None


@dataclass
class ClientStats:
    """What one simulated client saw. Durations in ms."""

    connected: bool = False
    error: str = ""
    frames: int = 0
    turns: int = 0
    underruns: int = 0
    underrun_ms: float = 0.0
    gaps: list[tuple[int, float]] = field(default_factory=list)
    """Each underrun: (frame index within its reply, gap in ms)."""
    lateness_ms: list[float] = field(default_factory=list)
    mic_lateness_ms: list[float] = field(default_factory=list)
    """How late each mic frame left after its deadline: the client's own health."""
    voice_to_voice_ms: list[float] = field(default_factory=list)
    cushion_ms: float = 0.0
    server_errors: list[str] = field(default_factory=list)
    """``error`` messages the server sent (``provider`` timeouts, ``too_slow``...)."""


async def _client(index: int, cfg: LoadConfig, script: bytes, start: float) -> ClientStats:
    import trio
    from websockets.exceptions import ConnectionClosed, WebSocketException

    from voicecore.exceptions import SendBufferFullError
    from voicecore.server.websocket import connect

    stats = ClientStats()
    frame_bytes = 2 * cfg.input_rate // 50
    # Each client loops over the script from its own random point, so turns do not start in
    # lockstep across clients.
    offset = random.Random(index).randrange(len(script) // frame_bytes) * frame_bytes

    await trio.sleep_until(start + cfg.connect_spread_s * index / max(1, cfg.clients))
    try:
        # The lean connection the server uses too (voicecore.server.websocket): a client costs
        # a fraction of websockets.trio's, so one client core can drive the server's.
        ws = await connect(cfg.url)
        async with trio.open_nursery() as connection:
            connection.start_soon(ws.run_writer)
            ws.send_nowait(
                hello(
                    input_rate=cfg.input_rate,
                    output_rate=cfg.output_rate,
                    client="voicecore-loadgen/1",
                )
            )
            ready = json.loads(await ws.receive())
            if ready.get("type") != "ready":
                stats.error = f"no ready: {ready}"
                await ws.aclose()
                return stats
            stats.connected = True
            stats.cushion_ms = float(ready["cushion_ms"])
            player = PlayoutModel(stats.cushion_ms, float(ready["frame_ms"]))
            t0 = trio.current_time()
            end = t0 + cfg.duration_s

            async def speak() -> None:
                nonlocal offset
                k = 0
                while True:
                    deadline = t0 + k * 0.02
                    if deadline >= end:
                        return
                    await trio.sleep_until(deadline)
                    stats.mic_lateness_ms.append((trio.current_time() - deadline) * 1000.0)
                    ws.send_nowait(script[offset : offset + frame_bytes])
                    offset = (offset + frame_bytes) % len(script)
                    k += 1

            async def report() -> None:
                while trio.current_time() < end:
                    await trio.sleep(cfg.report_every_s)
                    ws.send_nowait(playout_report(player, trio.current_time()))

            async def listen() -> None:
                while True:
                    message = await ws.receive()
                    now = trio.current_time()
                    if isinstance(message, bytes):
                        player.frame(now)
                        stats.frames += 1
                        continue
                    data = json.loads(message)
                    kind = data.get("type")
                    if kind == "agent_done":
                        player.done(now)
                        stats.turns += 1
                    elif kind == "clear":
                        player.clear(now)
                    elif kind == "pause":
                        player.pause(now)
                    elif kind == "resume":
                        player.resume(now)
                    elif kind == "metrics" and data.get("voice_to_voice_ms") is not None:
                        stats.voice_to_voice_ms.append(float(data["voice_to_voice_ms"]))
                    elif kind == "error":
                        stats.server_errors.append(f"{data.get('code')}: {data.get('message')}")

            async with trio.open_nursery() as nursery:

                async def guarded(task: Callable[[], Awaitable[None]], last: bool) -> None:
                    # The mic's end ends the run; a close by the server (``too_slow``...)
                    # ends it early, recorded.
                    try:
                        await task()
                    except (ConnectionClosed, SendBufferFullError) as exc:
                        stats.error = stats.error or f"{type(exc).__name__}: {exc}"
                        last = True
                    if last:
                        nursery.cancel_scope.cancel()

                nursery.start_soon(guarded, listen, False)
                nursery.start_soon(guarded, report, False)
                nursery.start_soon(guarded, speak, True)
            with contextlib.suppress(ConnectionClosed, SendBufferFullError):
                ws.send_nowait(BYE)
            stats.underruns = player.underruns
            stats.underrun_ms = player.underrun_ms
            stats.lateness_ms = player.lateness_ms
            stats.gaps = player.gaps
            await ws.aclose()
    except (OSError, WebSocketException, ValueError, KeyError) as exc:
        # Refused or cut (a handshake status, a close, a malformed ready): a failed client.
        stats.error = f"{type(exc).__name__}: {exc}"
    return stats


async def _run_worker(cfg: LoadConfig) -> list[ClientStats]:
    import trio

    arrays, _ = mic_clips(Path(cfg.speech_dir) if cfg.speech_dir else None, cfg.input_rate)
    # Every utterance followed by a pause for the agent's reply, in whole 20 ms frames; one
    # copy shared by the worker's clients.
    pause = np.zeros(int(cfg.pause_s * cfg.input_rate), dtype=np.int16)
    script = np.concatenate([part for clip in arrays for part in (clip, pause)])
    frame = cfg.input_rate // 50
    script_bytes = script[: len(script) // frame * frame].astype("<i2").tobytes()
    results: list[ClientStats] = [ClientStats() for _ in range(cfg.clients)]
    start = trio.current_time() + 0.1
    # Hard bound: connecting, the run, and closing; a client stuck past it is a failure.
    with trio.move_on_after(cfg.connect_spread_s + cfg.duration_s + 15):
        async with trio.open_nursery() as nursery:
            for i in range(cfg.clients):

                async def one(i: int = i) -> None:
                    results[i] = await _client(cfg.first_index + i, cfg, script_bytes, start)

                nursery.start_soon(one)
    return results


def _worker_main() -> int:
    """``loadgen _worker``: runs a LoadConfig read as JSON from stdin, prints the clients'
    stats and the worker's own CPU time as JSON."""
    import trio

    # Under load the library logs an internal EOFError when a connection drops mid-close;
    # every client's failure is recorded in its stats, so the log is only noise.
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    cfg = LoadConfig(**json.loads(sys.stdin.read()))
    wall = time.monotonic()
    results = trio.run(_run_worker, cfg)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    summary = {
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "wall_s": time.monotonic() - wall,
        "clients": [asdict(r) for r in results],
    }
    json.dump(summary, sys.stdout)
    return 0


# --- processes --------------------------------------------------------------------------------


def _cpu_sets() -> tuple[set[int] | None, set[int] | None]:
    """(server CPUs, client CPUs): the first CPU we may use for the server, the rest for the
    clients; nothing pinned on a single-CPU machine."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(allowed) < 2:
        return None, None
    return {allowed[0]}, set(allowed[1:])


def worker_sessions(port: int) -> list[int]:
    """Conversations each worker of a ``--workers N`` server holds (``/healthz``'s
    ``server.workers``, from the books they share); [] for a single-process server or if
    unreadable."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as reply:
            workers = json.loads(reply.read()).get("server", {}).get("workers") or []
    except (OSError, ValueError):
        return []
    return [int(w["sessions"]) for w in workers]


def _kill_group(proc: subprocess.Popen[Any]) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def run_clients(
    cfg: LoadConfig,
    processes: int,
    cpus: set[int] | None = None,
    usage: dict[str, float] | None = None,
) -> list[ClientStats]:
    """Runs ``cfg.clients`` clients split over ``processes`` worker subprocesses (pinned to
    ``cpus``) and returns every client's stats; the workers are killed if they overrun.

    ``usage``, when given, receives the workers' total CPU time (``cpu_s``) and longest
    run (``wall_s``), in seconds: the client side's own load."""
    processes = max(1, min(processes, cfg.clients))
    share = [cfg.clients // processes + (i < cfg.clients % processes) for i in range(processes)]
    procs: list[subprocess.Popen[str]] = []
    timeout = cfg.connect_spread_s + cfg.duration_s + 30
    try:
        first = 0
        for count in share:
            part = LoadConfig(**{**asdict(cfg), "clients": count, "first_index": first})
            first += count
            proc = subprocess.Popen(
                [sys.executable, "-m", "harness.loadgen", "_worker"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                env=subprocess_env(),
                start_new_session=True,
                preexec_fn=pin_to(cpus),
            )
            procs.append(proc)
            assert proc.stdin is not None
            proc.stdin.write(json.dumps(asdict(part)))
            proc.stdin.close()
            proc.stdin = None  # sent: communicate() below must not flush it again
        results: list[ClientStats] = []
        deadline = time.monotonic() + timeout
        for proc, count in zip(procs, share, strict=True):
            try:
                out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
                summary = json.loads(out)
                results.extend(ClientStats(**r) for r in summary["clients"])
                if usage is not None:
                    usage["cpu_s"] = usage.get("cpu_s", 0.0) + summary["cpu_s"]
                    usage["wall_s"] = max(usage.get("wall_s", 0.0), summary["wall_s"])
            except (subprocess.TimeoutExpired, ValueError, KeyError) as exc:
                # A worker that crashed or overran: its clients count as failed.
                error = f"worker failed (exit {proc.returncode}): {type(exc).__name__}"
                results.extend(ClientStats(error=error) for _ in range(count))
        return results
    finally:
        for proc in procs:
            _kill_group(proc)


def rss_mb(server: ServerProcess) -> float:
    """The server's resident memory, MiB."""
    return server.rss_kb() / 1024


def machine_busy_seconds() -> float:
    """CPU time every CPU of the machine has spent busy (not idle, not waiting for I/O)
    since boot, s (``/proc/stat``): the server, the clients and anything else running."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    # user, nice, system, idle, iowait, irq, softirq, steal (the hypervisor's: not ours to
    # use either); guest time is counted in user already.
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def server_metrics(port: int, reads: int = 1) -> dict[str, float]:
    """Worst-case figures from the server's ``/metrics``: the largest per-session pacer
    lateness (p99, max), the event loop's lag (p99, max) and the longest GC pause, in ms;
    {} if unreadable.

    With ``--workers N`` each read is answered by one worker (whichever accepts it): ``reads``
    reads, the worst of what they say, very likely cover every worker when ``reads`` is a few
    times N."""
    figures: dict[str, float] = {}
    for _ in range(reads):
        for key, value in _metrics_once(port).items():
            figures[key] = max(value, figures.get(key, value))
    return figures


def _metrics_once(port: int) -> dict[str, float]:
    try:
        url = f"http://127.0.0.1:{port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as reply:
            text = reply.read().decode()
    except OSError:
        return {}
    figures: dict[str, float] = {}
    for name, key in (
        ("voicecore_pacer_lateness_p99_seconds", "pacer_late_p99_ms"),
        ("voicecore_pacer_lateness_max_seconds", "pacer_late_max_ms"),
        ("voicecore_loop_lag_p99_seconds", "loop_lag_p99_ms"),
        ("voicecore_loop_lag_max_seconds", "loop_lag_max_ms"),
        ("voicecore_gc_pause_max_seconds", "gc_pause_max_ms"),
    ):
        values = [
            float(v)
            for v in re.findall(rf"^{name}(?:{{[^}}]*}})? (\S+)$", text, re.MULTILINE)
            if v not in ("NaN", "nan")
        ]
        if values:
            figures[key] = max(values) * 1000.0
    return figures


# --- a step and a ramp ------------------------------------------------------------------------


@dataclass
class StepResult:
    """One load step: N sessions against a fresh server. Durations in ms, memory in MiB."""

    providers: str
    sessions: int
    connected: int
    failed: int
    """Clients that could not connect or were cut off."""
    errors: list[str]
    """Up to 5 distinct client failures and server ``error`` messages."""
    server_errors: int
    """``error`` messages the server sent (a provider's timeout under load...)."""
    mic_source: str
    mic_frames: int
    """Mic frames the clients sent."""
    turns: int
    frames: int
    """Agent audio frames the clients received."""
    underruns: int
    sessions_with_underruns: int
    underrun_ms: float
    lateness_p50_ms: float
    lateness_p99_ms: float
    lateness_max_ms: float
    cushion_ms: float
    client_mic_late_p99_ms: float
    client_mic_late_max_ms: float
    client_cpu_pct: float
    """The client workers' CPU over their run, in % of one core (they share the CPUs left
    to them: near 100 % per client CPU, the client side is the bottleneck)."""
    """The clients' own lag (mic frames sent late): large values mean the client side, not
    the server, may have delayed the agent frames it then counted late."""
    gap_frames: list[int]
    """Where in their replies the underruns happened (frame index, the first 20)."""
    voice_to_voice_p50_ms: float
    voice_to_voice_p95_ms: float
    server_cores: int
    """CPUs the server may use (1 when pinned)."""
    workers: int
    """The server's worker processes (``--workers``)."""
    worker_sessions: list[int]
    """Conversations each worker held in the middle of the steady window ([]: one
    process)."""
    server_cpu_pct: float
    """Server CPU (all its processes) over the steady window, in % of one core."""
    machine_cpu_pct: float
    """The whole machine's busy CPU over the same window, in % of one core (up to 100 % per
    CPU): with the server's and the clients', what else ran (a shared machine's neighbours)."""
    cpu_ms_per_session_s: float
    rss_idle_mb: float
    rss_mb: float
    rss_per_session_kb: float
    server_metrics: dict[str, float]

    @property
    def projected_per_core(self) -> float:
        """Sessions one core would carry at 100 % CPU at this step's cost per session: a
        CPU-only bound that ignores scheduling latency (the real limit is lower)."""
        return 1000.0 / self.cpu_ms_per_session_s if self.cpu_ms_per_session_s > 0 else math.nan

    @property
    def ok(self) -> bool:
        """All sessions connected and stayed, no server error (a provider timing out under
        load), no underrun, p99 lateness within the cushion."""
        return (
            self.failed == 0
            and self.server_errors == 0
            and self.connected == self.sessions
            and self.underruns == 0
            and self.lateness_p99_ms <= self.cushion_ms
        )


def _quantile(values: Sequence[float], q: float) -> float:
    return float(np.quantile(np.asarray(values), q)) if values else math.nan


def run_step(
    providers: str,
    sessions: int,
    *,
    duration_s: float = 20.0,
    processes: int = 2,
    output_rate: int = 48000,
    pause_s: float = 5.0,
    server_args: Sequence[str] = (),
    speech_dir: Path | None = None,
    pinned: bool = True,
    workers: int = 1,
) -> StepResult:
    """Runs ``sessions`` clients for ``duration_s`` against a fresh ``python -m harness.serve
    --providers <providers> --workers <workers>`` (``harness.launcher``) pinned to one core
    (clients on the others); ``pinned=False``: the server and the clients on every CPU this
    process may use.

    The server's CPU and RSS are sampled after every client has connected plus 2 s of
    warm-up, and again 1 s before the clients leave; the CPU share is over that window.
    """
    server_cpus, client_cpus = _cpu_sets() if pinned else (None, None)
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1
    server_cores = len(server_cpus) if server_cpus else allowed
    spread = min(5.0, 0.03 * sessions)
    _, source = mic_clips(speech_dir)
    # Every simulated client is on 127.0.0.1: no per-address limit.
    args = [
        "--providers", providers, "--max-sessions", str(sessions + 5),
        "--server-max-connections-per-address", "0", "--workers", str(workers), *server_args,
    ]  # fmt: skip
    with ServerProcess(args, cpus=server_cpus) as server:
        time.sleep(0.5)
        rss_idle = rss_mb(server)
        cfg = LoadConfig(
            url=server.ws_url,
            clients=sessions,
            duration_s=duration_s,
            connect_spread_s=spread,
            output_rate=output_rate,
            pause_s=pause_s,
            speech_dir=str(speech_dir) if speech_dir else None,
        )
        samples: dict[str, Any] = {}

        def sample_server() -> None:
            # Runs in a thread beside the client processes: the steady window's endpoints.
            start_at = time.monotonic() + spread + min(2.0, duration_s / 4) + 0.3
            stop_at = time.monotonic() + spread + duration_s - 1.0
            time.sleep(max(0.0, start_at - time.monotonic()))
            samples["t0"], samples["cpu0"] = time.monotonic(), server.cpu_seconds()
            samples["busy0"] = machine_busy_seconds()
            # Mid-window every client is connected (the last ones connect after the
            # window opens if their processes started slowly; the first leave before it ends).
            time.sleep(max(0.0, (stop_at - time.monotonic()) / 2))
            samples["workers"] = worker_sessions(server.port) if workers > 1 else []
            time.sleep(max(0.1, stop_at - time.monotonic()))
            samples["t1"], samples["cpu1"] = time.monotonic(), server.cpu_seconds()
            samples["busy1"] = machine_busy_seconds()
            samples["rss"] = rss_mb(server)
            samples["metrics"] = server_metrics(server.port, reads=4 * workers)

        sampler = threading.Thread(target=sample_server, daemon=True)
        sampler.start()
        client_usage: dict[str, float] = {}
        clients = run_clients(cfg, processes, client_cpus, client_usage)
        sampler.join(timeout=10)
    connected = [c for c in clients if c.connected]
    lateness = [x for c in connected for x in c.lateness_ms]
    mic_late = [x for c in connected for x in c.mic_lateness_ms]
    v2v = [x for c in connected for x in c.voice_to_voice_ms]
    window = samples.get("t1", 0.0) - samples.get("t0", 0.0)
    cpu = samples.get("cpu1", 0.0) - samples.get("cpu0", 0.0)
    cpu_share = cpu / window if window > 0 else math.nan
    busy = samples.get("busy1", 0.0) - samples.get("busy0", 0.0)
    rss = float(samples.get("rss", math.nan))
    return StepResult(
        providers=providers,
        sessions=sessions,
        connected=len(connected),
        failed=sum(bool(c.error) for c in clients),
        errors=sorted(
            {c.error for c in clients if c.error} | {e for c in clients for e in c.server_errors}
        )[:5],
        server_errors=sum(len(c.server_errors) for c in clients),
        mic_source=source,
        mic_frames=sum(len(c.mic_lateness_ms) for c in connected),
        turns=sum(c.turns for c in connected),
        frames=sum(c.frames for c in connected),
        underruns=sum(c.underruns for c in connected),
        sessions_with_underruns=sum(c.underruns > 0 for c in connected),
        underrun_ms=sum(c.underrun_ms for c in connected),
        lateness_p50_ms=_quantile(lateness, 0.5),
        lateness_p99_ms=_quantile(lateness, 0.99),
        lateness_max_ms=max(lateness, default=math.nan),
        cushion_ms=max((c.cushion_ms for c in connected), default=math.nan),
        client_mic_late_p99_ms=_quantile(mic_late, 0.99),
        client_mic_late_max_ms=max(mic_late, default=math.nan),
        client_cpu_pct=100.0
        * client_usage.get("cpu_s", math.nan)
        / client_usage.get("wall_s", 1.0),
        gap_frames=sorted(g[0] for c in connected for g in c.gaps)[:20],
        voice_to_voice_p50_ms=_quantile(v2v, 0.5),
        voice_to_voice_p95_ms=_quantile(v2v, 0.95),
        server_cores=server_cores,
        workers=workers,
        worker_sessions=list(samples.get("workers", [])),
        server_cpu_pct=100.0 * cpu_share,
        machine_cpu_pct=100.0 * busy / window if window > 0 else math.nan,
        cpu_ms_per_session_s=1000.0 * cpu_share / sessions,
        rss_idle_mb=rss_idle,
        rss_mb=rss,
        rss_per_session_kb=(rss - rss_idle) * 1024.0 / sessions,
        server_metrics=dict(samples.get("metrics", {})),
    )


def ramp(
    providers: str,
    steps: Sequence[int],
    *,
    stop_at_first_failure: bool = False,
    **step_args: Any,
) -> Iterator[StepResult]:
    """Runs :func:`run_step` for each session count in ``steps``, in order, yielding each
    result.

    On a quiet machine the ramp could stop at the first step that is not
    :attr:`StepResult.ok`; on a shared one a neighbour's burst can glitch a small step, so
    by default it goes on until the server is clearly past its capacity: a session failed to
    connect, a quarter of the sessions saw an underrun, or the server used 95 % of its cores.
    """
    for sessions in steps:
        result = run_step(providers, sessions, **step_args)
        yield result
        saturated = (
            result.connected < result.sessions
            or result.sessions_with_underruns * 4 > result.sessions
            or result.server_cpu_pct > 95.0 * result.server_cores
        )
        if saturated or (stop_at_first_failure and not result.ok):
            return


def largest_ok(results: Sequence[StepResult]) -> int:
    """The largest session count of a passing step before the first failing one (0: none):
    the conservative figure; a later step may pass again on a noisy machine."""
    best = 0
    for result in results:
        if not result.ok:
            break
        best = result.sessions
    return best


# --- command line -----------------------------------------------------------------------------


def _row(r: StepResult) -> str:
    return (
        f"{r.providers:9} workers={r.workers} N={r.sessions:4} conn={r.connected:4} "
        f"fail={r.failed:3} "
        f"server-errors={r.server_errors:3} "
        f"turns={r.turns:5} underruns={r.underruns:4} ({r.sessions_with_underruns} sessions) "
        f"late p50/p99/max={r.lateness_p50_ms:6.1f}/{r.lateness_p99_ms:6.1f}/"
        f"{r.lateness_max_ms:6.1f} ms (cushion {r.cushion_ms:.0f}) "
        f"client lag p99/max={r.client_mic_late_p99_ms:5.1f}/{r.client_mic_late_max_ms:5.1f} ms "
        f"client cpu={r.client_cpu_pct:5.1f}% "
        f"cpu={r.server_cpu_pct:5.1f}% ({r.cpu_ms_per_session_s:.2f} ms/s/session, "
        f"machine {r.machine_cpu_pct:5.1f}%, "
        f"{r.projected_per_core:.0f}/core at 100%) "
        f"rss={r.rss_mb:.0f} MiB ({r.rss_per_session_kb:.0f} KiB/session) "
        f"v2v p50/p95={r.voice_to_voice_p50_ms:.0f}/{r.voice_to_voice_p95_ms:.0f} ms "
        f"{'ok' if r.ok else 'FAIL'}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m harness.loadgen``: ramps sessions against ``voicecore serve`` (pinned
    unless ``--unpinned``) and prints one line per step, plus a JSON report with ``--json``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["_worker"]:
        return _worker_main()
    parser = argparse.ArgumentParser(
        prog="python -m harness.loadgen", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--providers", choices=("scripted", "config"), default="scripted")
    parser.add_argument(
        "--steps",
        default=None,
        help="comma-separated session counts [default scripted: "
        f"{','.join(map(str, FULL_STEPS))}; config: {','.join(map(str, OFFLINE_STEPS))}]",
    )
    parser.add_argument("--duration-s", type=float, default=20.0, help="per step [20]")
    parser.add_argument("--processes", type=int, default=2, help="client processes [2]")
    parser.add_argument("--output-rate", type=int, default=48000, help="agent audio Hz [48000]")
    parser.add_argument("--workers", type=int, default=1, help="server worker processes [1]")
    parser.add_argument(
        "--unpinned",
        action="store_true",
        help="the server and the clients on every CPU (default: the server on one)",
    )
    parser.add_argument("--json", type=Path, default=None, help="write the results here")
    args = parser.parse_args(argv)
    default_steps = FULL_STEPS if args.providers == "scripted" else OFFLINE_STEPS
    steps = [int(s) for s in args.steps.split(",")] if args.steps else list(default_steps)
    if not 1 <= max(steps) <= 1000 or not 1 <= args.duration_s <= 600:
        parser.error("steps must be in 1..1000 sessions and --duration-s in 1..600")
    results = []
    for result in ramp(
        args.providers,
        steps,
        duration_s=args.duration_s,
        processes=args.processes,
        output_rate=args.output_rate,
        pinned=not args.unpinned,
        workers=args.workers,
    ):
        print(_row(result), flush=True)
        results.append(result)
    best = largest_ok(results)
    passing = [r.sessions for r in results if r.ok]
    where = "every CPU" if args.unpinned else "one server core"
    print(f"largest N with zero underruns ({where}): {best} (first failure stops it)")
    print(f"steps with zero underruns: {passing}")
    if args.json:
        report = {"largest_ok": best, "passing": passing, "steps": [asdict(r) for r in results]}
        args.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
