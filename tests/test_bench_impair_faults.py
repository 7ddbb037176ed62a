"""The impairment proxy, the client's figures and the fault specs of the system benchmarks
(``harness.impair``, ``harness.client``, ``harness.faults``)."""

from __future__ import annotations

import pytest
import trio

from harness.client import ClientResult
from harness.faults import FaultSpec, parse_faults, run_faults
from harness.impair import ImpairingProxy, Profile


def test_parse_faults_reads_kind_duration_and_period() -> None:
    assert parse_faults("loop_block:300@2") == FaultSpec("loop_block", 300.0, 2.0)
    assert parse_faults("gc_storm") == FaultSpec("gc_storm", 100.0, 1.0)
    assert parse_faults(" gil_hog:50 ") == FaultSpec("gil_hog", 50.0, 1.0)
    assert str(FaultSpec("loop_block", 50, 0.5)) == "loop_block:50@0.5"


@pytest.mark.parametrize(
    "text", ["", "nap:100", "loop_block:0", "loop_block:-5", "loop_block:500@0.2", "gc_storm:x"]
)
def test_parse_faults_refuses_bad_specs(text: str) -> None:
    with pytest.raises(ValueError, match=r"fault|could not convert"):
        parse_faults(text)


async def test_loop_block_fault_holds_the_event_loop() -> None:
    lags: list[float] = []

    async def watch() -> None:
        for _ in range(40):
            before = trio.current_time()
            await trio.sleep(0.01)
            lags.append(trio.current_time() - before - 0.01)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_faults, FaultSpec("loop_block", 80.0, 0.2))
        await watch()
        nursery.cancel_scope.cancel()
    assert max(lags) >= 0.07


def test_profile_refuses_impossible_settings() -> None:
    with pytest.raises(ValueError, match="jitter"):
        Profile("x", delay_ms=10, jitter_ms=20)
    with pytest.raises(ValueError, match="stall_probability"):
        Profile("x", stall_probability=1.0)


async def test_proxy_delays_and_keeps_byte_order() -> None:
    received = bytearray()
    arrivals: list[float] = []

    async def sink(stream: trio.SocketStream) -> None:
        async for chunk in stream:
            received.extend(chunk)
            arrivals.append(trio.current_time())

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(trio.serve_tcp, sink, 0)
        upstream_port = listeners[0].socket.getsockname()[1]
        proxy = ImpairingProxy(upstream_port, Profile("t", delay_ms=60, jitter_ms=20))
        port = await nursery.start(proxy.run)
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        sent_at = trio.current_time()
        for i in range(20):
            await stream.send_all(bytes([i]) * 10)
            await trio.sleep(0.002)
        with trio.fail_after(5):
            while len(received) < 200:
                await trio.sleep(0.01)
        await stream.aclose()
        nursery.cancel_scope.cancel()
    assert bytes(received) == b"".join(bytes([i]) * 10 for i in range(20))
    assert arrivals[0] - sent_at >= 0.035  # 60 ms - 20 ms jitter, less the clock's slack
    assert proxy.chunks >= 1


def test_client_result_summarises_underruns_per_minute_of_agent_audio() -> None:
    result = ClientResult(agent_audio_s=30.0, underruns=2, gaps_ms=[40.0, 80.0, 60.0])
    result.v2v_client_ms += [500.0, 700.0]
    summary = result.summary()
    assert result.underruns_per_min == pytest.approx(4.0)
    assert summary["gap_max_ms"] == 80.0
    assert summary["gap_median_ms"] == 60.0
    assert summary["v2v_client_ms"] == 600.0
    assert summary["barge_client_ms"] is None  # nothing measured
    assert ClientResult().underruns_per_min == 0.0
