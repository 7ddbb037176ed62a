"""Streaming sentence chunker: LLM text deltas in, speakable chunks for TTS out.

A TTS engine wants whole sentences (its prosody is planned per sentence), but the first
audio should start as early as possible. :class:`SentenceChunker` therefore:

* ends a chunk at a sentence end: ``.``, ``!``, ``?``, ``…`` and their combinations
  (``?!``, ``!!``), followed by any closing quotes or brackets, then whitespace;
* ends a chunk at every line break (LLM replies use lines for paragraphs, list items and
  headings, which carry no final punctuation; a reply is never hard-wrapped mid-sentence);
* lets the FIRST chunk of a reply end early at a clause boundary (``,`` ``;`` ``:`` followed
  by whitespace, an em dash, or a spaced ``-``/en dash) once it holds at least
  ``first_chunk_min_words`` words, so that synthesis starts sooner;
* cuts a run longer than ``max_chunk_chars`` without any boundary at its last space before
  the limit (a single word longer than the limit is cut at the limit).

It never splits inside abbreviations (``Mr.``, ``e.g.``, ``etc.``, ``U.S.``, ``a.m.``,
months...), decimals and prices (``3.14``, ``$4.99``, ``1,000.5``), dotted numbers
(``1.2.3``, ``12.05.2024``, ``10.0.0.1``), URLs and e-mail addresses (a ``.`` followed by a
non-space character is never a sentence end), initials (``J. R. R. Tolkien``) or list
markers at the start of a line (``1. First``).

Decisions the text alone cannot settle, and how they are made:

* After an ambiguous abbreviation (``etc.``, ``Inc.``, ``a.m.``, ``Jan.``...) the sentence
  ends if the next word starts with a capital letter: ``... at 5 p.m. Then`` splits,
  ``5 p.m. tomorrow`` does not. Titles (``Mr.``, ``Dr.``, ``Prof.``, ``St.``...) and
  ``e.g.``/``i.e.``/``vs.``/``cf.`` never end a sentence, whatever follows.
* After an initial or an upper-case initialism (``J.``, ``U.S.``) a capitalized word is
  usually a name (``U.S. Army``, ``J. Smith``), so the sentence ends only if the next word is
  a common sentence opener (``The``, ``It``, ``We``, ``Then``... see ``SENTENCE_OPENERS``).
* An ellipsis (``...`` or ``…``) ends a sentence if the next word is capitalized
  (``Well... I think so`` splits after ``Well...``), and is a pause inside the sentence
  otherwise (``wait... what`` stays together).

Streaming: a ``.`` at the very end of a delta (``"Dr."``, ``"3."``) is not decided until
the characters after it arrive; every decision looks only at text already received, and is
taken only when more text could not change it. Hence, for any split of a text into deltas,
the chunks equal those of pushing the whole text at once (the tests check this with
hypothesis).
"""

from __future__ import annotations

import re
from typing import Final

from voicecore.exceptions import ConfigError

__all__ = ["SENTENCE_OPENERS", "SentenceChunker"]

# Characters that end a sentence (alone or in runs such as "?!" or "...").
_TERMINATORS: Final = frozenset(".!?…")
# Closing quotes, brackets and markdown emphasis that belong to the sentence they close.
_CLOSERS: Final = frozenset(
    "\"'\N{RIGHT DOUBLE QUOTATION MARK}\N{RIGHT SINGLE QUOTATION MARK}»)]}*_"
)
# Opening quotes and brackets that may precede the first word of the next sentence.
_OPENERS: Final = frozenset(
    "\"'\N{LEFT DOUBLE QUOTATION MARK}\N{LEFT SINGLE QUOTATION MARK}«([{*_¿¡"
)
_CLAUSE_PUNCT: Final = frozenset(",;:")


def _word_set(words: str) -> frozenset[str]:
    """The set of the space-separated words in ``words`` (keeps the long lists readable)."""
    return frozenset(words.split())


