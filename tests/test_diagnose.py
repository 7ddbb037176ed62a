"""voicecore.diagnostics' analysis, drawing and recorder: replies and gaps found in a timeline
and lined up with their causes, the text summary, the picture, the recorder behind ``serve
--timeline``, and ``voicecore diagnose``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from voicecore.diagnostics import (
    MATPLOTLIB_MISSING,
    Reply,
    Timeline,
    TimelineRecorder,
    find_gaps,
    find_replies,
    plot,
    summarize,
    window,
)
from voicecore.server.cli import main


def reply(
    timeline: Timeline,
    start: float,
    end: float | None,
    *,
    session: str = "s1",
    turn_id: int = 1,
    cancelled: bool = False,
) -> None:
    """A reply audible from ``start`` until ``end`` (played out, or cut when ``cancelled``;
    ``None``: still playing when the timeline was written)."""
    timeline.record_at(start, "agent_audible", session=session, turn_id=turn_id)
    if end is not None:
        kind = "turn_cancelled" if cancelled else "turn_end"
        timeline.record_at(end, kind, session=session, turn_id=turn_id)


def cushion(timeline: Timeline, start: float, stop: float, level: Any, **fields: Any) -> None:
    """Playout reports every 250 ms in [start, stop); ``level(t)`` gives ``buffered_ms``."""
    t = start
    while t < stop - 1e-9:
        timeline.record_at(t, "client_cushion", buffered_ms=level(t), **fields)
        t += 0.25


def cushion_dry_at(t: float) -> bool:
    """Where ``stalled_reply``'s client had nothing buffered in the middle of the reply."""
    return 3.25 <= t < 3.5 or 4.5 <= t < 4.75


def stalled_reply() -> Timeline:
    """Session s1's reply 1, audible from 1 s to 5 s. A 400 ms GC pause at 2.9 s starves the
    pacer's queue (no frame is late: the pacer had nothing to release) and the client's
    cushion is empty at 3.25 s; the whole process frozen 4.0-4.3 s: a frame released 300 ms
    late, the event loop woke 300 ms late, and the cushion is empty at 4.5 s. A frame 12 ms
    late at 2 s is under the release gap threshold; a loop lag far away at 1.5 s; the
    cushion is empty before the reply filled it and after it ended (not gaps)."""
    timeline = Timeline()
    timeline.record_at(0.9, "turn_start", session="s1", turn_id=1)
    reply(timeline, 1.0, 5.0)
    cushion(
        timeline,
        1.0,
        6.0,
        lambda t: 0.0 if t < 1.2 or t >= 5.2 or cushion_dry_at(t) else 120.0,
        session="s1",
    )
    timeline.record_at(1.5, "loop_lag", lag_ms=8.0)
    timeline.record_at(2.0, "frame_late", lateness_ms=12.0, session="s1", turn_id=1)
    timeline.record_at(2.9, "gc_pause", duration_ms=400.0, generation=2)
    timeline.record_at(4.3, "frame_late", lateness_ms=300.0, session="s1", turn_id=1)
    timeline.record_at(4.31, "loop_lag", lag_ms=300.0)
    return timeline


def test_replies_run_from_audible_to_their_end() -> None:
    timeline = Timeline()
    reply(timeline, 1.0, 2.0, cancelled=True)  # a barge-in
    timeline.record_at(2.2, "turn_cancelled", session="s1", turn_id=2)  # cut before audible
    reply(timeline, 2.5, 3.5, turn_id=3)
    reply(timeline, 1.5, None, session="s2")  # still playing when the timeline was written
    timeline.record_at(0.5, "turn_end", session="s3", turn_id=9)  # its audible was evicted
    assert find_replies(timeline) == [
        Reply("s1", 1, 1.0, 2.0, cancelled=True),
        Reply("s2", 1, 1.5, None),
        Reply("s1", 3, 2.5, 3.5),
    ]
    assert Reply("s2", 1, 1.5, None).playing_at(100.0)
    assert not Reply("s1", 3, 2.5, 3.5).playing_at(3.5)


def test_a_gc_pause_under_a_cushion_gap_and_a_freeze_under_a_release_gap() -> None:
    gaps = find_gaps(stalled_reply())
    assert [(g.kind, g.stream) for g in gaps] == [
        ("cushion", "s1"),
        ("release", "s1 turn 1"),
        ("cushion", "s1"),
    ]
    starved, frozen, drained = gaps
    assert (starved.start, starved.end) == pytest.approx((3.25, 3.5))
    assert [c["kind"] for c in starved.causes] == ["gc_pause"]  # the freeze is too far
    assert (frozen.start, frozen.end) == pytest.approx((4.0, 4.3))
    assert frozen.duration_ms == pytest.approx(300.0)
    assert frozen.detail == "no frame for 320 ms (one released 300 ms late)"
    for gap in (frozen, drained):
        assert [(c["kind"], c["t"]) for c in gap.causes] == [
            ("frame_late", 4.3),  # the 12 ms late frame is no cause
            ("loop_lag", 4.31),
        ]
    assert (drained.start, drained.end) == pytest.approx((4.5, 4.75))


