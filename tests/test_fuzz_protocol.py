"""Property-based fuzzing of the wire protocol (voicecore.protocol, issue 6).

Arbitrary text, bytes and JSON-ish values through ``parse_client_message``, and arbitrary
message sequences through ``ProtocolSession``: the parser returns a valid message or raises
``ProtocolError`` with the precise code an independent oracle predicts, the state machine
never raises and keeps its documented rules, and huge inputs cost memory in proportion to
their size, checked before any JSON is decoded. Examples are bounded so the file runs in a
few seconds.
"""

from __future__ import annotations

import json
import math
import tracemalloc
from collections.abc import Callable
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecore.exceptions import ProtocolError
from voicecore.protocol import (
    DEFAULT_MAX_MESSAGE_BYTES,
    FRAME_MS,
    INPUT_RATES,
    MAX_CLIENT_NAME,
    OUTPUT_RATES,
    Audio,
    Bye,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Playout,
    ProtocolSession,
    Ready,
    State,
    parse_client_message,
)

T = TypeVar("T")

FUZZ = settings(max_examples=150, deadline=None)

MESSAGE_TYPES = ("hello", "playout", "bye")

# JSON values of every kind, including the non-finite numbers Python's json emits and accepts.
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)

# Field values that are sometimes right: the protocol's own rates and sizes among junk.
plausible = st.one_of(
    st.sampled_from([*INPUT_RATES, *FRAME_MS, 1, 0, -1, 1.0, 48000.0, 20.5, "1", True]),
    json_scalars,
)
message_dicts = st.fixed_dictionaries(
    {"type": st.sampled_from([*MESSAGE_TYPES, "ready", "", "HELLO"]) | json_scalars},
    optional={
        name: plausible
        for name in (
            "protocol",
            "input_rate",
            "output_rate",
            "frame_ms",
            "client",
            "buffered_ms",
            "played_ms",
            "underruns",
        )
    },
)


def attempt(call: Callable[[], T]) -> T | Exception:
    """The call's result, or the exception it raised (checked by the caller: any type other
    than the expected one fails the test with the exception shown)."""
    try:
        return call()
    except Exception as exc:
        return exc


def expected_code(text: str) -> ErrorCode | None:
    """The error code the protocol document gives for a text message's framing, or None when
    the framing is right and the fields decide (an oracle independent of the parser)."""
    try:
        decoded = json.loads(text)
    except (ValueError, RecursionError):
        return ErrorCode.BAD_JSON
    if not isinstance(decoded, dict) or not isinstance(decoded.get("type"), str):
        return ErrorCode.INVALID_MESSAGE
    if decoded["type"] not in MESSAGE_TYPES:
        return ErrorCode.UNKNOWN_TYPE
    return None


def check_valid(message: Any) -> None:
    """A parsed message obeys the protocol document."""
    if isinstance(message, Hello):
        assert message.protocol == 1
        assert message.input_rate in INPUT_RATES
        assert message.output_rate in OUTPUT_RATES
        assert message.frame_ms in FRAME_MS
        assert isinstance(message.client, str)
        assert len(message.client) <= MAX_CLIENT_NAME
    elif isinstance(message, Playout):
        assert math.isfinite(message.buffered_ms)
        assert message.buffered_ms >= 0
        assert message.played_ms is None or (
            math.isfinite(message.played_ms) and message.played_ms >= 0
        )
        assert message.underruns is None or (
            type(message.underruns) is int and message.underruns >= 0
        )
    else:
        assert isinstance(message, Bye | Audio)


def parse_text(text: str) -> None:
    """Parses ``text`` and checks the outcome against the oracle."""
    code = expected_code(text)
    outcome = attempt(lambda: parse_client_message(text))
    if isinstance(outcome, Exception):
        assert isinstance(outcome, ProtocolError), f"unexpected {outcome!r}"
        assert isinstance(outcome.code, ErrorCode)
        assert outcome.message
        assert str(outcome).startswith(f"{outcome.code}: ")
        if code is not None:
            assert outcome.code is code
        else:  # well framed: only a field can be wrong
            assert outcome.code in (
                ErrorCode.INVALID_MESSAGE,
                ErrorCode.PROTOCOL_VERSION,
                ErrorCode.UNSUPPORTED_RATE,
            )
        return
    assert code is None, f"accepted a message the protocol refuses ({code})"
    check_valid(outcome)


@FUZZ
@given(st.text(max_size=200))
def test_arbitrary_text_is_a_message_or_a_precise_error(text: str) -> None:
    parse_text(text)


@FUZZ
@given(json_values)
def test_arbitrary_json_values_are_a_message_or_a_precise_error(value: Any) -> None:
    parse_text(json.dumps(value))


@FUZZ
@given(message_dicts)
def test_message_shaped_objects_are_a_message_or_a_precise_error(value: dict[str, Any]) -> None:
    parse_text(json.dumps(value))


@FUZZ
@given(message_dicts, st.integers(0, 120), st.text(max_size=3))
def test_mangled_json_is_bad_json_or_still_parsed_consistently(
    value: dict[str, Any], cut: int, junk: str
) -> None:
    text = json.dumps(value)
    parse_text(text[:cut] + junk + text[cut:])


