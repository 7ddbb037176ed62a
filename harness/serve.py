"""``python -m harness.serve [voicecore serve flags]``: the real voice server, with a
benchmark's faults or pacing baseline injected from the harness side.

The product knows nothing of benchmarks: this launcher builds the same server through
``voicecore.server.cli.serve_command`` and hands it, from outside, what the benchmarks ask
for in the environment:

* ``VOICECORE_FAULTS`` (``harness.faults``): in-process faults (GIL hogs, GC storms, event
  loop blocks) run as tasks alongside the server;
* ``VOICECORE_BENCH_PACER=trio`` (``harness.trio_pacer``): the pure-Trio pacer baseline in
  place of the Rust ``FramePacer``.
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
    args = parser.parse_args(argv)
    tasks: list[ServerTask] = []
    spec = faults.spec_from_env()
    if spec is not None:
        tasks.append(functools.partial(faults.run_faults, spec))
    return serve_command(args, make_pacer=trio_pacer.pacer_from_env, tasks=tasks)


if __name__ == "__main__":
    sys.exit(main())
