"""Stage contracts: the edge declarations and the channels built from them."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from voicecore.engine.contracts import (
    DSP_TO_STT,
    EDGES,
    LLM_TO_TTS,
    MIC_TO_DSP,
    STT_TO_LLM,
    TTS_TO_PLAYOUT,
    Edge,
    EdgeChannel,
    OverflowPolicy,
    describe_edges,
    latency_budget,
)


def test_every_architecture_edge_is_declared_with_its_policy() -> None:
    policies = {edge.name: edge.policy for edge in EDGES}
    assert policies == {
        "mic->dsp": OverflowPolicy.INLINE,
        "dsp->stt": OverflowPolicy.DROP_OLDEST,
        "stt->llm": OverflowPolicy.BACKPRESSURE,
        "llm->tts": OverflowPolicy.BACKPRESSURE,
        "tts->playout": OverflowPolicy.BACKPRESSURE,
        "playout->client": OverflowPolicy.PACED,
        "session->transport": OverflowPolicy.DROP_OLDEST,
    }
    table = describe_edges()
    for edge in EDGES:
        assert edge.name in table
        assert edge.policy.value in table


def test_audio_edges_convert_their_bound_to_samples() -> None:
    assert TTS_TO_PLAYOUT.samples(48000) == 96000
    with pytest.raises(ValueError, match="items"):
        DSP_TO_STT.samples(16000)


def test_a_channel_needs_a_channel_edge() -> None:
    with pytest.raises(ValueError, match="not a channel"):
        EdgeChannel(MIC_TO_DSP)
    paced = Edge("x->y", "frames", 4, "items", OverflowPolicy.PACED)
    with pytest.raises(ValueError, match="cannot implement"):
        EdgeChannel(paced)


def test_drop_oldest_counts_every_overflow() -> None:
    edge = Edge("a->b", "ints", 3, "items", OverflowPolicy.DROP_OLDEST)
    dropped: list[int] = []
    channel: EdgeChannel[int] = EdgeChannel(edge, on_drop=dropped.append)
    for i in range(10):
        channel.send_nowait(i)
    assert [channel.receive_nowait() for _ in range(3)] == [7, 8, 9]
    assert channel.stats.dropped == 7
    assert sum(dropped) == 7
    assert channel.stats.sent == 10
    assert channel.stats.high_water == 3


async def test_backpressure_holds_the_producer(autojump_clock: trio.abc.Clock) -> None:
    channel: EdgeChannel[str] = EdgeChannel(STT_TO_LLM)
    for i in range(STT_TO_LLM.bound):
        channel.send_nowait(str(i))
    with pytest.raises(trio.WouldBlock):
        channel.send_nowait("full")
    sent: list[str] = []

    async def producer() -> None:
        await channel.send("late")
        sent.append("late")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(producer)
        await trio.testing.wait_all_tasks_blocked()
        assert sent == []  # waiting for room, nothing dropped
        assert await channel.receive() == "0"
    assert sent == ["late"]
    assert channel.stats.dropped == 0
    assert [channel.receive_nowait() for _ in range(STT_TO_LLM.bound)][-1] == "late"


async def test_close_drains_then_ends(autojump_clock: trio.abc.Clock) -> None:
    channel: EdgeChannel[int] = EdgeChannel(LLM_TO_TTS)
    channel.send_nowait(1)
    channel.close()
    assert channel.closed
    with pytest.raises(trio.ClosedResourceError):
        channel.send_nowait(2)
    assert [item async for item in channel] == [1]
    with pytest.raises(trio.EndOfChannel):
        await channel.receive()


async def test_close_wakes_a_waiting_receiver(autojump_clock: trio.abc.Clock) -> None:
    channel: EdgeChannel[int] = EdgeChannel(LLM_TO_TTS)

    async def close_later() -> None:
        await trio.testing.wait_all_tasks_blocked()  # the receiver is waiting
        channel.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(close_later)
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()


def test_purge_and_push_front() -> None:
    channel: EdgeChannel[tuple[int, str]] = EdgeChannel(DSP_TO_STT)
    for turn in (1, 1, 2, 1):
        channel.send_nowait((turn, "frame"))
    assert channel.purge(lambda item: item[0] == 1) == 3
    channel.push_front((1, "clear"))
    assert channel.receive_nowait() == (1, "clear")
    assert channel.receive_nowait() == (2, "frame")
    assert channel.stats.purged == 3


def test_push_front_on_a_full_channel_drops_the_oldest() -> None:
    edge = Edge("a->b", "ints", 2, "items", OverflowPolicy.BACKPRESSURE)
    channel: EdgeChannel[int] = EdgeChannel(edge)
    channel.send_nowait(1)
    channel.send_nowait(2)
    channel.push_front(0)
    assert [channel.receive_nowait(), channel.receive_nowait()] == [0, 2]
    assert channel.stats.dropped == 1


def test_latency_budget_adds_up() -> None:
    budget = latency_budget(end_of_turn_silence_ms=400, network_ms=30)
    lines = {line.stage: line.budget_ms for line in budget.lines}
    assert lines["end-of-turn silence"] == 400
    assert lines["network"] == 30
    assert budget.total_ms == pytest.approx(sum(lines.values()))
    text = str(budget)
    assert text.splitlines()[-1].startswith("total")
    assert f"{budget.total_ms:.0f}" in text
