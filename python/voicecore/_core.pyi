"""Type stubs of the native module ``voicecore._core`` (hand-written, checked by stubtest)."""

from typing import Literal, final, overload

import numpy as np
import numpy.typing as npt

from voicecore._typing import AudioIn

__version__: str
__all__ = [
    "EchoGate",
    "EchoStats",
    "EnergyVad",
    "FlushReport",
    "FrameFeatures",
    "FramePacer",
    "PacerStats",
    "PacerStream",
    "ReleasedFrame",
    "Resampler",
    "RingStats",
    "SampleRing",
    "SinkStats",
    "SocketSink",
    "SpeechEvent",
    "StreamEvent",
    "StreamStats",
    "VadFeatures",
    "VadFrames",
    "__version__",
]

# --- ring buffers --------------------------------------------------------------------------

@final
class SampleRing:
    """Lock-free single-producer/single-consumer ring of PCM16 samples.

    One thread pushes (e.g. the websocket reader), one thread pops (e.g. the DSP loop); the
    two never wait for each other. Every method releases the GIL while it copies. The ring
    stores PCM16: float32 input (nominal range [-1, 1]) is scaled by 32768, rounded and
    clamped as it is stored. Pops and peeks return numpy int16 arrays (``*_bytes`` variants
    return PCM16 bytes; ``pop_into`` fills an array you own).

    Args:
        capacity: size of the ring, in samples (e.g. 2 s at 16 kHz = 32000); 1 to 2**26.
        policy: ``"overwrite"`` (mic capture: overwrite the oldest unread samples, counted as
            ``overwritten``) or ``"reject"`` (playout: store what fits, count the rest as
            ``rejected``).

    Raises:
        ConfigError: capacity zero, negative or above 2**26; an unknown policy.
    """

    def __new__(cls, capacity: int, policy: Literal["overwrite", "reject"]) -> SampleRing: ...
    def push(self, audio: AudioIn) -> int:
        """Pushes audio; returns the samples accepted (with ``"reject"``: as many as fit)."""
    def pop(self, n: int) -> npt.NDArray[np.int16]:
        """Pops up to ``n`` of the oldest unread samples; fewer counts as one underflow."""
    def pop_bytes(self, n: int) -> bytes:
        """Like ``pop``, returning PCM16 little-endian bytes."""
    def pop_into(self, out: npt.NDArray[np.int16]) -> int:
        """Pops up to ``len(out)`` samples into the front of ``out``; returns how many."""
    def peek_last(self, n: int) -> npt.NDArray[np.int16]:
        """The most recent ``n`` samples written (popped or not), without consuming."""
    def peek_last_bytes(self, n: int) -> bytes:
        """Like ``peek_last``, returning PCM16 little-endian bytes."""
    def clear(self) -> int:
        """Drops every unread sample (barge-in flush); returns how many."""
    def stats(self) -> RingStats:
        """A snapshot of the counters, in samples."""
    @property
    def capacity(self) -> int:
        """Size of the ring, in samples."""
    @property
    def policy(self) -> Literal["overwrite", "reject"]:
        """The overflow policy."""
    @property
    def available(self) -> int:
        """Unread samples a pop would return now."""
    @property
    def free(self) -> int:
        """Samples that can be pushed before the ring is full."""

@final
class RingStats:
    """A snapshot of a ``SampleRing``'s counters, in samples except ``underflows``.

    Exact whenever neither half is inside a call, and then
    ``written == read + overwritten + cleared + available``.
    """

    @property
    def capacity(self) -> int: ...
    @property
    def available(self) -> int: ...
    @property
    def written(self) -> int: ...
    @property
    def read(self) -> int: ...
    @property
    def overwritten(self) -> int: ...
    @property
    def rejected(self) -> int: ...
    @property
    def underflows(self) -> int: ...
    @property
    def underflow_samples(self) -> int: ...
    @property
    def cleared(self) -> int: ...
    def __eq__(self, value: object, /) -> bool: ...

