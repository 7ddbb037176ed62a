"""Fixtures of the browser end-to-end tests: the real server, headless Chromium, mic WAVs.

* ``server``: ``voicecore serve`` as a subprocess on a free loopback port with the offline
  pipeline (its defaults), shared by the whole run; ``servers.get(VOICECORE_...=...)``
  starts one with other settings. A failed test prints their logs and the page's.
* ``open_demo``: launches Debian's Chromium (``/usr/bin/chromium``, never a downloaded
  one) with a fake microphone that plays a WAV the test built, opens the demo page and
  returns a :class:`~browser_session.DemoSession`. Chromium's fake capture device reads its
  file once per browser (``%noloop``: after the WAV, silence), so each test builds its own
  WAV and gets its own browser.
* ``utterances``: the speech corpus (``../shared/data/speech``) by file name, to build mic
  WAVs with (:class:`~audio_analysis.MicScript`).
* ``results``: figures for ``reports/browser/results.json`` (written at the end of the run,
  and printed in the run's summary).

Every test here is marked ``browser``; without Chromium or Playwright they skip and say how
to install them (``make test`` does: apt-get for Chromium, pip for Playwright).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.launcher import ServerProcess

from .audio_analysis import MicScript, Spoken
from .browser_session import DemoSession
from .figures import Results
from .servers import Servers

REPO = Path(__file__).resolve().parents[2]
REPORT_DIR = REPO / "reports" / "browser"
CHROMIUM = os.environ.get("VOICECORE_CHROMIUM", "/usr/bin/chromium")

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-ui-for-media-stream",
    "--use-fake-device-for-media-stream",
    "--disable-background-networking",
    # A page in the background would have its timers throttled; these tests time things.
    "--disable-background-timer-throttling",
    "--disable-renderer-backgrounding",
]


@pytest.fixture(scope="session")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Servers]:
    """The run's ``voicecore serve`` processes (see :class:`Servers`)."""
    _require_browser_tools()
    started = Servers(tmp_path_factory.mktemp("server"))
    try:
        yield started
    finally:
        if started.running:
            _RESULTS.record("servers", **started.diagnostics())
        started.stop_all()


@pytest.fixture
def server(servers: Servers) -> ServerProcess:
    """``voicecore serve`` with the offline pipeline and its default settings."""
    return servers.get()


def _require_browser_tools() -> None:
    if not Path(CHROMIUM).exists():
        pytest.skip(
            f"Chromium not found at {CHROMIUM}: install it with `apt-get install -y chromium` "
            "(`make test` does), or point VOICECORE_CHROMIUM at it"
        )
    pytest.importorskip(
        "playwright.sync_api", reason="Playwright for Python missing: pip install playwright"
    )


@pytest.fixture(scope="session")
def playwright() -> Iterator[Any]:
    """One Playwright driver for the run (browsers are launched per test)."""
    _require_browser_tools()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        yield driver


@pytest.fixture
def open_demo(
    playwright: Any, server: ServerProcess, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[Callable[..., DemoSession]]:
    """Opens the demo page in a new headless Chromium whose mic plays the given script;
    ``launch(script, server=..., query=...)`` uses another server than the default one, or
    passes URL parameters to the page."""
    browsers: list[Any] = []
    sessions: list[DemoSession] = []
    default_server = server

    def launch(
        script: MicScript, server: ServerProcess = default_server, query: str = ""
    ) -> DemoSession:
        wav = script.write(tmp_path / f"mic-{len(browsers)}.wav")
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=[*CHROMIUM_ARGS, f"--use-file-for-fake-audio-capture={wav}%noloop"],
        )
        browsers.append(browser)
        session = DemoSession(browser.new_page(viewport={"width": 1280, "height": 900}), server)
        sessions.append(session)
        session.open(query)
        return session

    yield launch
    failed = getattr(request.node, "rep_call", None)
    if failed is not None and failed.failed:
        for session in sessions:
            print(f"--- page console ---\n{session.console_text()}")
            print(f"--- server messages ---\n{session.message_log()}")
            print(f"--- server log ---\n{session.server.log_tail()}")
    for browser in browsers:
        browser.close()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    """Keeps each phase's report on the item, so fixtures can print logs after a failure."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def utterances(speech: list[Spoken]) -> dict[str, Spoken]:
    """The speech corpus by file name."""
    return {u.name: u for u in speech}


_RESULTS = Results()
"""The figures of this run (module-level: the summary and results.json hooks read them)."""


@pytest.fixture(scope="session")
def results() -> Results:
    """The run's figures (written to reports/browser/results.json when the run ends)."""
    return _RESULTS


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Writes the figures, once every fixture (servers included) has been torn down."""
    if _RESULTS.figures:
        REPORT_DIR.mkdir(parents=True, exist_ok=True)
        (REPORT_DIR / "results.json").write_text(
            json.dumps(_RESULTS.figures, indent=2, sort_keys=True) + "\n"
        )


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Prints the browser tests' figures at the end of the run, passed or failed."""
    if _RESULTS.figures:
        terminalreporter.section("browser end-to-end figures (reports/browser/results.json)")
        for line in _RESULTS.summary_lines():
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def report_dir() -> Path:
    """reports/browser, created on first use (screenshots and results go there)."""
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    return REPORT_DIR
