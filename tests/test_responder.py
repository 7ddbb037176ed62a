"""The rule-based responder (offline default LLM): which rule answers, streaming, timing.

Its wording is free to change, so these tests assert behaviour: the rule chosen, that the
reply streams in several word deltas that join into the reply, that it echoes the user's
words where the rule says so, its delays (on Trio's MockClock) and its determinism.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
import re
from pathlib import Path

import pytest
import trio

from voicecore.diagnostics import Timeline
from voicecore.engine.history import Message
from voicecore.engine.stages import LLM, TurnContext
from voicecore.exceptions import ConfigError
from voicecore.metrics import SessionMetrics, TurnMetrics
from voicecore.providers import RuleBasedResponder
from voicecore.providers.responder import CONNECT_A_MODEL, DEFAULT_RULES, Rule

NINE_O_FIVE = dt.datetime(2026, 11, 21, 9, 5)


def ctx() -> TurnContext:
    return TurnContext(
        turn_id=1,
        session_id="test",
        speech_start=0.0,
        timeline=Timeline(clock=trio.current_time),
        metrics=TurnMetrics(1),
        session_metrics=SessionMetrics("test"),
        log=logging.LoggerAdapter(logging.getLogger("test"), {}),
    )


def conversation(user_says: str) -> list[Message]:
    return [
        Message("system", "You are a helpful voice agent."),
        Message("user", "hello"),
        Message("assistant", "Hello! How can I help?"),
        Message("user", user_says),
    ]


async def collect(responder: RuleBasedResponder, user_says: str) -> list[str]:
    return [d async for d in responder.generate(conversation(user_says), ctx())]


def test_it_implements_the_llm_protocol() -> None:
    assert isinstance(RuleBasedResponder(), LLM)


@pytest.mark.parametrize(
    ("transcript", "rule"),
    [
        ("hello there", "greeting"),
        ("good morning", "greeting"),
        ("what time is it", "time"),
        ("do you know the time", "time"),
        ("what's the date today", "date"),
        ("what day is it", "date"),
        ("repeat after me the cat sat on the mat", "repeat"),
        ("say open the pod bay doors", "repeat"),
        ("who are you", "identity"),
        ("is it going to rain tomorrow", "weather"),
        ("what can you do", "help"),
        ("thank you", "thanks"),
        ("okay bye", "goodbye"),
        ("the quick brown fox", "unknown"),
        ("what is twelve times seven", "arithmetic"),
        ("how much is 3 plus 4", "arithmetic"),
        ("how do I connect a real model", "connect"),
        ("", None),
        ("  ...  ", None),
    ],
)
def test_the_rule_that_answers(transcript: str, rule: str | None) -> None:
    name, text = RuleBasedResponder(clock=lambda: NINE_O_FIVE).respond(transcript)
    assert name == rule
    assert text.strip()
    assert text.rstrip()[-1] in ".!?"  # a whole sentence: the chunker hands it to the TTS


def test_repeat_says_the_users_words_back_when_asked_and_only_then() -> None:
    responder = RuleBasedResponder()
    _, repeated = responder.respond("repeat after me the cat sat on the mat")
    assert "the cat sat on the mat" in repeated.lower()
    assert "repeat" not in repeated.lower()
    # It does not pretend: what it cannot answer is not parroted back as if understood.
    rule, honest = responder.respond("purple elephants dance quietly")
    assert rule == "unknown"
    assert "elephants" not in honest
    assert "not a language model" in honest


@pytest.mark.parametrize(
    ("transcript", "answer"),
    [
        ("what is twelve plus seven", "12 plus 7 is 19."),
        ("what's 12 times 3", "12 times 3 is 36."),
        ("one hundred and five minus five", "105 minus 5 is 100."),
        ("what is three point five times two", "3.5 times 2 is 7."),
        ("seven over two", "7 divided by 2 is 3.5."),
        ("what is 2 - 9", "2 minus 9 is -7."),
        ("twenty one divided by zero", "I cannot divide by zero."),
        ("a thousand and one times two", "1001 times 2 is 2002."),
    ],
)
def test_simple_arithmetic_in_words_or_digits(transcript: str, answer: str) -> None:
    assert RuleBasedResponder().respond(transcript) == ("arithmetic", answer)


def test_it_says_what_it_is_and_how_to_connect_a_real_model() -> None:
    responder = RuleBasedResponder()
    assert "not a language model" in responder.respond("who are you")[1]
    assert "Ollama" in responder.respond("can I use a real model")[1]
    assert CONNECT_A_MODEL.startswith("voicecore serve --llm-kind openai --llm-base-url ")
    assert CONNECT_A_MODEL in (Path(__file__).parents[1] / "README.md").read_text()


def test_time_and_date_come_from_the_clock() -> None:
    responder = RuleBasedResponder(clock=lambda: NINE_O_FIVE)
    _, time_reply = responder.respond("what time is it")
    assert re.search(r"\b9:05\b", time_reply)
    _, date_reply = responder.respond("what's the date")
    assert "Saturday" in date_reply
    assert "21" in date_reply
    assert "November" in date_reply
    afternoon = RuleBasedResponder(clock=lambda: NINE_O_FIVE.replace(hour=15, minute=30))
    assert re.search(r"\b3:30\b", afternoon.respond("what time is it")[1])


async def test_the_reply_streams_word_by_word_from_the_last_user_message() -> None:
    responder = RuleBasedResponder(token_delay_s=0.0)
    deltas = await collect(responder, "purple elephants dance quietly")
    assert len(deltas) >= 4
    assert all(d.strip() and " " not in d.strip() for d in deltas)  # one word each
    assert all(d.startswith(" ") for d in deltas[1:])
    assert not deltas[0].startswith(" ")
    assert "".join(deltas) == responder.respond("purple elephants dance quietly")[1]
    # the earlier user message ("hello") is not what it answers
    assert responder.respond("hello")[1] != "".join(deltas)


async def test_delays_first_token_then_per_word(autojump_clock: trio.abc.Clock) -> None:
    responder = RuleBasedResponder(first_token_delay_s=0.25, token_delay_s=0.05)
    start = trio.current_time()
    times = [
        round(trio.current_time() - start, 6)
        async for _ in responder.generate(conversation("purple elephants dance"), ctx())
    ]
    assert times[0] == pytest.approx(0.25)
    assert [b - a for a, b in itertools.pairwise(times)] == pytest.approx([0.05] * (len(times) - 1))


async def test_it_is_deterministic() -> None:
    first = RuleBasedResponder(token_delay_s=0, clock=lambda: NINE_O_FIVE)
    second = RuleBasedResponder(token_delay_s=0, clock=lambda: NINE_O_FIVE)
    for transcript in ("hello", "what time is it", "purple elephants", ""):
        assert await collect(first, transcript) == await collect(second, transcript)


async def test_the_rule_is_recorded_on_the_timeline() -> None:
    turn = ctx()
    responder = RuleBasedResponder(token_delay_s=0)
    _ = [d async for d in responder.generate(conversation("what time is it"), turn)]
    assert [e["rule"] for e in turn.timeline.events("responder_rule")] == ["time"]


async def test_no_user_message_asks_to_say_it_again() -> None:
    responder = RuleBasedResponder(token_delay_s=0)
    deltas = [d async for d in responder.generate([Message("system", "be brief")], ctx())]
    assert "".join(deltas) == responder.respond("")[1]
    assert len(deltas) > 1


async def test_cancellation_during_a_delay_is_prompt(autojump_clock: trio.abc.Clock) -> None:
    responder = RuleBasedResponder(first_token_delay_s=10.0)
    start = trio.current_time()
    with trio.move_on_after(0.1):
        await collect(responder, "hello")
    assert trio.current_time() - start == pytest.approx(0.1)


def test_custom_rules_come_first_in_their_order() -> None:
    pizza = Rule("pizza", re.compile(r"\bpizza\b", re.IGNORECASE), lambda _, __: "Yum, pizza.")
    responder = RuleBasedResponder([pizza, *DEFAULT_RULES])
    assert responder.respond("hello, I want pizza")[0] == "pizza"
    assert responder.respond("hello")[0] == "greeting"
    only_pizza = RuleBasedResponder([pizza])
    assert only_pizza.respond("hello") == (None, only_pizza.respond("")[1])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_token_delay_s": -0.1},
        {"token_delay_s": -1.0},
        {"token_delay_s": float("nan")},
        {"rules": []},
    ],
)
def test_bad_settings_are_rejected(kwargs: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        RuleBasedResponder(**kwargs)  # type: ignore[arg-type]


def test_repr_names_its_settings() -> None:
    text = repr(RuleBasedResponder(token_delay_s=0.03))
    assert "RuleBasedResponder" in text
    assert "0.03" in text
