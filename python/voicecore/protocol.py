"""The voicecore wire protocol, version 1, without I/O: messages, parsing, serialization and
the per-connection state machine. ``docs/protocol.md`` is its formal description.

Like the ``websockets`` library's sans-I/O core, this module never touches a socket and
imports no event loop: the server feeds it what arrived (``str`` for a text message,
``bytes`` for a binary one) and does what it answers (hand a message to the engine, send
replies, close with a code). Tests drive it directly, and any transport can reuse it.

A connection in one picture::

    AWAITING_HELLO --hello--> READY --bye / fatal error / server close--> CLOSING --> CLOSED
          |                                                                  ^
          +------------- any error (audio before hello, bad hello...) -------+

Example (what a server adapter does with each incoming message)::

    connection = ProtocolSession(session_id="a1b2", cushion_ms=120)
    step = connection.receive(text_or_bytes)
    for reply in step.replies:
        await websocket.send(serialize(reply))
    if step.message is not None:
        engine.handle(step.message)           # Hello, Audio or Playout
    if step.close is not None:
        await websocket.close(step.close.code, step.close.reason)
"""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Final

from voicecore.exceptions import ProtocolError

__all__ = [
    "DEFAULT_MAX_MESSAGE_BYTES",
    "INPUT_RATES",
    "OUTPUT_RATES",
    "PROTOCOL_VERSION",
    "SERVER_CAPABILITIES",
    "AgentDone",
    "AgentText",
    "Audio",
    "Bye",
    "Clear",
    "ClientMessage",
    "Close",
    "CloseCode",
    "Error",
    "ErrorCode",
    "Hello",
    "Metrics",
    "Pause",
    "Playout",
    "ProtocolError",
    "ProtocolSession",
    "Ready",
    "Resume",
    "ServerMessage",
    "SpeechEnd",
    "SpeechStart",
    "State",
    "Step",
    "Transcript",
    "parse_client_message",
    "serialize",
]

PROTOCOL_VERSION: Final = 1
"""The protocol version this module speaks (``hello.protocol`` and ``ready.protocol``)."""

INPUT_RATES: Final[tuple[int, ...]] = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Mic rates (Hz) a client may declare: the rates the Rust resampler converts exactly."""

OUTPUT_RATES: Final[tuple[int, ...]] = (8000, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
"""Playback rates (Hz) a client may ask for: the rates at which the pacer's 10/20/40 ms
frames hold a whole number of samples (11025 Hz does not; 22050 Hz only at 20 and 40 ms)."""

FRAME_MS: Final[tuple[int, ...]] = (10, 20, 40)
"""Frame durations (ms) a client may propose; the server answers with the one it uses."""

DEFAULT_MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest message accepted by default: 680 ms of 48 kHz mic audio, far above the 20 ms
frames a live client sends, far below what could hurt the server."""

MAX_BUFFERED_MS: Final = 60_000.0
"""The most agent audio a ``playout`` report may say the client holds, ms (the pacer's own
bound: a client never holds a minute of a reply)."""

MAX_PLAYED_MS: Final = 1e10
"""The most agent audio a ``playout`` report may say was played, ms (about 115 days)."""

MAX_UNDERRUNS: Final = 10**9
"""The most underruns a ``playout`` report may count (one per 20 ms frame for ~230 days)."""

MAX_CLIENT_NAME = 200
"""Longest ``hello.client`` string kept (characters)."""

MAX_RESUME_TOKEN: Final = 128
"""Longest ``hello.resume`` token accepted (characters: letters, digits, ``-`` and ``_``)."""
_TOKEN_CHARACTERS: Final = re.compile(r"[A-Za-z0-9_-]+")

MAX_CAPABILITIES = 32
"""Most entries a ``hello.capabilities`` list may have (each at most ``MAX_CLIENT_NAME``
characters): a client announces a handful, never a document."""

SERVER_CAPABILITIES: Final = frozenset({"pause"})
"""Optional features this server can use with a client that announces them in ``hello``:

* ``"pause"``: the client obeys ``pause`` / ``resume`` (it stops playing at once, keeping
  what it holds, and later continues from the exact sample). The server then ducks the agent
  the moment the user starts speaking over it, and resumes it after a cough or a backchannel.
"""


