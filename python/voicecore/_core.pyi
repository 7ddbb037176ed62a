"""Type stubs of the native module ``voicecore._core`` (hand-written, checked by stubtest)."""

from typing import Literal, TypeAlias, final, overload

import numpy as np
import numpy.typing as npt

__version__: str

#: Audio voicecore accepts: PCM16 little-endian bytes, or 1-D numpy int16 / float32 arrays.
AudioIn: TypeAlias = bytes | bytearray | memoryview | npt.NDArray[np.int16] | npt.NDArray[np.float32]

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

# --- frame pacer ---------------------------------------------------------------------------
