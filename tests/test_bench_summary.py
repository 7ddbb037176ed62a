"""harness.summary: one table of the system benchmarks from pytest-benchmark JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.summary import format_table, lines_of, main

REPORT = {
    "benchmarks": [
        {
            "fullname": "benches/system/bench_load.py::test_sessions_per_core[instant]",
            "extra_info": {
                "rows": [{"sessions": 200, "underruns": 0}, {"sessions": 400, "underruns": 3}],
                "target_met": True,
            },
            "stats": {"median": 0.5},
        },
        {
            "fullname": "benches/system/bench_soak.py::test_soak",
            "extra_info": {},
            "stats": {"median": 0.0125},
        },
        {"fullname": "benches/bench_ring.py::test_push_pop", "extra_info": {"ratio": 3.4}},
    ]
}


def test_lines_cover_rows_figures_and_bare_timings_of_system_suites_only() -> None:
    assert lines_of(REPORT) == [
        ("load", "test_sessions_per_core[instant]", "sessions=200, underruns=0"),
        ("load", "test_sessions_per_core[instant]", "sessions=400, underruns=3"),
        ("load", "test_sessions_per_core[instant]", "target_met=True"),
        ("soak", "test_soak", "median=12.5 ms"),
    ]
    assert lines_of(REPORT, "benches/bench_ring") == [("ring", "test_push_pop", "ratio=3.4")]
    with pytest.raises(ValueError, match="not a pytest-benchmark report"):
        lines_of({"results": []})


def test_table_text_and_markdown() -> None:
    lines = lines_of(REPORT)
    text = format_table(lines).splitlines()
    assert text[0].split() == ["suite", "benchmark", "figures"]
    assert text[1].startswith("load   test_sessions_per_core[instant]  sessions=200")
    markdown = format_table([("a", "b|c", "x=1")], markdown=True).splitlines()
    assert markdown == [
        "| suite | benchmark | figures |",
        "| --- | --- | --- |",
        r"| a | b\|c | x=1 |",
    ]


def test_main_prints_the_table_and_reports_unreadable_or_empty_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "bench.json"
    report.write_text(json.dumps(REPORT), encoding="utf-8")
    assert main([str(report)]) == 0
    assert "underruns=3" in capsys.readouterr().out
    assert main([str(report), "--suite", "benches/nothing"]) == 2
    assert main([str(tmp_path / "missing.json")]) == 1
    assert "cannot read" in capsys.readouterr().err