# --- streaming resampler -------------------------------------------------------------------

@final
class Resampler:
    """Streaming resampler between two sample rates (mono), by an exact rational ratio.

    Any pair of 8000, 11025, 16000, 22050, 24000, 32000, 44100 and 48000 Hz works, as do
    most other integer rates from 1000 to 384000 Hz. The output does not depend on how the
    input is chunked. After ``n`` input samples in total, ``ceil(n * out_rate / in_rate)``
    output samples have come out; the output lags the input by ``latency`` output samples
    (drop them to align), and ``flush()`` returns the last ``latency`` samples of a stream.
    PCM16 bytes -> bytes, int16 -> int16 (rounded, saturated), float32 -> float32.

    Raises:
        UnsupportedSampleRateError: a rate out of range or a pair whose ratio is too complex.
    """

    def __new__(cls, in_rate: int, out_rate: int) -> Resampler: ...
    @property
    def in_rate(self) -> int:
        """Input sample rate in Hz."""
    @property
    def out_rate(self) -> int:
        """Output sample rate in Hz."""
    @property
    def latency(self) -> int:
        """Delay of the output behind the input, in output samples."""
    def output_len(self, input_len: int) -> int:
        """Output samples ``process`` will return for ``input_len`` more input samples."""
    @overload
    def process(self, audio: bytes | bytearray | memoryview) -> bytes: ...
    @overload
    def process(self, audio: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]: ...
    @overload
    def process(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
    def flush(self) -> bytes | npt.NDArray[np.int16] | npt.NDArray[np.float32]:
        """Ends the stream: its last ``latency`` samples, in the last input's type; resets."""
    def reset(self) -> None:
        """Forgets the current stream; the next input starts a new one."""

# --- VAD features and energy VAD -----------------------------------------------------------

@final
class VadFeatures:
    """Per-frame VAD features: RMS level, zero-crossing rate, spectral flatness and centroid,
    speech-band (300-3400 Hz) energy ratio and log-mel energies.

    Frames are ``frame_ms`` long at ``sample_rate`` (``frame_length`` samples), Hann-windowed
    and zero-padded to a power-of-two real FFT planned once. Every call releases the GIL.

    Args:
        sample_rate: 8000 or 16000 (Hz).
        frame_ms: frame duration in ms: 10, 20 or 30.
        n_mels: number of log-mel bands, 0..=128 (0 skips them).

    Raises:
        UnsupportedSampleRateError: another sample rate.
        ConfigError: another frame duration, or a band count out of range.
    """

    def __new__(
        cls, sample_rate: int = 16000, frame_ms: int = 20, n_mels: int = 40
    ) -> VadFeatures: ...
    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz."""
    @property
    def frame_ms(self) -> int:
        """Frame duration in ms."""
    @property
    def n_mels(self) -> int:
        """Number of log-mel bands."""
    @property
    def frame_length(self) -> int:
        """Frame length in samples."""
    def compute(self, frame: AudioIn) -> FrameFeatures:
        """Features of one frame of exactly ``frame_length`` samples (else AudioFormatError)."""
    def compute_many(self, audio: AudioIn) -> dict[str, npt.NDArray[np.float32]]:
        """Features of every whole frame (a trailing partial frame is ignored), one GIL release.

        Keys: ``rms_dbfs``, ``zero_crossing_rate``, ``spectral_flatness``,
        ``spectral_centroid_hz``, ``speech_band_ratio`` (shape ``(n_frames,)``) and
        ``log_mel`` (shape ``(n_frames, n_mels)``).
        """

@final
class FrameFeatures:
    """The features of one frame (see ``VadFeatures.compute``)."""

    @property
    def rms_dbfs(self) -> float:
        """RMS level in dBFS (full-scale sine: -3.01), floored at -120 for silence."""
    @property
    def zero_crossing_rate(self) -> float:
        """Fraction of adjacent sample pairs whose sign differs, in [0, 1]."""
    @property
    def spectral_flatness(self) -> float:
        """Geometric over arithmetic mean of the power spectrum, in [0, 1] (silence: 1)."""
    @property
    def spectral_centroid_hz(self) -> float:
        """Power-weighted mean frequency in Hz (silence: 0)."""
    @property
    def speech_band_ratio(self) -> float:
        """Share of the spectral power between 300 and 3400 Hz, in [0, 1] (silence: 0)."""
    @property
    def log_mel(self) -> npt.NDArray[np.float32]:
        """Natural-log mel band energies (full-scale mean square = 1), floored at ln(1e-12)."""

@final
class SpeechEvent:
    """A speech boundary at an absolute sample index of the stream.

    Args:
        kind: ``"start"`` (speech begins at ``sample``) or ``"end"`` (ended just before it).
        sample: sample index from the start of the stream.
        sample_rate: the stream's rate in Hz, for ``time_s``.
    """

    def __new__(
        cls, kind: Literal["start", "end"], sample: int, sample_rate: int
    ) -> SpeechEvent: ...
    @property
    def kind(self) -> Literal["start", "end"]:
        """``"start"`` or ``"end"``."""
    @property
    def sample(self) -> int:
        """Sample index: first speech sample (start) or one past the last (end)."""
    @property
    def sample_rate(self) -> int:
        """Sample rate of the stream in Hz."""
    @property
    def time_s(self) -> float:
        """``sample / sample_rate``, in seconds."""
    def __eq__(self, value: object, /) -> bool: ...
    def __hash__(self) -> int: ...

@final
class VadFrames:
    """``EnergyVad.process_frames`` output: the events plus one entry per completed frame."""

    @property
    def events(self) -> list[SpeechEvent]:
        """The speech events completed by the call."""
    @property
    def first_frame(self) -> int:
        """Stream index of the first frame (frame i covers samples i*frame_length onwards)."""
    @property
    def scores(self) -> npt.NDArray[np.float32]:
        """Speech score per frame in dB (0 at the noise floor)."""
    @property
    def is_speech(self) -> npt.NDArray[np.bool_]:
        """Per frame: the frame alone is speech (before hangover and minimum durations)."""
    @property
    def in_segment(self) -> npt.NDArray[np.bool_]:
        """Per frame: inside a speech segment after that frame (causal)."""
    def __len__(self) -> int: ...

@final
class EnergyVad:
    """Streaming energy VAD: per-band likelihood ratio over an adaptive (minimum-statistics)
    noise floor, with hangover and minimum speech / silence durations.

    Feed audio in chunks of any size; events do not depend on the chunking. A start is the
    first sample of the first frame of the run that confirmed speech, emitted
    ``min_speech_ms`` (rounded up to frames) later; an end is one past the last speech frame
    plus the hangover, emitted after ``hangover_ms + min_silence_ms`` of non-speech.

    Args:
        sample_rate: 8000 or 16000 (Hz).
        frame_ms: 10, 20 or 30 (ms).
        threshold_db: score (dB) at which a frame is speech; (0, 60].
        hangover_ms: speech is extended this long after its last speech frame; [0, 10000].
        min_speech_ms: shorter bursts are ignored; [0, 10000], at least one frame.
        min_silence_ms: shorter pauses (after the hangover) are bridged; [0, 10000].
        noise_window_ms: noise-floor minimum window; louder noise is learnt within it;
            [200, 30000].
        min_level_dbfs: quieter frames are never speech; [-120, 0].
        level_gate_db: frames more than this many dB below the recent speech peak level
            (loudest level inside confirmed speech, decaying 0.5 dB/s) are not speech;
            [1, 120], None disables the gate.

    Raises:
        UnsupportedSampleRateError: another sample rate.
        ConfigError: any other setting out of range.
    """

    def __new__(
        cls,
        sample_rate: int = 16000,
        frame_ms: int = 20,
        *,
        threshold_db: float = 4.0,
        hangover_ms: float = 150.0,
        min_speech_ms: float = 90.0,
        min_silence_ms: float = 200.0,
        noise_window_ms: float = 3000.0,
        min_level_dbfs: float = -60.0,
        level_gate_db: float | None = 20.0,
    ) -> EnergyVad: ...
    @property
    def sample_rate(self) -> int:
        """Sample rate in Hz."""
    @property
    def frame_ms(self) -> int:
        """Frame duration in ms."""
    @property
    def frame_length(self) -> int:
        """Frame length in samples."""
    @property
    def threshold_db(self) -> float:
        """Speech threshold on the score, in dB."""
    @property
    def hangover_ms(self) -> float:
        """Hangover in ms."""
    @property
    def min_speech_ms(self) -> float:
        """Minimum speech duration in ms."""
    @property
    def min_silence_ms(self) -> float:
        """Minimum silence duration in ms."""
    @property
    def noise_window_ms(self) -> float:
        """Noise-floor window in ms."""
    @property
    def min_level_dbfs(self) -> float:
        """Absolute level floor in dBFS."""
    @property
    def level_gate_db(self) -> float | None:
        """Level gate in dB below the recent speech peak, or None when off."""
    @property
    def samples_received(self) -> int:
        """Samples received since construction or ``reset()`` (including a partial frame)."""
    @property
    def speech_until(self) -> int:
        """One past the last sample of the last frame judged speech on its own (0 before
        any): where speech really ended, without the hangover an ``end`` event includes."""
    @property
    def in_segment(self) -> bool:
        """True while inside a speech segment."""
    def process(self, audio: AudioIn) -> list[SpeechEvent]:
        """Feeds a chunk of any length; returns the speech events it completes."""
    def process_frames(self, audio: AudioIn) -> VadFrames:
        """Like ``process``, also returning each completed frame's score and decisions."""
    def flush(self) -> SpeechEvent | None:
        """Ends an open segment at the end of the audio received; its end event, or None."""
    def reset(self) -> None:
        """Forgets all audio: sample indices restart at 0, the noise floor is relearnt."""

# --- frame pacer ---------------------------------------------------------------------------

@final
class FramePacer:
    """Releases fixed-duration audio frames of many streams on absolute deadlines, from its
    own OS thread that never takes the GIL (``clock="virtual"``: no thread, time moves only
    with ``advance``/``advance_to``). Deadlines are ns of ``CLOCK_MONOTONIC``, the clock of
    ``time.monotonic_ns()``. Use as a context manager, or call ``stop()``.

    Raises:
        ConfigError: ``frame_ms`` not 10, 20 or 40, or an unknown ``clock``.
        ResourceError: the OS refused an eventfd, timer or thread (an ``OSError``).
    """

    def __new__(
        cls,
        frame_ms: int = 20,
        *,
        clock: Literal["real", "virtual"] = "real",
        realtime: bool = True,
    ) -> FramePacer: ...
    @property
    def frame_ms(self) -> int:
        """Frame duration, in ms."""
    @property
    def clock(self) -> Literal["real", "virtual"]:
        """The clock the pacer runs on."""
    @property
    def scheduling(self) -> str:
        """What the thread obtained: ``"SCHED_FIFO(10)"``, ``"nice -20"``, ``"normal"``..."""
    @property
    def stopped(self) -> bool:
        """Whether ``stop()`` has been called."""
    def open_stream(
        self,
        sample_rate: int,
        *,
        channels: int = 1,
        cushion_ms: int = 120,
        max_lead_ms: int | None = None,
        queue_ms: int = 2000,
        sink: SocketSink | None = None,
        held: bool = False,
    ) -> PacerStream:
        """Opens a mono playout stream (rates in Hz, durations in ms); returns its handle.

        ``held=True`` opens it held (see ``PacerStream.hold``): it queues audio but releases
        nothing until ``resume()``, which sends the cushion burst at once (and the
        ``"started"`` event then).

        With a ``sink``, the pacer thread writes each released frame to it itself, as one
        WebSocket binary message, and that is all: the frame is not handed over
        (``take_released()`` never returns it). Rust owns the audio it sent; Python, which
        would only copy it into bytes and throw it away, learns what it needs from the
        stream's ``StreamEvent``s (``take_events()``), ``flush()`` and ``stats()``."""
    def fileno(self) -> int:
        """Readable while released frames or stream events may be waiting (and once stopped);
        do not close. After a wake-up call both ``take_events()`` and ``take_released()``."""
    def take_released(self) -> list[ReleasedFrame]:
        """Every released frame waiting, oldest first: frames of streams *without* a sink only
        (the in-memory transport needs their audio). Clears ``fileno()`` unless stream events
        still wait for a consumer of ``take_events()``."""
    def take_events(self) -> list[StreamEvent]:
        """Every stream event waiting (``"started"``, ``"drained"``, ``"late"``), oldest
        first, of every stream, with or without a sink: one lifecycle path for the engine. Clears
        ``fileno()`` unless released frames still wait. Once a consumer calls both takes,
        ``fileno()`` stays readable while either kind waits (a frames-only consumer is not
        woken again for events it never takes; at most 4096 events are kept). Works after
        ``stop()``."""
    def now_ns(self) -> int:
        """Now on the pacer's clock, in ns."""
    def advance(self, ms: float) -> None:
        """Virtual clock: advances time by ``ms`` ms, releasing what falls due."""
    def advance_to(self, now_ns: int) -> None:
        """Virtual clock: moves time to ``now_ns`` (never backwards), releasing what falls due."""
    def stats(self) -> PacerStats:
        """Statistics over the pacer's life."""
    def stop(self) -> None:
        """Stops the pacer thread (idempotent); waiting producers and consumers wake up."""
    def __enter__(self) -> FramePacer: ...
    def __exit__(self, *_exc_info: object) -> None: ...

@final
class PacerStream:
    """A playout stream of a ``FramePacer``: a bounded queue of audio sliced into frames."""

    @property
    def id(self) -> int:
        """The stream id (``ReleasedFrame.stream_id`` and ``StreamEvent.stream_id`` of it)."""
    @property
    def sample_rate(self) -> int:
        """Sample rate, in Hz."""
    @property
    def frame_samples(self) -> int:
        """Samples per frame."""
    @property
    def cushion_ms(self) -> int:
        """Target client cushion, in ms."""
    @property
    def max_lead_ms(self) -> int:
        """Maximum lead over the client's playback, in ms."""
    @property
    def queue_ms(self) -> int:
        """Playout queue capacity, in ms."""
    def push(self, audio: AudioIn) -> int:
        """Queues audio at the stream's rate; returns how many samples fit."""
    def finish(self) -> int:
        """Pads the partial last frame with silence (returns the samples added); ends an
        utterance, so the stream goes idle without underruns once drained, and a
        ``"drained"`` ``StreamEvent`` is queued when the last sample has been released (at
        once if nothing is queued)."""
    def flush(self) -> FlushReport:
        """Drops queued and not-yet-taken audio at once; says what was dropped and heard.
        No ``"drained"`` event follows: the utterance was cut, not played out."""
    def report_playout(self, buffered_ms: float) -> None:
        """The client holds ``buffered_ms`` ms of this stream's audio now."""
    def hold(self) -> bool:
        """Holds the stream (the client paused its playout, keeping what it holds): nothing
        is released and no underrun counted until ``resume()``, the client model is frozen,
        ``push`` still queues. ``True`` when the hold began, ``False`` if already held."""
    def resume(self) -> bool:
        """Resumes a held stream from the exact sample it paused at (a stream opened held
        sends its cushion burst now). ``True`` when it was held, ``False`` otherwise."""
    @property
    def held(self) -> bool:
        """Whether the stream is held."""
    def close(self) -> None:
        """Closes the stream, dropping its queued audio."""
    def writable_fileno(self) -> int:
        """Readable when a cut-short ``push`` may go on; do not close."""
    def stats(self) -> StreamStats:
        """This stream's statistics."""

@final
class ReleasedFrame:
    """One frame released by the pacer."""

    @property
    def stream_id(self) -> int: ...
    @property
    def seq(self) -> int: ...
    @property
    def pcm16(self) -> bytes: ...
    @property
    def deadline_ns(self) -> int: ...
    @property
    def released_ns(self) -> int: ...
    @property
    def lateness_ns(self) -> int: ...

@final
class StreamEvent:
    """A lifecycle event of a pacer stream, from ``FramePacer.take_events()``.

    Why: a stream with a ``SocketSink`` has its frames written to the client by the pacer
    thread and never copied for Python, so Python needs another way to know when the agent
    became audible and when it has finished; every stream emits these events (with or
    without a sink), so the engine has one lifecycle path.

    * ``"started"``: the stream's first frame was released (the agent became audible).
      Once per stream; ``lateness_ns`` is that frame's release lateness.
    * ``"drained"``: after ``PacerStream.finish()``, the last queued sample has been
      released. Once per utterance (audio pushed before the drain continues it); never
      after ``flush()`` until new audio is pushed and finished; nothing after ``close()``.
      ``lateness_ns`` is None.
    * ``"late"``: a frame was released more than 5 ms after its deadline (only late frames
      are reported: the pacer thread never takes the GIL, so a late frame means the whole
      process was frozen or denied the CPU); ``lateness_ns`` is its lateness.
    """

    @property
    def stream_id(self) -> int:
        """The stream it belongs to (``PacerStream.id``)."""
    @property
    def kind(self) -> Literal["started", "drained", "late"]:
        """``"started"``, ``"drained"`` or ``"late"``."""
    @property
    def at_ns(self) -> int:
        """When, in ns of the pacer's clock (the clock of ``FramePacer.now_ns()``)."""
    @property
    def lateness_ns(self) -> int | None:
        """``"started"``/``"late"``: that frame's release lateness in ns; ``"drained"``:
        None."""

@final
class FlushReport:
    """What ``PacerStream.flush`` dropped and what had already gone out (samples / ms)."""

    @property
    def dropped_samples(self) -> int: ...
    @property
    def released_samples(self) -> int: ...
    @property
    def client_buffered_samples(self) -> int: ...
    @property
    def heard_samples(self) -> int: ...
    @property
    def dropped_ms(self) -> float: ...
    @property
    def released_ms(self) -> float: ...
    @property
    def heard_ms(self) -> float: ...

@final
class PacerStats:
    """Statistics of a ``FramePacer`` over its life (closed streams included)."""

    @property
    def scheduling(self) -> str: ...
    @property
    def open_streams(self) -> int: ...
    @property
    def frames_released(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def flushes(self) -> int: ...
    @property
    def dropped_samples(self) -> int: ...
    @property
    def sink_refused(self) -> int: ...
    @property
    def lateness_p50_ms(self) -> float: ...
    @property
    def lateness_p99_ms(self) -> float: ...
    @property
    def lateness_max_ms(self) -> float: ...

@final
class StreamStats:
    """Statistics of one ``PacerStream``."""

    @property
    def frames_released(self) -> int: ...
    @property
    def underruns(self) -> int: ...
    @property
    def flushes(self) -> int: ...
    @property
    def dropped_samples(self) -> int: ...
    @property
    def sink_refused(self) -> int: ...
    @property
    def queued_samples(self) -> int: ...
    @property
    def queued_ms(self) -> float: ...
    @property
    def released_samples(self) -> int: ...
    @property
    def client_buffered_ms(self) -> float: ...
    @property
    def client_rate_ppm(self) -> int: ...
    @property
    def playing(self) -> bool: ...
    @property
    def holds(self) -> int:
        """Holds begun since the stream opened (opening it held counts as one)."""
    @property
    def held_ms(self) -> float:
        """Total time held, the current hold included, in ms."""
    @property
    def lateness_p50_ms(self) -> float: ...
    @property
    def lateness_p99_ms(self) -> float: ...
    @property
    def lateness_max_ms(self) -> float: ...

# --- socket sink ---------------------------------------------------------------------------

@final
class SocketSink:
    """A non-blocking writer to a connected socket, shared by Python and the pacer thread.

    Given to ``FramePacer.open_stream(..., sink=...)``, the pacer thread writes each released
    frame itself as one WebSocket binary message; Python writes its own (already framed)
    messages through ``write``. Every write is one atomic unit; what the socket does not take
    waits (at most ``max_pending_bytes``) ahead of later writes. The sink does not own ``fd``:
    call ``close()`` before closing the socket.

    Raises:
        ConfigError: ``fd`` is not an open socket, or ``max_pending_bytes`` < 1.
    """

    def __new__(cls, fd: int, *, max_pending_bytes: int = 1048576) -> SocketSink: ...
    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Writes ``data`` as one unit; returns the bytes still waiting. Raises
        ``SendBufferFullError`` (nothing queued) or ``ConnectionResetError``."""
    def write_ws_binary_pcm16(self, audio: AudioIn) -> int:
        """Writes PCM16 audio (bytes-like or int16 array) as one WebSocket binary message;
        returns the bytes still waiting."""
    def flush(self) -> int:
        """Sends what is waiting, as far as the socket takes it; returns the bytes left."""
    def close(self) -> None:
        """Never touches the descriptor again once this returns; drops waiting bytes."""
    def set_max_pending_bytes(self, max_pending_bytes: int) -> None:
        """Changes the bound (>= 1; ``ConfigError`` otherwise); waiting bytes stay."""
    def discard_pending(self) -> int:
        """Drops waiting messages except the one partly sent (kept whole); returns the
        bytes dropped."""
    def stop_audio(self) -> None:
        """Refuses ``write_ws_binary_pcm16`` (the pacer's frames) from now on; ``write``
        goes on. Call it before a close frame."""
    @property
    def pending_bytes(self) -> int:
        """Bytes accepted but not yet taken by the socket."""
    @property
    def closed(self) -> bool:
        """Whether ``close()`` has been called."""
    @property
    def broken(self) -> bool:
        """Whether a send failed fatally (peer closed or reset)."""
    @property
    def max_pending_bytes(self) -> int:
        """Most bytes that may wait for the peer."""
    def fileno(self) -> int:
        """The socket's descriptor (owned by the caller)."""
    def stats(self) -> SinkStats:
        """The sink's counters."""

@final
class SinkStats:
    """Counters of a ``SocketSink`` over its life."""

    @property
    def bytes_written(self) -> int: ...
    @property
    def messages(self) -> int: ...
    @property
    def refused(self) -> int: ...
    @property
    def partial_writes(self) -> int: ...

# --- echo gate --------------------------------------------------------------------------------

@final
class EchoGate:
    """An echo gate: keeps the agent's own voice, leaking from the user's loudspeaker into
    their mic, from passing for the user speaking, while the user's speech over the agent
    passes.

    Feed it the agent's audio in play order (``far_audio``), say when it plays
    (``set_playing``), and pass every block of mic audio at 16 kHz through ``process``: echo
    is replaced by comfort noise at the mic's own noise level; the user's speech, and
    everything while the agent is silent, passes untouched. ``near_end_ms`` says how long the
    user (or anything the agent's audio does not explain) has been active: the signal to
    duck on.

    The gate learns the echo's delay (from when the far end plays on the mic's clock to its
    echo in the mic: network, the client's cushion and the room together) and its level per
    band within about 0.5 s of the agent speaking; until then it assumes the echo may come
    from anywhere in the last ``max_delay_ms``, as loud as ``initial_gain_db``.

    Args:
        far_rate: sample rate of the far-end (agent) audio, in Hz.
        max_delay_ms: the longest delay from the far end's playing to its echo, 10-2000 ms.
        margin_db: how far above the echo expected a band must be to count as near end
            (besides the echo's measured scatter), 0-30 dB.
        suppression_db: the mic's gain in echo blocks, -120-0 dB (comfort noise fills in).
        onset_db: near-end activity must be this far above the mic's noise floor, 0-60 dB.
        min_level_dbfs: ... and above this level, -120-0 dBFS.
        tail_ms: the echo's tail (reverberation): 60 dB of decay in this time, 0-2000 ms.
        initial_gain_db: the echo's level assumed before it is measured, -60-20 dB.
        max_far_ms: the most far-end audio queued and not played, 1000-3600000 ms; more is
            refused and counted in ``stats().far_rejected_ms``.

    Raises:
        UnsupportedSampleRateError: a far rate that cannot be resampled to 16 kHz.
        ConfigError: another setting out of its range.
    """

    SAMPLE_RATE: int
    """The mic's sample rate: 16000 Hz."""

    def __new__(
        cls,
        far_rate: int,
        *,
        max_delay_ms: int = 600,
        margin_db: float = 3.0,
        suppression_db: float = -40.0,
        onset_db: float = 12.0,
        min_level_dbfs: float = -55.0,
        tail_ms: float = 300.0,
        initial_gain_db: float = -3.0,
        max_far_ms: int = 600000,
    ) -> EchoGate: ...
    @property
    def far_rate(self) -> int:
        """Sample rate of the far-end audio, in Hz."""
    @property
    def max_delay_ms(self) -> int:
        """The longest delay looked for, in ms."""
    @property
    def playing(self) -> bool:
        """True while the far end plays (see ``set_playing``)."""
    @property
    def near_end_ms(self) -> int:
        """The length of the current run of near-end activity at the end of the mic audio
        processed so far, in ms (a multiple of 10; 0 when the last complete 10 ms block was
        not near end). Duck when it reaches 20-30 ms."""
    def far_audio(self, audio: AudioIn) -> None:
        """Queues far-end (agent) audio at ``far_rate``, in the order it plays.

        Raises:
            AudioFormatError / AudioTypeError: for unusable audio.
        """
    def set_playing(self, playing: bool) -> None:
        """Starts (True) or stops (False) playing the far end: while it plays, every 10 ms
        of mic audio processed takes 10 ms of the queue (silence when the queue is empty)."""
    def clear_far(self) -> None:
        """Drops the far end's queue (a cut or a hold: that audio will not play). What
        already played is still expected to echo."""
    def realign(self) -> None:
        """Forgets the echo's delay, keeping its level: for when the playout timeline moved
        (the client's player ran dry, or its buffer was reset). Until the delay is found
        again (about 0.5 s of far-end speech) the gate expects the echo at any delay."""
    @overload
    def process(self, audio: bytes | bytearray | memoryview) -> bytes: ...
    @overload
    def process(self, audio: npt.NDArray[np.int16]) -> npt.NDArray[np.int16]: ...
    @overload
    def process(self, audio: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]: ...
    def stats(self) -> EchoStats:
        """What the gate has seen and learnt so far (see ``EchoStats``)."""

@final
class EchoStats:
    """A snapshot of what an ``EchoGate`` has seen and learnt."""

    @property
    def echo_blocks(self) -> int:
        """10 ms blocks judged echo and suppressed."""
    @property
    def near_end_blocks(self) -> int:
        """10 ms blocks of near-end activity."""
    @property
    def delay_ms(self) -> int | None:
        """The echo's delay behind the far end as played on the mic's clock, in ms (a
        multiple of 10), or None until it is found."""
    @property
    def echo_gain_db(self) -> float | None:
        """The echo's level relative to the far end's, in dB (energy, for the far end's
        average spectrum), or None until the delay is found."""
    @property
    def converged(self) -> bool:
        """True once the echo's delay is found."""
    @property
    def far_queued_ms(self) -> float:
        """Far-end audio queued and not yet played, in ms."""
    @property
    def far_rejected_ms(self) -> float:
        """Far-end audio refused because the queue held ``max_far_ms``, in ms."""
    def __eq__(self, value: object, /) -> bool: ...
