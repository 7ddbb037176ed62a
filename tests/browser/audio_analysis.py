"""What the browser tests measure, as pure numpy functions (tested in test_audio_analysis.py).

Three signals meet here, all sample-exact:

* the **mic WAV** the test builds (real speech placed between stretches of silence) and
  hands to Chromium's fake capture device; the builder knows where each utterance's speech
  begins (:class:`MicScript`);
* the **received stream**: every binary WebSocket message the server sent (PCM16 agent audio
  at the negotiated output rate), captured by Playwright outside the page, cut into one
  array per turn at each ``agent_done``;
* the **recording** made by the page's tap worklet: what the page played (the player's
  output) and what the mic delivered, side by side on the AudioContext's frame clock.

The web player turns each int16 sample ``s`` into the float ``s / 32768`` and plays the
samples in order, so when nothing goes wrong the recorded output *is* the received stream,
sample for sample, with only idle silence between replies. :func:`align_reply` walks the two
side by side and finds every stretch of silence the player inserted inside a reply (an
underrun: the ring ran dry) and where the reply stopped playing (a barge-in's ``clear``).
A ``pause`` (the server ducking the agent at the user's speech onset) is the one sanctioned
change: the player fades out over ``FADE_MS`` (each sample one step of ``1/fade`` quieter),
holds silence, and fades back in from the exact next sample on ``resume``;
:func:`align_reply` recognises those fades and reports the silence between as a *hold*, not
a gap.
That is the definition of a gap these tests use: **silence in the output that the agent's
audio did not contain**, found by exact comparison, so the pauses espeak puts between words
and sentences (which are in the received stream too) never count, and a gap as short as one
render quantum (128 samples) does. A gap of 10 ms or more is reported separately as an
audible gap.
"""

from __future__ import annotations

import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from voicecore import Resampler

Int16Array = npt.NDArray[np.int16]
FloatArray = npt.NDArray[np.float32]

#: Window of the onset detector, in ms.
ONSET_WINDOW_MS = 5.0
#: RMS level (dBFS) a window must reach to count as speech onset. The corpus' speech peaks
#: around -10 dBFS with a noise floor below -60 dBFS, so -40 dBFS marks the first syllable.
ONSET_LEVEL_DBFS = -40.0
#: How long speech must mostly last from its onset (ms).
ONSET_SUSTAIN_MS = 50.0
#: A gap this long (ms) or longer is an audible hole; shorter inserted silence is still an
#: underrun (a click), counted separately.
AUDIBLE_GAP_MS = 10.0
#: The web client's fade at a pause and a resume (its ``fadeMs`` option's default), ms.
FADE_MS = 5.0


def resample(samples: Int16Array, rate: int, new_rate: int) -> Int16Array:
    """``samples`` at ``rate`` Hz resampled to ``new_rate`` Hz with voicecore's resampler,
    time-aligned: the filter's delay (``latency`` output samples) is dropped."""
    if rate == new_rate:
        return samples
    resampler = Resampler(rate, new_rate)
    out = np.concatenate([resampler.process(samples), resampler.flush()])
    return out[resampler.latency :].astype(np.int16)


def onset(
    samples: npt.NDArray[Any], rate: int, start: int = 0, end: int | None = None
) -> int | None:
    """Index of the first sample of speech in ``samples[start:end]`` (full scale 1.0 for
    floats, 32768 for int16), or None: the start of the first ``ONSET_WINDOW_MS`` window at
    ``ONSET_LEVEL_DBFS`` or louder that begins ``ONSET_SUSTAIN_MS`` of mostly (80 %) loud
    windows, so a click or a breath before the first word is not taken for it (the browser's
    noise suppression removes those, and the onsets in the WAV and in the page's recording
    must mean the same thing)."""
    start = max(0, start)
    x = np.asarray(samples[start:end], dtype=np.float64)
    if samples.dtype == np.int16:
        x = x / 32768.0
    window = max(1, round(rate * ONSET_WINDOW_MS / 1000))
    usable = len(x) // window * window
    if usable == 0:
        return None
    rms = np.sqrt(np.mean(x[:usable].reshape(-1, window) ** 2, axis=1))
    loud = (rms >= 10 ** (ONSET_LEVEL_DBFS / 20)).astype(np.float64)
    span = max(1, round(ONSET_SUSTAIN_MS / ONSET_WINDOW_MS))
    sustained = np.convolve(loud, np.ones(span) / span, mode="full")[span - 1 :]
    found = np.flatnonzero((loud > 0) & (sustained >= 0.8))
    return None if found.size == 0 else start + int(found[0]) * window


