"""The ``voicecore`` command line.

``voicecore serve [--host H] [--port P] [--providers config|scripted] ...``
    Runs the voice agent server: the web page, the WebSocket endpoint ``/ws``, ``/healthz``
    and ``/metrics`` on one port (``voicecore.server.app``), with the configured providers (the
    offline pipeline by default), until SIGINT or SIGTERM. Its settings are the configuration's
    ``server`` section (``--server-<setting>``, ``VOICECORE_SERVER_<SETTING>``, ``[server]``
    in the TOML file), the everyday ones also under short flags (``--host``, ``--port``...).

``voicecore diagnose TIMELINE.json [-o PICTURE.png]``
    Reads a timeline recorded by ``voicecore serve --timeline``, prints each audio gap with
    the causes recorded around it and draws the probes on one time axis (``voicecore.diagnostics``).

``voicecore demo``
    Runs real speech through the Rust core as the server will: a simulated 48 kHz browser
    mic into an overwrite ring, resampled to 16 kHz for the energy VAD, and the same speech
    played back as agent audio through the frame pacer on the real clock, with a simulated
    client reporting its playout buffer. Prints the speech events and the pacing figures
    (``voicecore.demo``).

``voicecore models fetch [NAME...]`` / ``path NAME`` / ``list`` / ``verify [NAME...]``
    Downloads the pinned models (default: all) into voicecore's cache, prints a cached
    model's directory, lists the models (package, licence, size, cached or not), or checks
    the cached files' sha256 (``voicecore.models``). Exit status 0, or 1 with a one-line reason.

``voicecore config show [--config FILE] [--<section>-<setting> VALUE...] [--check]``
    Prints the effective configuration (defaults < TOML file < ``VOICECORE_*`` environment
    < flags; see ``voicecore.config``) as TOML, each value with where it came from and API
    keys masked; exits with status 2 and the list of problems if it is invalid. ``--check``
    also builds the providers it chooses (loads the models, checks the voice).
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import logging
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import trio

from voicecore import config, models
from voicecore.config import ServerConfig
from voicecore.demo import run_demo
from voicecore.diagnostics import (
    DEFAULT_FRAME_MS,
    MATPLOTLIB_MISSING,
    Timeline,
    find_gaps,
    plot,
    summarize,
)
from voicecore.engine.pacing import Pacer
from voicecore.exceptions import (
    CalibrationError,
    ConfigError,
    ModelFetchError,
    ModelNotFoundError,
)
from voicecore.pipeline import Pipeline, build_pipeline, scripted_pipeline
from voicecore.server.admission import available_cores
from voicecore.server.app import VoiceServer
from voicecore.server.ledger import Ledger, WorkerState
from voicecore.server.supervisor import WORKER_FLAG, Supervisor, WorkerSpec

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``voicecore`` command; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="voicecore", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)

    add_serve_arguments(
        commands.add_parser(
            "serve",
            help="run the voice agent server (web page, WebSocket, /healthz, /metrics)",
            description="Serves the web client and voice sessions on one port until "
            "SIGINT/SIGTERM. Every setting (the server's, the providers', the session's) comes "
            "from the one configuration: defaults < --config FILE < VOICECORE_<SECTION>_<SETTING> "
            "environment variables < flags; 'voicecore config show' prints it. The server's "
            "everyday flags have short names (--host, --port, --token, --allowed-origin...).",
        )
    )
    add_diagnose_arguments(
        commands.add_parser(
            "diagnose",
            help="find the audio gaps of a recorded timeline, their causes, and draw it",
            description="Reads a timeline recorded with 'voicecore serve --timeline PATH', "
            "prints each audio gap with the causes recorded around it (event-loop lag, GC "
            "pauses, CPU throttling) and draws every probe on one time axis (matplotlib).",
        )
    )
    demo = commands.add_parser("demo", help="run real speech through the Rust audio core")
    demo.add_argument(
        "--wav",
        type=Path,
        help="a mono 16-bit WAV file (default: a recording from a shared/data/speech folder "
        "beside the checkout, else synthetic voiced bursts)",
    )
    demo.add_argument(
        "--seconds", type=float, default=6.0, help="pace at most this much audio (default 6)"
    )

    model_commands = commands.add_parser("models", help="manage downloaded models").add_subparsers(
        dest="models_command", required=True
    )
    fetch = model_commands.add_parser(
        "fetch", help="download the pinned models into the cache (default: all of them)"
    )
    fetch.add_argument("names", nargs="*", metavar="NAME", help="a model (default: all)")
    path = model_commands.add_parser("path", help="print a cached model's directory")
    path.add_argument("name", metavar="NAME")
    model_commands.add_parser("list", help="list the models: package, licence, size, cached")
    verify = model_commands.add_parser(
        "verify", help="check the cached models' files against their pinned sha256"
    )
    verify.add_argument("names", nargs="*", metavar="NAME", help="a model (default: all)")

    config_commands = commands.add_parser(
        "config", help="inspect the configuration"
    ).add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser(
        "show",
        help="print the effective configuration (secrets masked)",
        description="Prints the effective configuration as TOML: defaults < --config file "
        "< VOICECORE_<SECTION>_<SETTING> environment variables < flags.",
    )
    show.add_argument(
        "--check", action="store_true", help="also build the providers the configuration chooses"
    )
    config.add_config_arguments(show)

    raw = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(raw)
    if args.command == "serve":
        return serve_command(args, argv=raw[1:])
    if args.command == "diagnose":
        return diagnose_command(args)
    if args.command == "demo":
        return run_demo(args.wav, args.seconds)
    if args.command == "config":
        return _config_show(args)
    return _models_command(args)


def _models_command(args: argparse.Namespace) -> int:
    """``voicecore models ...``: 0 when all went well, else 1 after a one-line reason."""
    command: str = args.models_command
    try:
        if command == "path":
            print(models.require(args.name))
            return 0
        if command == "list":
            _list_models()
            return 0
        names: list[str] = args.names or list(models.MODELS)
        unknown = [name for name in names if name not in models.MODELS]
        if unknown:
            raise ConfigError(
                f"unknown model {', '.join(map(repr, unknown))}; the known models are: "
                f"{', '.join(models.MODELS)}"
            )
        failures = 0
        for name in names:
            try:
                if command == "fetch":
                    models.fetch(name, progress=lambda line: print(line, flush=True))
                    continue
                problems = models.verify(name)
            except ModelFetchError as exc:
                print(f"voicecore models fetch: {name}: {exc}", file=sys.stderr)
                failures += 1
                continue
            if not problems:
                print(f"{name}: ok")
            elif len(problems) == len(models.MODELS[name].files) and all(
                problem.endswith(" is missing") for problem in problems
            ):
                print(f"{name}: not fetched")
            else:
                print("\n".join(f"{name}: {problem}" for problem in problems))
            failures += bool(problems)
    except (ConfigError, ModelNotFoundError) as exc:
        print(f"voicecore models {command}: {exc}", file=sys.stderr)
        return 1
    if failures:
        fix = "" if command == "fetch" else '; "voicecore models fetch" repairs them'
        print(
            f"voicecore models {command}: {failures} of {len(names)} failed{fix}", file=sys.stderr
        )
        return 1
    return 0


def _list_models() -> None:
    rows = [("NAME", "PACKAGE", "LICENCE", "SIZE", "CACHED")]
    for spec in models.MODELS.values():
        try:
            models.require(spec.name)
            cached = "yes"
        except ModelNotFoundError:
            cached = "no"
        rows.append(
            (spec.name, spec.requirement, spec.licence, f"{spec.size / 1e6:.1f} MB", cached)
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )


def _config_show(args: argparse.Namespace) -> int:
    try:
        effective = config.config_from_args(args)
        pipeline = build_pipeline(effective) if args.check else None
    except ConfigError as exc:
        print(f"voicecore: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    print(config.format_config(effective), end="")
    if pipeline is not None:
        print(f"\n# built: {pipeline!r}")
    return 0


# --- voicecore serve ------------------------------------------------------------------------


def add_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``voicecore serve``'s flags to ``parser``: ``--config FILE`` and one flag per
    setting of the configuration (``voicecore.config.add_config_arguments``), the server's
    first, with their short names (``--host``, ``--port``...)."""
    config.add_config_arguments(parser)
    parser.add_argument(WORKER_FLAG, help=argparse.SUPPRESS)  # set by the supervisor only


