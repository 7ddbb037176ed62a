"""Stage contracts as data: every pipeline edge's unit, bound and overflow policy.

The engine does not size its queues with literals scattered in the code: it builds them from
the ``Edge`` declarations below (``EDGES``), so the table printed by ``describe_edges()`` is
what runs. Overflow is always counted (``EdgeChannel.stats``, and into the session's metrics
as ``"<edge>.dropped"``), never silent.

``latency_budget()`` adds up what one turn may spend, stage by stage, from the end of the
user's speech to the first agent audio at the client.

Example::

    send = EdgeChannel(DSP_TO_STT)           # bounded, drop-oldest
    send.send_nowait(frame)                  # never blocks; counts what it drops
    print(describe_edges())
    print(latency_budget(end_of_turn_silence_ms=500))
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Generic, TypeVar

import trio

__all__ = [
    "DSP_TO_STT",
    "EDGES",
    "LLM_TO_TTS",
    "MIC_TO_DSP",
    "PLAYOUT_TO_CLIENT",
    "SESSION_TO_TRANSPORT",
    "STT_TO_LLM",
    "TTS_TO_PLAYOUT",
    "BudgetLine",
    "ChannelStats",
    "Edge",
    "EdgeChannel",
    "LatencyBudget",
    "OverflowPolicy",
    "describe_edges",
    "latency_budget",
]

T = TypeVar("T")


class OverflowPolicy(enum.Enum):
    """What an edge does when its bound is reached."""

    BACKPRESSURE = "backpressure"
    """The producer waits for room (``await send``); nothing is lost."""
    DROP_OLDEST = "drop oldest"
    """The oldest queued item is dropped and counted; the producer never waits."""
    OVERWRITE_OLDEST = "overwrite oldest"
    """A sample ring overwrites its oldest unread samples (counted as ``overwritten``)."""
    INLINE = "inline"
    """No queue: the receiving task processes each item as it arrives. When it lags, it
    reads the transport later, and the socket's flow control holds the sender back."""
    PACED = "paced"
    """The pacer holds frames until due and never sends beyond the client's maximum lead."""


@dataclass(frozen=True, slots=True)
class Edge:
    """One edge of the pipeline.

    Attributes:
        name: ``"<from>-><to>"``; also the prefix of its overflow counters.
        unit: what flows on it.
        bound: its capacity, in ``bound_unit``.
        bound_unit: ``"items"`` for channels, ``"ms"`` for audio queues.
        policy: what happens when it is full.
        flush_on_cancel: a barge-in empties it.
    """

    name: str
    unit: str
    bound: int
    bound_unit: str
    policy: OverflowPolicy
    flush_on_cancel: bool = False

    def samples(self, sample_rate: int) -> int:
        """The bound in samples at ``sample_rate`` Hz (edges bounded in ms only)."""
        if self.bound_unit != "ms":
            raise ValueError(f"edge {self.name} is bounded in {self.bound_unit}, not ms")
        return self.bound * sample_rate // 1000


MIC_TO_DSP = Edge("mic->dsp", "PCM16 frames at the mic rate", 0, "items", OverflowPolicy.INLINE)
"""The user's audio from the transport to the VAD and turn-taking, run by the session's
reader as each message arrives: a few microseconds of Rust work a frame, so a queue and a
task between the two would cost more than the work itself (a task wake-up per frame was
~10 % of a server core at 200 sessions)."""
DSP_TO_STT = Edge("dsp->stt", "16 kHz speech AudioFrames", 100, "items", OverflowPolicy.DROP_OLDEST)
"""Speech frames to the STT (100 frames of ~20 ms: 2 s); a stalled STT loses the oldest."""
STT_TO_LLM = Edge("stt->llm", "final user turns", 4, "items", OverflowPolicy.BACKPRESSURE)
"""Completed user turns to the agent (LLM) loop."""
LLM_TO_TTS = Edge("llm->tts", "sentences / clauses", 8, "items", OverflowPolicy.BACKPRESSURE, True)
"""Chunks of the reply to the TTS: a slow TTS holds the LLM stream back."""
TTS_TO_PLAYOUT = Edge(
    "tts->playout", "PCM16 at the client rate", 2000, "ms", OverflowPolicy.BACKPRESSURE, True
)
"""The Rust playout queue (``PacerStream``, ``queue_ms``): a full queue holds the TTS back."""
PLAYOUT_TO_CLIENT = Edge("playout->client", "20 ms frames", 240, "ms", OverflowPolicy.PACED, True)
"""The pacer's release to the client, keeping its cushion (``cushion_ms``) on target. 240 ms
is the smallest cushion that rode out the moderate network profile (~50 ms +- 15 ms, 1 % of
segments held 200 ms for a retransmission) without an underrun (``bench_impairment.py``);
120 ms underran 31 times a minute there. A barge-in flushes it (``clear``), so it costs no
interruption latency; it costs no voice-to-voice latency either (the pacer sends the
cushion as a burst and the page starts playing after 40 ms)."""
SESSION_TO_TRANSPORT = Edge(
    "session->transport", "server messages", 256, "items", OverflowPolicy.DROP_OLDEST, True
)
"""What the session sends to the transport's writer: events, ``Clear``, and agent frames
when the transport has no ``audio_sink`` (with one, the pacer thread writes the frames)."""

