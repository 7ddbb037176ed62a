"""One summary table of the system benchmarks, from pytest-benchmark's JSON report.

``make bench-system`` runs ``pytest benches/system --benchmark-json=reports/bench-system.json``
and then ``python -m harness.summary reports/bench-system.json``, which prints every
suite's figures (what each benchmark put in ``extra_info``: its table rows and its single
figures such as ratios and targets) as one table: a line per row, suite and benchmark first.
``--markdown`` prints it as a Markdown table (for the README or a CI summary).

Usage: ``python -m harness.summary REPORT.json [--markdown] [--suite PREFIX]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["Line", "format_table", "lines_of", "main"]

Line = tuple[str, str, str]
"""One line of the summary: (suite, benchmark, figures as ``name=value`` pairs)."""


def _value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _figures(figures: dict[str, Any]) -> str:
    return ", ".join(f"{name}={_value(value)}" for name, value in figures.items())


def lines_of(report: dict[str, Any], suite_prefix: str = "benches/system/") -> list[Line]:
    """The summary lines of a pytest-benchmark JSON report (``--benchmark-json``).

    Each benchmark whose ``fullname`` starts with ``suite_prefix`` gives one line per row it
    reported (``extra_info["rows"]``) and one line with its other figures, if any; a
    benchmark without figures gives one line with its median time. The suite is the file's
    name without ``bench_`` and ``.py``.

    Raises:
        ValueError: ``report`` is not a pytest-benchmark report (no ``benchmarks`` list).
    """
    benchmarks = report.get("benchmarks")
    if not isinstance(benchmarks, list):
        raise ValueError("not a pytest-benchmark report: no 'benchmarks' list")
    lines: list[Line] = []
    for bench in benchmarks:
        fullname = str(bench.get("fullname", bench.get("name", "?")))
        if not fullname.startswith(suite_prefix):
            continue
        path, _, name = fullname.partition("::")
        suite = Path(path).stem.removeprefix("bench_")
        extra = dict(bench.get("extra_info") or {})
        rows = extra.pop("rows", [])
        for row in rows if isinstance(rows, list) else []:
            lines.append((suite, name, _figures(row) if isinstance(row, dict) else str(row)))
        if extra:
            lines.append((suite, name, _figures(extra)))
        if not rows and not extra:
            median = (bench.get("stats") or {}).get("median")
            timing = f"median={_value(median * 1000)} ms" if median is not None else "-"
            lines.append((suite, name, timing))
    return lines


def format_table(lines: Sequence[Line], *, markdown: bool = False) -> str:
    """``lines`` as a fixed-width text table, or a Markdown table."""
    header: Line = ("suite", "benchmark", "figures")
    if markdown:
        out = ["| " + " | ".join(header) + " |", "| --- | --- | --- |"]
        out += ["| " + " | ".join(c.replace("|", "\\|") for c in line) + " |" for line in lines]
        return "\n".join(out)
    widths = [max(len(header[i]), *(len(line[i]) for line in lines)) for i in range(2)]
    rows = [header, *lines]
    return "\n".join(
        f"{suite.ljust(widths[0])}  {bench.ljust(widths[1])}  {figures}"
        for suite, bench, figures in rows
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Prints the summary of a report; returns 0, 1 if it cannot be read, 2 if empty."""
    parser = argparse.ArgumentParser(
        prog="python -m harness.summary",
        description="Prints one table of the system benchmarks' figures from a "
        "pytest-benchmark JSON report.",
    )
    parser.add_argument("report", type=Path, help="the --benchmark-json file")
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table")
    parser.add_argument(
        "--suite",
        default="benches/system/",
        help="only benchmarks whose full name starts with this [default benches/system/]",
    )
    args = parser.parse_args(argv)
    try:
        lines = lines_of(json.loads(args.report.read_text(encoding="utf-8")), args.suite)
    except (OSError, ValueError) as exc:
        print(f"bench summary: cannot read {args.report}: {exc}", file=sys.stderr)
        return 1
    if not lines:
        print(f"bench summary: no benchmark under {args.suite} in {args.report}", file=sys.stderr)
        return 2
    print(format_table(lines, markdown=args.markdown))
    return 0


if __name__ == "__main__":
    sys.exit(main())
