"""Diagnostics for audio gaps: one timeline, and the usual causes measured onto it.

A gap in the agent's audio has a handful of usual causes in a Python server: the event loop
was blocked (a CPU-bound call on it, a slow callback), the garbage collector paused the
process, or the container ran out of CPU quota and was throttled. This package measures each
of them onto one ``Timeline`` (module ``timeline``), next to the engine's own events (a reply
becoming audible, frames the pacer released late, the client's cushion, stage events), so
that a gap can be lined up with its cause (one module per probe, named after it):

* ``LoopLagCanary`` (``loop_lag``): a Trio task that sleeps a fixed interval and records how
  late it woke;
* ``GcMonitor`` (``gc``): a ``gc.callbacks`` hook recording each collection's pause;
* ``GcPolicy`` (``gc``): keeps automatic collections out of the agent's speech
  (``gc.freeze()`` after warm-up, collections deferred while the agent speaks and run in
  silence);
* ``read_cpu_stat`` / ``CpuThrottleSampler`` (``cpu``): cgroup v1/v2 ``cpu.stat`` throttling
  counters;
* ``Diagnostics`` (``probes``): the canary, the GC monitor and the sampler together, one per
  process.

A server's timeline is recorded to a file and read back offline (``voicecore serve --timeline``
and ``voicecore diagnose``, in ``voicecore.server.cli``), one module per job:

* ``TimelineRecorder`` (``recorder``): the probes' timeline and every session's, merged onto
  one clock and written to a JSON file while the server runs;
* ``find_replies``, ``find_gaps``, ``summarize``, ``window`` (``analysis``): the agent's
  replies, the audio gaps in them and the causes recorded around each gap, in text;
* ``plot`` (``drawing``): the same on one time axis, in a picture (matplotlib, optional).

**One clock.** Every timeline time is in seconds of ``time.monotonic()`` by default: the
clock of ``CLOCK_MONOTONIC``, which the Rust pacer's deadlines use too, so a
``ReleasedFrame.released_ns`` lines up as ``released_ns / 1e9`` (``Timeline.record_at``).
Trio's own clock (``trio.current_time()``) has an arbitrary offset: durations measured on it
(loop lag) are valid, its absolute times are not comparable; timeline events therefore take
their time from the timeline's clock. Any clock works as long as every event of a timeline
is stamped by it: tests inject ``clock=trio.current_time`` under a ``MockClock`` to get
deterministic times (a session's default timeline is on the Trio clock, and the session maps
pacer times onto it). Durations (``lag_ms``, ``duration_ms``, ``throttled_ms``) are in ms.
"""

from __future__ import annotations

from voicecore.diagnostics.analysis import (
    DEFAULT_FRAME_MS,
    Gap,
    Reply,
    find_gaps,
    find_replies,
    summarize,
    window,
)
from voicecore.diagnostics.cpu import CGROUP_ROOT, CpuStat, CpuThrottleSampler, read_cpu_stat
from voicecore.diagnostics.drawing import MATPLOTLIB_MISSING, plot
from voicecore.diagnostics.gc import GcMonitor, GcPolicy, GcStats
from voicecore.diagnostics.loop_lag import LagStats, LoopLagCanary
from voicecore.diagnostics.probes import Diagnostics
from voicecore.diagnostics.recorder import TimelineRecorder
from voicecore.diagnostics.timeline import CAUSE_KINDS, Timeline

__all__ = [
    "CAUSE_KINDS",
    "CGROUP_ROOT",
    "DEFAULT_FRAME_MS",
    "MATPLOTLIB_MISSING",
    "CpuStat",
    "CpuThrottleSampler",
    "Diagnostics",
    "Gap",
    "GcMonitor",
    "GcPolicy",
    "GcStats",
    "LagStats",
    "LoopLagCanary",
    "Reply",
    "Timeline",
    "TimelineRecorder",
    "find_gaps",
    "find_replies",
    "plot",
    "read_cpu_stat",
    "summarize",
    "window",
]
