"""Benchmark plumbing: a --quick mode for CI and a reporter for figures and ratios.

Every benchmark measures voicecore beside the baseline a user would pick instead, in the
same run, and reports both the figures and their ratio: in ``benchmark.extra_info`` (so
``--benchmark-json`` carries them) and as a table printed at the end of the session.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

_TABLES: list[tuple[str, list[dict[str, Any]]]] = []


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--quick",
        action="store_true",
        default=False,
        help="short mode (CI): smaller inputs and shorter runs; figures are indicative only",
    )


@pytest.fixture(scope="session")
def quick(request: pytest.FixtureRequest) -> bool:
    """True in the short CI mode."""
    return bool(request.config.getoption("--quick"))


class Report:
    """Collects one benchmark's rows; each row is a dict of named figures."""

    def __init__(self, title: str, extra_info: dict[str, Any]) -> None:
        self.title = title
        self.rows: list[dict[str, Any]] = []
        self._extra_info = extra_info

    def row(self, **figures: Any) -> None:
        """Adds a row to the printed table and to the benchmark's extra_info."""
        self.rows.append(figures)
        self._extra_info.setdefault("rows", []).append(figures)

    def figure(self, name: str, value: Any) -> None:
        """Records a single named figure (a ratio, a target met or missed) in extra_info."""
        self._extra_info[name] = value


@pytest.fixture
def report(request: pytest.FixtureRequest, benchmark: Any) -> Iterator[Report]:
    """A Report titled after the benchmark; printed in the terminal summary."""
    rep = Report(request.node.name, benchmark.extra_info)
    yield rep
    if rep.rows:
        _TABLES.append((rep.title, rep.rows))


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    for title, rows in _TABLES:
        columns = list(dict.fromkeys(key for row in rows for key in row))
        cells = [[_fmt(row.get(col, "")) for col in columns] for row in rows]
        widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(columns)]
        terminalreporter.write_sep("-", title)
        terminalreporter.write_line(
            "  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))
        )
        for r in cells:
            terminalreporter.write_line(
                "  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True))
            )
