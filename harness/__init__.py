"""The test and benchmark harness: everything tests and benchmarks share, and nothing the
product imports.

Its tools target 127.0.0.1 only and bound every process they start in count and time; most
run as ``python -m harness.<tool>``. By job:

* running the server: ``launcher`` (the one way to start it: a subprocess on a free port,
  its own process group, bounded start and stop, its log kept), ``serve`` (``python -m
  harness.serve``: the real server with ``faults`` or ``trio_pacer`` injected from outside
  the product);
* what is injected: ``faults`` (GC storms, GIL hogs, loop blocks inside the server;
  SIGSTOP freezes and cgroup CPU quotas from outside), ``trio_pacer`` (the pure-Trio pacing
  baseline that replaces the Rust pacer);
* the client side: ``client`` (the protocol messages, and the one-session conversing client),
  ``player`` (the page's playout buffer, which counts underruns), ``speakerphone`` (a
  client whose mic hears what it plays: the echo, sample by sample), ``speech`` (the real
  speech corpus beside the checkout, the synthetic voice, espeak-ng sentences and coughs),
  ``openai_server`` (fake OpenAI-compatible servers: scripted for the tests, streaming for
  the benchmark);
* the system benchmarks: ``loadgen`` (sessions per core), ``impair`` (network impairment
  through a loopback proxy), ``stalls`` (faults, Rust pacer against the Trio baseline),
  ``soak`` (memory and descriptors over many turns), ``burst`` (bursts of callers and
  hostile connections: admission), ``summary`` (one table of their figures, ``make
  bench-system``);
* baselines: ``prometheus_baseline`` (the hand-written Prometheus writer voicecore used
  before ``prometheus_client``).
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
"""The checkout (``harness`` is importable from it: pytest's ``pythonpath``)."""


def subprocess_env(
    extra: Mapping[str, str] | None = None, *, base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The environment for a child process that runs ``python -m harness.<tool>``: ``base``
    (default: this process's), with the checkout on ``PYTHONPATH``, plus ``extra``."""
    base = os.environ if base is None else base
    path = base.get("PYTHONPATH")
    return {
        **base,
        "PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}",
        **(extra or {}),
    }
