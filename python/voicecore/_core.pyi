"""Type stubs of the native module ``voicecore._core`` (hand-written, checked by stubtest)."""

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

__version__: str

#: Audio voicecore accepts: PCM16 little-endian bytes, or 1-D numpy int16 / float32 arrays.
AudioIn: TypeAlias = bytes | bytearray | memoryview | npt.NDArray[np.int16] | npt.NDArray[np.float32]

# --- ring buffers --------------------------------------------------------------------------

# --- streaming resampler -------------------------------------------------------------------

# --- VAD features and energy VAD -----------------------------------------------------------

# --- frame pacer ---------------------------------------------------------------------------