def test_the_release_gap_threshold_is_gap_factor_frames_without_one() -> None:
    timeline = Timeline()
    # 20 + 30 ms without a frame is 2.5 frames, the default limit: not yet a gap
    timeline.record_at(1.0, "frame_late", lateness_ms=30.0, session="s1", turn_id=1)
    timeline.record_at(2.0, "frame_late", lateness_ms=31.0, session="s1", turn_id=1)
    (gap,) = find_gaps(timeline)
    assert (gap.start, gap.end) == pytest.approx((1.969, 2.0))
    assert len(find_gaps(timeline, gap_factor=2.0)) == 2
    assert find_gaps(timeline, frame_ms=40.0) == []


def test_a_reply_with_a_full_cushion_and_frames_barely_late_has_no_gap() -> None:
    timeline = Timeline()
    reply(timeline, 1.0, 4.0)
    cushion(timeline, 1.0, 4.0, lambda t: 110.0, session="s1")
    timeline.record_at(2.0, "loop_lag", lag_ms=40.0)  # absorbed by the cushion
    timeline.record_at(2.5, "frame_late", lateness_ms=8.0, session="s1", turn_id=1)
    assert find_gaps(timeline) == []


def test_an_empty_cushion_outside_a_filled_reply_is_not_a_gap() -> None:
    timeline = Timeline()
    reply(timeline, 1.0, 2.0, cancelled=True)  # a barge-in: the client drops its cushion
    reply(timeline, 2.5, 3.5, turn_id=2)
    reply(timeline, 0.0, 4.0, session="s2")  # another session's reply covers everything
    cushion(timeline, 0.0, 4.0, lambda t: 100.0 if 1.2 <= t < 2.0 else 0.0, session="s1")
    assert find_gaps(timeline) == []


def test_a_reply_without_an_end_is_still_playing() -> None:
    timeline = Timeline()
    reply(timeline, 1.0, None)
    cushion(timeline, 1.0, 3.0, lambda t: 0.0 if t >= 2.5 else 100.0, session="s1")
    (gap,) = find_gaps(timeline)
    assert (gap.kind, gap.start, gap.end) == ("cushion", 2.5, 2.75)
    assert gap.detail == "client cushion down to 0 ms for 250 ms"


def test_a_late_frame_is_reported_as_a_frozen_process() -> None:
    timeline = Timeline()
    reply(timeline, 1.0, 3.0)
    timeline.record_at(2.3, "frame_late", lateness_ms=280.0, session="s1", turn_id=1)
    (gap,) = find_gaps(timeline)
    assert [c["lateness_ms"] for c in gap.causes] == [280.0]
    text = summarize(timeline, [gap])
    assert "280 ms late" in text
    assert "frozen" in text


def test_find_gaps_refuses_bad_parameters() -> None:
    timeline = stalled_reply()
    with pytest.raises(ValueError, match="frame_ms"):
        find_gaps(timeline, frame_ms=0)
    with pytest.raises(ValueError, match="gap_factor"):
        find_gaps(timeline, gap_factor=1.0)
    with pytest.raises(ValueError, match="margin"):
        find_gaps(timeline, cause_margin_s=-1)


def test_summary_lists_the_replies_and_each_gap_with_its_causes() -> None:
    text = summarize(stalled_reply())
    assert "1 replies on 1 sessions (0 cut short, 0 without an end), 2 frames released late" in text
    assert "3 gap(s)" in text
    assert "s1: cushion gap, client cushion down to 0 ms for 250 ms" in text
    assert "s1 turn 1: release gap, no frame for 320 ms (one released 300 ms late)" in text
    assert "GC pause 400 ms, generation 2" in text
    assert "the pacer released a frame 300 ms late (at +300 ms)" in text
    assert "longest GC pause 400 ms, latest frame 300.0 ms late" in text
    assert summarize(Timeline()) == "the timeline is empty"
    quiet = Timeline()
    reply(quiet, 0.0, 1.0)
    assert summarize(quiet).endswith("no gap found")


def test_a_gap_without_a_recorded_cause_says_where_else_to_look() -> None:
    timeline = Timeline()
    reply(timeline, 1.0, 3.0)
    cushion(timeline, 1.0, 3.0, lambda t: 0.0 if 2.0 <= t < 2.25 else 100.0, session="s1")
    assert "no cause recorded nearby" in summarize(timeline)


def test_window_keeps_the_events_in_range() -> None:
    part = window(stalled_reply(), 2.9, 3.5)
    times = [e["t"] for e in part.events()]
    assert times
    assert min(times) >= 2.9
    assert max(times) <= 3.5
    assert any(e["kind"] == "gc_pause" for e in part.events())


def test_plot_writes_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = plot(stalled_reply(), tmp_path / "t.png", since=0.5)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert out.stat().st_size > 20_000  # six panels, not an empty canvas
    inside = plot(stalled_reply(), tmp_path / "inside.png", since=2.0, until=3.0)
    assert inside.stat().st_size > 20_000  # a window inside a reply that began before it
    with pytest.raises(ValueError, match="empty"):
        plot(Timeline(), tmp_path / "empty.png")


