"""The wire protocol without I/O: parsing, serialization and the connection state machine."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from voicecore import protocol
from voicecore.exceptions import ProtocolError
from voicecore.protocol import (
    AgentAudio,
    Audio,
    Bye,
    Clear,
    CloseCode,
    Error,
    ErrorCode,
    Hello,
    Metrics,
    Pause,
    Playout,
    ProtocolSession,
    Ready,
    Resume,
    SpeechStart,
    State,
    Transcript,
    parse_client_message,
    serialize,
)

HELLO = {"type": "hello", "protocol": 1, "input_rate": 48000, "output_rate": 48000, "frame_ms": 20}


def hello(**fields: object) -> str:
    return json.dumps({**HELLO, **fields})


def error_code(data: str | bytes, **kwargs: int) -> ErrorCode:
    with pytest.raises(ProtocolError) as caught:
        parse_client_message(data, **kwargs)
    return caught.value.code


def test_the_module_imports_no_event_loop() -> None:
    tree = ast.parse(Path(protocol.__file__).read_text())
    imported = {
        alias.name.split(".")[0]
        for node in ast.walk(tree)
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in (
            node.names if isinstance(node, ast.Import) else [ast.alias(node.module or "")]
        )
    }
    assert not imported & {"trio", "asyncio", "websockets", "socket"}


# --- parsing ---------------------------------------------------------------------------------


def test_parses_hello_playout_bye_and_audio() -> None:
    assert parse_client_message(hello(client="voicecore-web/1")) == Hello(
        1, 48000, 48000, 20, "voicecore-web/1"
    )
    assert parse_client_message(
        '{"type":"playout","buffered_ms":123.4,"played_ms":4567,"underruns":2}'
    ) == Playout(123.4, 4567.0, 2)
    assert parse_client_message('{"type":"playout","buffered_ms":0}') == Playout(0.0)
    assert parse_client_message('{"type":"bye"}') == Bye()
    assert parse_client_message(b"\x01\x00\x02\x00") == Audio(b"\x01\x00\x02\x00")
    assert parse_client_message(memoryview(b"\x01\x00")).samples == 1  # type: ignore[union-attr]


def test_capabilities_are_announced_and_negotiated() -> None:
    message = parse_client_message(hello(capabilities=["pause", "telepathy"]))
    assert isinstance(message, Hello)
    assert message.capabilities == frozenset({"pause", "telepathy"})
    conn = ProtocolSession(session_id="s1")
    step = conn.receive(hello(capabilities=["telepathy", "pause"]))
    (ready,) = step.replies
    assert isinstance(ready, Ready)
    assert ready.capabilities == ("pause",)  # what this server uses, nothing it does not know
    # An older client announces nothing and gets nothing.
    (ready,) = ProtocolSession(session_id="s2").receive(hello()).replies
    assert isinstance(ready, Ready)
    assert ready.capabilities == ()


@pytest.mark.parametrize("value", ["pause", [1], ["x" * 201], ["a"] * 33, {"pause": True}])
def test_bad_capabilities_are_refused(value: object) -> None:
    assert error_code(hello(capabilities=value)) == ErrorCode.INVALID_MESSAGE


def test_unknown_fields_are_ignored() -> None:
    message = parse_client_message(hello(input_rate=44100, extra={"x": 1}))
    assert message == Hello(1, 44100, 48000, 20, "")


@pytest.mark.parametrize(
    ("data", "code"),
    [
        ("{not json", ErrorCode.BAD_JSON),
        ("", ErrorCode.BAD_JSON),
        ("[1, 2]", ErrorCode.INVALID_MESSAGE),
        ('{"protocol": 1}', ErrorCode.INVALID_MESSAGE),
        ('{"type": 7}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "dance"}', ErrorCode.UNKNOWN_TYPE),
        (hello(protocol=2), ErrorCode.PROTOCOL_VERSION),
        (hello(protocol=0), ErrorCode.PROTOCOL_VERSION),
        (hello(protocol="1"), ErrorCode.INVALID_MESSAGE),
        (hello(protocol=True), ErrorCode.INVALID_MESSAGE),
        (
            json.dumps({"type": "hello", "protocol": 1, "output_rate": 48000}),
            ErrorCode.INVALID_MESSAGE,
        ),
        (hello(input_rate=96000), ErrorCode.UNSUPPORTED_RATE),
        (hello(input_rate=0), ErrorCode.UNSUPPORTED_RATE),
        (hello(input_rate=-16000), ErrorCode.UNSUPPORTED_RATE),
        (hello(output_rate=11025), ErrorCode.UNSUPPORTED_RATE),
        (hello(input_rate=48000.5), ErrorCode.INVALID_MESSAGE),
        # A rate is an integer: 16000.0 is a client computing it as a float, refused.
        (hello(input_rate=16000.0), ErrorCode.INVALID_MESSAGE),
        (hello(frame_ms=20.0), ErrorCode.INVALID_MESSAGE),
        (hello(frame_ms=25), ErrorCode.INVALID_MESSAGE),
        (hello(client=5), ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout"}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": -1}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": "12"}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": NaN}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": Infinity}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": 1, "played_ms": -5}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": 1, "underruns": -1}', ErrorCode.INVALID_MESSAGE),
        # Bounded: a minute of buffered audio, ~115 days played, 10^9 underruns at most.
        ('{"type": "playout", "buffered_ms": 1e308}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": 60000.5}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": 1, "played_ms": 1e11}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": 1, "underruns": 1e20}', ErrorCode.INVALID_MESSAGE),
        (
            '{"type": "playout", "buffered_ms": 1, "underruns": 100000000000000000000}',
            ErrorCode.INVALID_MESSAGE,
        ),
        ('{"type": "playout", "buffered_ms": 1, "underruns": 2.0}', ErrorCode.INVALID_MESSAGE),
        ('{"type": "playout", "buffered_ms": 1, "underruns": 1.5}', ErrorCode.INVALID_MESSAGE),
        (b"\x01\x02\x03", ErrorCode.ODD_LENGTH),
    ],
)
def test_each_bad_message_gets_a_precise_error(data: str | bytes, code: ErrorCode) -> None:
    assert error_code(data) == code


def test_error_messages_say_what_to_do() -> None:
    with pytest.raises(ProtocolError, match=r"input_rate 96000 Hz is not supported; use one of"):
        parse_client_message(hello(input_rate=96000))
    with pytest.raises(ProtocolError, match=r"version 2 is not supported; this server speaks"):
        parse_client_message(hello(protocol=2))
    with pytest.raises(ProtocolError, match=r"3 bytes: PCM16 needs an even number"):
        parse_client_message(b"abc")
    assert isinstance(ProtocolError(ErrorCode.BAD_JSON, "x"), ValueError)


def test_size_limit_applies_to_text_and_binary() -> None:
    assert error_code(b"\x00" * 2050, max_bytes=2048) == ErrorCode.TOO_LARGE
    assert parse_client_message(b"\x00" * 2048, max_bytes=2048) == Audio(b"\x00" * 2048)
    padding = " " * 3000
    assert error_code('{"type":"bye"}' + padding, max_bytes=2048) == ErrorCode.TOO_LARGE
    # Multi-byte characters count by their UTF-8 size.
    text = json.dumps({"type": "bye", "pad": "é" * 1500}, ensure_ascii=False)
    assert len(text) < 2048 < len(text.encode())
    assert error_code(text, max_bytes=2048) == ErrorCode.TOO_LARGE


def test_deeply_nested_json_is_bad_json_not_a_crash() -> None:
    assert error_code("[" * 100_000 + "]" * 100_000, max_bytes=10**6) in (
        ErrorCode.BAD_JSON,
        ErrorCode.INVALID_MESSAGE,
    )


# --- serialization ---------------------------------------------------------------------------


def test_serialize_server_messages() -> None:
    ready = Ready("abc", 48000, 24000, 20, 120)
    assert json.loads(serialize(ready)) == {
        "type": "ready",
        "session_id": "abc",
        "input_rate": 48000,
        "output_rate": 24000,
        "frame_ms": 20,
        "cushion_ms": 120,
        "protocol": 1,
        "capabilities": [],
    }
    assert str(serialize(ready)).startswith('{"type":"ready"')
    assert json.loads(serialize(Pause(4))) == {"type": "pause", "turn_id": 4}
    assert json.loads(serialize(Resume(4))) == {"type": "resume", "turn_id": 4}
    assert serialize(AgentAudio(b"\x01\x00")) == b"\x01\x00"
    assert json.loads(serialize(Clear(3))) == {"type": "clear", "turn_id": 3}
    assert json.loads(serialize(SpeechStart(1.5))) == {"type": "speech_start", "time_s": 1.5}
    assert json.loads(serialize(Error(ErrorCode.TOO_SLOW, "behind"))) == {
        "type": "error",
        "code": "too_slow",
        "message": "behind",
    }
    metrics = json.loads(serialize(Metrics(2, voice_to_voice_ms=512.5)))
    assert metrics["voice_to_voice_ms"] == 512.5
    assert metrics["barge_in_ms"] is None  # not reached: null, never left out
    assert json.loads(serialize(Metrics(2, stt_final_ms=float("nan"))))["stt_final_ms"] is None
    assert json.loads(serialize(Transcript(1, "héllo", True)))["text"] == "héllo"


# --- the state machine -----------------------------------------------------------------------


def connection() -> ProtocolSession:
    return ProtocolSession(session_id="s1", frame_ms=20, cushion_ms=120)


def test_hello_then_ready_then_audio_and_playout() -> None:
    conn = connection()
    assert conn.state.value == "awaiting_hello"
    step = conn.receive(hello(input_rate=16000, output_rate=24000))
    assert step.replies == (Ready("s1", 16000, 24000, 20, 120),)
    assert step.message == Hello(1, 16000, 24000, 20, "")
    assert step.close is None
    assert conn.state is State.READY
    assert conn.ready == step.replies[0]
    assert conn.receive(b"\x00\x00").message == Audio(b"\x00\x00")
    assert conn.receive('{"type":"playout","buffered_ms":80}').message == Playout(80.0)


def test_server_frame_is_answered_whatever_the_client_proposes() -> None:
    conn = connection()
    step = conn.receive(hello(frame_ms=40))
    assert isinstance(step.replies[0], Ready)
    assert step.replies[0].frame_ms == 20


@pytest.mark.parametrize(
    ("data", "code", "close"),
    [
        (b"\x00\x00", ErrorCode.AUDIO_BEFORE_HELLO, CloseCode.POLICY),
        (b"\x00", ErrorCode.AUDIO_BEFORE_HELLO, CloseCode.POLICY),
        ('{"type":"playout","buffered_ms":1}', ErrorCode.UNEXPECTED_MESSAGE, CloseCode.POLICY),
        ("nope", ErrorCode.BAD_JSON, CloseCode.POLICY),
        ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE, CloseCode.POLICY),
        (hello(protocol=2), ErrorCode.PROTOCOL_VERSION, CloseCode.POLICY),
        (hello(output_rate=96000), ErrorCode.UNSUPPORTED_RATE, CloseCode.UNSUPPORTED_DATA),
        ('{"type":"bye","x":"' + "y" * 70_000 + '"}', ErrorCode.TOO_LARGE, CloseCode.TOO_BIG),
    ],
)
def test_every_error_before_hello_closes(
    data: str | bytes, code: ErrorCode, close: CloseCode
) -> None:
    conn = connection()
    step = conn.receive(data)
    assert [type(r) for r in step.replies] == [Error]
    assert isinstance(step.replies[0], Error)
    assert step.replies[0].code == code
    assert step.close is not None
    assert step.close.code == close
    assert step.message is None
    assert conn.state is State.CLOSING
    assert conn.close_code == close
    # Nothing more is processed once closing.
    assert conn.receive(hello()) == protocol.Step()


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"\x00\x00\x00", ErrorCode.ODD_LENGTH),
        ("{oops", ErrorCode.BAD_JSON),
        ('{"type":"dance"}', ErrorCode.UNKNOWN_TYPE),
        ('{"type":"playout"}', ErrorCode.INVALID_MESSAGE),
        (hello(), ErrorCode.UNEXPECTED_MESSAGE),
    ],
)
def test_a_bad_message_in_a_session_is_reported_and_dropped(
    data: str | bytes, code: ErrorCode
) -> None:
    conn = connection()
    conn.receive(hello())
    step = conn.receive(data)
    assert step.close is None
    assert step.message is None
    assert isinstance(step.replies[0], Error)
    assert step.replies[0].code == code
    assert conn.state is State.READY
    assert conn.errors == 1
    assert conn.receive(b"\x00\x00").message == Audio(b"\x00\x00")  # and the session goes on


def test_the_output_rate_must_fit_the_server_frame() -> None:
    conn = ProtocolSession("s", frame_ms=10)
    step = conn.receive(hello(output_rate=22050))  # 220.5 samples per 10 ms frame
    assert isinstance(step.replies[0], Error)
    assert step.replies[0].code == ErrorCode.UNSUPPORTED_RATE
    assert step.close is not None
    assert step.close.code == CloseCode.UNSUPPORTED_DATA
    assert isinstance(ProtocolSession("s").receive(hello(output_rate=22050)).message, Hello)


def test_an_oversized_message_ends_a_session_with_1009() -> None:
    conn = ProtocolSession("s", max_message_bytes=4096)
    conn.receive(hello())
    step = conn.receive(b"\x00" * 4098)
    assert step.close is not None
    assert step.close.code == CloseCode.TOO_BIG
    assert isinstance(step.replies[0], Error)
    assert step.replies[0].code == ErrorCode.TOO_LARGE


def test_bye_closes_normally_and_the_first_close_decision_wins() -> None:
    conn = connection()
    conn.receive(hello())
    step = conn.receive('{"type":"bye"}')
    assert step.close == protocol.Close(CloseCode.NORMAL, "bye")
    assert conn.close(CloseCode.GOING_AWAY, "shutdown") is None
    assert conn.close_code == CloseCode.NORMAL
    assert conn.fail(ErrorCode.TOO_SLOW, "late", CloseCode.TOO_SLOW) == protocol.Step()
    conn.closed()
    assert conn.state is State.CLOSED


def test_server_verdicts_and_long_close_reasons() -> None:
    conn = connection()
    step = conn.fail(ErrorCode.BUSY, "é" * 200, CloseCode.TRY_AGAIN_LATER)
    assert step.close is not None
    assert step.close.code == CloseCode.TRY_AGAIN_LATER
    assert len(step.close.reason.encode()) <= 123  # a close frame's limit, cut on a character
    assert isinstance(step.replies[0], Error)
    assert step.replies[0].message == "é" * 200


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="frame_ms"):
        ProtocolSession("s", frame_ms=15)
    with pytest.raises(ValueError, match="cushion_ms"):
        ProtocolSession("s", cushion_ms=10)
    with pytest.raises(ValueError, match="max_message_bytes"):
        ProtocolSession("s", max_message_bytes=10)
