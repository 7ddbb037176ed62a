"""The offline default LLM: a small rule-based responder, so the demo runs without a model.

No trustworthy chat model ships in a registry package (the small ones found are mislabelled
or base models), so the offline pipeline answers with rules, and says so. To talk to a real
model, point the ``llm`` section at any OpenAI-compatible server (Ollama, llama.cpp's
server, vLLM, LM Studio), e.g. ``voicecore serve --llm-kind openai --llm-base-url
http://localhost:11434/v1 --llm-model llama3.2`` (:data:`CONNECT_A_MODEL`).

:class:`RuleBasedResponder` implements the ``LLM`` stage protocol without any model: it reads
the user's last transcript, picks the first :class:`Rule` whose pattern matches it
(greetings, the time, the date, simple arithmetic, "repeat after me", what it is and how to
connect a real model, a few keyword topics, thanks, goodbye) and answers with that rule's
reply; anything else gets an honest "I cannot answer that" with what it can do, never the
user's words parroted back.
The reply streams word by word with a configurable delay per word, like a streaming LLM,
so the engine's sentence chunking, time to first token, barge-in and heard-text history all
behave as they do with a real model.

It is the demo's default, not a test double: its wording may change, so tests assert what
it does (which rule answered, that the reply streams in several deltas and echoes the
user's words where the rule says so), never its exact text. It is deterministic: the same
transcript (and the same clock, for the time and date rules) gives the same reply.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Final

import trio

from voicecore.engine.history import Message
from voicecore.engine.stages import TurnContext
from voicecore.exceptions import ConfigError

__all__ = ["CONNECT_A_MODEL", "DEFAULT_RULES", "Rule", "RuleBasedResponder", "spoken_arithmetic"]

CONNECT_A_MODEL: Final = (
    "voicecore serve --llm-kind openai --llm-base-url http://localhost:11434/v1 "
    "--llm-model llama3.2"
)
"""The one line that swaps the responder for a real local model (here Ollama's; llama.cpp's
server, vLLM and LM Studio speak the same protocol at their own URLs)."""


@dataclass(frozen=True, slots=True)
class Rule:
    """One way to answer: when ``pattern`` is found in the user's words, reply with ``reply``.

    Attributes:
        name: a short identifier (recorded on the turn's timeline as ``responder_rule``).
        pattern: searched (``re.search``) in the user's last transcript; compile it with
            ``re.IGNORECASE`` (transcripts come in any case, usually without punctuation).
        reply: builds the answer from the match and the time of the request (local time of
            the responder's clock).
    """

    name: str
    pattern: re.Pattern[str]
    reply: Callable[[re.Match[str], dt.datetime], str]


def _spoken_time(now: dt.datetime) -> str:
    """``now``'s time of day as it is said: "9:05 AM", "12:30 PM"."""
    hour = now.hour % 12 or 12
    return f"{hour}:{now.minute:02d} {'AM' if now.hour < 12 else 'PM'}"


def _echo(words: str) -> str:
    """The user's words, tidied for repeating back (no trailing punctuation)."""
    return " ".join(words.split()).rstrip(".!?,;: ")


_UNITS: Final = {
    w: i
    for i, w in enumerate(
        [
            "zero",
            "one",
            "two",
            "three",
            "four",
            "five",
            "six",
            "seven",
            "eight",
            "nine",
            "ten",
            "eleven",
            "twelve",
            "thirteen",
            "fourteen",
            "fifteen",
            "sixteen",
            "seventeen",
            "eighteen",
            "nineteen",
        ]
    )
}
_TENS: Final = {
    w: 10 * i
    for i, w in enumerate(
        ["twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety"], 2
    )
}
_SCALES: Final = {"hundred": 100, "thousand": 1000, "million": 1_000_000}
_OPERATORS: Final = {
    "plus": "+",
    "add": "+",
    "minus": "-",
    "less": "-",
    "take away": "-",
    "times": "*",
    "multiplied by": "*",
    "x": "*",
    "divided by": "/",
    "over": "/",
    "+": "+",
    "-": "-",
    "*": "*",
    "/": "/",
}
_NUMBER_WORD: Final = "|".join([*_UNITS, *_TENS, *_SCALES, r"\d+(?:\.\d+)?", "a", "and", "point"])
_OPERATOR: Final = "|".join(sorted((re.escape(o) for o in _OPERATORS), key=len, reverse=True))
_ARITHMETIC: Final = re.compile(
    rf"(?P<a>(?:(?:{_NUMBER_WORD})[\s-]*)+?)\s*(?P<op>{_OPERATOR})\s*"
    rf"(?P<b>(?:(?:{_NUMBER_WORD})[\s-]*)+)",
    re.IGNORECASE,
)


def _number(words: str) -> float | None:
    """A number said in words or digits ("twenty one", "a hundred and five", "three point
    five", "12.5"), or None."""
    total, current, seen = 0.0, 0.0, False
    decimals: list[str] | None = None  # the digits said after "point"
    for word in re.split(r"[\s-]+", words.strip().lower()):
        if not word or word in ("a", "and"):
            continue
        if decimals is not None:
            if word not in _UNITS or _UNITS[word] > 9:
                return None
            decimals.append(str(_UNITS[word]))
        elif word == "point":
            decimals = []
        elif re.fullmatch(r"\d+(?:\.\d+)?", word):
            current += float(word)
        elif word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word in _SCALES:
            scale = _SCALES[word]
            current = (current or 1) * scale
            if scale >= 1000:
                total, current = total + current, 0.0
        else:
            return None
        seen = True
    if not seen:
        return None
    return total + current + (float(f"0.{''.join(decimals)}") if decimals else 0.0)


def _spoken_number(value: float) -> str:
    if value == int(value):
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def spoken_arithmetic(match: re.Match[str]) -> str:
    """The answer to "A <operator> B" (numbers in digits or words): "12 plus 7 is 19."."""
    a, b = _number(match["a"]), _number(match["b"])
    op = _OPERATORS[match["op"].lower()]
    if a is None or b is None:
        return "I could not make out the numbers; say them again, one at a time."
    if op == "/" and b == 0:
        return "I cannot divide by zero."
    result = {"+": a + b, "-": a - b, "*": a * b, "/": a / b if b else 0.0}[op]
    said = {"+": "plus", "-": "minus", "*": "times", "/": "divided by"}[op]
    return f"{_spoken_number(a)} {said} {_spoken_number(b)} is {_spoken_number(result)}."


def _capitalized(text: str) -> str:
    """``text`` with its first letter upper-case (the rest as it was, names included)."""
    return text[:1].upper() + text[1:]


_I = re.IGNORECASE
DEFAULT_RULES: Final[tuple[Rule, ...]] = (
    Rule(
        "repeat",
        re.compile(
            r"^\W*(?:please\s+)?(?:(?:can|could) you\s+)?(?:repeat after me|say)\b[,:]?\s+"
            r"(?P<words>\w.*)",
            _I,
        ),
        lambda m, _: f"{_capitalized(_echo(m['words']))}.",
    ),
    Rule(
        "time",
        re.compile(r"\b(?:what(?:'s| is)? (?:the )?time|the time|time is it)\b", _I),
        lambda _, now: f"It is {_spoken_time(now)}.",
    ),
    Rule(
        "date",
        re.compile(r"\b(?:what(?:'s| is)? (?:the )?date|what day|today'?s date)\b", _I),
        lambda _, now: f"Today is {now:%A}, {now:%B} {now.day}, {now.year}.",
    ),
    Rule(
        "arithmetic",
        re.compile(rf"(?:what(?:'s| is)\s+|how much is\s+|calculate\s+)?{_ARITHMETIC.pattern}", _I),
        lambda m, _: spoken_arithmetic(m),
    ),
    Rule(
        "connect",
        re.compile(
            r"\b(?:connect|plug in|use|add)\b.*\b(?:model|llm|ollama|llama|language)\b"
            r"|\breal (?:model|answers?)\b",
            _I,
        ),
        lambda _, __: (
            "Start a local model server such as Ollama, then run voicecore serve with "
            "llm kind openai and the server's address. The readme shows the exact line."
        ),
    ),
    Rule(
        "greeting",
        re.compile(r"^\W*(?:hello|hi|hey|good (?:morning|afternoon|evening))\b", _I),
        lambda _, __: (
            "Hello! I am voicecore's offline responder, a few rules rather than a language "
            "model. Ask me the time, the date, or a sum."
        ),
    ),
    Rule(
        "identity",
        re.compile(r"\b(?:who are you|your name|what are you)\b", _I),
        lambda _, __: (
            "I am voicecore's offline responder: a few rules, not a language model. I can tell "
            "the time and the date and do simple sums. Connect a local model server for real "
            "answers."
        ),
    ),
    Rule(
        "weather",
        re.compile(r"\b(?:weather|rain(?:ing)?|sunny|temperature|forecast)\b", _I),
        lambda _, __: (
            "I cannot check the weather: I run without a network. Look out of the window, "
            "or connect a language model that can."
        ),
    ),
    Rule(
        "help",
        re.compile(r"\b(?:help|what can you do)\b", _I),
        lambda _, __: (
            "I can tell you the time and the date, do simple sums, and repeat what you say "
            "after the words repeat after me. Try: what is twelve times seven?"
        ),
    ),
    Rule(
        "thanks",
        re.compile(r"\bthanks?(?: you)?\b", _I),
        lambda _, __: "You are welcome.",
    ),
    Rule(
        "goodbye",
        re.compile(r"\b(?:goodbye|good bye|bye|see you)\b", _I),
        lambda _, __: "Goodbye! It was nice talking to you.",
    ),
    Rule(
        "unknown",
        re.compile(r"\w", _I),
        lambda _, __: (
            "I cannot answer that: I am a few rules, not a language model. I can tell the "
            "time and the date and do simple sums; connect a local model for the rest."
        ),
    ),
)
"""The rules :class:`RuleBasedResponder` uses by default, in priority order; the last one
(``unknown``) matches any words and says honestly what the responder can do."""

_NOTHING_HEARD: Final = "Sorry, I did not catch that. Could you say it again?"


class RuleBasedResponder:
    """A streaming LLM (``LLM`` stage protocol) that answers with rules instead of a model.

    Each ``generate`` call answers the last ``user`` message: the first rule of ``rules``
    whose pattern matches produces the reply (with nothing to match, e.g. an empty
    transcript, it asks the user to say it again). The reply is yielded word by word (each
    delta a word with its leading space), the first after ``first_token_delay_s`` and the
    next ``token_delay_s`` apart, as a model server would stream tokens.

    Args:
        rules: the rules, in priority order (default: ``DEFAULT_RULES``).
        first_token_delay_s: delay before the first word, in seconds (>= 0).
        token_delay_s: delay between words, in seconds (>= 0; the default 0.02 s is 50 words
            per second, a fast hosted model).
        clock: returns the local time for the time and date rules (default:
            ``datetime.now``; pass a fixed time for reproducible replies).

    Raises:
        ConfigError: a negative delay or no rules.
    """

    def __init__(
        self,
        rules: Sequence[Rule] = DEFAULT_RULES,
        *,
        first_token_delay_s: float = 0.0,
        token_delay_s: float = 0.02,
        clock: Callable[[], dt.datetime] = dt.datetime.now,
    ) -> None:
        if not rules:
            raise ConfigError("RuleBasedResponder needs at least one rule")
        if not first_token_delay_s >= 0 or not token_delay_s >= 0:  # rejects NaN too
            raise ConfigError(
                "delays must be >= 0 s, got "
                f"first_token_delay_s={first_token_delay_s}, token_delay_s={token_delay_s}"
            )
        self.rules: Final = tuple(rules)
        """The rules, in priority order."""
        self.first_token_delay_s: Final = first_token_delay_s
        """Delay before the first word, in seconds."""
        self.token_delay_s: Final = token_delay_s
        """Delay between words, in seconds."""
        self._clock = clock

    def __repr__(self) -> str:
        return (
            f"RuleBasedResponder({len(self.rules)} rules, "
            f"first_token_delay_s={self.first_token_delay_s}, "
            f"token_delay_s={self.token_delay_s})"
        )

    def respond(self, transcript: str) -> tuple[str | None, str]:
        """The reply to ``transcript``: ``(rule name, text)``; the name is None when no rule
        matched (the "say it again" answer)."""
        for rule in self.rules:
            match = rule.pattern.search(transcript)
            if match is not None:
                return rule.name, rule.reply(match, self._clock())
        return None, _NOTHING_HEARD

    async def generate(self, messages: Sequence[Message], ctx: TurnContext) -> AsyncIterator[str]:
        """Yields the reply to the last user message, word by word (see the class doc).

        Records ``responder_rule`` (the rule's name, or None) on the turn's timeline.
        """
        transcript = next((m.content for m in reversed(messages) if m.role == "user"), "")
        rule, reply = self.respond(transcript)
        ctx.record("responder_rule", rule=rule)
        await trio.sleep(self.first_token_delay_s)
        for index, word in enumerate(reply.split()):
            if index:
                await trio.sleep(self.token_delay_s)
            yield word if index == 0 else f" {word}"