class Spoken(Protocol):
    """A recording of speech (the root conftest's ``Utterance``)."""

    @property
    def name(self) -> str: ...
    @property
    def samples(self) -> Int16Array: ...
    @property
    def sample_rate(self) -> int: ...
    @property
    def transcript(self) -> str: ...


@dataclass(frozen=True)
class Segment:
    """One utterance placed in the mic WAV: it starts at ``start`` and its speech at ``onset``
    (both sample indexes of the WAV), and lasts ``length`` samples."""

    name: str
    transcript: str
    start: int
    onset: int
    length: int

    @property
    def end(self) -> int:
        """Index of the sample after the utterance."""
        return self.start + self.length


@dataclass
class MicScript:
    """A mic WAV built from silence and utterances, knowing where every utterance is."""

    rate: int
    samples: Int16Array = field(default_factory=lambda: np.zeros(0, dtype=np.int16))
    segments: list[Segment] = field(default_factory=list)

    def silence(self, seconds: float) -> MicScript:
        """Appends ``seconds`` of digital silence."""
        self.samples = np.concatenate(
            [self.samples, np.zeros(round(seconds * self.rate), dtype=np.int16)]
        )
        return self

    def speech(self, utterance: Spoken) -> MicScript:
        """Appends an utterance (resampled to the WAV's rate)."""
        audio = resample(utterance.samples, utterance.sample_rate, self.rate)
        speech_at = onset(audio, self.rate)
        if speech_at is None:
            raise ValueError(f"{utterance.name} has no sample above {ONSET_LEVEL_DBFS} dBFS")
        start = len(self.samples)
        self.segments.append(
            Segment(utterance.name, utterance.transcript, start, start + speech_at, len(audio))
        )
        self.samples = np.concatenate([self.samples, audio])
        return self

    @property
    def seconds(self) -> float:
        """The WAV's duration in seconds."""
        return len(self.samples) / self.rate

    def write(self, path: Path) -> Path:
        """Writes the mono PCM16 WAV to ``path`` and returns it."""
        with wave.open(str(path), "wb") as wav:
            wav.setnchannels(1)
            wav.setsampwidth(2)
            wav.setframerate(self.rate)
            wav.writeframes(self.samples.astype("<i2").tobytes())
        return path


def to_int16(recorded: FloatArray) -> Int16Array:
    """The page's float samples back as the int16 values they were made from (``s / 32768``)."""
    return np.clip(np.rint(np.asarray(recorded, dtype=np.float64) * 32768), -32768, 32767).astype(
        np.int16
    )


@dataclass(frozen=True)
class Gap:
    """Silence the player inserted inside a reply: ``at`` is its first sample in the recorded
    output, ``length`` its length in samples."""

    at: int
    length: int