# Titles: always followed by a name, so never the end of a sentence. Checked only when the
# word starts with a capital letter ("rep." at the end of "one more rep." is a word).
_TITLES: Final = _word_set(
    "mr mrs ms mx messrs mme mlle dr prof st mt gen col capt cmdr lt sgt cpl adm rev "
    "fr hon gov sen rep pres supt insp"
)
# Abbreviations that are (practically) never at the end of a sentence, in any case.
_NEVER_FINAL: Final = _word_set("e.g i.e vs cf viz")
# Abbreviations that precede a number ("No. 5", "p. 12", "Fig. 3"): not a sentence end when
# a digit follows; otherwise they are judged like the ambiguous ones ("No. I disagree.").
_BEFORE_NUMBER: Final = _word_set("no nos nr vol vols fig figs p pp ch chap sec art eq op ex")
# Ambiguous abbreviations: the sentence ends after them only if a capitalized word follows.
_AMBIGUOUS: Final = _word_set(
    "etc al jr sr approx appt apt ca est dept div inc ltd co corp llc plc bros assn intl natl "
    "univ ave blvd rd hwy ln sq ft in yd mi oz lb lbs kg km cm mm hr hrs min mins sec secs "
    "jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu thur thurs fri "
    "sat sun misc esp incl excl govt dist max avg tel ext ref"
)
# "U.S", "J.R.R" (the word before the final dot): upper-case initialisms, judged like initials.
_INITIALISM: Final = re.compile(r"(?:[A-Z]\.)+[A-Z]")
# "a.m", "p.m", "Ph.D", "e.g": short dotted abbreviations, judged like the ambiguous ones.
_DOTTED: Final = re.compile(r"(?:[A-Za-z]{1,3}\.)+[A-Za-z]{1,3}")

SENTENCE_OPENERS: Final = _word_set(
    "a an the i it its we you he she they there this that these those my our your his "
    "her their and but so then now here yes no if when while what why how where who as "
    "at in on for to after before also however please let some many most all one each "
    "thanks thank sure okay ok well"
)
"""Lower-case words that, capitalized after an initial or initialism (``J.``, ``U.S.``),
signal a new sentence rather than the rest of a name (``U.S. The`` splits, ``U.S. Army``
does not)."""

# The answer of one boundary decision: a chunk ends here, not here, or "need more text".
_UNKNOWN: Final = -1
_NO: Final = 0
_YES: Final = 1


