"""Type stubs of the native module ``voicecore._core`` (hand-written, checked by stubtest)."""

from typing import TypeAlias, final, overload

import numpy as np
import numpy.typing as npt

__version__: str

#: Audio voicecore accepts: PCM16 little-endian bytes, or 1-D numpy int16 / float32 arrays.
AudioIn: TypeAlias = bytes | bytearray | memoryview | npt.NDArray[np.int16] | npt.NDArray[np.float32]

# --- ring buffers --------------------------------------------------------------------------

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