@dataclass(frozen=True)
class ReplyPlayback:
    """How one reply's audio (the received stream of one turn) played in the recorded output.

    Attributes:
        rate: sample rate of both signals, Hz.
        first: index in the recording of the reply's first played sample (-1: never found).
        end: index in the recording just after the last played sample of the reply.
        played: samples of the reply that played, in order and unchanged.
        received: samples of the reply that were received.
        gaps: every stretch of silence inserted inside the reply (underruns).
        mismatch: index in the recording where the output stopped matching the reply in any
            other way (a changed sample, audio from nowhere), or -1 when it never did.
        holds: the silences of pauses the reply resumed from (faded out, held, faded in from
            the next sample): sanctioned, not gaps.
        faded_out: the reply stopped playing with a pause's fade-out (then a ``clear``), not
            with an abrupt cut; ``end`` is then the first silent sample after the fade.
    """

    rate: int
    first: int
    end: int
    played: int
    received: int
    gaps: tuple[Gap, ...]
    mismatch: int
    holds: tuple[Gap, ...] = ()
    faded_out: bool = False

    @property
    def found(self) -> bool:
        """Whether the reply's audio was found in the recording at all."""
        return self.first >= 0

    @property
    def complete(self) -> bool:
        """Whether every received sample played."""
        return self.played == self.received

    @property
    def inserted_ms(self) -> float:
        """Total inserted silence, ms."""
        return sum(g.length for g in self.gaps) * 1000 / self.rate

    @property
    def audible_gaps(self) -> tuple[Gap, ...]:
        """The gaps of ``AUDIBLE_GAP_MS`` or longer."""
        return tuple(g for g in self.gaps if g.length * 1000 / self.rate >= AUDIBLE_GAP_MS)

    def summary(self) -> dict[str, object]:
        """Figures for the report (ms, counts)."""
        ms = 1000 / self.rate
        return {
            "found": self.found,
            "received_ms": round(self.received * ms, 1),
            "played_ms": round(self.played * ms, 1),
            "underruns": len(self.gaps),
            "inserted_silence_ms": round(self.inserted_ms, 2),
            "gaps_ge_10ms": len(self.audible_gaps),
            "longest_gap_ms": round(max((g.length for g in self.gaps), default=0) * ms, 2),
            "sample_exact": self.mismatch < 0,
            "holds": len(self.holds),
            "held_ms": [round(h.length * ms, 1) for h in self.holds],
        }


def _first_difference(a: Int16Array, b: Int16Array) -> int:
    """Index of the first position where ``a`` and ``b`` differ, or ``min(len)`` if none."""
    n = min(len(a), len(b))
    diff = np.flatnonzero(a[:n] != b[:n])
    return int(diff[0]) if diff.size else n


def _find(needle: Int16Array, haystack: Int16Array, start: int) -> int:
    """Index of the first exact occurrence of ``needle`` in ``haystack[start:]``, or -1."""
    candidates = np.flatnonzero(haystack[start : len(haystack) - len(needle) + 1] == needle[0])
    for c in candidates:
        at = start + int(c)
        if np.array_equal(haystack[at : at + len(needle)], needle):
            return at
    return -1


def _fade_out(output: Int16Array, reply: Int16Array, i: int, j: int, fade: int, lowest: int) -> int:
    """Where the silence of a pause's fade-out begins, when one explains the difference at
    ``output[i]`` (nonzero) != ``reply[j]``, else -1.

    The fade started ``back`` samples before ``i`` (the first samples of a fade can round to
    the reply's own values); its samples are the reply's times ``(fade-1)/fade``,
    ``(fade-2)/fade``... ``1/fade`` (within one step of rounding), possibly cut short by
    silence (the ring ran dry, or a clear came mid-fade). The start explaining the longest
    stretch wins."""
    steps = fade - 1
    if steps < 1:
        return -1
    gains = (steps - np.arange(steps)) / fade
    best = -1
    for back in range(0, min(steps, i - lowest + 1)):
        s, js = i - back, j - back
        length = min(steps, len(output) - s, len(reply) - js)
        wanted = reply[js : js + length].astype(np.float64)
        expected = wanted * gains[:length]
        # Within a rounding step, or one step of the fade's gain (the player computes its
        # gain in float32 on the audio thread; loud samples show the difference).
        close = np.abs(output[s : s + length] - expected) <= 1.0 + np.abs(wanted) / fade
        explained = length if close.all() else int(np.argmin(close))
        if explained > back:
            best = max(best, s + explained)
    return best