def test_plot_says_how_to_install_matplotlib(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import raises ModuleNotFoundError
    with pytest.raises(ModuleNotFoundError, match="pip install matplotlib"):
        plot(stalled_reply(), tmp_path / "t.png")
    path = tmp_path / "timeline.json"
    path.write_text(stalled_reply().to_json(), encoding="utf-8")
    assert main(["diagnose", str(path)]) == 2
    assert MATPLOTLIB_MISSING.startswith("drawing the timeline needs matplotlib")


def test_voicecore_diagnose_prints_the_gaps_and_draws_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "timeline.json"
    path.write_text(stalled_reply().to_json(), encoding="utf-8")
    assert main(["diagnose", str(path), "--since", "1.5", "--until", "4"]) == 0
    out = capsys.readouterr().out
    assert "3 gap(s)" in out
    assert "GC pause 400 ms" in out
    assert (tmp_path / "timeline.png").stat().st_size > 20_000
    assert main(["diagnose", str(path), "--no-plot", "-o", str(tmp_path / "no.png")]) == 0
    assert not (tmp_path / "no.png").exists()


def test_voicecore_diagnose_refuses_what_is_not_a_timeline(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"events": [{"kind": "gc_pause"}]}), encoding="utf-8")
    assert main(["diagnose", str(bad)]) == 1
    assert main(["diagnose", str(tmp_path / "missing.json")]) == 1
    err = capsys.readouterr().err
    assert "not a timeline event" in err
    assert "missing.json" in err


def test_recorder_refuses_bad_parameters(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="interval_s"):
        TimelineRecorder(tmp_path / "t.json", None, interval_s=0)
    with pytest.raises(ValueError, match="keep_sessions"):
        TimelineRecorder(tmp_path / "t.json", None, keep_sessions=-1)


async def test_recorder_merges_sessions_onto_the_probes_clock(tmp_path: Path) -> None:
    probes = Timeline()  # time.monotonic, like Diagnostics'
    path = tmp_path / "sub" / "timeline.json"
    recorder = TimelineRecorder(path, probes, interval_s=0.05, keep_sessions=1)
    session = Timeline(clock=trio.current_time)  # a session's: the Trio clock
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recorder.run)
        await trio.sleep(0)  # the recorder measured the clocks' offset
        recorder.add_session("a", session)
        session.record("speech_start", turn_id=1)
        probes.record("loop_lag", lag_ms=7.0)
        monotonic_now = time.monotonic()
        await trio.sleep(0.12)  # at least one periodic dump
        assert recorder.dumps >= 1
        assert path.exists()
        recorder.end_session("a")
        recorder.add_session("b", Timeline(clock=trio.current_time))
        recorder.end_session("b")  # keep_sessions=1: "a" is forgotten
        nursery.cancel_scope.cancel()
    written = Timeline.from_json(path.read_text(encoding="utf-8"))  # the dump at exit
    assert [e["kind"] for e in written.events()] == ["loop_lag"]
    merged = json.loads(path.read_text(encoding="utf-8"))
    assert merged["clock"] == "monotonic"
    recorder.add_session("a", session)
    (speech,) = recorder.merged().events("speech_start")
    assert (speech["session"], speech["turn_id"]) == ("a", 1)
    assert speech["t"] == pytest.approx(monotonic_now, abs=0.01)
    assert not list(tmp_path.joinpath("sub").glob("*.json?*"))  # no temporary file left


async def test_voicecore_serve_timeline_records_sessions_until_shutdown(tmp_path: Path) -> None:
    from websockets.trio.client import connect

    from voicecore.config import ServerConfig
    from voicecore.pipeline import scripted_pipeline
    from voicecore.server.app import VoiceServer

    path = tmp_path / "timeline.json"
    settings = ServerConfig(port=0, web_root=tmp_path, timeline=path)
    server = VoiceServer(scripted_pipeline(), settings)
    async with trio.open_nursery() as nursery:
        await nursery.start(server.run)
        async with connect(f"ws://127.0.0.1:{server.port}/ws") as ws:
            hello = {"type": "hello", "protocol": 1, "input_rate": 16000, "output_rate": 24000}
            await ws.send(json.dumps(hello))
            ready = json.loads(await ws.recv())
            await ws.send(json.dumps({"type": "playout", "buffered_ms": 42.0}))
            await ws.send(json.dumps({"type": "bye"}))
            with trio.fail_after(5):
                while server.sessions:
                    await trio.sleep(0.01)
        server.shutdown(drain_timeout_s=0)
    (report,) = Timeline.from_json(path.read_text(encoding="utf-8")).events("client_cushion")
    assert report["session"] == ready["session_id"]
    assert report["buffered_ms"] == 42.0
    assert abs(report["t"] - time.monotonic()) < 10  # on the probes' clock
