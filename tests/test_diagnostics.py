"""Diagnostics: the timeline, the loop-lag canary, GC monitoring and policy, cgroup cpu.stat."""

from __future__ import annotations

import gc
import json
import threading
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from voicecore.diagnostics import (
    CpuStat,
    CpuThrottleSampler,
    Diagnostics,
    GcMonitor,
    GcPolicy,
    LoopLagCanary,
    Timeline,
    read_cpu_stat,
)


class FakeClock:
    """A settable clock, in seconds."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Node:
    """An object in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


def make_cycles(n: int) -> list[weakref.ref[Node]]:
    return [weakref.ref(Node()) for _ in range(n)]


@pytest.fixture
def gc_state() -> Iterator[None]:
    """Restores the collector however a test ends (the policy under test should, too)."""
    enabled = gc.isenabled()
    yield
    gc.unfreeze()
    if enabled:
        gc.enable()
    else:
        gc.disable()


# --- Timeline --------------------------------------------------------------------------------


def test_timeline_records_on_its_clock() -> None:
    clock = FakeClock()
    timeline = Timeline(clock=clock)
    clock.now = 1.5
    timeline.record("speech_end", turn=1)
    clock.now = 2.0
    timeline.record("stt_final", turn=1, text="hi")
    assert timeline.events() == [
        {"t": 1.5, "kind": "speech_end", "turn": 1},
        {"t": 2.0, "kind": "stt_final", "turn": 1, "text": "hi"},
    ]
    assert timeline.now() == 2.0


def test_events_are_in_time_order_and_filterable() -> None:
    clock = FakeClock()
    timeline = Timeline(clock=clock)
    clock.now = 3.0
    timeline.record("loop_lag", lag_ms=12.0)
    timeline.record_at(1.0, "frame_late", lateness_ms=9.0)  # measured elsewhere, recorded late
    timeline.record_at(2.0, "frame_late", lateness_ms=40.0)
    assert [e["t"] for e in timeline.events()] == [1.0, 2.0, 3.0]
    assert [e["lateness_ms"] for e in timeline.events("frame_late")] == [9.0, 40.0]
    assert [e["t"] for e in timeline.events(since=1.5)] == [2.0, 3.0]
    assert [e["t"] for e in timeline.events(until=2.0)] == [1.0, 2.0]
    assert timeline.events("gc_pause") == []


def test_timeline_is_bounded_and_counts_evictions() -> None:
    timeline = Timeline(clock=FakeClock(), max_events=3)
    for i in range(5):
        timeline.record_at(float(i), "tick", i=i)
    assert len(timeline) == 3
    assert timeline.evicted == 2
    assert [e["i"] for e in timeline.events()] == [2, 3, 4]  # the oldest went first
    timeline.clear()
    assert len(timeline) == 0
    assert timeline.evicted == 0


def test_timeline_rejects_a_zero_capacity() -> None:
    with pytest.raises(ValueError, match="max_events"):
        Timeline(max_events=0)


def test_timeline_json_round_trip(tmp_path: Path) -> None:
    timeline = Timeline(clock=FakeClock(), max_events=10)
    timeline.record_at(0.25, "gc_pause", duration_ms=3.5, generation=2)
    timeline.record_at(0.5, "barge_in", turn=4, where=Path("x"))  # not JSON: exported as str
    data = json.loads(timeline.to_json())
    assert data["clock"] == "FakeClock"
    assert data["evicted"] == 0
    assert data["events"][0] == {"t": 0.25, "kind": "gc_pause", "duration_ms": 3.5, "generation": 2}
    assert data["events"][1]["where"] == "x"
    path = tmp_path / "timeline.json"
    timeline.dump(path)
    assert json.loads(path.read_text()) == data
    loaded = Timeline.from_json(path.read_text())
    assert loaded.events() == data["events"]
    assert loaded.max_events == 2
    assert [e["kind"] for e in loaded.causes_near(0.3)] == ["gc_pause"]


@pytest.mark.parametrize("text", ["[]", '{"events": 3}', '{"events": [{"t": 1.0}]}', "{"])
def test_timeline_from_json_rejects_what_is_not_a_timeline(text: str) -> None:
    with pytest.raises(ValueError, match=r"timeline|Expecting"):
        Timeline.from_json(text)


