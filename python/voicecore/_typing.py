"""Type aliases shared by the stub of the native module and the Python modules."""

from typing import TypeAlias

import numpy as np
import numpy.typing as npt

#: Audio voicecore accepts: PCM16 little-endian bytes (``bytes``, ``bytearray``,
#: ``memoryview``), or one-dimensional C-contiguous numpy ``int16`` / ``float32`` arrays
#: (float samples in the nominal range [-1, 1]). Read in place, without a copy.
AudioIn: TypeAlias = (
    bytes | bytearray | memoryview | npt.NDArray[np.int16] | npt.NDArray[np.float32]
)