@FUZZ
@given(st.binary(max_size=300), st.sampled_from([bytes, bytearray, memoryview]))
def test_arbitrary_binary_is_audio_or_odd_length(data: bytes, kind: type) -> None:
    message = attempt(lambda: parse_client_message(kind(data)))
    if isinstance(message, Exception):
        assert isinstance(message, ProtocolError), f"unexpected {message!r}"
        assert message.code is ErrorCode.ODD_LENGTH
        assert len(data) % 2 == 1
        return
    assert isinstance(message, Audio)
    assert message.pcm == data
    assert message.samples == len(data) // 2


@settings(max_examples=30, deadline=None)
@given(st.integers(1024, 4096), st.integers(-3, 3), st.sampled_from(["text", "binary", "utf8"]))
def test_the_size_limit_is_exact(limit: int, delta: int, kind: str) -> None:
    size = limit + 2 * delta  # even, so a binary message is whole samples
    data: str | bytes
    if kind == "binary":
        data = bytes(size)
    elif kind == "text":
        data = json.dumps({"type": "bye", "pad": "x" * size})[:size]
        data = data + " " * (size - len(data))
    else:  # 3-byte characters: the limit is on UTF-8 bytes, not characters
        data = "€" * (size // 3)
        size = len(data.encode("utf-8"))
    outcome = attempt(lambda: parse_client_message(data, max_bytes=limit))
    refused = isinstance(outcome, ProtocolError) and outcome.code is ErrorCode.TOO_LARGE
    assert refused == (size > limit)
    assert not isinstance(outcome, Exception) or isinstance(outcome, ProtocolError)


@pytest.mark.parametrize("kind", ["text", "bytearray", "memoryview", "nested"])
def test_huge_inputs_are_refused_with_memory_in_proportion(kind: str) -> None:
    size = 16 * 1024 * 1024
    data: str | bytes | bytearray | memoryview
    if kind == "text":
        data = '{"type":"bye","x":"' + "y" * size + '"}'
    elif kind == "bytearray":
        data = bytearray(size)
    elif kind == "memoryview":
        data = memoryview(bytearray(size))
    else:
        data = "[" * size
    tracemalloc.start()
    try:
        with pytest.raises(ProtocolError) as caught:
            parse_client_message(data)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert caught.value.code is ErrorCode.TOO_LARGE
    # Refused before decoding: at most one copy of the input (a binary message is copied
    # into bytes before its length is checked; a text one encoded to UTF-8), never the
    # many-fold cost of decoding 16 MiB of JSON.
    assert peak <= size + (1 << 20), f"peak {peak / 2**20:.1f} MiB for a 16 MiB message"


def test_deep_nesting_under_the_limit_is_bad_json() -> None:
    depth = DEFAULT_MAX_MESSAGE_BYTES // 2 - 1
    with pytest.raises(ProtocolError) as caught:
        parse_client_message("[" * depth + "]" * depth)
    assert caught.value.code is ErrorCode.BAD_JSON


# --- the state machine ----------------------------------------------------------------------

VALID_HELLO = json.dumps(
    {"type": "hello", "protocol": 1, "input_rate": 16000, "output_rate": 24000}
)
client_messages = st.one_of(
    st.just(VALID_HELLO),
    st.builds(json.dumps, message_dicts),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.just(json.dumps({"type": "playout", "buffered_ms": 80.0})),
    st.just(json.dumps({"type": "bye"})),
    st.just(b"\x00" * (DEFAULT_MAX_MESSAGE_BYTES + 2)),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(client_messages, max_size=25), st.sampled_from(FRAME_MS))
def test_any_message_sequence_follows_the_state_machine(
    messages: list[str | bytes], frame_ms: int
) -> None:
    session = ProtocolSession("fuzz", frame_ms=frame_ms, cushion_ms=120)
    errors = readies = 0
    for data in messages:
        before = session.state
        step = session.receive(data)
        sent_errors = [reply for reply in step.replies if isinstance(reply, Error)]
        errors += len(sent_errors)
        readies += sum(isinstance(reply, Ready) for reply in step.replies)
        assert len(step.replies) <= 1
        if before is State.CLOSING:
            # A close was decided: nothing more is processed or answered.
            assert step == type(step)()
            assert session.state is State.CLOSING
            continue
        if step.close is not None:
            assert session.state is State.CLOSING
            assert session.close_code is step.close.code
            assert len(step.close.reason.encode("utf-8")) <= 123
        if before is State.AWAITING_HELLO:
            # Only a valid hello moves on; anything else is an error and a close (or a bye).
            if session.state is State.READY:
                assert isinstance(step.message, Hello)
                assert step.replies == (session.ready,)
            else:
                assert session.state is State.CLOSING
                assert step.message is None
                if session.close_code is not CloseCode.NORMAL:
                    assert len(sent_errors) == 1
        else:  # READY: only too_large or bye ends the session
            assert before is State.READY
            if step.close is not None:
                assert session.close_code in (CloseCode.NORMAL, CloseCode.TOO_BIG)
                if session.close_code is CloseCode.TOO_BIG:
                    assert sent_errors[0].code is ErrorCode.TOO_LARGE
            elif sent_errors:
                assert step.message is None
                assert session.state is State.READY
            else:
                assert isinstance(step.message, Audio | Playout)
                if isinstance(data, bytes):
                    assert isinstance(step.message, Audio)
                    assert step.message.pcm == data
    assert readies <= 1
    assert (readies == 1) == (session.hello is not None)
    assert session.errors == errors
    session.closed()
    assert session.state is State.CLOSED
    assert session.receive(VALID_HELLO) == type(session.receive(b""))()
