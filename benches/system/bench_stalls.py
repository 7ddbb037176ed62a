"""Stalls and throttling: underruns and client gap lengths against stall length and cushion,
voicecore (Rust pacer thread) beside a pure-Python ``trio.sleep_until`` pacing baseline under
the same faults, in the same run.

Faults (``harness.faults``): the event loop blocked 50/100/300 ms, a GC storm and a
GIL-hogging thread (inside the server, through the bench-only ``VOICECORE_FAULTS``), the whole
process frozen 50/100/300 ms (SIGSTOP/SIGCONT bursts: what a CPU quota throttle does), and a
real cgroup CPU quota (30 % of one CPU) where the machine lets us write it; every 2 s, at the
default cushion (240 ms) and at 120 ms (the GC storm and GIL hog at 120 ms only). The
baseline is the same ``voicecore serve`` with ``VOICECORE_BENCH_PACER=trio``: the Rust
pacer's release logic run by a Trio task on the event loop (``harness.trio_pacer``),
writing to the same socket sink, so the same client converses with both and the only
difference is who runs the pacer. Underruns are per minute of agent audio received;
``pacer_late_*_ms`` is the server's worst per-session pacer lateness. Ratios: voicecore /
baseline (lower is better; None where the baseline had 0). One client per run on a shared
2-core machine: figures are noisy and indicative.

Quick mode (CI): the loop blocked 100 ms, both servers, 8 s each; asserts only that the
harness worked.
"""

from __future__ import annotations

import json
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from harness.stalls import SERVERS, measure_stall, stall_matrix

REPORTS = Path(__file__).resolve().parents[2] / "reports" / "system"


@pytest.mark.timeout(3600)
def test_stalls_voicecore_vs_python_pacing(benchmark: Any, report: Any, quick: bool) -> None:
    duration_s = 8.0 if quick else 20.0
    runs = stall_matrix(quick=quick)
    rows: list[dict[str, Any]] = []

    def run() -> None:
        rows.clear()
        for stall, cushion in runs:
            for server in SERVERS:
                rows.append(
                    trio.run(
                        partial(
                            measure_stall, server, stall, cushion_ms=cushion, duration_s=duration_s
                        )
                    )
                )

    benchmark.pedantic(run, rounds=1, iterations=1)
    for voicecore, baseline in zip(rows[::2], rows[1::2], strict=True):
        for row in (voicecore, baseline):
            report.row(**row)
        key = f"{voicecore['fault']} @{voicecore['cushion_ms']}ms"
        base_rate, base_gap = baseline["underruns_per_min"], baseline["gap_max_ms"]
        report.figure(
            f"underruns_ratio[{key}]",
            round(voicecore["underruns_per_min"] / base_rate, 2) if base_rate else None,
        )
        report.figure(
            f"gap_max_ratio[{key}]",
            round(voicecore["gap_max_ms"] / base_gap, 2) if base_gap else None,
        )
        base_late = baseline.get("pacer_late_max_ms")
        report.figure(
            f"pacer_late_max_ratio[{key}]",
            round(voicecore.get("pacer_late_max_ms", 0.0) / base_late, 3) if base_late else None,
        )
    REPORTS.mkdir(parents=True, exist_ok=True)
    path = REPORTS / ("stalls-quick.json" if quick else "stalls.json")
    path.write_text(json.dumps({"duration_s": duration_s, "rows": rows}, indent=2))
    # The harness worked: both servers streamed agent audio to the client under the fault.
    assert len(rows) == 2 * len(runs)
    assert all(r["agent_audio_s"] > 0 and r["replies"] > 0 for r in rows), rows
    assert path.is_file()