EDGES: tuple[Edge, ...] = (
    MIC_TO_DSP,
    DSP_TO_STT,
    STT_TO_LLM,
    LLM_TO_TTS,
    TTS_TO_PLAYOUT,
    PLAYOUT_TO_CLIENT,
    SESSION_TO_TRANSPORT,
)
"""Every edge of the pipeline, in data-flow order."""


def describe_edges(edges: Iterable[Edge] = EDGES) -> str:
    """A plain-text table of the edges: name, unit, bound, policy, flushed on barge-in."""
    rows = [("edge", "unit", "bound", "when full", "barge-in")]
    rows += [
        (
            e.name,
            e.unit,
            f"{e.bound} {e.bound_unit}",
            e.policy.value,
            "flush" if e.flush_on_cancel else "-",
        )
        for e in edges
    ]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows)


@dataclass(slots=True)
class ChannelStats:
    """Counters of an ``EdgeChannel`` (items)."""

    sent: int = 0
    received: int = 0
    dropped: int = 0
    purged: int = 0
    high_water: int = 0


class EdgeChannel(Generic[T]):
    """A bounded in-process channel built from an ``Edge`` (one Trio run, any number of tasks).

    Trio's memory channels only offer backpressure; this one implements the edge's policy:
    ``BACKPRESSURE`` makes ``send`` wait for room, ``DROP_OLDEST`` makes it drop (and count) the
    oldest item instead. ``send_nowait`` never waits: under ``BACKPRESSURE`` it raises
    ``trio.WouldBlock`` when full. ``purge`` removes queued items matching a predicate
    (barge-in: the cancelled turn's frames), ``push_front`` queues an urgent item first.

    Args:
        edge: the declaration; its ``bound`` (items) is the capacity.
        on_drop: called with the number of items dropped (e.g. ``metrics.count``).

    Raises:
        ValueError: an edge bounded in ms, or not a channel policy.
    """

    def __init__(self, edge: Edge, *, on_drop: Callable[[int], None] | None = None) -> None:
        if edge.bound_unit != "items" or edge.bound < 1:
            raise ValueError(
                f"edge {edge.name} is not a channel (bound {edge.bound} {edge.bound_unit})"
            )
        if edge.policy not in (OverflowPolicy.BACKPRESSURE, OverflowPolicy.DROP_OLDEST):
            raise ValueError(f"edge {edge.name}: a channel cannot implement {edge.policy}")
        self.edge = edge
        self.stats = ChannelStats()
        self._items: deque[T] = deque()
        self._on_drop = on_drop
        self._closed = False
        self._readers = trio.lowlevel.ParkingLot()
        self._writers = trio.lowlevel.ParkingLot()

    def __repr__(self) -> str:
        return f"EdgeChannel({self.edge.name!r}, queued={len(self._items)}, {self.stats})"

    def __len__(self) -> int:
        return len(self._items)

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (queued items can still be received)."""
        return self._closed

    def _put(self, item: T, *, front: bool = False) -> None:
        if front:
            self._items.appendleft(item)
        else:
            self._items.append(item)
        self.stats.sent += 1
        self.stats.high_water = max(self.stats.high_water, len(self._items))
        self._readers.unpark()

    def _drop_oldest(self) -> None:
        self._items.popleft()
        self.stats.dropped += 1
        if self._on_drop is not None:
            self._on_drop(1)

    def send_nowait(self, item: T) -> None:
        """Queues ``item`` now; a full drop-oldest channel drops its oldest item first.

        Raises:
            trio.ClosedResourceError: the channel is closed.
            trio.WouldBlock: a full backpressure channel.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"edge {self.edge.name} is closed")
        if len(self._items) >= self.edge.bound:
            if self.edge.policy is OverflowPolicy.BACKPRESSURE:
                raise trio.WouldBlock
            self._drop_oldest()
        self._put(item)

    def push_front(self, item: T) -> None:
        """Queues ``item`` ahead of everything (an urgent control message); never waits.

        A full channel drops its oldest item (counted) to make room, whatever its policy.
        """
        if self._closed:
            raise trio.ClosedResourceError(f"edge {self.edge.name} is closed")
        if len(self._items) >= self.edge.bound:
            self._drop_oldest()
        self._put(item, front=True)

    async def send(self, item: T) -> None:
        """Queues ``item``, waiting for room under ``BACKPRESSURE``.

        Raises:
            trio.ClosedResourceError: the channel is (or gets) closed.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while (
            not self._closed
            and self.edge.policy is OverflowPolicy.BACKPRESSURE
            and len(self._items) >= self.edge.bound
        ):
            await self._writers.park()
        self.send_nowait(item)
        await trio.lowlevel.cancel_shielded_checkpoint()

    def receive_nowait(self) -> T:
        """The oldest item.

        Raises:
            trio.WouldBlock: nothing queued.
            trio.EndOfChannel: nothing queued and the channel is closed.
        """
        if not self._items:
            if self._closed:
                raise trio.EndOfChannel
            raise trio.WouldBlock
        item = self._items.popleft()
        self.stats.received += 1
        self._writers.unpark()
        return item

    async def receive(self) -> T:
        """The oldest item, waiting for one.

        Raises:
            trio.EndOfChannel: the channel is closed and drained.
        """
        await trio.lowlevel.checkpoint_if_cancelled()
        while not self._items and not self._closed:
            await self._readers.park()
        item = self.receive_nowait()
        await trio.lowlevel.cancel_shielded_checkpoint()
        return item

    def __aiter__(self) -> EdgeChannel[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None

    def purge(self, predicate: Callable[[T], bool]) -> int:
        """Removes every queued item matching ``predicate``; returns how many (counted)."""
        kept = [item for item in self._items if not predicate(item)]
        removed = len(self._items) - len(kept)
        if removed:
            self._items = deque(kept)
            self.stats.purged += removed
            self._writers.unpark_all()
        return removed

    def close(self) -> None:
        """No more items: receivers drain what is queued, then get ``EndOfChannel``."""
        self._closed = True
        self._readers.unpark_all()
        self._writers.unpark_all()


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One stage's share of the latency budget."""

    stage: str
    budget_ms: float
    note: str


