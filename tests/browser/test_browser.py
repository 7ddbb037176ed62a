"""Browser end-to-end: the demo page in headless Chromium against ``voicecore serve``.

The mic is Chromium's fake capture device playing a WAV of real speech the test built; the
server runs its default offline pipeline (VAD, PocketSphinx, the rule-based responder,
espeak-ng). What the page played is recorded by the client's tap worklet and compared,
sample by sample, with the agent audio the server sent (captured from the WebSocket by
Playwright), so a gap is silence the agent's audio did not contain (``audio_analysis``).

Figures (underruns per scenario, barge-in latency) are printed and written to
``reports/browser/results.json``; the page after a turn is saved as
``reports/browser/demo-page.png``.
"""

from __future__ import annotations

import base64
import functools
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from harness.speech import Utterance
from voicecore import SessionConfig

from .audio_analysis import (
    FADE_MS,
    QUIET_LSB,
    MicScript,
    ReplyPlayback,
    Spoken,
    align_reply,
    locate,
    onset,
    percentile,
    resample,
    to_int16,
)
from .browser_session import DemoSession, Recording, page_query
from .figures import Results
from .servers import Servers

pytestmark = pytest.mark.browser

WAV_RATE = 48_000
#: The mic opens (and the WAV starts) before the server is ready, which takes it about 1.5 s
#: (it builds the session's VAD and STT); speech before that would be lost.
LEAD_IN_S = 3.0
TURN_TIMEOUT_S = 30.0
#: Issue 5's barge-in target at p95 (ms); the cushion costs none (a barge-in clears it).
BARGE_IN_TARGET_MS = 100.0

OpenDemo = Callable[..., DemoSession]


def _question(utterances: dict[str, Spoken], name: str, tail_s: float) -> MicScript:
    """Lead-in silence, one question, then ``tail_s`` of silence."""
    return MicScript(WAV_RATE).silence(LEAD_IN_S).speech(utterances[name]).silence(tail_s)


def _connect(demo: DemoSession) -> dict[str, Any]:
    """Connects the page; fails clearly if the server took so long to be ready that the
    mic's first words (``LEAD_IN_S`` into the WAV) may have gone unheard."""
    ready = demo.connect()
    assert demo.connect_s < LEAD_IN_S - 0.2, (
        f"the session was ready {demo.connect_s:.2f} s after the mic started, too late for "
        f"speech that starts {LEAD_IN_S} s in"
    )
    return ready


def _one_turn(demo: DemoSession) -> tuple[dict[str, Any], Recording, ReplyPlayback]:
    """Waits for the turn to finish playing; returns its final transcript, the page's
    recording and how the reply played (its summary with the player's figures)."""
    final = demo.wait_for(
        lambda m: m["type"] == "transcript" and m["final"], TURN_TIMEOUT_S, "final transcript"
    )
    demo.wait_for_type("agent_done", TURN_TIMEOUT_S)
    demo.wait_until_played()
    recording = demo.stop_recording()
    (reply,) = demo.replies()
    assert reply.ended_by == "agent_done"
    return final, recording, align_reply(recording.output, reply.audio, recording.rate)


def _figures(demo: DemoSession, playback: ReplyPlayback) -> dict[str, Any]:
    """What a gapless scenario reports: the tap's comparison, the player's own counters, the
    buffer levels the page reported during the reply, and how regularly the audio came."""
    page = demo.page_stats()
    player = page.get("playout") or {}
    (reply,) = demo.replies()
    return {
        **playback.summary(),
        "player_underruns": player.get("underruns"),
        "player_underrun_ms": round(player.get("underrunMs", 0.0), 2),
        **demo.buffered_during(reply),
        # Where a gap came from: audio that arrived late (a long wait between two agent audio
        # frames, in the page's socket worker and as Playwright saw the socket) points at the
        # server or the network; a gap although the audio came on time points at the page.
        "max_frame_gap_ms_worker": round(page.get("maxArrivalGapMs") or 0.0, 1),
        "max_frame_gap_ms_playwright": round(reply.max_frame_gap_ms, 1),
        "page_underrun_log": page.get("underrunLog", []),
    }