QUIET_LSB = 2
"""The largest residue (int16 steps) a fade's rounding leaves in a pause's silence."""


def _fade_in(
    output: Int16Array, reply: Int16Array, z: int, j: int, fade: int, max_gap: int, key: int
) -> tuple[int, int] | None:
    """Where the reply, silent in the output from ``z`` on (at ``reply[j]``), comes back with
    a resume's fade-in: ``(output index, reply index)`` of the first sample after the fade
    that plays exactly, or None. Between the silence and that point every output sample is
    the reply's scaled by a gain in 0..1 (the fade-in may start in the reply's own silence,
    so where exactly it began cannot be told)."""
    after = np.flatnonzero(reply[j + fade :])
    if after.size == 0:
        return None
    q = j + fade + int(after[0])
    window = reply[q : q + key]
    shift = q - j  # output index of reply[x] is p - q + x
    p = _find(window, output[: z + max_gap + shift + len(window)], z + shift)
    if p < 0:
        return None
    # The reply sample the resume starts from is the one after the fade-out, or a little
    # later: the fade-out's last samples can round to zero (in quiet speech, to 0 and +-1
    # alternately, so where its silence began is uncertain by up to a fade). More would be
    # samples lost, fewer samples played twice. Before it the output is silent but for that
    # rounding residue (+-QUIET_LSB); from it, the reply scaled by the fade-in's gain.
    for resumed_at in range(j, j + fade + 5):
        back_at = p - (q - resumed_at)  # where reply[resumed_at] plays
        if back_at < z:
            continue
        if back_at > z and np.abs(output[z:back_at]).max() > QUIET_LSB:
            break
        played = output[back_at:p].astype(np.int64)
        wanted = reply[resumed_at:q].astype(np.int64)
        scaled = (played * wanted >= 0) & (np.abs(played) <= np.abs(wanted) + 1)
        if scaled.all():
            return p, q
    return None


def _reported_hold(
    output: Int16Array,
    reply: Int16Array,
    i: int,
    j: int,
    fade: int,
    key: int,
    pauses: tuple[tuple[int, int], ...],
) -> tuple[tuple[int, int], tuple[int, int]] | None:
    """When the difference at ``output[i]`` (``reply[j]``) is the fade-out of a pause the page
    reported (``(first silent sample, resume)``), the pause and where the walk goes on after
    its fade-in: ``((silent, resume), (output index, reply index))``, else None. The reply
    resumes at the sample after the fade-out, or a few later (fade samples that round to 0)."""
    for silent, resume in pauses:
        if not silent - fade - 8 <= i <= silent + 8:
            continue
        at_silence = j + (silent - i)
        p = resume + fade
        for lag in range(-4, 9):
            q = at_silence + lag + fade
            if q < 0 or q + key > len(reply) or p + key > len(output):
                continue
            if np.array_equal(output[p : p + key], reply[q : q + key]) and np.any(
                reply[q : q + key]
            ):
                return (silent, resume), (p, q)
    return None


