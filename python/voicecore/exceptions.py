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
    │   └── InvalidValueError                a value that does not fit its setting
    ├── SendBufferFullError                  a SocketSink refused a write whole: the peer
    │                                        reads too slowly
    ├── ProtocolError (ValueError)           a client message that breaks the wire protocol
    ├── StageTimeoutError (TimeoutError)     a provider did not deliver within its time
    ├── ProviderError                        a network provider's request failed
    │   ├── ProviderConnectionError (ConnectionError)   unreachable, or the connection broke
    │   ├── ProviderHTTPError                an HTTP error status
    │   │   └── ProviderAuthError            401/403: the API key is missing or wrong
    │   └── ProviderResponseError (ValueError)  an answer that does not follow the protocol
    ├── SynthesisError (RuntimeError)        espeak-ng could not be loaded, or failed a text
    ├── SupersededError (RuntimeError)       a newer call took a one-stream provider over
    ├── ModelNotFoundError (FileNotFoundError)  a model file is not where it was looked for
    ├── ModelFetchError (RuntimeError)       a model could not be downloaded or extracted
    ├── CalibrationError (RuntimeError)      the server's start-up measurement of what a
    │                                        conversation costs failed
    └── ConversationRecordError (ValueError)  a stored conversation this server cannot read

    ModelFallbackWarning (RuntimeWarning)    a model is missing and its fallback was asked for
    └── VadFallbackWarning                   the preferred VAD could not be built; the
                                             energy VAD is used instead

The native module (``voicecore._core``) raises these classes directly; it never lets a Rust
panic cross into Python. A ``SocketSink`` whose connection broke (or that was closed) raises
the builtin ``ConnectionResetError``, which code handling dropped connections already catches.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

__all__ = [
    "AudioFormatError",
    "AudioTypeError",
    "CalibrationError",
    "ConfigError",
    "ConversationRecordError",
    "InvalidValueError",
    "ModelFallbackWarning",
    "ModelFetchError",
    "ModelNotFoundError",
    "PacerError",
    "PacerStoppedError",
    "ProtocolError",
    "ProviderAuthError",
    "ProviderConnectionError",
    "ProviderError",
    "ProviderHTTPError",
    "ProviderResponseError",
    "ResourceError",
    "SendBufferFullError",
    "StageTimeoutError",
    "SupersededError",
    "SynthesisError",
    "UnknownStreamError",
    "UnsupportedSampleRateError",
    "VadFallbackWarning",
    "VoicecoreError",
]

if TYPE_CHECKING:
    from voicecore.protocol import ErrorCode

RETRYABLE_STATUS: Final = frozenset({408, 409, 429})
"""HTTP statuses retried besides 5xx: the ones the official OpenAI SDK retries (request
timeout, lock conflict, rate limit)."""


class VoicecoreError(Exception):
    """Base class of every exception voicecore raises."""


class ConfigError(VoicecoreError, ValueError):
    """A construction parameter is out of its valid range (e.g. a zero capacity)."""


class InvalidValueError(ConfigError):
    """A value that does not fit its setting (the message says why; the configuration
    loader adds which setting and where the value came from)."""


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


class CalibrationError(VoicecoreError, RuntimeError):
    """The server's start-up conversation, which measures what a conversation costs with
    the configured pipeline, failed (the message says how); setting
    ``server.capacity_per_core`` or ``server.max_sessions`` skips it."""


class ConversationRecordError(VoicecoreError, ValueError):
    """A conversation store held a record that is not one this server reads (another
    version, or malformed): the client gets a new conversation."""


class ProtocolError(VoicecoreError, ValueError):
    """A client message that breaks the protocol (``voicecore.protocol``).

    Attributes:
        code: what is wrong, for a program (a ``protocol.ErrorCode``).
        message: what is wrong, for a person.
    """

    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class StageTimeoutError(VoicecoreError, TimeoutError):
    """A provider (STT, LLM or TTS) did not deliver within its configured time
    (``SessionConfig``'s ``*_timeout_s``); the turn fails, the session goes on."""


class ProviderError(VoicecoreError):
    """A network provider's request failed; the turn fails, the session goes on.

    Attributes:
        url: the request's URL.
        retryable: whether another attempt may succeed (connection failures, HTTP 5xx,
            408/409/429); the providers retry these only before their first output.
        retry_after_s: the server's ``Retry-After`` (seconds), if it sent one.
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        retryable: bool = False,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.url = url
        self.retryable = retryable
        self.retry_after_s = retry_after_s


class ProviderConnectionError(ProviderError, ConnectionError):
    """The server could not be reached, or the connection broke (reset, closed early)."""


class ProviderHTTPError(ProviderError):
    """The server answered with an HTTP error status.

    Attributes:
        status: the HTTP status code.
        server_message: the error message the server gave (its JSON ``error.message``,
            ``detail`` or ``error`` field, or the start of its text body).
    """

    def __init__(
        self,
        message: str,
        *,
        url: str,
        status: int,
        server_message: str,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(
            message,
            url=url,
            retryable=status >= 500 or status in RETRYABLE_STATUS,
            retry_after_s=retry_after_s,
        )
        self.status = status
        self.server_message = server_message


class ProviderAuthError(ProviderHTTPError):
    """HTTP 401 or 403: the API key is missing, wrong or not allowed this model. Never
    retried."""


class ProviderResponseError(ProviderError, ValueError):
    """The server's answer does not follow the protocol: a malformed server-sent-events line,
    JSON that is not a chat chunk, an odd number of PCM16 bytes, an unexpected content type.
    Never retried (the same server would answer the same way)."""


class SynthesisError(VoicecoreError, RuntimeError):
    """A TTS engine (espeak-ng, a Piper voice) could not be loaded, or failed to phonemize
    or synthesize a text."""


class SupersededError(VoicecoreError, RuntimeError):
    """A newer call took over a provider that serves one stream at a time (a
    ``SphinxSTT``'s decoder): use one instance per concurrent stream."""


class ModelNotFoundError(VoicecoreError, FileNotFoundError):
    """A model file is not where it was looked for.

    The message says where voicecore looked and how to get it (``voicecore models fetch``).
    """


class ModelFallbackWarning(RuntimeWarning):
    """A configured model is missing or broken and the configuration asked for its fallback
    (``stt.fallback``, ``tts.fallback``): the pipeline runs with the fallback."""


class VadFallbackWarning(ModelFallbackWarning):
    """The preferred VAD could not be built; the engine uses the energy VAD instead."""