def second_chance(test: Callable[..., None]) -> Callable[..., None]:
    """Runs a gap-asserting scenario a second time if the first attempt fails.

    A 2-core CI machine sometimes delivers a frame late enough to empty the cushion (the
    figures then show the audio arriving late at the page's socket worker). One retry keeps
    such noise from failing CI, while a real regression, which fails every time, still
    fails. The first attempt's failure is not hidden: it is recorded in the results.
    """

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        try:
            test(*args, **kwargs)
        except AssertionError as first:
            kwargs["results"].record(f"{test.__name__}: first attempt failed", error=str(first))
            test(*args, **kwargs)

    return run


def _assert_played_whole(playback: ReplyPlayback) -> None:
    """The whole reply played, every sample unchanged and in order."""
    assert playback.found, "the reply's audio never appeared in the page's output"
    assert playback.mismatch < 0, f"the output differs from the reply at {playback.mismatch}"
    assert playback.complete, f"{playback.played} of {playback.received} samples played"


def _assert_gapless(playback: ReplyPlayback, figures: dict[str, Any]) -> None:
    """The whole reply played with no silence inserted anywhere, by the tap's comparison
    and by the player's own underrun counter (``figures`` from :func:`_figures`)."""
    _assert_played_whole(playback)
    why = (
        f"the longest wait between two audio frames was {figures['max_frame_gap_ms_worker']} ms "
        f"at the page's socket worker, the buffer held {figures.get('buffered_ms_min')} ms at "
        "its lowest (a wait longer than the buffer means the audio came late)"
    )
    assert playback.gaps == (), f"silence inserted inside the reply: {playback.gaps}; {why}"
    assert figures["player_underruns"] == 0, f"the player counted underruns; {why}"


@second_chance
def test_a_spoken_question_gets_a_transcript_and_a_reply_that_plays(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results, report_dir: Path
) -> None:
    """Issue 5's first scenario, and the screenshot of the page after the turn."""
    demo = open_demo(_question(utterances, "goforward.wav", tail_s=1.0))
    ready = _connect(demo)
    final, recording, playback = _one_turn(demo)

    agent_text = " ".join(m["text"] for m in demo.messages("agent_text")).strip()
    played = recording.output[playback.first : playback.end].astype(np.float64)
    level_dbfs = 20 * np.log10(np.sqrt(np.mean(played**2)) / 32768 + 1e-12)
    screenshot = report_dir / "demo-page.png"
    demo.page.screenshot(path=str(screenshot))
    metrics = demo.messages("metrics")
    figures = _figures(demo, playback)
    results.record(
        "spoken_turn",
        transcript=final["text"],
        agent_text=agent_text,
        output_rate=ready["output_rate"],
        connect_to_ready_s=round(demo.connect_s, 2),
        reply_level_dbfs=round(level_dbfs, 1),
        server_metrics={k: v for k, v in (metrics or [{}])[0].items() if k.endswith("_ms")},
        screenshot=str(screenshot.relative_to(report_dir.parents[1])),
        **figures,
    )

    assert final["text"].strip(), "the final transcript is empty"
    assert agent_text, "no agent text"
    assert level_dbfs > -40, f"the reply played at {level_dbfs:.1f} dBFS: silence"
    _assert_gapless(playback, figures)
    # The page shows the turn: what the user said and what the agent answered.
    page_text = demo.page.inner_text("#turns")
    assert final["text"].split()[0] in page_text
    assert agent_text.split()[0] in page_text
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("mode", ["shared", "port"])
@second_chance
def test_no_gap_while_the_pages_main_thread_is_blocked_300_ms_every_second(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results, mode: str
) -> None:
    """The audio path (capture worklet, socket worker, player worklet) never waits for the
    main thread: a busy loop holding it 300 ms of every second, from before the question
    until the reply has played, costs no sample. Both ways the worker feeds the player are
    tested: the SharedArrayBuffer ring (the page is cross-origin isolated) and the
    MessagePort fallback (``?mode=port``)."""
    demo = open_demo(
        _question(utterances, "librivox-0880.wav", tail_s=1.0),
        query="mode=port" if mode == "port" else "",
    )
    _connect(demo)
    assert demo.page_stats()["mode"] == mode
    demo.block_main_thread(block_ms=300, every_ms=1000)
    try:
        _, _, playback = _one_turn(demo)
        blocks = demo.main_thread_blocks()
    finally:
        demo.unblock_main_thread()
    figures = _figures(demo, playback)
    results.record(f"main_thread_blocked_{mode}", main_thread_blocks=blocks, **figures)
    assert blocks >= 5, "the busy loop did not run during the reply"
    _assert_gapless(playback, figures)