class SentenceChunker:
    """Splits a streamed LLM reply into speakable chunks (sentences) for TTS.

    Feed each text delta to :meth:`push`, which returns the chunks completed so far (often
    none); at the end of the LLM stream call :meth:`flush` for the rest. Chunks are stripped
    of surrounding whitespace and never empty. See the module docstring for the rules.

    Example::

        chunker = SentenceChunker()
        for delta in ["Hello Dr.", " Smith, nice to", " see you. It's 3.", "5 degrees."]:
            for chunk in chunker.push(delta):
                speak(chunk)            # "Hello Dr. Smith, nice to see you."
        for chunk in chunker.flush():
            speak(chunk)                # "It's 3.5 degrees."

    Pure Python, no I/O and no Trio: one instance per reply stream, not thread-safe.

    Args:
        first_chunk_min_words: the first chunk of a reply may end at a clause boundary
            (comma, semicolon, colon, dash) once it has at least this many words (>= 1).
            A very large value disables the early first chunk.
        max_chunk_chars: a run without any boundary is cut at a word boundary so that no
            chunk is longer than this many characters (>= 1).

    Raises:
        ConfigError: a parameter below 1 or not an integer.
    """

    __slots__ = ("_buf", "_first", "_first_chunk_min_words", "_max_chunk_chars", "_pos")

    def __init__(self, *, first_chunk_min_words: int = 4, max_chunk_chars: int = 300) -> None:
        for name, value in (
            ("first_chunk_min_words", first_chunk_min_words),
            ("max_chunk_chars", max_chunk_chars),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        self._first_chunk_min_words = first_chunk_min_words
        self._max_chunk_chars = max_chunk_chars
        # Text received but not yet emitted; it always starts where the last chunk ended.
        self._buf = ""
        # Every boundary candidate before this index of _buf has been decided "no".
        self._pos = 0
        # True until the first chunk of the current reply has been emitted.
        self._first = True

    @property
    def first_chunk_min_words(self) -> int:
        """Minimum number of words before the first chunk may end at a clause boundary."""
        return self._first_chunk_min_words

    @property
    def max_chunk_chars(self) -> int:
        """Maximum length of a chunk, in characters."""
        return self._max_chunk_chars

    @property
    def pending(self) -> str:
        """Text received but not yet emitted as a chunk (what :meth:`flush` would return)."""
        return self._buf.strip()

    def push(self, delta: str) -> list[str]:
        """Adds one LLM text delta and returns the chunks completed by it (maybe none).

        A chunk is returned only once the text after it proves the boundary (``"Dr."`` at the
        end of a delta waits for the next character).

        Raises:
            TypeError: ``delta`` is not a ``str``.
        """
        if not isinstance(delta, str):
            raise TypeError(f"delta must be a str, got {type(delta).__name__}")
        self._buf += delta
        return self._scan(eof=False)

    def flush(self) -> list[str]:
        """Ends the reply: returns every remaining chunk (usually 0 or 1) and resets.

        Text still pending (a last sentence without final punctuation, or a boundary that
        waited for more text) is emitted. Afterwards the chunker is ready for the next
        reply, whose first chunk again may end at a clause boundary.
        """
        chunks = self._scan(eof=True)
        tail = self._buf.strip()
        if tail:
            chunks.append(tail)
        self.reset()
        return chunks

    def reset(self) -> None:
        """Discards pending text and starts a new reply (e.g. after the turn is cancelled)."""
        self._buf = ""
        self._pos = 0
        self._first = True

    def __repr__(self) -> str:
        return (
            f"SentenceChunker(first_chunk_min_words={self._first_chunk_min_words}, "
            f"max_chunk_chars={self._max_chunk_chars}, pending={len(self._buf)} chars)"
        )

    # -- scanning -------------------------------------------------------------------------

    def _emit(self, end: int, out: list[str]) -> None:
        """Emits _buf[:end] as a chunk (if not blank) and keeps the rest."""
        chunk = self._buf[:end].strip()
        if chunk:
            out.append(chunk)
            self._first = False
        self._buf = self._buf[end:]
        self._pos = 0

    def _scan(self, *, eof: bool) -> list[str]:
        """Decides every boundary candidate that the received text can decide."""
        out: list[str] = []
        while True:
            end = self._next_boundary(eof=eof)
            if end is None:
                return out
            self._emit(end, out)

    def _next_boundary(self, *, eof: bool) -> int | None:
        """Returns the end index of the next chunk in _buf, or None if undecided yet."""
        buf = self._buf
        n = len(buf)
        start = len(buf) - len(buf.lstrip())
        limit = start + self._max_chunk_chars
        i = max(self._pos, start)
        while i < n:
            if i >= limit:
                return self._cut_point(start, limit)
            c = buf[i]
            if c == "\n":
                return i
            if c in _TERMINATORS:
                run_end = i
                while run_end < n and buf[run_end] in _TERMINATORS:
                    run_end += 1
                end = run_end
                while end < n and buf[end] in _CLOSERS:
                    end += 1
                verdict = self._sentence_end(i, run_end, end, eof=eof)
                if verdict == _UNKNOWN:
                    self._pos = i
                    return None
                if verdict == _YES:
                    # A boundary past the length limit loses to the cut before the limit.
                    return end if end <= limit else self._cut_point(start, limit)
                i = end
                continue
            if self._first:
                verdict = self._clause_end(i, eof=eof)
                if verdict == _UNKNOWN:
                    self._pos = i
                    return None
                if verdict == _YES:
                    return i + 1
            i += 1
        self._pos = n
        return None

    def _cut_point(self, start: int, limit: int) -> int:
        """Where to cut a run with no boundary: its last space before the limit."""
        cut = self._buf.rfind(" ", start + 1, limit + 1)
        # Other whitespace (tabs) counts too; a newline would have been a boundary already.
        tab = self._buf.rfind("\t", start + 1, limit + 1)
        cut = max(cut, tab)
        return cut if cut > start else limit

    def _clause_end(self, i: int, *, eof: bool) -> int:
        """Decides whether the first chunk may end after the clause mark at _buf[i]."""
        buf = self._buf
        c = buf[i]
        spaced_dash = c in "-\N{EN DASH}" and i > 0 and buf[i - 1] == " "
        if c not in _CLAUSE_PUNCT and c != "—" and not spaced_dash:
            return _NO
        if len(buf[:i].split()) < self._first_chunk_min_words:
            return _NO
        if c == "—":
            return _YES
        if i + 1 >= len(buf):
            # At the end of the text the rest is flushed whole anyway.
            return _NO if eof else _UNKNOWN
        return _YES if buf[i + 1].isspace() else _NO

    def _sentence_end(self, i: int, run_end: int, end: int, *, eof: bool) -> int:
        """Decides whether a sentence ends after _buf[i:end] (terminators, then closers).

        The verdict depends on the word before ``i`` and on the text after ``end``; it is
        ``_UNKNOWN`` while that text might still change it.
        """
        buf = self._buf
        n = len(buf)
        if end == n:
            # The run of terminators or closers may continue in the next delta.
            return _YES if eof else _UNKNOWN
        if not buf[end].isspace():
            # Glued to the next character: decimals, URLs, e-mail, versions, "e.g", "U.S".
            return _NO
        nxt = end
        while nxt < n and buf[nxt].isspace():
            nxt += 1
        if nxt == n:
            return _YES if eof else _UNKNOWN
        if "\n" in buf[end:nxt]:
            return _YES
        while nxt < n and buf[nxt] in _OPENERS:
            nxt += 1
        if nxt == n:
            return _YES if eof else _UNKNOWN
        following = buf[nxt]
        capitalized = following.isupper()

        run = buf[i:run_end]
        if "!" in run or "?" in run:
            return _YES
        if run != ".":
            # An ellipsis: a pause inside the sentence unless a new sentence starts.
            return _YES if capitalized else _NO

        before = buf[:i]
        word = "" if not before or before[-1].isspace() else before.split()[-1]
        word = word.lstrip("".join(_OPENERS))
        if not word:
            # A period after a space is no sentence end of its own: ". . ." is an ellipsis.
            return _NO
        lower = word.lower()
        if lower in _NEVER_FINAL or (word[0].isupper() and lower in _TITLES):
            return _NO
        if lower in _BEFORE_NUMBER and following.isdigit():
            return _NO
        if (len(word) == 1 and word.isupper()) or _INITIALISM.fullmatch(word):
            # "J. R. R. Tolkien", "U.S. Army": a capitalized name usually follows.
            if not capitalized:
                return _NO
            word_end = nxt
            while word_end < n and buf[word_end].isalpha():
                word_end += 1
            if word_end == n and not eof:
                return _UNKNOWN
            if word_end < n and buf[word_end] == ".":
                return _NO  # another initial: "J. A. Smith"
            return _YES if buf[nxt:word_end].lower() in SENTENCE_OPENERS else _NO
        if lower in _AMBIGUOUS or lower in _BEFORE_NUMBER or _DOTTED.fullmatch(word):
            return _YES if capitalized else _NO
        if word.isdigit() and len(before.split()) == 1:
            # "1. First item": a list marker at the start of a chunk (after a line break).
            return _NO
        return _YES
