"""A speakerphone client: it plays the agent's audio out loud and its microphone hears it back.

A laptop or a phone on speaker has no headset: what the agent says comes out of the speaker
and into the mic, delayed (the device's output and input buffers, the air: 40-150 ms) and
quieter (-10 dB is a loud speaker close to the mic, before any echo cancellation). A server
that does not tell its own voice from the user's ducks or cuts itself off.

``Speakerphone`` models that client sample by sample, on one clock shared with the mic:

* **the player**, with the semantics of the web page's (``harness.player.PlayoutModel``,
  ``web/lib/ring.mjs``): agent frames play in arrival order; a reply starts once
  ``start_ms`` is buffered (or ``start_ms`` after its first frame, or at ``agent_done``);
  it plays in real time and plays silence when it runs dry inside a reply; ``pause`` stops
  playback keeping every sample, ``resume`` goes on from the same sample, ``clear`` drops
  what is buffered (and ends a pause), ``agent_done`` ends the reply when what it holds has
  played. What it plays is kept (``played``), from the clock's origin on.
* **the echo path**: ``mix`` adds to a mic frame what the speaker played ``delay_ms``
  earlier, scaled by ``gain_db``: the mic's sample ``n`` (spoken at ``origin + n / rate``)
  hears the speaker's sample ``n - delay``.

Times are seconds of the caller's monotonic clock (Trio's in the benchmarks); sample ``n`` of
the speaker and of the mic is at ``origin + n / rate``. Call the player's methods when the
messages arrive, and ``mix`` for each mic frame once it has been recorded (at or after its
end's time), as a live mic sends it: playback up to a frame's end is then decided.

Example (a client of ``voicecore.engine.transport.memory_transport(16000)``)::

    phone = Speakerphone(16000, origin=trio.current_time(), delay_ms=80, gain_db=-10)
    # receiving: AgentAudio -> phone.frame(now, message.pcm); Pause -> phone.pause(now) ...
    # sending mic frame k (samples k*320 .. k*320+320), at origin + (k+1) * 0.02:
    await client.send_audio(phone.mix(user_pcm, k * 320).tobytes())
"""

from __future__ import annotations

from collections import deque

import numpy as np
import numpy.typing as npt

__all__ = ["Speakerphone"]

Pcm = npt.NDArray[np.int16]


