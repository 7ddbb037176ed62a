"""Listener feedback versus an interruption, from the words alone (``engine.backchannel``)."""

from __future__ import annotations

import pytest

from voicecore.engine.backchannel import is_backchannel, words


@pytest.mark.parametrize(
    "text",
    [
        "Mm-hmm.",
        "mm hmm",
        "Uh-huh",
        "yeah",
        "Yeah.",
        "Okay.",
        "ok",
        "right",
        "I see.",
        "Got it.",
        "yeah yeah",
        "Oh, really?",
        "sure, of course",
    ],
)
def test_feedback_is_a_backchannel(text: str) -> None:
    assert is_backchannel(text)


@pytest.mark.parametrize(
    "text",
    [
        "",  # nothing recognized: the caller decides
        "...",
        "stop",
        "wait a minute",
        "yeah but what about tomorrow",
        "okay so what time is it",
        "no",
        "can you repeat that",
        "yeah yeah okay I see right",  # too long to be feedback
    ],
)
def test_anything_else_is_not(text: str) -> None:
    assert not is_backchannel(text)


def test_words_are_normalized() -> None:
    assert words("Mm-hmm, OKAY!") == ["mmhmm", "okay"]
    assert words("Uh huh.") == ["uhhuh"]
    assert words("don't") == ["don't"]