class ErrorCode(enum.StrEnum):
    """The ``code`` of an ``error`` message (what went wrong, for a program to act on)."""

    BAD_JSON = "bad_json"
    """A text message that is not valid JSON."""
    INVALID_MESSAGE = "invalid_message"
    """Valid JSON, but not a message: not an object, no ``type``, a missing or invalid field."""
    UNKNOWN_TYPE = "unknown_type"
    """A ``type`` this protocol version does not define (ignored after ``hello``)."""
    UNEXPECTED_MESSAGE = "unexpected_message"
    """A known message at the wrong moment: a second ``hello``, a ``playout`` before it."""
    AUDIO_BEFORE_HELLO = "audio_before_hello"
    """Binary audio before ``hello`` declared its rate."""
    ODD_LENGTH = "odd_length"
    """A binary message of odd length: not a whole number of PCM16 samples."""
    UNSUPPORTED_RATE = "unsupported_rate"
    """``hello`` declared a sample rate the server cannot work at."""
    PROTOCOL_VERSION = "protocol_version"
    """``hello`` asked for a protocol version the server does not speak."""
    TOO_LARGE = "too_large"
    """A message above the server's size limit."""
    TOO_SLOW = "too_slow"
    """The client reads too slowly: the server's bounded send queue overflowed."""
    PROVIDER = "provider"
    """A provider (STT, LLM, TTS) failed or timed out; the turn ended, the session goes on."""
    BUSY = "busy"
    """The server is at its session limit: try again later."""
    UNAUTHORIZED = "unauthorized"
    """The server requires a bearer token and none, or a wrong one, was given."""
    HELLO_TIMEOUT = "hello_timeout"
    """No ``hello`` arrived in time after the WebSocket opened."""


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses (RFC 6455 section 7.4, plus one private code)."""

    NORMAL = 1000
    """The conversation ended (``bye``, or the client closed)."""
    GOING_AWAY = 1001
    """The server is shutting down."""
    UNSUPPORTED_DATA = 1003
    """The client's audio cannot be handled (an unsupported rate)."""
    POLICY = 1008
    """A protocol or policy violation: bad token, message before ``hello``, bad ``hello``."""
    TOO_BIG = 1009
    """A message above the size limit."""
    TRY_AGAIN_LATER = 1013
    """The server is at its session limit."""
    TOO_SLOW = 4000
    """The client fell too far behind reading the server's messages."""


class State(enum.Enum):
    """Where a connection is in the protocol."""

    AWAITING_HELLO = "awaiting_hello"
    """Open; the client's ``hello`` has not arrived (only ``hello`` and ``bye`` are valid)."""
    READY = "ready"
    """``hello`` accepted and ``ready`` sent: audio and playout reports flow."""
    CLOSING = "closing"
    """A close was decided (by either side); incoming messages are ignored."""
    CLOSED = "closed"
    """The connection is gone."""


# --- client -> server -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Hello:
    """The client's first message: protocol version and audio format.

    Attributes:
        protocol: the protocol version the client speaks (must be ``PROTOCOL_VERSION``).
        input_rate: rate of the mic audio the client will send, Hz.
        output_rate: rate at which the client wants the agent's audio, Hz.
        frame_ms: the frame duration the client proposes, ms (the server may answer another).
        client: the client's name and version, for logs (e.g. ``"voicecore-web/1"``).
        capabilities: optional features the client supports (see ``SERVER_CAPABILITIES``);
            unknown ones are ignored.
        resume: the ``conversation`` token of an earlier ``ready``: continue that
            conversation (its history, its turn numbers) on whichever server answers; None:
            a new conversation.
    """

    protocol: int
    input_rate: int
    output_rate: int
    frame_ms: int = 20
    client: str = ""
    capabilities: frozenset[str] = frozenset()
    resume: str | None = None