@dataclass(frozen=True, slots=True)
class LatencyBudget:
    """The latency one turn may spend from the end of the user's speech to the first agent
    audio the user hears, stage by stage (ms)."""

    lines: tuple[BudgetLine, ...]

    @property
    def total_ms(self) -> float:
        """Sum of the stages, in ms."""
        return sum(line.budget_ms for line in self.lines)

    def __str__(self) -> str:
        width = max(len(line.stage) for line in self.lines)
        out = [f"{'stage'.ljust(width)}  budget (ms)  note"]
        out += [
            f"{line.stage.ljust(width)}  {line.budget_ms:>11.0f}  {line.note}"
            for line in self.lines
        ]
        out.append(
            f"{'total'.ljust(width)}  {self.total_ms:>11.0f}  end of speech -> first audio heard"
        )
        return "\n".join(out)


def latency_budget(
    *,
    end_of_turn_silence_ms: float = 500.0,
    stt_final_ms: float = 100.0,
    llm_first_token_ms: float = 350.0,
    first_chunk_ms: float = 100.0,
    tts_first_audio_ms: float = 150.0,
    engine_ms: float = 10.0,
    frame_ms: int = 20,
    network_ms: float = 50.0,
) -> LatencyBudget:
    """The voice-to-voice latency budget of one turn, stage by stage (every figure in ms).

    The engine-side figures (``end_of_turn_silence_ms``, ``engine_ms``, ``frame_ms``) come from
    the session's configuration; the provider figures are targets to hold providers to.
    The pacer's cushion costs nothing here: a fresh stream's cushion is sent as a burst.
    """
    return LatencyBudget(
        (
            BudgetLine(
                "end-of-turn silence", end_of_turn_silence_ms, "cut short by an early STT final"
            ),
            BudgetLine("STT final", stt_final_ms, "after the end of turn"),
            BudgetLine("LLM first token", llm_first_token_ms, "prompt in -> first delta"),
            BudgetLine("first chunk", first_chunk_ms, "deltas until a clause of a few words"),
            BudgetLine("TTS first audio", tts_first_audio_ms, "chunk in -> first PCM"),
            BudgetLine("engine", engine_ms, "resample, queue, Trio scheduling"),
            BudgetLine(
                "pacer first frame", float(frame_ms), "one frame; the cushion goes out as a burst"
            ),
            BudgetLine("network", network_ms, "server -> client, one way"),
        )
    )