def align_reply(
    output: Int16Array,
    reply: Int16Array,
    rate: int,
    *,
    search_from: int = 0,
    max_gap_s: float = 5.0,
    key: int = 64,
    fade: int | None = None,
    pauses: tuple[tuple[int, int], ...] = (),
) -> ReplyPlayback:
    """Finds ``reply`` (one turn's received audio) in the recorded ``output`` and walks them
    side by side: equal samples played; silence in the output where the reply goes on is a
    :class:`Gap`; a pause's fade-out, silence and fade-in is a hold; the walk ends when the
    reply is done or the output never resumes it (a ``clear`` dropped the rest).

    The reply is located by its first ``key`` samples after its leading silence, searched
    from ``search_from``. After a gap or a hold the walk resumes where the next ``key``
    samples of the reply appear within ``max_gap_s``. Silence inserted while the reply is
    still in its leading silence cannot be told from the idle output before it (nor heard):
    it is not counted here, though the player's own counter counts it.

    ``fade`` is the player's fade in samples (default ``FADE_MS`` at ``rate``). A pause that
    falls in the reply's own silence shows no fade to recognise it by: ``pauses`` (the
    page's pauses, ``(first silent sample, resume)`` as recording indexes) turns a gap that
    overlaps one into a hold. A hold's edges are exact to within the few samples of a fade
    that round to the same int16 values whatever the gain (quiet speech).
    """
    fade = round(rate * FADE_MS / 1000) if fade is None else fade
    received = len(reply)
    nonzero = np.flatnonzero(reply)
    if nonzero.size == 0:
        return ReplyPlayback(rate, -1, -1, 0, received, (), -1)
    j = int(nonzero[0])
    at = _find(reply[j : j + key], output, search_from)
    if at < 0:
        return ReplyPlayback(rate, -1, -1, 0, received, (), -1)
    first, i, played = at, at, j  # the reply's leading silence counts as played
    gaps: list[Gap] = []
    holds: list[Gap] = []
    mismatch = -1
    faded_out = False
    max_gap = round(max_gap_s * rate)
    while j < received:
        step = _first_difference(output[i:], reply[j:])
        i, j, played = i + step, j + step, played + step
        if j >= received or i >= len(output):
            break
        faded_out = False
        resumed = _reported_hold(output, reply, i, j, fade, key, pauses)
        if resumed is not None:
            # A pause the page reported: the fade, its silence and the fade-in are a hold,
            # and the reply goes on exactly where the fade-out ended.
            (a, b), (p, q) = resumed
            holds.append(Gap(a, b - a))
            i, j, played = p, q, played + q - j
            continue
        if output[i] != 0:
            silent = _fade_out(output, reply, i, j, fade, first)
            if silent < 0:
                mismatch = i
                break
            # The fade's samples played (quieter); the pause's silence starts after them.
            i, j, played = silent, j + silent - i, played + silent - i
            faded_out = True
            if j >= received:
                break
        else:
            # Silence where the reply has sound (the first difference is never a zero of the
            # reply: there both are zero): find where the reply's next samples resume.
            window = reply[j : j + key]
            resume = _find(window, output[: i + max_gap + len(window)], i + 1)
            if resume >= 0 and not np.any(output[i:resume] != 0):
                gap = Gap(i, resume - i)
                held = any(a <= i + gap.length + fade and i <= b + fade for a, b in pauses)
                (holds if held else gaps).append(gap)
                i = resume
                continue
        back = _fade_in(output, reply, i, j, fade, max_gap, key)
        if back is None:
            break  # the reply never resumed: dropped (clear) or the recording ended
        p, q = back
        holds.append(Gap(i, p - q + j - i))
        i, j, played = p, q, played + q - j
        faded_out = False
    if mismatch >= 0 or j >= received:
        faded_out = False
    return ReplyPlayback(
        rate, first, i, played, received, tuple(gaps), mismatch, tuple(holds), faded_out
    )


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile (0-100, linear interpolation) of ``values``."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def locate(
    reference: Int16Array, recorded: npt.NDArray[np.floating], ref_rate: int, rate: int
) -> int:
    """Where ``reference`` (int16 at ``ref_rate``) starts in ``recorded`` (floats at ``rate``),
    in samples of ``recorded``: the peak of their cross-correlation (FFT), which survives
    the gain changes and noise suppression the browser's mic processing applies."""
    ref = resample(reference, ref_rate, rate).astype(np.float64) / 32768.0
    rec = np.asarray(recorded, dtype=np.float64)
    size = 1 << int(np.ceil(np.log2(len(ref) + len(rec))))
    corr = np.fft.irfft(np.fft.rfft(rec, size) * np.conj(np.fft.rfft(ref, size)), size)
    return int(np.argmax(corr[: len(rec)]))