def _stall_repeatedly(
    pid: int, stop: threading.Event, stall_s: float, period_s: float
) -> list[tuple[float, float]]:
    """Freezes process ``pid`` (SIGSTOP) for ``stall_s`` every ``period_s`` until ``stop``;
    returns each freeze's start (``time.monotonic()``) and measured length in ms."""
    stalls: list[tuple[float, float]] = []
    while not stop.is_set():
        began = time.monotonic()
        os.kill(pid, signal.SIGSTOP)
        try:
            time.sleep(stall_s)
        finally:
            os.kill(pid, signal.SIGCONT)
        stalls.append((began, (time.monotonic() - began) * 1000))
        stop.wait(period_s - stall_s)
    return stalls


@second_chance
def test_server_freezes_of_100_ms_are_absorbed_by_the_cushion(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results
) -> None:
    """The whole server process (pacer thread included) is frozen for 100 ms every 500 ms
    while the reply plays, as a CPU quota throttle does. The criterion is issue 5's: no
    audible gap (>= 10 ms). The page holds a little under the server's cushion (the figures
    record what it reported before each freeze), so a freeze can leave the player a few
    samples short: such sub-millisecond underruns are counted and reported, not failed."""
    demo = open_demo(_question(utterances, "librivox-0880.wav", tail_s=1.0))
    ready = _connect(demo)
    demo.wait_for_type("agent_text", TURN_TIMEOUT_S)
    while not demo.replies():  # the reply's first audio is on its way
        demo.pump(0.01)
    demo.pump(0.3)  # the cushion is built: freezes from here on test what it absorbs
    stop = threading.Event()
    stalls: list[tuple[float, float]] = []
    freezer = threading.Thread(
        target=lambda: stalls.extend(_stall_repeatedly(demo.server.pid, stop, 0.1, 0.5))
    )
    freezer.start()
    try:
        demo.wait_for_type("agent_done", TURN_TIMEOUT_S)
    finally:
        stop.set()
        freezer.join()
    _, _, playback = _one_turn(demo)
    # The buffer level the page last reported before each freeze: what the cushion held.
    reports = demo.playout_reports()
    before = [
        next((m["buffered_ms"] for at, m in reversed(reports) if at <= began), None)
        for began, _ in stalls
    ]
    results.record(
        "server_stalls",
        cushion_ms=ready["cushion_ms"],
        stalls=len(stalls),
        stall_ms=[round(ms, 1) for _, ms in stalls],
        buffered_ms_reported_before_each_stall=before,
        **_figures(demo, playback),
    )
    assert len(stalls) >= 3, f"only {len(stalls)} freezes during the reply"
    _assert_played_whole(playback)
    assert playback.audible_gaps == (), f"audible gaps inside the reply: {playback.gaps}"


# Barge-in: each question is followed by the next one BARGE_AFTER_S after it ends, while
# the agent is still answering it (the responder's "cannot answer that" replies last several
# seconds).
BARGE_IN_SCRIPT = (
    "librivox-0890.wav",
    "librivox-0880.wav",
    "librivox-0890.wav",
    "librivox-0880.wav",
    "goforward.wav",
)
BARGE_AFTER_S = 4.0


