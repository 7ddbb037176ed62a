"""``python -m harness.serve [voicecore serve flags]``: the real voice server, with a
benchmark's faults or pacing baseline injected from the harness side.

The product knows nothing of benchmarks: this launcher builds the same server through
``voicecore.server.cli.serve_command`` and hands it, from outside, what the benchmarks ask
for in the environment:

* ``VOICECORE_FAULTS`` (``harness.faults``): in-process faults (GIL hogs, GC storms, event
  loop blocks) run as tasks alongside the server;
* ``VOICECORE_BENCH_PACER=trio`` (``harness.trio_pacer``): the pure-Trio pacer baseline in
  place of the Rust ``FramePacer``.

With ``--workers N`` (N > 1) this process is only the supervisor: the workers it starts run
``python -m voicecore serve`` with the same flags but without the injected faults or pacer.
"""

from __future__ import annotations

import argparse
import functools
import sys

from harness import faults, trio_pacer
from voicecore.server.cli import ServerTask, add_serve_arguments, serve_command


def main(argv: list[str] | None = None) -> int:
    """Parses ``voicecore serve``'s flags and runs the server with the injected faults and
    pacer; returns its exit status."""
    parser = argparse.ArgumentParser(prog="python -m harness.serve", description=__doc__)
    add_serve_arguments(parser)
    raw = sys.argv[1:] if argv is None else argv
    args = parser.parse_args(raw)
    tasks: list[ServerTask] = []
    spec = faults.spec_from_env()
    if spec is not None:
        tasks.append(functools.partial(faults.run_faults, spec))
    return serve_command(args, make_pacer=trio_pacer.pacer_from_env, tasks=tasks, argv=raw)


if __name__ == "__main__":
    sys.exit(main())