@dataclass(frozen=True, slots=True)
class Audio:
    """Mic audio (a binary message): mono PCM16 little-endian at ``hello.input_rate``."""

    pcm: bytes

    @property
    def samples(self) -> int:
        """Number of samples (2 bytes each)."""
        return len(self.pcm) // 2


@dataclass(frozen=True, slots=True)
class Playout:
    """The client's playout report (about 4 per second).

    Attributes:
        buffered_ms: agent audio received but not played yet, ms (the cushion).
        played_ms: agent audio played since the connection opened, ms.
        underruns: times the player ran dry since the connection opened.
    """

    buffered_ms: float
    played_ms: float | None = None
    underruns: int | None = None


@dataclass(frozen=True, slots=True)
class Bye:
    """The client is about to close: the server closes with 1000."""


ClientMessage = Hello | Audio | Playout | Bye
"""What a client sends."""


# --- server -> client -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    """The answer to ``hello``: the session's id and the negotiated audio format.

    Attributes:
        session_id: the session's id (in the server's logs and metrics).
        input_rate: mic rate the server expects, Hz (the client's).
        output_rate: agent audio rate, Hz (the client's).
        frame_ms: duration of each agent audio frame, ms (the server's pacer frame).
        cushion_ms: playout buffer the server aims to keep at the client, ms.
        protocol: the protocol version.
        capabilities: the client's capabilities this server will use (sorted).
        conversation: the token naming this conversation: a client that reconnects sends it
            as ``hello.resume`` to continue it (a secret: whoever holds it reads the history).
        resumed: ``hello.resume`` named a conversation the server found: its history and
            turn numbers continue (False: a new conversation, also when the token was
            unknown or had expired); left out with ``conversation`` by a server that keeps
            no conversations.
        history: when resumed, the conversation so far as the agent remembers it, oldest
            first: ``{"role": "user" | "assistant", "text": ...}`` (a reply the user cut
            short ends with "…"); left out otherwise.
    """

    session_id: str
    input_rate: int
    output_rate: int
    frame_ms: int
    cushion_ms: int
    protocol: int = PROTOCOL_VERSION
    capabilities: tuple[str, ...] = ()
    conversation: str | None = None
    resumed: bool | None = None
    history: tuple[dict[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class SpeechStart:
    """The VAD confirmed user speech that started at ``time_s`` (seconds of mic audio since
    the session started, as the server counted it); ``turn_id`` is the user turn it opens."""

    time_s: float
    turn_id: int | None = None


@dataclass(frozen=True, slots=True)
class SpeechEnd:
    """The user's speech paused at ``time_s`` (seconds of mic audio since the session
    started); the turn ends after the end-of-turn silence unless speech resumes."""

    time_s: float
    turn_id: int | None = None


@dataclass(frozen=True, slots=True)
class Transcript:
    """A transcript of the user's turn ``turn_id``: partial (``final`` false) or final."""

    turn_id: int
    text: str
    final: bool


@dataclass(frozen=True, slots=True)
class AgentText:
    """A chunk of text the agent is about to speak in turn ``turn_id`` (a sentence or clause)."""

    turn_id: int
    text: str


@dataclass(frozen=True, slots=True)
class AgentDone:
    """The agent's reply of ``turn_id`` is over: all its audio has been sent (and, unless
    ``interrupted``, played out by the client's cushion).

    Attributes:
        turn_id: the turn.
        interrupted: the user barged in (a ``clear`` was sent).
        heard: the part of the reply the user heard (all of it when not interrupted).
    """

    turn_id: int
    interrupted: bool = False
    heard: str = ""


@dataclass(frozen=True, slots=True)
class Clear:
    """Barge-in: drop all buffered agent audio now; no frame of ``turn_id`` follows. A clear
    also ends a ``Pause``."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Pause:
    """The user started speaking over reply ``turn_id``: stop playing it now (a short fade
    out), keeping every sample held and receiving more; playout reports go on. Sent only to
    a client that announced the ``"pause"`` capability. ``Resume`` or ``Clear`` follows."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Resume:
    """It was not an interruption (a cough, a backchannel): play reply ``turn_id`` on from
    the exact sample where it paused (a short fade in)."""

    turn_id: int


@dataclass(frozen=True, slots=True)
class Metrics:
    """Per-turn latencies in ms (``None``: the turn never reached that point).

    Attributes:
        turn_id: the turn.
        voice_to_voice_ms: end of the user's speech -> first agent frame released.
        stt_final_ms: end of the user's speech -> final transcript.
        llm_first_token_ms: LLM call -> first text delta.
        tts_first_audio_ms: first TTS call -> first audio chunk.
        barge_in_ms: barge-in confirmed -> the turn fully cancelled and cleared.
        prompt_tokens: size of the LLM prompt, tokens (estimated).
        interrupted: the turn was cut short by a barge-in.
    """

    turn_id: int
    voice_to_voice_ms: float | None = None
    stt_final_ms: float | None = None
    llm_first_token_ms: float | None = None
    tts_first_audio_ms: float | None = None
    barge_in_ms: float | None = None
    prompt_tokens: int | None = None
    interrupted: bool = False


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong; ``code`` for programs, ``message`` for people.

    Attributes:
        code: an ``ErrorCode`` value.
        message: a readable explanation.
        turn_id: the turn concerned, for provider errors.
        stage: the stage that failed (``stt``, ``llm``, ``tts``), for provider errors.
    """

    code: ErrorCode
    message: str
    turn_id: int | None = None
    stage: str | None = None


@dataclass(frozen=True, slots=True)
class AgentAudio:
    """Agent audio (a binary message): one ``frame_ms`` frame, PCM16 LE at ``output_rate``."""

    pcm: bytes


ServerMessage = (
    Ready
    | SpeechStart
    | SpeechEnd
    | Transcript
    | AgentText
    | AgentDone
    | Clear
    | Pause
    | Resume
    | Metrics
    | Error
    | AgentAudio
)
"""What the server sends."""

_TYPE_NAMES: Final[dict[type[Any], str]] = {
    Ready: "ready",
    SpeechStart: "speech_start",
    SpeechEnd: "speech_end",
    Transcript: "transcript",
    AgentText: "agent_text",
    AgentDone: "agent_done",
    Clear: "clear",
    Pause: "pause",
    Resume: "resume",
    Metrics: "metrics",
    Error: "error",
}
_OPTIONAL_FIELDS: Final = frozenset({"turn_id", "stage", "conversation", "resumed", "history"})
"""Fields left out of the JSON when ``None`` (on the messages where they are optional)."""


def serialize(message: ServerMessage) -> str | bytes:
    """The wire form of a server message: ``bytes`` (binary) for audio, JSON text otherwise.

    JSON objects start with ``"type"``; ``turn_id`` and ``stage`` are left out when ``None``
    on speech and error messages; latencies a turn never reached (or not finite) are ``null``.
    """
    if isinstance(message, AgentAudio):
        return message.pcm
    data: dict[str, Any] = {"type": _TYPE_NAMES[type(message)]}
    optional = not isinstance(message, Metrics)
    for item in fields(message):
        name, value = item.name, getattr(message, item.name)
        if value is None and optional and name in _OPTIONAL_FIELDS:
            continue
        if isinstance(value, float) and not math.isfinite(value):
            value = None  # JSON has no NaN or infinity; a latency that is not a number is none
        if isinstance(value, ErrorCode):
            value = str(value)
        elif isinstance(value, tuple):
            value = list(value)
        data[name] = value
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


# --- parsing --------------------------------------------------------------------------------


def _field_int(data: Mapping[str, Any], name: str, *, required: bool, default: int = 0) -> int:
    value = data.get(name)
    if value is None:
        if required:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"'{data['type']}' needs '{name}'")
        return default
    # bool is an int in Python, never in the protocol; nor is 48000.0 an integer (a client
    # that sends it computes its rate as a float: say so rather than guess).
    if isinstance(value, bool) or not isinstance(value, int):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"'{data['type']}.{name}' must be an integer, got {json.dumps(value)[:40]}",
        )
    return value


def _field_ms(data: Mapping[str, Any], name: str, *, required: bool, most: float) -> float | None:
    value = data.get(name)
    if value is None:
        if required:
            raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"'{data['type']}' needs '{name}'")
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"'{data['type']}.{name}' must be a number of ms, got {json.dumps(value)[:40]}",
        )
    if not 0 <= value <= most:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"'{data['type']}.{name}' must be 0-{most:g} ms, got {json.dumps(value)[:40]}",
        )
    return float(value)


def _parse_hello(data: Mapping[str, Any]) -> Hello:
    protocol = _field_int(data, "protocol", required=True)
    if protocol != PROTOCOL_VERSION:
        raise ProtocolError(
            ErrorCode.PROTOCOL_VERSION,
            f"protocol version {protocol} is not supported; this server speaks "
            f"version {PROTOCOL_VERSION}",
        )
    input_rate = _field_int(data, "input_rate", required=True)
    output_rate = _field_int(data, "output_rate", required=True)
    for name, rate, supported in (
        ("input_rate", input_rate, INPUT_RATES),
        ("output_rate", output_rate, OUTPUT_RATES),
    ):
        if rate not in supported:
            raise ProtocolError(
                ErrorCode.UNSUPPORTED_RATE,
                f"{name} {rate} Hz is not supported; use one of "
                + ", ".join(str(r) for r in supported)
                + " Hz",
            )
    frame_ms = _field_int(data, "frame_ms", required=False, default=20)
    if frame_ms not in FRAME_MS:
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE, f"'hello.frame_ms' must be 10, 20 or 40, got {frame_ms}"
        )
    client = data.get("client", "")
    if not isinstance(client, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "'hello.client' must be a string")
    capabilities = data.get("capabilities", [])
    if (
        not isinstance(capabilities, list)
        or len(capabilities) > MAX_CAPABILITIES
        or not all(isinstance(c, str) and len(c) <= MAX_CLIENT_NAME for c in capabilities)
    ):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"'hello.capabilities' must be a list of at most {MAX_CAPABILITIES} strings",
        )
    resume = data.get("resume")
    if resume is not None and (
        not isinstance(resume, str)
        or len(resume) > MAX_RESUME_TOKEN
        or _TOKEN_CHARACTERS.fullmatch(resume) is None
    ):
        raise ProtocolError(
            ErrorCode.INVALID_MESSAGE,
            f"'hello.resume' must be a conversation token from 'ready' (at most "
            f"{MAX_RESUME_TOKEN} letters, digits, '-' or '_')",
        )
    return Hello(
        protocol,
        input_rate,
        output_rate,
        frame_ms,
        client[:MAX_CLIENT_NAME],
        frozenset(capabilities),
        resume,
    )


def _parse_playout(data: Mapping[str, Any]) -> Playout:
    buffered = _field_ms(data, "buffered_ms", required=True, most=MAX_BUFFERED_MS)
    assert buffered is not None
    played = _field_ms(data, "played_ms", required=False, most=MAX_PLAYED_MS)
    underruns = None
    if data.get("underruns") is not None:
        underruns = _field_int(data, "underruns", required=True)
        if not 0 <= underruns <= MAX_UNDERRUNS:
            raise ProtocolError(
                ErrorCode.INVALID_MESSAGE,
                f"'playout.underruns' must be 0-{MAX_UNDERRUNS}, got {underruns}",
            )
    return Playout(buffered, played, underruns)


def parse_client_message(
    data: str | bytes | bytearray | memoryview, *, max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
) -> ClientMessage:
    """Parses one WebSocket message from a client.

    Args:
        data: ``str`` for a text message (JSON), bytes-like for a binary one (mic audio).
        max_bytes: the size limit, in bytes (of the UTF-8 text for a text message).

    Returns:
        ``Hello``, ``Playout`` or ``Bye`` for text, ``Audio`` for binary. Fields the protocol
        does not define are ignored (a newer client may send more).

    Raises:
        ProtocolError: its ``code`` says what is wrong: ``too_large``, ``odd_length``,
            ``bad_json``, ``invalid_message`` (not an object, no ``type``, a missing or
            invalid field), ``unknown_type``, ``protocol_version``, ``unsupported_rate``.
    """
    if not isinstance(data, str):
        pcm = bytes(data)
        if len(pcm) > max_bytes:
            raise ProtocolError(
                ErrorCode.TOO_LARGE,
                f"binary message of {len(pcm)} bytes exceeds the limit of {max_bytes} bytes",
            )
        if len(pcm) % 2:
            raise ProtocolError(
                ErrorCode.ODD_LENGTH,
                f"binary message of {len(pcm)} bytes: PCM16 needs an even number of bytes",
            )
        return Audio(pcm)
    # A character takes at most 4 bytes in UTF-8: only long texts need encoding to check.
    if len(data) > max_bytes // 4 and len(data.encode("utf-8")) > max_bytes:
        raise ProtocolError(
            ErrorCode.TOO_LARGE, f"text message exceeds the limit of {max_bytes} bytes"
        )
    try:
        decoded = json.loads(data)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise ProtocolError(ErrorCode.BAD_JSON, f"invalid JSON: {exc}") from None
    if not isinstance(decoded, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a text message must be a JSON object")
    kind = decoded.get("type")
    if not isinstance(kind, str):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "a message needs a string 'type'")
    if kind == "hello":
        return _parse_hello(decoded)
    if kind == "playout":
        return _parse_playout(decoded)
    if kind == "bye":
        return Bye()
    raise ProtocolError(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:40]!r}")


# --- the state machine ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Close:
    """Close the connection with ``code`` (``CloseCode``) and a short ``reason``."""

    code: CloseCode
    reason: str


@dataclass(frozen=True, slots=True)
class Step:
    """What to do with one incoming message, in this order.

    Attributes:
        replies: messages to send to the client now (``ready``, ``error``).
        message: the message to hand to the engine (``Hello`` once, then ``Audio`` and
            ``Playout``), or None.
        close: close the connection (after sending ``replies``), or None.
    """

    replies: tuple[ServerMessage, ...] = ()
    message: Hello | Audio | Playout | None = None
    close: Close | None = None


_FATAL_BEFORE_HELLO: Final[dict[ErrorCode, CloseCode]] = {
    ErrorCode.UNSUPPORTED_RATE: CloseCode.UNSUPPORTED_DATA,
    ErrorCode.TOO_LARGE: CloseCode.TOO_BIG,
}
"""Close codes of errors before ``hello`` (every error is fatal then; default POLICY)."""

_FATAL_WHEN_READY: Final[dict[ErrorCode, CloseCode]] = {ErrorCode.TOO_LARGE: CloseCode.TOO_BIG}
"""Errors that end a running session; the others drop the one bad message and go on
(one garbled or unknown message is not worth cutting a call, and a newer client may send
types this version does not know)."""

_REASON_LIMIT = 123
"""A close reason's limit in bytes (RFC 6455: 125-byte control frame minus the code)."""


def _reason(text: str) -> str:
    encoded = text.encode("utf-8")[:_REASON_LIMIT]
    return encoded.decode("utf-8", errors="ignore")


@dataclass(eq=False)
class ProtocolSession:
    """The server side of one connection's protocol: what to do with each message.

    Args:
        session_id: the id sent in ``ready``.
        frame_ms: the server's agent audio frame, ms (sent in ``ready``).
        cushion_ms: the playout cushion the server aims for, ms (sent in ``ready``).
        max_message_bytes: the size limit of one client message.

    Attributes:
        state: where the connection is (``State``).
        hello: the client's accepted ``hello`` (None before).
        close_code: the code the connection is closing with, once decided.
        errors: error messages sent to the client so far.
    """

    session_id: str
    frame_ms: int = 20
    cushion_ms: int = 120
    max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES
    state: State = State.AWAITING_HELLO
    hello: Hello | None = None
    close_code: CloseCode | None = None
    errors: int = 0
    _ready: Ready | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.frame_ms not in FRAME_MS:
            raise ValueError(f"frame_ms must be 10, 20 or 40, got {self.frame_ms}")
        if self.cushion_ms < self.frame_ms:
            raise ValueError(f"cushion_ms must be >= frame_ms, got {self.cushion_ms}")
        if self.max_message_bytes < 1024:
            raise ValueError(f"max_message_bytes must be >= 1024, got {self.max_message_bytes}")

    @property
    def ready(self) -> Ready | None:
        """The ``ready`` message sent (None before ``hello``)."""
        return self._ready

    def receive(self, data: str | bytes | bytearray | memoryview) -> Step:
        """What to do with one message from the client (``str``: text, bytes-like: binary)."""
        if self.state in (State.CLOSING, State.CLOSED):
            return Step()  # a close is under way: nothing more is processed
        if self.state is State.AWAITING_HELLO and not isinstance(data, str):
            # Checked before parsing: without a declared rate, no audio can be interpreted.
            return self.fail(
                ErrorCode.AUDIO_BEFORE_HELLO,
                "binary audio before 'hello': send hello (with input_rate) first",
                CloseCode.POLICY,
            )
        try:
            message = parse_client_message(data, max_bytes=self.max_message_bytes)
        except ProtocolError as exc:
            if self.state is State.AWAITING_HELLO:
                close = _FATAL_BEFORE_HELLO.get(exc.code, CloseCode.POLICY)
                return self.fail(exc.code, exc.message, close)
            return self.fail(exc.code, exc.message, _FATAL_WHEN_READY.get(exc.code))
        if isinstance(message, Bye):
            return Step(close=self.close(CloseCode.NORMAL, "bye"))
        if self.state is State.AWAITING_HELLO:
            if not isinstance(message, Hello):
                return self.fail(
                    ErrorCode.UNEXPECTED_MESSAGE,
                    f"'{_client_type(message)}' before 'hello': send hello first",
                    CloseCode.POLICY,
                )
            if message.output_rate * self.frame_ms % 1000:
                return self.fail(
                    ErrorCode.UNSUPPORTED_RATE,
                    f"output_rate {message.output_rate} Hz does not divide into this server's "
                    f"{self.frame_ms} ms frames; use another rate",
                    CloseCode.UNSUPPORTED_DATA,
                )
            self.hello = message
            self._ready = Ready(
                session_id=self.session_id,
                input_rate=message.input_rate,
                output_rate=message.output_rate,
                frame_ms=self.frame_ms,
                cushion_ms=self.cushion_ms,
                capabilities=tuple(sorted(message.capabilities & SERVER_CAPABILITIES)),
            )
            self.state = State.READY
            return Step(replies=(self._ready,), message=message)
        if isinstance(message, Hello):
            return self.fail(
                ErrorCode.UNEXPECTED_MESSAGE,
                "a second 'hello': the format cannot change during a session",
                None,
            )
        return Step(message=message)

    def fail(self, code: ErrorCode, message: str, close: CloseCode | None) -> Step:
        """An error to report to the client, closing with ``close`` unless it is None.

        The server also uses this for its own verdicts: ``too_slow`` (4000), ``busy``
        (1013), ``unauthorized`` (1008), ``hello_timeout`` (1008).
        """
        if self.state in (State.CLOSING, State.CLOSED):
            return Step()
        self.errors += 1
        error = Error(code, message)
        if close is None:
            return Step(replies=(error,))
        return Step(replies=(error,), close=self.close(close, message))

    def close(self, code: CloseCode, reason: str) -> Close | None:
        """Decides to close with ``code``; None if a close was already decided (the first
        decision wins, e.g. a shutdown's 1001 after a client's ``bye`` stays 1000)."""
        if self.state in (State.CLOSING, State.CLOSED):
            return None
        self.state = State.CLOSING
        self.close_code = code
        return Close(code, _reason(reason))

    def closed(self) -> None:
        """The connection is gone (either side closed it, or it broke)."""
        self.state = State.CLOSED


def _client_type(message: ClientMessage) -> str:
    return {Hello: "hello", Audio: "audio", Playout: "playout", Bye: "bye"}[type(message)]
