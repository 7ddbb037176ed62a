"""Memory that comes back: the server's resident size, and giving freed memory back to the
system after conversations end.

Where a burst's memory goes, measured on the offline pipeline (Silero, Moonshine, the
responder, Piper; 20 conversations at once on 2 cores, ``benches/bench_admission.py``):

* **Start-up garbage.** Loading Moonshine re-serializes and folds its weights; the objects
  are freed but glibc keeps the pages: ~230 MB of the ~880 MB a server held after start-up.
  One ``malloc_trim`` after start-up returns them (:func:`trim_heap`).
* **The voice's onnxruntime arena.** Piper's session keeps every block its arena ever grew
  to, sized by the longest sentences synthesized at once: ~170-250 MB after a burst, for
  good (an arena never shrinks by itself). Turning the arena off costs every synthesis ~20 %
  more CPU, shrinking it after every run ~10-20 %; so the arena stays, and is shrunk once
  when the burst is over (``Pipeline.release_memory``), which returns all of it.
* **The C heap.** Each conversation's VAD session and thread, its buffers and timeline are
  freed when it ends, into glibc's arenas, which keep the pages until trimmed.

:class:`MemoryReleaser` does the last two after conversations end: it waits
``server.memory_release_s`` (more may end meanwhile: one release per burst, not per
conversation), then, in a worker thread, shrinks the providers' arenas and trims the heap.
Both are cheap (a tiny synthesis, ~0.1 s of one worker; a trim, a few ms), and a later burst
simply grows them again.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

import trio

__all__ = ["MemoryReleaser", "MemoryStats", "rss_bytes", "trim_heap"]

_log = logging.getLogger("voicecore.server.memory")
_PAGE: Final = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def rss_bytes() -> int | None:
    """This process' resident memory in bytes (``/proc/self/statm``); None off Linux."""
    try:
        with open("/proc/self/statm", "rb") as statm:
            return int(statm.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


def _malloc_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):  # not glibc (musl, macOS): nothing to call
        return None
    return trim


_TRIM: Final = _malloc_trim()


def trim_heap() -> bool:
    """Gives the C heap's free pages back to the system (glibc's ``malloc_trim(0)``, every
    arena); False where the C library has no such call. Thread-safe; a few ms."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


@dataclass
class MemoryStats:
    """What the releaser has done.

    Attributes:
        releases: releases run.
        last_freed_bytes: resident memory the last release gave back (None before one).
        last_release_ms: how long it took, in ms (None before one).
    """

    releases: int = 0
    last_freed_bytes: int | None = None
    last_release_ms: float | None = None


class MemoryReleaser:
    """Gives memory back after conversations end (see the module documentation).

    Call :meth:`session_ended` as each conversation ends, and run :meth:`run` as a task.

    Args:
        release: what to release besides the C heap (``Pipeline.release_memory``); called
            in a worker thread.
        delay_s: how long to wait after a conversation ends, s (0: never release).
    """

    def __init__(self, release: Callable[[], None], delay_s: float) -> None:
        self._release = release
        self.delay_s = delay_s
        self.stats = MemoryStats()
        self._ended = trio.Event()

    def session_ended(self) -> None:
        """A conversation ended: a release follows within ``delay_s``."""
        self._ended.set()

    def release_now(self) -> None:
        """Releases at once, in the calling thread (blocking)."""
        before = rss_bytes()
        started = time.perf_counter()
        self._release()
        trim_heap()
        after = rss_bytes()
        self.stats.releases += 1
        self.stats.last_release_ms = 1000.0 * (time.perf_counter() - started)
        if before is not None and after is not None:
            self.stats.last_freed_bytes = before - after
        freed = self.stats.last_freed_bytes
        _log.debug(
            "memory released: %s MiB in %.0f ms",
            "?" if freed is None else freed >> 20,
            self.stats.last_release_ms,
        )

    async def run(self) -> None:
        """Releases ``delay_s`` after conversations end, for as long as it runs."""
        if not self.delay_s:
            return
        while True:
            await self._ended.wait()
            await trio.sleep(self.delay_s)  # the rest of the burst ends meanwhile
            self._ended = trio.Event()
            await trio.to_thread.run_sync(self.release_now)
            freed = self.stats.last_freed_bytes
            _log.info(
                "conversations ended: %s MiB of memory given back to the system",
                "?" if freed is None else max(0, freed) >> 20,
            )