class Speakerphone:
    """A client that plays the agent's audio and hears it back in its mic (module doc).

    Args:
        rate: the agent audio's and the mic's sample rate, in Hz (one rate for both).
        origin: the time (seconds) of the mic's and the speaker's sample 0.
        delay_ms: the echo's delay from the speaker to the mic, in ms.
        gain_db: the echo's level relative to what the speaker plays, in dB (-10: a loud
            speaker close to the mic).
        start_ms: the player's start threshold (the page's ``startMs``).

    Raises:
        ValueError: a rate below 1 Hz or a negative delay or threshold.
    """

    def __init__(
        self,
        rate: int,
        *,
        origin: float,
        delay_ms: float,
        gain_db: float = -10.0,
        start_ms: float = 40.0,
    ) -> None:
        if rate < 1:
            raise ValueError(f"rate must be >= 1 Hz, got {rate}")
        if delay_ms < 0 or start_ms < 0:
            raise ValueError(f"delay_ms and start_ms must be >= 0, got {delay_ms}, {start_ms}")
        self.rate = rate
        self.origin = origin
        self.delay = round(delay_ms * rate / 1000)
        """The echo's delay, in samples."""
        self.gain = 10 ** (gain_db / 20)
        """The echo's amplitude relative to the speaker's."""
        self._start = round(start_ms * rate / 1000)
        self._queue: deque[Pcm] = deque()
        self._head = 0  # samples of the queue's first frame already played
        self._buffered = 0
        self._state = "idle"  # idle | waiting (for the start threshold) | playing
        self._wait_until = 0  # waiting: the sample at which playback begins anyway
        self._done = False  # agent_done: the reply ends when the queue runs out
        self.paused = False
        """Between a ``pause`` and its ``resume`` (or a ``clear``): nothing plays."""
        self.pauses = 0
        self.clears = 0
        self._out = np.zeros(rate, dtype=np.int16)  # the speaker's output, grown by doubling
        self._rendered = 0  # samples of the speaker's output decided so far

    def __repr__(self) -> str:
        return (
            f"Speakerphone({self._state}{', paused' if self.paused else ''}, buffered="
            f"{self.buffered_ms:.0f} ms, delay={self.delay} samples, gain={self.gain:.3f})"
        )

    @property
    def buffered_ms(self) -> float:
        """Agent audio received and not yet played, in ms (what a playout report says)."""
        return 1000 * self._buffered / self.rate

    @property
    def played(self) -> Pcm:
        """Everything the speaker played so far, from the origin (silence included)."""
        return self._out[: self._rendered].copy()

    def _sample(self, now: float) -> int:
        return max(self._rendered, round((now - self.origin) * self.rate))

    # --- the player's events -------------------------------------------------------------------

    def frame(self, now: float, pcm: bytes) -> None:
        """An agent frame (PCM16 bytes at ``rate``) arrived at ``now``."""
        at = self._sample(now)
        self._render(at)
        samples = np.frombuffer(pcm, dtype="<i2").astype(np.int16)
        if samples.size == 0:
            return
        self._queue.append(samples)
        self._buffered += samples.size
        if self._state == "idle":
            self._state = "waiting"
            self._wait_until = at + self._start
            self._done = False
        if self._state == "waiting" and self._buffered >= self._start:
            self._state = "playing"

    def done(self, now: float) -> None:
        """``agent_done`` at ``now``: the reply ends where the audio received so far ends."""
        self._render(self._sample(now))
        self._done = True
        if self._state == "waiting":
            self._state = "playing"  # the whole reply is there: no reason to wait
        if self._state == "playing" and self._buffered == 0:
            self._state = "idle"

    def pause(self, now: float) -> None:
        """``pause`` at ``now``: playback stops, what is buffered stays."""
        self._render(self._sample(now))
        if not self.paused:
            self.paused = True
            self.pauses += 1

    def resume(self, now: float) -> None:
        """``resume`` at ``now``: playback goes on from the sample where it paused."""
        self._render(self._sample(now))
        self.paused = False

    def clear(self, now: float) -> None:
        """``clear`` at ``now``: the buffered audio is dropped, the player goes idle (a pause
        ends)."""
        self._render(self._sample(now))
        self._queue.clear()
        self._head = 0
        self._buffered = 0
        self._state = "idle"
        self.paused = False
        self.clears += 1

    # --- the mic ------------------------------------------------------------------------------

    def mix(self, mic: Pcm, first_sample: int) -> Pcm:
        """``mic`` (the user's side of mic samples ``first_sample`` on) with the echo added:
        what the speaker played ``delay`` samples before each, times ``gain``, clipped to
        PCM16."""
        end = first_sample + mic.size
        self._render(end)
        echo = np.zeros(mic.size, dtype=np.float64)
        lo, hi = first_sample - self.delay, end - self.delay
        if hi > 0:
            start = max(lo, 0)
            echo[start - lo :] = self._out[start:hi]
        mixed = np.round(mic.astype(np.float64) + self.gain * echo)
        return np.clip(mixed, -32768, 32767).astype(np.int16)

    # --- playback -----------------------------------------------------------------------------

    def _render(self, until: int) -> None:
        """Decides the speaker's output up to sample ``until`` (exclusive)."""
        while self._rendered < until:
            at = self._rendered
            if self.paused or self._state == "idle":
                self._emit_silence(until - at)
            elif self._state == "waiting":
                if self._wait_until > at:
                    self._emit_silence(min(until, self._wait_until) - at)
                else:
                    self._state = "playing"  # waited the threshold's duration
            elif self._buffered == 0:
                if self._done:
                    self._state = "idle"  # played out: the reply is over
                else:
                    self._emit_silence(until - at)  # dry inside a reply: an underrun
            else:
                head = self._queue[0]
                take = min(until - at, head.size - self._head)
                self._emit(head[self._head : self._head + take])
                self._head += take
                self._buffered -= take
                if self._head == head.size:
                    self._queue.popleft()
                    self._head = 0

    def _reserve(self, n: int) -> None:
        if self._rendered + n > self._out.size:
            grown = np.zeros(max(2 * self._out.size, self._rendered + n), dtype=np.int16)
            grown[: self._rendered] = self._out[: self._rendered]
            self._out = grown

    def _emit(self, samples: Pcm) -> None:
        self._reserve(samples.size)
        self._out[self._rendered : self._rendered + samples.size] = samples
        self._rendered += samples.size

    def _emit_silence(self, n: int) -> None:
        self._reserve(n)
        self._rendered += n  # the buffer is zeroed when allocated
