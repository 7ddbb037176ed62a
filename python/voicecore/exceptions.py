"""Exceptions raised by voicecore.

Every error voicecore raises derives from :class:`VoicecoreError`, so one ``except`` clause
catches them all. Where the meaning matches a builtin, the class also derives from it (a bad
parameter is a ``ValueError``, audio of the wrong type is a ``TypeError``), so code that
already catches those keeps working.

The tree::

    VoicecoreError
    ├── ConfigError (ValueError)             a parameter out of range: zero sizes, bad durations
    │   └── UnsupportedSampleRateError       a sample rate the component cannot work at
    ├── AudioFormatError (ValueError)        audio of the right type but unusable layout:
    │                                        odd PCM16 byte length, non-contiguous or 2-D array
    ├── AudioTypeError (TypeError)           audio of an unsupported type or dtype
    ├── PacerError                           the frame pacer refused an operation
    │   ├── UnknownStreamError (KeyError)    the stream was never opened, or is closed
    │   └── PacerStoppedError (RuntimeError) the pacer thread has been stopped
    ├── ResourceError (OSError)              the OS refused a resource: an eventfd, a
    │                                        timer, a thread
    ├── SendBufferFullError                  a SocketSink refused a write whole: the peer
    │                                        reads too slowly
    └── ModelFetchError (RuntimeError)       a model could not be downloaded or extracted

The native module (``voicecore._core``) raises these classes directly; it never lets a Rust
panic cross into Python. A ``SocketSink`` whose connection broke (or that was closed) raises
the builtin ``ConnectionResetError``, which code handling dropped connections already catches.
"""

from __future__ import annotations

__all__ = [
    "AudioFormatError",
    "AudioTypeError",
    "ConfigError",
    "ModelFetchError",
    "PacerError",
    "PacerStoppedError",
    "ResourceError",
    "SendBufferFullError",
    "UnknownStreamError",
    "UnsupportedSampleRateError",
    "VoicecoreError",
]


class VoicecoreError(Exception):
    """Base class of every exception voicecore raises."""


class ConfigError(VoicecoreError, ValueError):
    """A construction parameter is out of its valid range (e.g. a zero capacity)."""


class UnsupportedSampleRateError(ConfigError):
    """A sample rate the component cannot work at; the message lists the supported ones."""


class AudioFormatError(VoicecoreError, ValueError):
    """Audio of an accepted type whose layout is unusable.

    For example PCM16 bytes of odd length (not a whole number of samples), a numpy array
    that is not C-contiguous, or one with more than one dimension.
    """


class AudioTypeError(VoicecoreError, TypeError):
    """Audio of a type voicecore does not take.

    Accepted: ``bytes``, ``bytearray`` or ``memoryview`` of PCM16 little-endian samples, and
    one-dimensional numpy arrays of dtype ``int16`` or ``float32``.
    """


class PacerError(VoicecoreError):
    """The frame pacer refused an operation."""


class UnknownStreamError(PacerError, KeyError):
    """The pacer stream was never opened, or has been closed."""

    def __str__(self) -> str:
        # KeyError.__str__ quotes its argument; keep the message readable.
        return str(self.args[0]) if self.args else ""


class PacerStoppedError(PacerError, RuntimeError):
    """The pacer thread has been stopped; it takes no further streams or frames."""


class ResourceError(VoicecoreError, OSError):
    """The operating system refused a resource (an eventfd, a timer, a thread).

    Rare: a process out of file descriptors or threads. The message names the call.
    """


class SendBufferFullError(VoicecoreError):
    """A ``SocketSink`` refused a write: the peer reads too slowly.

    The bytes already waiting for the peer plus this write would pass the sink's
    ``max_pending_bytes``. Nothing of the write was queued, so the stream of messages stays
    whole: drop the message, or close a connection that cannot keep up.
    """


class ModelFetchError(VoicecoreError, RuntimeError):
    """A model could not be downloaded or extracted (the message says which step failed)."""