def test_timeline_default_clock_is_monotonic() -> None:
    assert json.loads(Timeline().to_json())["clock"] == "monotonic"


def test_timeline_records_from_many_threads() -> None:
    timeline = Timeline(max_events=100_000)
    start = threading.Barrier(4)

    def writer(name: str) -> None:
        start.wait()
        for i in range(2000):
            timeline.record("tick", thread=name, i=i)

    threads = [threading.Thread(target=writer, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    events = timeline.events()
    assert len(events) == 8000
    for n in range(4):
        mine = [e["i"] for e in events if e["thread"] == f"w{n}"]
        assert sorted(mine) == list(range(2000))


# --- LoopLagCanary ---------------------------------------------------------------------------


async def test_canary_measures_a_stall(autojump_clock: trio.testing.MockClock) -> None:
    timeline = Timeline(clock=trio.current_time)
    canary = LoopLagCanary(timeline, interval_s=0.05, threshold_ms=5.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(canary.run)
        await trio.sleep(0.12)  # the canary is due at 0.15
        autojump_clock.jump(0.2)  # the loop "was busy" until 0.32
        await trio.sleep(0.975)  # until 1.295, clear of the canary's wakes
        nursery.cancel_scope.cancel()
    lags = timeline.events("loop_lag")
    assert len(lags) == 1
    assert lags[0]["t"] == pytest.approx(0.32)
    assert lags[0]["lag_ms"] == pytest.approx(170.0)
    stats = canary.stats
    assert stats.max_ms == pytest.approx(170.0)
    assert stats.p50_ms == pytest.approx(0.0, abs=1e-6)  # every other wake was on time
    assert stats.count == 2 + 1 + 19  # 0.05, 0.10, the late 0.32, then 0.37 .. 1.27
    canary.reset()
    assert canary.stats.count == 0


async def test_canary_below_threshold_records_stats_only(
    autojump_clock: trio.testing.MockClock,
) -> None:
    timeline = Timeline(clock=trio.current_time)
    canary = LoopLagCanary(timeline, interval_s=0.01, threshold_ms=50.0)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(canary.run)
        await trio.sleep(0.005)
        autojump_clock.jump(0.03)  # 25 ms late: below the threshold
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert timeline.events() == []
    assert canary.stats.max_ms == pytest.approx(25.0)


def test_canary_observe_and_percentiles() -> None:
    canary = LoopLagCanary(None, window=100)
    assert canary.stats.count == 0
    for lag in range(1, 101):
        canary.observe(float(lag))
    canary.observe(-0.5)  # a clock never wakes early: clamped to zero
    stats = canary.stats
    assert stats.count == 101
    assert stats.max_ms == 100.0
    assert stats.p50_ms == pytest.approx(50.5)  # window of the last 100: 0 and 2..100
    assert stats.p99_ms == pytest.approx(99.01)


@pytest.mark.parametrize(
    "kwargs",
    [{"interval_s": 0.0}, {"threshold_ms": -1.0}, {"window": 0}],
)
def test_canary_rejects_bad_parameters(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        LoopLagCanary(None, **kwargs)


# --- GcMonitor -------------------------------------------------------------------------------


@pytest.mark.usefixtures("gc_state")
def test_gc_monitor_catches_a_real_collection() -> None:
    timeline = Timeline()
    other: list[str] = []

    def other_callback(phase: str, info: dict[str, int]) -> None:
        other.append(phase)

    gc.callbacks.append(other_callback)
    try:
        with GcMonitor(timeline) as monitor:
            assert monitor.installed
            gc.disable()  # so that the explicit collection finds all 500 cycles
            refs = make_cycles(500)
            gc.enable()
            before = timeline.now()
            gc.collect()
            after = timeline.now()
        assert not monitor.installed
        assert other_callback in gc.callbacks  # only the monitor's callback was removed
    finally:
        gc.callbacks.remove(other_callback)
    assert all(ref() is None for ref in refs)
    stats = monitor.stats
    assert stats.count >= 1
    assert stats.by_generation[2] >= 1
    assert stats.collected >= 500
    assert stats.max_ms > 0.0
    assert stats.total_ms >= stats.max_ms
    full = [e for e in timeline.events("gc_pause") if e["generation"] == 2]
    assert full
    assert before <= full[-1]["t"] <= after
    assert full[-1]["collected"] >= 500
    assert full[-1]["duration_ms"] <= (after - before) * 1000.0 + 1e-6
    assert "stop" in other


def test_gc_monitor_without_timeline_and_reset() -> None:
    monitor = GcMonitor()
    monitor.install()
    monitor.install()  # idempotent
    try:
        assert gc.callbacks.count(monitor._callback) == 1
        gc.collect(0)
    finally:
        monitor.uninstall()
    monitor.uninstall()  # idempotent
    assert monitor.stats.by_generation[0] >= 1
    count = monitor.stats.count
    gc.collect()
    assert monitor.stats.count == count  # uninstalled: sees nothing more
    monitor.reset()
    assert monitor.stats.count == 0
    assert monitor.stats.total_ms == 0.0


def test_gc_monitor_min_pause_filters_the_timeline_only() -> None:
    timeline = Timeline()
    with GcMonitor(timeline, min_pause_ms=1e9) as monitor:
        gc.collect()
    assert monitor.stats.count >= 1
    assert timeline.events("gc_pause") == []


# --- GcPolicy --------------------------------------------------------------------------------


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_defers_collections_while_speaking() -> None:
    gc.enable()
    with GcPolicy(freeze_after_warmup=False) as policy:
        assert gc.isenabled()
        policy.agent_speaking(True)
        assert not gc.isenabled()
        assert policy.speaking
        refs = make_cycles(100)
        assert all(ref() is not None for ref in refs)  # garbage waits while the agent speaks
        policy.agent_speaking(True)  # idempotent
        policy.agent_speaking(False)
        assert gc.isenabled()
        assert not policy.speaking
        assert all(ref() is None for ref in refs)  # collected as soon as speech ended
        assert policy.deferred_collections == 1
        policy.agent_speaking(False)  # idempotent: no second collection
        assert policy.deferred_collections == 1
    assert gc.isenabled()


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_waits_for_every_speaker() -> None:
    gc.enable()
    with GcPolicy(freeze_after_warmup=False) as policy:
        policy.agent_speaking(True, who="a")
        policy.agent_speaking(True, who="b")
        policy.agent_speaking(False, who="a")
        assert not gc.isenabled()  # b still speaks
        policy.agent_speaking(False, who="b")
        assert gc.isenabled()


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_freezes_after_warmup_and_unfreezes_on_exit() -> None:
    gc.enable()
    assert gc.get_freeze_count() == 0
    with GcPolicy() as policy:
        assert gc.get_freeze_count() == 0
        policy.warmed_up()
        frozen = gc.get_freeze_count()
        assert frozen > 0
        policy.warmed_up()  # once only
        assert gc.get_freeze_count() == frozen
    assert gc.get_freeze_count() == 0
    assert gc.isenabled()


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_restores_state_after_an_exception() -> None:
    gc.enable()
    policy = GcPolicy()

    def speak_then_fail() -> None:
        with policy:
            policy.warmed_up()
            policy.agent_speaking(True)
            raise KeyError("boom")

    with pytest.raises(KeyError):
        speak_then_fail()
    assert gc.isenabled()
    assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_keeps_a_disabled_collector_disabled() -> None:
    gc.disable()
    with GcPolicy() as policy:
        policy.agent_speaking(True)
        policy.agent_speaking(False)
        assert not gc.isenabled()  # the application turned it off; not ours to turn on
        assert policy.deferred_collections == 0
    assert not gc.isenabled()


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_options_off_leave_the_collector_alone() -> None:
    gc.enable()
    with GcPolicy(freeze_after_warmup=False, defer_while_speaking=False) as policy:
        policy.warmed_up()
        policy.agent_speaking(True)
        assert gc.isenabled()
        assert gc.get_freeze_count() == 0


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_tick_bounds_the_deferred_pile() -> None:
    gc.enable()
    with GcPolicy(freeze_after_warmup=False, max_deferred=1000) as policy:
        assert not policy.tick()  # not speaking: automatic collection is on
        policy.agent_speaking(True)
        gc.collect(0)  # start counting from an empty young generation
        kept = [[] for _ in range(2000)]  # tracked objects awaiting a collection
        assert gc.get_count()[0] > 1000
        assert policy.tick()
        assert policy.forced_collections == 1
        assert gc.get_count()[0] < 1000
        assert not policy.tick()
        assert not gc.isenabled()  # still deferring
        assert len(kept) == 2000


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_from_many_threads() -> None:
    gc.enable()
    start = threading.Barrier(4)
    with GcPolicy(freeze_after_warmup=False) as policy:

        def session(name: str) -> None:
            start.wait()
            for _ in range(200):
                policy.agent_speaking(True, who=name)
                policy.agent_speaking(False, who=name)
            policy.agent_speaking(True, who=name)

        threads = [threading.Thread(target=session, args=(f"s{n}",)) for n in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert policy.speaking
        assert not gc.isenabled()  # all four ended speaking
        for n in range(4):
            policy.agent_speaking(False, who=f"s{n}")
        assert gc.isenabled()
        assert 1 <= policy.deferred_collections <= 4 * 200 + 1


def test_gc_policy_misuse() -> None:
    policy = GcPolicy()
    with pytest.raises(RuntimeError, match="not active"):
        policy.agent_speaking(True)
    with pytest.raises(RuntimeError, match="not active"):
        policy.warmed_up()
    with pytest.raises(RuntimeError, match="not active"):
        policy.tick()
    with pytest.raises(ValueError, match="collect_generation"):
        GcPolicy(collect_generation=3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_deferred"):
        GcPolicy(max_deferred=0)


@pytest.mark.usefixtures("gc_state")
def test_gc_policy_is_not_reentrant() -> None:
    with GcPolicy() as policy, pytest.raises(RuntimeError, match="already active"):
        policy.__enter__()


# --- cgroup cpu.stat -------------------------------------------------------------------------

V2_STAT = """usage_usec 8327510
user_usec 6201720
system_usec 2125790
nr_periods 1200
nr_throttled 37
throttled_usec 1523000
nr_bursts 0
burst_usec 0
"""

V1_STAT = """nr_periods 845
nr_throttled 12
throttled_time 987654321
nr_bursts 0
burst_time 0
"""


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_read_cpu_stat_v2(tmp_path: Path) -> None:
    write(tmp_path, "cpu.stat", V2_STAT)
    assert read_cpu_stat(tmp_path) == CpuStat(
        nr_periods=1200,
        nr_throttled=37,
        throttled_usec=1523000,
        version=2,
        path=str(tmp_path / "cpu.stat"),
    )


@pytest.mark.parametrize("directory", ["cpu,cpuacct", "cpu"])
def test_read_cpu_stat_v1(tmp_path: Path, directory: str) -> None:
    write(tmp_path, f"{directory}/cpu.stat", V1_STAT)
    stat = read_cpu_stat(tmp_path)
    assert stat == CpuStat(
        nr_periods=845,
        nr_throttled=12,
        throttled_usec=987654,  # ns -> µs
        version=1,
        path=str(tmp_path / directory / "cpu.stat"),
    )


def test_read_cpu_stat_v2_without_cpu_controller_reads_zeros(tmp_path: Path) -> None:
    write(tmp_path, "cpu.stat", "usage_usec 10\nuser_usec 5\nsystem_usec 5\ngarbage line here\n")
    stat = read_cpu_stat(tmp_path)
    assert stat is not None
    assert (stat.nr_periods, stat.nr_throttled, stat.throttled_usec) == (0, 0, 0)


def test_read_cpu_stat_absent(tmp_path: Path) -> None:
    assert read_cpu_stat(tmp_path) is None
    assert read_cpu_stat(tmp_path / "missing") is None


def test_read_cpu_stat_on_this_machine() -> None:
    stat = read_cpu_stat()
    if stat is None:
        pytest.skip("no cgroup cpu.stat on this machine")
    assert stat.version in (1, 2)
    assert Path(stat.path).is_file()
    assert stat.nr_periods >= stat.nr_throttled >= 0
    assert stat.throttled_usec >= 0


def v2_stat(periods: int, throttled: int, throttled_usec: int) -> str:
    return (
        f"usage_usec 1\nnr_periods {periods}\nnr_throttled {throttled}\n"
        f"throttled_usec {throttled_usec}\n"
    )


async def test_throttle_sampler_records_growth(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    write(tmp_path, "cpu.stat", v2_stat(100, 5, 50_000))
    timeline = Timeline(clock=trio.current_time)
    sampler = CpuThrottleSampler(timeline, interval_s=1.0, root=tmp_path)
    changes: list[tuple[float, str]] = [
        (0.5, v2_stat(110, 8, 80_000)),  # seen at t=1: 3 periods, 30 ms throttled
        (1.5, v2_stat(120, 8, 80_000)),  # seen at t=2: no throttling
        (2.5, v2_stat(130, 9, 95_500)),  # seen at t=3: 1 period, 15.5 ms
    ]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sampler.run)
        for at, text in changes:
            await trio.sleep_until(at)
            write(tmp_path, "cpu.stat", text)
        await trio.sleep_until(3.5)
        nursery.cancel_scope.cancel()
    events = timeline.events("cpu_throttled")
    assert [(e["t"], e["throttled_periods"], e["periods"]) for e in events] == [
        (1.0, 3, 10),
        (3.0, 1, 10),
    ]
    assert events[0]["throttled_ms"] == pytest.approx(30.0)
    assert events[1]["throttled_ms"] == pytest.approx(15.5)
    assert sampler.samples == 3
    assert sampler.throttled_periods == 4
    assert sampler.throttled_ms == pytest.approx(45.5)


async def test_throttle_sampler_returns_without_cpu_stat(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    sampler = CpuThrottleSampler(Timeline(), root=tmp_path)
    start = trio.current_time()
    await sampler.run()
    assert trio.current_time() == start
    assert sampler.samples == 0


async def test_throttle_sampler_stops_when_cpu_stat_disappears(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    write(tmp_path, "cpu.stat", v2_stat(1, 0, 0))
    sampler = CpuThrottleSampler(Timeline(), interval_s=1.0, root=tmp_path)

    async def remove_later() -> None:
        await trio.sleep(1.5)
        (tmp_path / "cpu.stat").unlink()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(remove_later)
        await sampler.run()  # returns at t=2 by itself
    assert trio.current_time() == pytest.approx(2.0)
    assert sampler.samples == 1


def test_throttle_sampler_rejects_a_bad_interval() -> None:
    with pytest.raises(ValueError, match="interval_s"):
        CpuThrottleSampler(Timeline(), interval_s=0)


# --- causes near a gap, and everything together ------------------------------------------------


def test_causes_near_a_gap() -> None:
    timeline = Timeline(clock=FakeClock())
    timeline.record_at(0.90, "gc_pause", duration_ms=40.0)
    timeline.record_at(1.00, "agent_audible", turn_id=1)  # a stage of the reply, not a cause
    timeline.record_at(1.05, "loop_lag", lag_ms=60.0)
    timeline.record_at(1.60, "cpu_throttled", throttled_ms=80.0)
    causes = timeline.causes_near(1.0, window_s=0.2)
    assert [e["kind"] for e in causes] == ["gc_pause", "loop_lag"]
    assert [e["kind"] for e in timeline.causes_near(1.5)] == ["cpu_throttled"]


@pytest.mark.usefixtures("gc_state")
async def test_diagnostics_runs_every_probe_on_one_timeline(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    write(tmp_path, "cpu.stat", v2_stat(10, 0, 0))
    diagnostics = Diagnostics(
        Timeline(clock=trio.current_time),
        loop_lag_interval_s=0.05,
        gc_min_pause_ms=0.0,
        cpu_interval_s=1.0,
        cgroup_root=tmp_path,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(diagnostics.run)
        assert diagnostics.gc.installed
        await trio.sleep(0.52)
        autojump_clock.jump(0.1)  # a stall: the canary due at 0.55 wakes at 0.62
        write(tmp_path, "cpu.stat", v2_stat(20, 2, 7000))
        gc.collect()
        await trio.sleep(0.9)  # the sampler reads at 1.0
        nursery.cancel_scope.cancel()
    assert not diagnostics.gc.installed
    kinds = {e["kind"] for e in diagnostics.timeline.events()}
    assert kinds == {"loop_lag", "gc_pause", "cpu_throttled"}
    lag = diagnostics.timeline.events("loop_lag")
    assert len(lag) == 1
    assert lag[0]["lag_ms"] == pytest.approx(70.0)
    summary = json.loads(json.dumps(diagnostics.summary()))
    assert summary["loop_lag_ms"]["max"] == pytest.approx(70.0)
    assert summary["gc"]["by_generation"][2] >= 1
    assert summary["cpu"] == {"samples": 1, "throttled_periods": 2, "throttled_ms": 7.0}
    assert summary["timeline"]["events"] == len(diagnostics.timeline)
