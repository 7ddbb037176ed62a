"""SpokenReply (audio heard -> text) and ConversationHistory (turns within a token budget)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from voicecore import ConfigError, ConversationHistory, Message, SpokenReply
from voicecore.engine.history import INTERRUPTED_MARK, approx_token_count

# -- SpokenReply ---------------------------------------------------------------------------


@pytest.fixture
def reply() -> SpokenReply:
    """Two chunks of 1000 and 2000 samples; the second has 20 characters per 1000 samples."""
    spoken = SpokenReply()
    spoken.add("Sure, I can help.", 1000)
    spoken.add("First open the settings page now.", 2000)
    return spoken


def test_reply_totals(reply: SpokenReply) -> None:
    assert reply.total_samples == 3000
    assert reply.text == "Sure, I can help. First open the settings page now."
    assert reply.chunks == [
        ("Sure, I can help.", 1000),
        ("First open the settings page now.", 2000),
    ]


@pytest.mark.parametrize(
    ("heard", "expected"),
    [
        (0, ""),
        (-10, ""),
        (999, "Sure, I can"),  # 99.9 % of 17 characters: "help." ends at 17 > 16.98
        (1000, "Sure, I can help."),  # exactly the first chunk boundary
        (1001, "Sure, I can help."),  # 1 sample into the second chunk: no whole word yet
        (3000, "Sure, I can help. First open the settings page now."),
        (10_000, "Sure, I can help. First open the settings page now."),
    ],
)
def test_heard_text_at_boundaries(reply: SpokenReply, heard: int, expected: str) -> None:
    assert reply.heard_text(heard) == expected


def test_heard_text_mid_chunk_keeps_whole_words_in_proportion(reply: SpokenReply) -> None:
    second = "First open the settings page now."  # 33 characters over 2000 samples
    # Half of the second chunk: 16.5 characters, "First open the" ends at 14, "settings" at 23.
    assert reply.heard_text(2000) == "Sure, I can help. First open the"
    # "settings" ends at character 23: heard once 23/33 of 2000 samples have played.
    needed = 1000 + -(-23 * 2000 // len(second))
    assert reply.heard_text(needed - 1) == "Sure, I can help. First open the"
    assert reply.heard_text(needed) == "Sure, I can help. First open the settings"


def test_heard_text_never_returns_part_of_a_word() -> None:
    spoken = SpokenReply()
    spoken.add("Supercalifragilistic expialidocious", 1000)
    for heard in range(0, 1001, 7):
        text = spoken.heard_text(heard)
        assert text in ("", "Supercalifragilistic", "Supercalifragilistic expialidocious")


def test_heard_text_skips_silent_and_empty_chunks() -> None:
    spoken = SpokenReply()
    spoken.add("   ", 500)  # leading silence with no text
    spoken.add("Hello.", 0)  # text without audio counts as heard once reached
    spoken.add("World.", 500)
    assert spoken.heard_text(500) == "Hello."
    assert spoken.heard_text(1000) == "Hello. World."
    assert spoken.text == "Hello. World."


@given(
    chunks=st.lists(
        st.tuples(
            st.text(alphabet=st.sampled_from(list("ab .,")), max_size=30),
            st.integers(min_value=0, max_value=5000),
        ),
        max_size=6,
    ),
    heard=st.lists(st.integers(min_value=-10, max_value=40_000), min_size=2, max_size=2),
)
def test_heard_text_is_a_growing_prefix_of_whole_words(
    chunks: list[tuple[str, int]], heard: list[int]
) -> None:
    spoken = SpokenReply()
    for text, samples in chunks:
        spoken.add(text, samples)
    all_words = spoken.text.split()
    less, more = sorted(heard)
    fewer_words = spoken.heard_text(less).split()
    more_words = spoken.heard_text(more).split()
    assert more_words[: len(fewer_words)] == fewer_words  # hearing more never un-hears text
    assert more_words == all_words[: len(more_words)]  # whole words of the reply, in order
    assert spoken.heard_text(spoken.total_samples + 1) == spoken.text


def test_empty_reply() -> None:
    spoken = SpokenReply()
    assert spoken.total_samples == 0
    assert spoken.text == ""
    assert spoken.heard_text(100) == ""
    assert repr(spoken) == "SpokenReply(chunks=0, total_samples=0)"


def test_reply_rejects_bad_input() -> None:
    spoken = SpokenReply()
    with pytest.raises(ConfigError, match="samples must be >= 0"):
        spoken.add("Hi.", -1)
    with pytest.raises(TypeError, match="samples must be an int"):
        spoken.add("Hi.", 1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        spoken.add(None, 10)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="heard_samples must be an int"):
        spoken.heard_text(0.5)  # type: ignore[arg-type]
    assert spoken.total_samples == 0  # a rejected chunk is not recorded


# -- Message ---------------------------------------------------------------------------------


def test_message() -> None:
    message = Message("user", "Hi")
    assert message.to_dict() == {"role": "user", "content": "Hi"}
    with pytest.raises(ValueError, match="role must be one of"):
        Message("robot", "Hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="content must be a str"):
        Message("user", 3)  # type: ignore[arg-type]


# -- ConversationHistory ---------------------------------------------------------------------


def words(text: str) -> int:
    """A token counter for tests: one token per word."""
    return len(text.split())


def contents(history: ConversationHistory) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in history.messages()]


def test_turns_in_order_with_system_prompt_first() -> None:
    history = ConversationHistory("Be brief.")
    history.add_user("Hello")
    history.add_agent("Hi there!")
    history.add_user("How are you?")
    assert contents(history) == [
        ("system", "Be brief."),
        ("user", "Hello"),
        ("assistant", "Hi there!"),
        ("user", "How are you?"),
    ]
    assert history.turns == 2
    assert history.dropped_turns == 0


def test_empty_system_prompt_means_no_system_message() -> None:
    history = ConversationHistory("  ")
    history.add_user("Hello")
    assert contents(history) == [("user", "Hello")]
    assert history.system_prompt == ""


def test_greeting_before_any_user_message_is_its_own_turn() -> None:
    history = ConversationHistory("sys")
    history.add_agent("Welcome! How can I help?")
    history.add_user("Book a table.")
    assert contents(history)[1:] == [
        ("assistant", "Welcome! How can I help?"),
        ("user", "Book a table."),
    ]
    assert history.turns == 2


def test_blank_messages_add_nothing() -> None:
    history = ConversationHistory("sys")
    history.add_user("   ")
    history.add_agent("", interrupted=True)  # nothing was heard
    assert contents(history) == [("system", "sys")]
    assert history.turns == 0


@pytest.mark.parametrize(
    ("heard", "stored"),
    [
        ("Sure, first open the", "Sure, first open the" + INTERRUPTED_MARK),
        ("Sure, I can help.", "Sure, I can help. " + INTERRUPTED_MARK),
        ("Well, let me think,", "Well, let me think" + INTERRUPTED_MARK),
        ("Hmm...", "Hmm..."),
    ],
)
def test_interrupted_reply_is_marked(heard: str, stored: str) -> None:
    history = ConversationHistory("sys")
    history.add_user("Help me.")
    history.add_agent(heard, interrupted=True)
    assert history.messages()[-1] == Message("assistant", stored)


def test_history_keeps_only_what_was_heard() -> None:
    spoken = SpokenReply()
    spoken.add("The museum opens at nine.", 16_000)
    spoken.add("Tickets cost twelve euros each.", 16_000)
    history = ConversationHistory("sys")
    history.add_user("When does it open?")
    history.add_agent(spoken.heard_text(24_000), interrupted=True)
    assert history.messages()[-1].content == "The museum opens at nine. Tickets cost" + "…"


def test_truncation_drops_oldest_turns_first_and_keeps_the_system_prompt() -> None:
    history = ConversationHistory(
        "system prompt here", token_budget=20, count_tokens=words, message_overhead_tokens=0
    )
    for i in range(5):
        history.add_user(f"question {i} a b")  # 4 tokens
        history.add_agent(f"answer {i} c d")  # 4 tokens: a turn is 8 tokens
    # 3 (system) + 2 turns * 8 = 19 <= 20; a third turn would make 27.
    assert contents(history) == [
        ("system", "system prompt here"),
        ("user", "question 3 a b"),
        ("assistant", "answer 3 c d"),
        ("user", "question 4 a b"),
        ("assistant", "answer 4 c d"),
    ]
    assert history.dropped_turns == 3
    assert history.prompt_tokens() == 19
    assert history.messages()[1].role == "user"  # never an orphan agent reply first


def test_truncation_is_permanent() -> None:
    history = ConversationHistory(
        "", token_budget=10, count_tokens=words, message_overhead_tokens=0
    )
    history.add_user("one two three four five")
    history.add_user("six seven eight nine ten eleven")  # 11 tokens: the first turn must go
    assert history.dropped_turns == 1
    history.add_agent("ok")
    history.add_user("short")  # the old turn would fit again, but it is gone
    assert contents(history) == [
        ("user", "six seven eight nine ten eleven"),
        ("assistant", "ok"),
        ("user", "short"),
    ]


def test_newest_user_message_is_kept_even_over_budget() -> None:
    history = ConversationHistory(
        "a long system prompt of eight words here", token_budget=5, count_tokens=words
    )
    history.add_user("hi")
    history.add_agent("hello")
    history.add_user("please read this very long question of many words aloud")
    assert contents(history)[0][0] == "system"  # the system prompt stays, over budget too
    assert contents(history)[1:] == [
        ("user", "please read this very long question of many words aloud"),
    ]
    assert history.dropped_turns == 1
    assert history.prompt_tokens() > history.token_budget


def test_agent_reply_to_the_newest_question_is_kept_with_it() -> None:
    history = ConversationHistory("", token_budget=3, count_tokens=words, message_overhead_tokens=0)
    history.add_user("one two")
    history.add_agent("three four")  # over budget, but it is the newest turn
    assert contents(history) == [("user", "one two"), ("assistant", "three four")]
    assert history.dropped_turns == 0


def test_default_token_count_is_four_characters_per_token_plus_overhead() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("abcd") == 1
    assert approx_token_count("abcde") == 2
    history = ConversationHistory("x" * 40)  # 10 tokens + 4 overhead
    assert history.prompt_tokens() == 14
    history.add_user("y" * 8)  # 2 tokens + 4 overhead
    assert history.prompt_tokens() == 20


def test_token_counter_is_pluggable_and_called_once_per_message() -> None:
    calls: list[str] = []

    def counter(text: str) -> int:
        calls.append(text)
        return 7

    history = ConversationHistory("sys", count_tokens=counter, message_overhead_tokens=1)
    history.add_user("a")
    history.add_agent("b")
    history.messages()
    assert history.prompt_tokens() == 3 * 8
    assert calls == ["sys", "a", "b"]


def test_clear_keeps_the_system_prompt() -> None:
    history = ConversationHistory("sys", count_tokens=words, message_overhead_tokens=0)
    history.add_user("hello there")
    history.clear()
    assert contents(history) == [("system", "sys")]
    assert history.prompt_tokens() == 1
    assert "turns=0" in repr(history)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"token_budget": -1}, "token_budget must be >= 0 tokens, got -1"),
        ({"token_budget": 1.5}, "token_budget must be an int"),
        ({"message_overhead_tokens": -2}, "message_overhead_tokens must be >= 0"),
    ],
)
def test_bad_configuration_raises_config_error(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ConversationHistory("sys", **kwargs)  # type: ignore[arg-type]


def test_bad_inputs_raise_type_errors() -> None:
    with pytest.raises(TypeError, match="system_prompt must be a str"):
        ConversationHistory(None)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="count_tokens must be callable"):
        ConversationHistory("sys", count_tokens=4)  # type: ignore[arg-type]
    history = ConversationHistory("sys")
    with pytest.raises(TypeError, match="text must be a str"):
        history.add_user(b"hi")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="text must be a str"):
        history.add_agent(None)  # type: ignore[arg-type]


def test_a_counter_returning_nonsense_is_reported() -> None:
    with pytest.raises(ValueError, match="count_tokens must return an int >= 0"):
        ConversationHistory("sys", count_tokens=lambda text: -1)


def test_a_user_turn_whose_reply_went_unheard_can_be_taken_back() -> None:
    history = ConversationHistory("sys")
    history.add_user("hello")
    history.add_agent("hi there")
    history.add_user("what is twenty")
    assert not history.retract_user("something else")
    assert history.retract_user("what is twenty")
    assert [(m.role, m.content) for m in history.messages()] == [
        ("system", "sys"),
        ("user", "hello"),
        ("assistant", "hi there"),
    ]
    fresh = ConversationHistory("sys")
    fresh.add_user("hello")
    fresh.add_agent("hi there")
    assert history.prompt_tokens() == fresh.prompt_tokens()  # its tokens were given back
    assert not history.retract_user("hello")  # answered: not the user's alone