@pytest.mark.parametrize("min_speech_ms", [None, 100], ids=["defaults", "min_speech_100ms"])
def test_barge_in_stops_the_agent_at_the_speaker(
    open_demo: OpenDemo,
    servers: Servers,
    utterances: dict[str, Spoken],
    results: Results,
    min_speech_ms: int | None,
) -> None:
    """Measured with the defaults, where the engine waits for 300 ms of speech
    (``barge_in_min_speech_ms``, at least ``min_speech_ms``) before it interrupts the agent,
    so that a cough does not; and with both guards at 100 ms (three barge-ins), which shows
    what the rest of the path costs (VAD, the server, ``clear``, the player)."""
    names: tuple[str, ...] = BARGE_IN_SCRIPT
    if min_speech_ms is None:
        server, scenario = servers.get(), "barge_in"
        defaults = SessionConfig()
        min_speech_ms = int(max(defaults.min_speech_ms, defaults.barge_in_min_speech_ms))
    else:
        guard = str(min_speech_ms)
        server = servers.get(
            VOICECORE_SESSION_MIN_SPEECH_MS=guard, VOICECORE_SESSION_BARGE_IN_MIN_SPEECH_MS=guard
        )
        scenario = f"barge_in_min_speech_{min_speech_ms}ms"
        names = BARGE_IN_SCRIPT[:4]
    script = MicScript(WAV_RATE).silence(LEAD_IN_S)
    for i, name in enumerate(names):
        script.speech(utterances[name]).silence(BARGE_AFTER_S if i + 1 < len(names) else 1.0)
    demo = open_demo(script, server=server)
    _connect(demo)
    demo.wait_for_type("clear", TURN_TIMEOUT_S + script.seconds, count=len(names) - 1)
    demo.pump(1.0)
    recording = demo.stop_recording()
    rate = recording.rate

    # Where the WAV sits on the page's audio clock: the first question, found in the mic
    # input the page recorded, gives the offset of every later onset.
    # (Searched for only up to where it can be: the same recording comes again later.)
    first = script.segments[0]
    window = recording.input[: round((first.end / WAV_RATE + LEAD_IN_S) * rate)]
    found_at = locate(script.samples[first.start : first.end], window, WAV_RATE, rate)
    offset = found_at - first.start * rate / WAV_RATE

    playbacks = []
    search_from = 0
    for reply in demo.replies():
        playback = align_reply(recording.output, reply.audio, rate, search_from=search_from)
        playbacks.append((reply, playback))
        if playback.found:
            search_from = playback.end

    figures: list[dict[str, Any]] = []
    for segment in script.segments[1:]:
        speech_at = round(segment.onset * rate / WAV_RATE + offset)
        detected = onset(recording.input, rate, speech_at - rate // 5, speech_at + rate // 2)
        playing = [(r, p) for r, p in playbacks if p.found and p.first <= speech_at < p.end]
        figure: dict[str, Any] = {
            "utterance": segment.name,
            "onset_detected_minus_mapped_ms": None
            if detected is None
            else round(recording.ms(detected - speech_at), 1),
        }
        if not playing:
            figure["measured"] = False
            figure["why"] = "the agent was not playing at the onset"
        else:
            ((reply, playback),) = playing
            # The agent is silent once a pause's fade-out (or the clear) has ended: the walk
            # may stop a little inside a fade whose rounding it does not follow sample by
            # sample, so the silence is found in the output itself.
            silent_at = _silence_after(recording.output, playback.end, rate)
            # After the cut, nothing of the interrupted reply may come back: the output stays
            # silent until the next reply starts (or for the rest of the recording).
            later = [p.first for _, p in playbacks if p.found and p.first >= playback.end]
            after_cut = recording.output[silent_at : min(later, default=len(recording.output))]
            figure.update(
                measured=True,
                turn_id=reply.turn_id,
                ended_by=reply.ended_by,
                # A server that pauses the client fades the reply out before its clear: the
                # agent is silent from the fade's end (``playback.end`` either way).
                faded_out=playback.faded_out,
                barge_in_ms=round(recording.ms(silent_at - speech_at), 1),
                played_before_onset_ms=round(recording.ms(speech_at - playback.first), 1),
                silent_after_cut_ms=round(recording.ms(len(after_cut)), 1),
                # Silent but for the fade-out's rounding residue (a few +-1 LSB samples).
                after_cut_peak=int(np.abs(after_cut).max(initial=0)),
                silent_after_cut=int(np.abs(after_cut).max(initial=0)) <= QUIET_LSB,
            )
        figures.append(figure)

    server_barge_in = [m.get("barge_in_ms") for m in demo.messages("metrics")]
    page_barge_ins = demo.barge_ins()
    measured = [f["barge_in_ms"] for f in figures if f.get("measured")]
    summary = {
        "barge_in_min_speech_ms": min_speech_ms,
        "server_capabilities": demo.capabilities,
        "barge_ins": figures,
        # The server's own step (speech confirmed -> clear sent) and the page's own figure
        # (its onset detector -> the agent silent: at the pause the clear confirmed, or at
        # the clear; plus the output latency), for comparison.
        "server_barge_in_ms": [round(b, 2) for b in server_barge_in if b is not None],
        "page_barge_in_ms": [round(b["ms"], 1) for b in page_barge_ins],
        "page_barge_in_via": [b["via"] for b in page_barge_ins],
        "pauses_sent": len(demo.messages("pause")),
        "resumes_sent": len(demo.messages("resume")),
        "page_ducks_ms": [None if d["ms"] is None else round(d["ms"], 1) for d in demo.ducks()],
        "target_p95_ms": BARGE_IN_TARGET_MS,
    }
    if measured:
        summary.update(
            p50_ms=round(percentile(measured, 50), 1),
            p95_ms=round(percentile(measured, 95), 1),
            max_ms=max(measured),
            target_met=percentile(measured, 95) <= BARGE_IN_TARGET_MS,
        )
    results.record(scenario, **summary)

    assert len(measured) >= 2, f"too few barge-ins landed while the agent talked: {figures}"
    # Every interrupted reply was cut by a clear, stayed cut, and none played on past a
    # second of the user's speech (the latency target is reported, not asserted).
    cut = [f for f in figures if f.get("measured")]
    assert all(f["ended_by"] == "clear" for f in cut), figures
    assert all(f["silent_after_cut"] for f in cut), figures
    assert max(measured) < 1000, figures


def _silence_after(output: np.ndarray[Any, np.dtype[np.int16]], end: int, rate: int) -> int:
    """The first sample from ``end`` on (within a fade) after which the output stays silent
    (but for rounding residue) for a fade's length: where the agent fell silent."""
    fade = round(rate * FADE_MS / 1000)
    for at in range(end, end + fade + 1):
        if np.abs(output[at : at + fade]).max(initial=0) <= QUIET_LSB:
            return at
    return end


# Echo: the client's echoLoop test option simulates a speakerphone without echo cancellation.
ECHO_GAIN_DB = -10.0
ECHO_DELAY_MS = 80.0


def _sent_audio(demo: DemoSession) -> np.ndarray[Any, np.dtype[np.float64]]:
    """The mic audio the page sent the server, as floats (full scale 1.0)."""
    chunks = [f.payload for f in demo.frames if f.sent and isinstance(f.payload, bytes)]
    return np.frombuffer(b"".join(chunks), dtype="<i2").astype(np.float64) / 32768


def test_the_echo_loop_sends_the_agents_voice_back_as_a_speakerphone_would(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results
) -> None:
    """What the page sends the server with the echo simulation on is, sample for sample, the
    mic plus the agent's output ``ECHO_DELAY_MS`` later and ``ECHO_GAIN_DB`` down, the
    browser's echo canceller off: the ground the echo-safety tests stand on. What the server
    makes of its own voice coming back (taken for the user, or gated out) is recorded, not
    asserted here."""
    script = _question(utterances, "goforward.wav", tail_s=4.0)
    demo = open_demo(script, query=page_query(echo_loop=(ECHO_GAIN_DB, ECHO_DELAY_MS)))
    _connect(demo)
    assert demo.page_stats()["echoLoop"] == {"gainDb": ECHO_GAIN_DB, "delayMs": ECHO_DELAY_MS}
    demo.wait_for_type("agent_text", TURN_TIMEOUT_S)
    while not demo.replies():  # the reply's first audio is on its way
        demo.pump(0.01)
    demo.pump(1.5)
    recording = demo.stop_recording()
    rate = recording.rate
    sent = _sent_audio(demo)

    # Where the sent stream starts on the recording's clock: the question, found in both.
    question = script.segments[0]
    in_sent = locate(script.samples[question.start : question.end], sent, WAV_RATE, rate)
    piece = to_int16(sent[in_sent : in_sent + rate].astype(np.float32))
    offset = locate(piece, recording.input, rate, rate) - in_sent
    delay = round(ECHO_DELAY_MS / 1000 * rate)
    gain = 10 ** (ECHO_GAIN_DB / 20)
    played = recording.output.astype(np.float64) / 32768
    # Every sent sample whose echo source the recording holds.
    first = max(0, delay - offset)
    last = min(len(sent), len(recording.input) - offset)
    k = np.arange(first, last)
    mic = recording.input[k + offset].astype(np.float64)
    echo = played[k + offset - delay]
    residual_lsb = np.abs(sent[k] - mic - gain * echo) * 32768
    without_echo_lsb = np.abs(sent[k] - mic) * 32768
    audible = echo != 0
    echo_level_dbfs = 20 * np.log10(np.sqrt(np.mean((gain * echo[audible]) ** 2)) + 1e-12)
    results.record(
        "echo_loop",
        gain_db=ECHO_GAIN_DB,
        delay_ms=ECHO_DELAY_MS,
        samples_compared=int(k.size),
        agent_samples_echoed=int(audible.sum()),
        echo_level_dbfs=round(float(echo_level_dbfs), 1),
        max_residual_lsb=round(float(residual_lsb.max()), 2),
        # What the server did with its own voice in the mic (no user speech after the
        # question): a clear or a pause here means it took the echo for the user.
        server_capabilities=demo.capabilities,
        clears=len(demo.messages("clear")),
        pauses=len(demo.messages("pause")),
        resumes=len(demo.messages("resume")),
    )

    assert audible.sum() > rate // 5, "less than 200 ms of the agent's voice was echoed"
    assert residual_lsb.max() <= 3, "the sent audio is not mic + delayed, attenuated output"
    assert without_echo_lsb[audible].max() > 100, "no echo in the sent audio"


@pytest.mark.parametrize("delay_ms", [40.0, 80.0, 150.0])
def test_the_agents_own_voice_in_the_mic_neither_ducks_nor_interrupts_it(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results, delay_ms: float
) -> None:
    """Echo safety: a speakerphone without echo cancellation (the page's echo loop: the
    agent's output back into the mic ``ECHO_GAIN_DB`` down, ``delay_ms`` later) while the
    agent answers at length and the user stays silent: the server must not take its own
    voice for the user's. Zero pauses, zero clears; the reply plays whole."""
    script = _question(utterances, "librivox-0890.wav", tail_s=10.0)
    demo = open_demo(script, query=page_query(echo_loop=(ECHO_GAIN_DB, delay_ms)))
    rate = _connect(demo)["output_rate"]
    demo.wait_for_type("agent_done", TURN_TIMEOUT_S + script.seconds)
    replies = demo.replies()
    results.record(
        f"echo_safety_{delay_ms:g}ms",
        gain_db=ECHO_GAIN_DB,
        delay_ms=delay_ms,
        server_capabilities=demo.capabilities,
        agent_audio_s=round(sum(len(r.audio) for r in replies) / rate, 2),
        pauses=len(demo.messages("pause")),
        resumes=len(demo.messages("resume")),
        clears=len(demo.messages("clear")),
        speech_starts=len(demo.messages("speech_start")),
    )
    assert sum(len(r.audio) for r in replies) / rate > 2.0, "the reply was short"
    assert demo.messages("pause") == [], "the agent's echo ducked it"
    assert demo.messages("clear") == [], "the agent's echo interrupted it"
    assert [r.ended_by for r in replies] == ["agent_done"]


#: A sound over the agent too short to be an interruption: the first 150 ms of an
#: utterance's speech (shorter than the server's ``barge_in_min_speech_ms``, 300 ms).
COUGH_MS = 150.0


def _burst(utterance: Spoken, ms: float) -> Utterance:
    """The first ``ms`` of ``utterance``'s speech, from its onset."""
    at = onset(utterance.samples, utterance.sample_rate) or 0
    n = round(ms / 1000 * utterance.sample_rate)
    samples = utterance.samples[at : at + n]
    return Utterance(f"{utterance.name}[:{ms:g} ms]", samples, utterance.sample_rate, "")


def test_a_short_sound_over_the_agent_pauses_it_and_the_reply_goes_on_whole(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results
) -> None:
    """A cough-length sound while the agent talks: a server that pauses this client
    (``pause`` confirmed in ``ready``) ducks the agent at its onset and, the sound being no
    interruption, resumes it: the reply then plays whole, no sample lost or repeated, the
    silence between the fade-out and the fade-in a hold, not a gap. Skipped with a server
    that does not pause."""
    script = MicScript(WAV_RATE).silence(LEAD_IN_S).speech(utterances["librivox-0890.wav"])
    script.silence(BARGE_AFTER_S).speech(_burst(utterances["librivox-0880.wav"], COUGH_MS))
    script.silence(8.0)
    demo = open_demo(script)
    _connect(demo)
    demo.require_server_pause()
    demo.wait_for_type("agent_done", TURN_TIMEOUT_S + script.seconds)
    demo.wait_until_played()
    recording = demo.stop_recording()
    (reply,) = demo.replies()
    playback = align_reply(
        recording.output, reply.audio, recording.rate, pauses=demo.pauses_in(recording)
    )
    ducks = demo.ducks()
    results.record(
        "short_sound_over_the_agent",
        pauses=len(demo.messages("pause")),
        resumes=len(demo.messages("resume")),
        clears=len(demo.messages("clear")),
        page_ducks=ducks,
        **playback.summary(),
    )

    assert demo.messages("pause"), "the server did not pause the agent"
    assert demo.messages("resume"), "the server did not resume the agent"
    assert reply.ended_by == "agent_done", "the sound cut the reply"
    _assert_played_whole(playback)
    assert playback.gaps == (), f"silence inserted besides the pause: {playback.gaps}"
    assert playback.holds, "the pause does not show in the output"
    assert ducks, "the page measured no pause"


# The player alone: pause and resume in Chromium's audio thread, with no server in the loop.
_PLAYER_PAUSE_JS = """async ([pcm64, rate, mode, pauseAfterMs, holdMs]) => {
  const { PlayoutRing } = await import("/lib/ring.mjs");
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const bytes = Uint8Array.from(atob(pcm64), (c) => c.charCodeAt(0));
  const reply = Float32Array.from(new Int16Array(bytes.buffer), (v) => v / 32768);
  const context = new AudioContext({ sampleRate: rate });
  for (const f of ["player-processor.js", "tap-processor.js"]) {
    await context.audioWorklet.addModule(`/worklets/${f}`);
  }
  const capacity = reply.length + rate;
  const fadeSamples = Math.round(0.005 * rate);
  // Shared: this thread writes the ring as the socket worker does; port: it posts to the
  // player as the worker does.
  const ring = mode === "shared" ? PlayoutRing.allocate(capacity, true) : null;
  const writer = ring ? new PlayoutRing(ring) : null;
  writer?.setFadeSamples(fadeSamples);
  const player = new AudioWorkletNode(context, "voicecore-player", {
    numberOfInputs: 0, numberOfOutputs: 1, outputChannelCount: [1],
    processorOptions: { ring, capacity, startThreshold: 0, fadeSamples, statsMs: 20 },
  });
  const tap = new AudioWorkletNode(context, "voicecore-tap", {
    numberOfInputs: 2, numberOfOutputs: 1, outputChannelCount: [1],
    channelCount: 1, channelCountMode: "explicit",
  });
  player.connect(tap, 0, 0);
  player.connect(context.destination);
  tap.connect(context.destination);
  let stats = null;
  let feed = null;
  if (!writer) {
    const channel = new MessageChannel();
    player.port.postMessage({ type: "port", port: channel.port1 }, [channel.port1]);
    feed = channel.port2;
    feed.onmessage = (e) => (stats = e.data.stats);
  }
  const send = (type, samples) => {
    if (writer) return type === "audio" ? writer.write(samples) : writer[type]();
    feed.postMessage(samples ? { type, samples } : { type }, samples ? [samples.buffer] : []);
  };
  await context.resume();
  tap.port.postMessage({ type: "start", maxSeconds: 30 });
  await sleep(50);
  // Half the reply, the pause, the other half while paused (kept), the resume.
  const half = Math.floor(reply.length / 2);
  send("audio", reply.slice(0, half));
  await sleep(pauseAfterMs);
  send("pause");
  send("audio", reply.slice(half));
  await sleep(holdMs);
  send("resume");
  await sleep((reply.length / rate) * 1000 - pauseAfterMs + 500);
  if (writer) stats = writer.stats();
  const recording = await new Promise((resolve) => {
    tap.port.onmessage = (e) => resolve(e.data);
    tap.port.postMessage({ type: "stop" });
  });
  await context.close();
  const out = new Uint8Array(recording.output.buffer);
  let text = "";
  for (let i = 0; i < out.length; i += 0x8000) {
    text += String.fromCharCode.apply(null, out.subarray(i, i + 0x8000));
  }
  return { output: btoa(text), startFrame: recording.startFrame, stats,
           discontinuities: recording.discontinuities };
}"""


@pytest.mark.parametrize("mode", ["shared", "port"])
def test_the_player_pauses_and_resumes_on_the_exact_sample(
    open_demo: OpenDemo, utterances: dict[str, Spoken], results: Results, mode: str
) -> None:
    """The player worklet in Chromium, fed as the socket worker feeds it (the shared ring's
    header, or its port), paused 400 ms into a reply of real speech with the rest of the
    reply arriving while paused, resumed 300 ms later: the output is the reply with a 5 ms
    fade-out, a hold and a 5 ms fade-in from the exact next sample, nothing lost, repeated or
    inserted; the hold lies between the frames the player reported (``pauseFrame``,
    ``resumeFrame``)."""
    demo = open_demo(MicScript(WAV_RATE).silence(1.0))
    assert demo.page.evaluate("() => crossOriginIsolated"), "the page is not cross-origin isolated"
    reply = resample(utterances["goforward.wav"].samples, 16_000, WAV_RATE)
    pcm64 = base64.b64encode(reply.astype("<i2").tobytes()).decode()
    r = demo.page.evaluate(_PLAYER_PAUSE_JS, [pcm64, WAV_RATE, mode, 400, 300])
    output = to_int16(np.frombuffer(base64.b64decode(r["output"]), dtype=np.float32))
    stats = r["stats"]
    silent_at = stats["pauseFrame"] - r["startFrame"]
    resumed_at = stats["resumeFrame"] - r["startFrame"]
    playback = align_reply(output, reply, WAV_RATE, pauses=((silent_at, resumed_at),))
    results.record(
        f"player_pause_{mode}",
        **playback.summary(),
        pause_frame_in_recording=silent_at,
        resume_frame_in_recording=resumed_at,
        stats={k: stats[k] for k in ("pauses", "resumes", "played", "underruns", "paused")},
    )

    assert r["discontinuities"] == 0, "the render clock jumped: the recording is not contiguous"
    _assert_played_whole(playback)
    assert playback.gaps == (), f"silence inserted besides the pause: {playback.gaps}"
    (hold,) = playback.holds
    # Where quiet speech fades, a few samples round to the same int16 values whatever the
    # gain: the hold's edges are found to within those.
    edge = round(0.0005 * WAV_RATE)
    assert abs(hold.at - silent_at) <= edge, "the hold starts where the player went silent"
    assert abs(hold.at + hold.length - resumed_at) <= edge, "and ends where it resumed"
    assert 250 <= playback.summary()["held_ms"][0] <= 600  # type: ignore[index]
    assert stats["pauses"] == 1
    assert stats["resumes"] == 1
    assert stats["played"] == len(reply), "every sample played exactly once"
    assert stats["underruns"] == 0
    assert not stats["paused"]
