"""SentenceChunker: sentence boundaries, what must never be split, and streaming invariance."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voicecore import ConfigError, SentenceChunker


def chunk_whole(text: str, **kwargs: int) -> list[str]:
    """Chunks of ``text`` pushed in one delta, then flushed."""
    chunker = SentenceChunker(**kwargs)
    return chunker.push(text) + chunker.flush()


def chunk_split(text: str, cuts: list[int], **kwargs: int) -> list[str]:
    """Chunks of ``text`` pushed as the deltas between the ``cuts`` offsets, then flushed."""
    chunker = SentenceChunker(**kwargs)
    chunks: list[str] = []
    previous = 0
    for cut in [*sorted(cuts), len(text)]:
        chunks += chunker.push(text[previous:cut])
        previous = cut
    return chunks + chunker.flush()


# Large first_chunk_min_words so that the clause rule does not interfere with sentence tests.
SENTENCES_ONLY = {"first_chunk_min_words": 1000}


# -- sentence ends ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Hello there. How are you?", ["Hello there.", "How are you?"]),
        ("Stop! Really?! Yes!! No?", ["Stop!", "Really?!", "Yes!!", "No?"]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("(An aside.) Back to it.", ["(An aside.)", "Back to it."]),
        ("It ends here.\u201d And more.", ["It ends here.\u201d", "And more."]),
        ("**Done.** Next step.", ["**Done.**", "Next step."]),
        ("the end. then lower case.", ["the end.", "then lower case."]),
        ("No punctuation at the end", ["No punctuation at the end"]),
    ],
)
def test_sentence_ends(text: str, expected: list[str]) -> None:
    assert chunk_whole(text, **SENTENCES_ONLY) == expected


def test_newlines_end_chunks_and_blank_lines_give_no_empty_chunk() -> None:
    text = "First paragraph\n\nSecond paragraph.\n  \n- item one\n- item two\n"
    assert chunk_whole(text, **SENTENCES_ONLY) == [
        "First paragraph",
        "Second paragraph.",
        "- item one",
        "- item two",
    ]


def test_numbered_list_markers_are_not_sentences() -> None:
    text = "Steps:\n1. Open the app.\n2. Tap settings. 3. Done."
    assert chunk_whole(text, **SENTENCES_ONLY) == [
        "Steps:",
        "1. Open the app.",
        "2. Tap settings.",
        "3. Done.",
    ]


def test_whitespace_is_trimmed_and_empty_chunks_are_never_returned() -> None:
    chunker = SentenceChunker()
    assert chunker.push("   ") == []
    assert chunker.push("\n\n") == []
    assert chunker.push("  Hi.   ") == []  # "Hi." waits: the next word decides nothing yet
    assert chunker.push("  Bye.  ") == ["Hi."]
    assert chunker.flush() == ["Bye."]
    assert chunker.flush() == []


# -- what must never be split ----------------------------------------------------------------


@pytest.mark.parametrize(
    "sentence",
    [
        # Titles, whatever follows.
        "I met Mr. Smith and Mrs. Jones with Dr. Who today.",
        "Ask Prof. Adams about St. Louis.",
        "DR. HOUSE is a title too.",
        # Latin and comparison abbreviations.
        "Bring fruit, e.g. Apples or pears, i.e. Anything fresh.",
        "It was Lakers vs. Celtics tonight.",
        "See the results, cf. Table two.",
        # Ambiguous abbreviations followed by a lower-case word or a number.
        "We packed shoes, socks etc. and left.",
        "Meet me at 10 a.m. tomorrow or 5 p.m. today.",
        "She was born in Jan. 2001 in the U.S. capital.",
        "Acme Inc. shares rose.",
        "See No. 5 on p. 12 and Fig. 3 please.",
        # Decimals, prices, thousands.
        "Pi is 3.14159 and it costs $4.99 or 1,000.5 units.",
        # Dotted numbers.
        "Update to version 1.2.3 from 12.05.2024 on host 10.0.0.1 now.",
        # URLs and e-mail addresses.
        "Go to https://example.com/a.b?c=d or www.x.org for help.",
        "Write to name@host.com or first.last@mail.example.co.uk today.",
        # Initials.
        "J. R. R. Tolkien wrote it.",
        "J.R.R. Tolkien wrote it too.",
        "The author is J. A. Smith.",
        "The U.S. Army and the U.K. Parliament met.",
        # Ellipses inside a sentence, also spaced.
        "Wait... what did you say?",
        "Hmm\u2026 maybe not.",
        "Wait . . . what did you say?",
        # Name suffixes before a lower-case word.
        "Martin Luther King Jr. was born in Atlanta.",
    ],
)
def test_never_split_inside(sentence: str) -> None:
    assert chunk_whole(sentence, **SENTENCES_ONLY) == [sentence]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # An ambiguous abbreviation ends the sentence when a capitalized word follows...
        ("We bought pens etc. Then we left.", ["We bought pens etc.", "Then we left."]),
        ("See you at 5 p.m. Bring snacks.", ["See you at 5 p.m.", "Bring snacks."]),
        ("No. I disagree.", ["No.", "I disagree."]),
        ("I met King Jr. He spoke.", ["I met King Jr.", "He spoke."]),
        # ...but a title never does.
        ("Call Dr. Then.", ["Call Dr. Then."]),
        # After an initialism, a capitalized sentence opener starts a new sentence...
        (
            "He moved to the U.S. The weather was better.",
            ["He moved to the U.S.", "The weather was better."],
        ),
        ("The answer is B. Then we continue.", ["The answer is B.", "Then we continue."]),
        # ...and a capitalized name does not.
        ("It is the U.S. Army.", ["It is the U.S. Army."]),
        # An ellipsis ends a sentence before a capitalized word.
        ("Well... I think so.", ["Well...", "I think so."]),
        ("Well\u2026 I think so.", ["Well\u2026", "I think so."]),
        # A sentence end after a URL, a price, a number.
        ("Visit example.com. It helps.", ["Visit example.com.", "It helps."]),
        ("It costs $4.99. Cheap!", ["It costs $4.99.", "Cheap!"]),
        ("I counted 42. Then I stopped.", ["I counted 42.", "Then I stopped."]),
    ],
)
def test_ambiguous_periods(text: str, expected: list[str]) -> None:
    assert chunk_whole(text, **SENTENCES_ONLY) == expected


def test_abbreviations_are_case_insensitive_where_it_matters() -> None:
    assert chunk_whole("Bring snacks ETC. and drinks.", **SENTENCES_ONLY) == [
        "Bring snacks ETC. and drinks."
    ]
    assert chunk_whole("Use E.G. This one.", **SENTENCES_ONLY) == ["Use E.G. This one."]
    # A title only when capitalized: "rep." ends "one more rep." as a plain word.
    assert chunk_whole("Do one more rep. Then rest.", **SENTENCES_ONLY) == [
        "Do one more rep.",
        "Then rest.",
    ]


# -- streaming: a decision waits for the text after it ---------------------------------------


def test_a_period_at_the_end_of_a_delta_is_not_decided_yet() -> None:
    chunker = SentenceChunker(**SENTENCES_ONLY)
    assert chunker.push("Ask Dr.") == []
    assert chunker.push(" Smith. It is 3.") == ["Ask Dr. Smith."]
    assert chunker.push("5 degrees") == []
    assert chunker.push(". ") == []  # "degrees." then a space: still undecided
    assert chunker.push("Ok") == ["It is 3.5 degrees."]
    assert chunker.push(".") == []
    assert chunker.flush() == ["Ok."]


def test_a_period_is_decided_as_soon_as_the_next_word_starts() -> None:
    chunker = SentenceChunker(**SENTENCES_ONLY)
    assert chunker.push("It works. ") == []
    assert chunker.push("T") == ["It works."]
    assert chunker.pending == "T"


def test_an_initial_waits_for_the_whole_next_word() -> None:
    chunker = SentenceChunker(**SENTENCES_ONLY)
    assert chunker.push("It is the U.S. Th") == []
    assert chunker.push("e end") == ["It is the U.S."]
    assert chunker.flush() == ["The end"]


def test_reset_discards_pending_text() -> None:
    chunker = SentenceChunker()
    assert chunker.push("Half a sent") == []
    chunker.reset()
    assert chunker.pending == ""
    assert chunker.push("Fresh start. ") == []
    assert chunker.flush() == ["Fresh start."]


# -- first chunk: an early clause boundary ---------------------------------------------------


def test_first_chunk_ends_at_a_clause_once_it_has_enough_words() -> None:
    text = "Sure, I can help with that, and then, of course, we go on. Later, we rest."
    assert chunk_whole(text, first_chunk_min_words=4) == [
        "Sure, I can help with that,",
        "and then, of course, we go on.",
        "Later, we rest.",
    ]


@pytest.mark.parametrize(
    ("text", "expected_first"),
    [
        ("Well now, here is the plan; we start today.", "Well now, here is the plan;"),
        ("There is one thing: timing matters.", "There is one thing:"),
        ("I think so \u2014 but maybe not.", "I think so \u2014"),
        ("I think so - but maybe not.", "I think so -"),
        ("I think so\u2014but maybe not.", "I think so\u2014"),
    ],
)
def test_first_chunk_clause_marks(text: str, expected_first: str) -> None:
    chunks = chunk_whole(text, first_chunk_min_words=3)
    assert chunks[0] == expected_first
    assert " ".join(chunks).replace("\u2014 ", "\u2014") == text.replace("\u2014 ", "\u2014")


def test_commas_inside_numbers_and_times_are_not_clause_boundaries() -> None:
    assert chunk_whole("We sold 1,000,000 units at 10:30 today, a record.") == [
        "We sold 1,000,000 units at 10:30 today,",
        "a record.",
    ]


def test_first_chunk_rule_applies_again_after_flush() -> None:
    chunker = SentenceChunker(first_chunk_min_words=2)
    assert chunker.push("Yes indeed, first reply. ") == ["Yes indeed,"]
    assert chunker.flush() == ["first reply."]
    assert chunker.push("Okay then, second reply. ") == ["Okay then,"]


# -- maximum length -----------------------------------------------------------------------------


def test_long_run_is_cut_at_a_word_boundary_before_the_limit() -> None:
    words = " ".join(f"word{i}" for i in range(100))
    chunks = chunk_whole(words, max_chunk_chars=50)
    assert all(len(chunk) <= 50 for chunk in chunks)
    assert all(len(chunk) > 40 for chunk in chunks[:-1])  # cuts use most of the room
    assert " ".join(chunks) == words  # no word is split or lost


def test_a_word_longer_than_the_limit_is_cut_at_the_limit() -> None:
    chunks = chunk_whole("x" * 25 + " end.", max_chunk_chars=10)
    assert chunks == ["x" * 10, "x" * 10, "x" * 5 + " end."]


def test_a_sentence_end_before_the_limit_wins_over_the_cut() -> None:
    assert chunk_whole("Short one. " + "a " * 30, max_chunk_chars=20)[0] == "Short one."


# -- configuration and input errors --------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"first_chunk_min_words": 0},
        {"max_chunk_chars": 0},
        {"max_chunk_chars": -5},
        {"max_chunk_chars": 10.5},
        {"first_chunk_min_words": True},
    ],
)
def test_bad_parameters_raise_config_error(kwargs: dict[str, object]) -> None:
    name = next(iter(kwargs))
    with pytest.raises(ConfigError, match=name):
        SentenceChunker(**kwargs)  # type: ignore[arg-type]


def test_push_rejects_non_str() -> None:
    chunker = SentenceChunker()
    with pytest.raises(TypeError, match="str"):
        chunker.push(b"bytes")  # type: ignore[arg-type]


def test_repr_and_properties() -> None:
    chunker = SentenceChunker(first_chunk_min_words=3, max_chunk_chars=120)
    chunker.push("abc")
    assert chunker.first_chunk_min_words == 3
    assert chunker.max_chunk_chars == 120
    assert "pending=3 chars" in repr(chunker)


# -- streaming == whole text, for any split --------------------------------------------------


EXAMPLES = [
    "Hello Dr. Smith, nice to see you. It's 3.5 degrees outside, isn't it?",
    "Visit https://example.com/a.b?c=d or mail name@host.com. Then call at 10 a.m. tomorrow!",
    "J. R. R. Tolkien lived in the U.K. The U.S. Army? No. 5 is on p. 12, Fig. 3.",
    'Well... I think so. wait... what?! "Quoted." (Bracket.) Next\u2026 And more\u2026 see',
    "Steps:\n1. First item.\n2. Second item. 3. Third\n\nNew paragraph etc. and so on.",
    "Version 1.2.3 on 12.05.2024 at 10.0.0.1 cost $4.99, about 1,000.5 units, e.g. Paris.",
    "Sure, I can help with that; first, we open it \u2014 then - carefully - close it: done.",
    "We bought pens etc. Then we left at 5 p.m. Bring snacks, i.e. Chips. Mr. T. Ok.",
    "a " * 80 + "b. " + "x" * 90 + " end",
    "It is 3. No. 5. Ok?! Yes.) Done.\u201d Right.' Fine.] Hmm...",
]


@settings(max_examples=300, deadline=None)
@given(
    index=st.integers(min_value=0, max_value=len(EXAMPLES) - 1),
    data=st.data(),
    first_chunk_min_words=st.integers(min_value=1, max_value=6),
    max_chunk_chars=st.sampled_from([8, 40, 300]),
)
def test_streaming_equals_whole_text_for_any_split(
    index: int, data: st.DataObject, first_chunk_min_words: int, max_chunk_chars: int
) -> None:
    text = EXAMPLES[index]
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=40))
    kwargs = {"first_chunk_min_words": first_chunk_min_words, "max_chunk_chars": max_chunk_chars}
    assert chunk_split(text, cuts, **kwargs) == chunk_whole(text, **kwargs)


def test_streaming_one_character_at_a_time() -> None:
    for text in EXAMPLES:
        assert chunk_split(text, list(range(len(text)))) == chunk_whole(text)


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet=st.sampled_from(list("aZ1 .,!?:;-\u2014\u2026\n\"')@/Dr")), max_size=80),
    data=st.data(),
)
def test_streaming_equals_whole_text_on_random_text(text: str, data: st.DataObject) -> None:
    cuts = data.draw(st.lists(st.integers(min_value=0, max_value=len(text)), max_size=20))
    chunks = chunk_whole(text, max_chunk_chars=12)
    assert chunk_split(text, cuts, max_chunk_chars=12) == chunks
    # Nothing is lost or invented: the chunks are the text's words, in order.
    assert "".join("".join(chunk.split()) for chunk in chunks) == "".join(text.split())
    assert all(chunk and chunk == chunk.strip() and len(chunk) <= 12 for chunk in chunks)