ServerTask = Callable[[], Awaitable[None]]
"""A background task run alongside the server (``VoiceServer``'s ``tasks``)."""


def serve_command(
    args: argparse.Namespace,
    *,
    make_pacer: Callable[[int], Pacer | None] | None = None,
    tasks: Sequence[ServerTask] = (),
    argv: Sequence[str] = (),
) -> int:
    """``voicecore serve``: builds the pipeline and runs the server until SIGINT/SIGTERM;
    returns the exit status (0 after a graceful shutdown, 1 if it cannot listen or its
    start-up measurement of a conversation's cost fails, 2 for a bad setting).

    With ``server.workers`` other than 1 (0, the default: one per usable core) it runs
    the workers' supervisor instead (``voicecore.server.supervisor``), which starts each
    worker as ``voicecore serve ARGV --worker ...``.

    Args:
        args: the flags parsed by a parser given ``add_serve_arguments``.
        argv: the arguments ``args`` was parsed from (without ``serve``), for the workers.
        make_pacer: builds the shared pacer from the sessions' ``frame_ms``; None (or None
            from it): the Rust ``FramePacer``. A program embedding the server, or a benchmark
            swapping in its baseline, passes its own.
        tasks: run alongside the server (see ``VoiceServer``).
    """
    worker = None if args.worker is None else WorkerSpec.parse(args.worker)
    try:
        voicecore_config = config.config_from_args(args)
        settings = voicecore_config.server
        if not settings.web_root.is_dir():
            source = voicecore_config.sources.get("server.web_root", "the default")
            raise ConfigError(
                f"server.web_root (from {source}): no web folder at {settings.web_root}"
            )
        workers = settings.workers or max(1, math.floor(available_cores()))
        if worker is None and workers > 1:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
            try:
                return Supervisor(list(argv), settings, workers).run()
            except OSError as exc:
                print(
                    f"voicecore serve: cannot listen on {settings.host}:{settings.port}: {exc}",
                    file=sys.stderr,
                )
                return 1
        if settings.providers == "scripted":
            pipeline = scripted_pipeline(voicecore_config)
        else:
            pipeline = build_pipeline(voicecore_config)
    except ConfigError as exc:
        print(f"voicecore serve: invalid configuration:\n{exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    # websockets logs every HTTP response and connection at INFO: a page load is a dozen.
    logging.getLogger("websockets").setLevel(logging.WARNING)
    pacer = make_pacer(pipeline.config.session.frame_ms) if make_pacer is not None else None
    try:
        return trio.run(
            functools.partial(
                run_server, pipeline, settings, pacer=pacer, tasks=tasks, worker=worker
            )
        )
    except ExceptionGroup as group:  # Trio's nurseries group what their tasks raised
        for kind, problem in (
            (OSError, f"cannot listen on {settings.host}:{settings.port}"),
            (CalibrationError, "cannot measure its capacity"),
        ):
            matched, others = group.split(kind)
            if matched is None or others is not None:
                continue
            error: BaseException = matched
            while isinstance(error, BaseExceptionGroup):
                error = error.exceptions[0]
            fix = (
                "; --server-capacity-per-core or --max-sessions skips the measurement"
                if kind is CalibrationError
                else ""
            )
            print(f"voicecore serve: {problem}: {error}{fix}", file=sys.stderr)
            return 1
        raise


async def run_server(
    pipeline: Pipeline,
    settings: ServerConfig,
    *,
    pacer: Pacer | None = None,
    tasks: Sequence[ServerTask] = (),
    worker: WorkerSpec | None = None,
) -> int:
    """Runs a ``VoiceServer`` until SIGINT or SIGTERM, then shuts it down gracefully and
    closes the pipeline's network clients; returns 0.

    SIGTERM drains (an orchestrator's stop: running conversations go on for
    ``drain_timeout_s``); SIGINT (Ctrl-C) closes them now, also during a drain. A
    ``worker`` serves its supervisor's sockets and shares its ledger."""
    ledger = None
    if worker is not None:
        _die_with_parent()
        ledger = Ledger.open(worker.ledger, worker.index)
    server = VoiceServer(
        pipeline,
        settings,
        pacer=pacer,
        tasks=tasks,
        sockets=worker.sockets() if worker is not None else (),
        ledger=ledger,
    )
    name = "voicecore" if worker is None else f"voicecore worker {worker.index}"
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def serve(*, task_status: trio.TaskStatus[VoiceServer]) -> None:
                await server.run(task_status=task_status)
                nursery.cancel_scope.cancel()  # done: stop waiting for signals

            await nursery.start(serve)
            if worker is None:
                print(f"voicecore: serving on {server.url} (Ctrl-C to stop)", flush=True)
            else:
                print(f"{name}: serving (pid {os.getpid()})", flush=True)
            async for signum in signals:
                # SIGTERM drains (again: a supervisor passes on what its group got too);
                # SIGINT is now.
                drain = signum == signal.SIGTERM
                print(
                    f"{name}: {signal.Signals(signum).name}: "
                    + (
                        f"draining (up to {settings.drain_timeout_s:g} s)"
                        if drain
                        else "shutting down"
                    ),
                    flush=True,
                )
                server.shutdown(drain_timeout_s=None if drain else 0)
    await pipeline.aclose()
    if ledger is not None:
        ledger.set_state(WorkerState.GONE)
        ledger.close()
    print(f"{name}: stopped", flush=True)
    return 0


def _die_with_parent() -> None:
    """A worker asks the kernel for SIGTERM when its supervisor dies (``PR_SET_PDEATHSIG``):
    an orphaned worker would otherwise serve a port nobody supervises."""
    libc = ctypes.CDLL(None, use_errno=True)
    pr_set_pdeathsig = 1
    libc.prctl(pr_set_pdeathsig, signal.SIGTERM)


# --- voicecore diagnose ---------------------------------------------------------------------


def add_diagnose_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``voicecore diagnose``'s arguments to ``parser``."""
    parser.add_argument("timeline", type=Path, help="a timeline JSON file (serve --timeline)")
    parser.add_argument(
        "-o",
        "--output",
        type=Path,
        help="the picture to write (.png, .svg or .pdf) [default: the timeline's name, .png]",
    )
    parser.add_argument(
        "--frame-ms",
        type=float,
        default=DEFAULT_FRAME_MS,
        help=f"the frames' duration in ms [default {DEFAULT_FRAME_MS:g}]",
    )
    parser.add_argument(
        "--since",
        type=float,
        help="draw from this many seconds after the first event [default: the start]",
    )
    parser.add_argument(
        "--until",
        type=float,
        help="draw up to this many seconds after the first event [default: the end]",
    )
    parser.add_argument(
        "--no-plot", action="store_true", help="print the text summary only (no matplotlib)"
    )


def diagnose_command(args: argparse.Namespace) -> int:
    """``voicecore diagnose``: prints the gaps and their causes, draws the picture; returns
    the exit status (0; 1 when the file cannot be read or drawn; 2 without matplotlib)."""
    path: Path = args.timeline
    try:
        timeline = Timeline.from_json(path.read_text(encoding="utf-8"))
        gaps = find_gaps(timeline, frame_ms=args.frame_ms)
    except (OSError, ValueError) as exc:
        print(f"voicecore diagnose: cannot read {path}: {exc}", file=sys.stderr)
        return 1
    print(summarize(timeline, gaps))
    if args.no_plot or len(timeline) == 0:
        return 0
    output: Path = args.output if args.output is not None else path.with_suffix(".png")
    origin = float(timeline.events()[0]["t"])
    try:
        plot(
            timeline,
            output,
            gaps=gaps,
            title=f"{path.name}: {len(gaps)} gap(s)",
            since=None if args.since is None else origin + args.since,
            until=None if args.until is None else origin + args.until,
        )
    except ModuleNotFoundError:
        print(f"voicecore diagnose: {MATPLOTLIB_MISSING}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"voicecore diagnose: cannot write {output}: {exc}", file=sys.stderr)
        return 1
    print(f"picture: {output}")
    return 0
