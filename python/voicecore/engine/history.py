"""Conversation history for the LLM: only what the user heard, within a token budget.

Two pieces:

* :class:`SpokenReply` records one agent reply as it is synthesized (each text chunk with
  the length of its audio, in samples) and maps "the user heard N samples" back to text.
* :class:`ConversationHistory` holds the system prompt and the turns (user message + agent
  reply) and builds the message list for the next LLM call, dropping the oldest turns to
  stay within a token budget.

Pure Python, no I/O and no Trio.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, get_args

from voicecore.exceptions import ConfigError

__all__ = [
    "INTERRUPTED_MARK",
    "ConversationHistory",
    "Message",
    "Role",
    "SpokenReply",
    "approx_token_count",
]

Role = Literal["system", "user", "assistant"]
"""Who wrote a message, as chat-completion APIs name it."""

INTERRUPTED_MARK = "…"
"""Appended to an interrupted agent reply (see :meth:`ConversationHistory.add_agent`)."""

_SENTENCE_END = (".", "!", "?", "…", '"', ")")


@dataclass(frozen=True, slots=True)
class Message:
    """One chat message as the LLM sees it.

    Attributes:
        role: ``"system"``, ``"user"`` or ``"assistant"``.
        content: the text.

    Raises:
        ValueError: an unknown role.
        TypeError: content that is not a ``str``.
    """

    role: Role
    content: str

    def __post_init__(self) -> None:
        if self.role not in get_args(Role):
            raise ValueError(f"role must be one of {get_args(Role)}, got {self.role!r}")
        if not isinstance(self.content, str):
            raise TypeError(f"content must be a str, got {type(self.content).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """The message as ``{"role": ..., "content": ...}``, the chat-completion JSON shape."""
        return {"role": self.role, "content": self.content}


def approx_token_count(text: str) -> int:
    """Approximates the number of LLM tokens in ``text``: one token per 4 characters.

    Four characters per token is the usual average of BPE tokenizers (GPT, Llama) on English
    prose; it over-counts short common words slightly and under-counts digits, code and
    non-Latin scripts. Pass an exact counter (e.g. one built on ``tiktoken``) to
    :class:`ConversationHistory` when the budget must be tight.
    """
    return math.ceil(len(text) / 4)


class SpokenReply:
    """One agent reply as it is synthesized: text chunks with the length of their audio.

    The engine calls :meth:`add` for every chunk sent to TTS, with the number of samples
    the TTS produced for it, counted at the rate the heard position will be reported in
    (the pacer stream's rate: convert first if the TTS speaks at another). When the reply is
    interrupted, :meth:`heard_text` maps the number of samples the user actually heard (from
    the pacer's ``FlushReport.heard_samples`` and the client's playout report) back to text.

    Example::

        reply = SpokenReply()
        reply.add("Sure, I can help.", 24_000)        # 1.5 s at 16 kHz
        reply.add("First, open the settings page.", 32_000)
        reply.heard_text(40_000)                       # "Sure, I can help. First, open the"
    """

    __slots__ = ("_chunks", "_total_samples")

    def __init__(self) -> None:
        # (text, end offset in samples), in the order the audio is played.
        self._chunks: list[tuple[str, int]] = []
        self._total_samples = 0

    def add(self, text: str, samples: int) -> None:
        """Appends one synthesized chunk: its text and its audio length in samples.

        Raises:
            TypeError: ``text`` is not a ``str`` or ``samples`` not an ``int``.
            ConfigError: ``samples`` is negative.
        """
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        if isinstance(samples, bool) or not isinstance(samples, int):
            raise TypeError(f"samples must be an int, got {type(samples).__name__}")
        if samples < 0:
            raise ConfigError(f"samples must be >= 0, got {samples}")
        self._total_samples += samples
        self._chunks.append((text.strip(), self._total_samples))

    @property
    def total_samples(self) -> int:
        """Audio length of the whole reply so far, in samples."""
        return self._total_samples

    @property
    def text(self) -> str:
        """The whole reply text so far (chunks joined by single spaces)."""
        return " ".join(text for text, _ in self._chunks if text)

    @property
    def chunks(self) -> list[tuple[str, int]]:
        """The chunks as ``(text, samples)`` pairs, in playout order."""
        result: list[tuple[str, int]] = []
        start = 0
        for text, end in self._chunks:
            result.append((text, end - start))
            start = end
        return result

    def heard_text(self, heard_samples: int) -> str:
        """The part of the reply the user heard, given how many samples were played.

        Fully heard chunks are returned whole. Within the partly heard chunk the words are
        cut proportionally: the heard fraction of its audio is mapped to the same fraction
        of its characters, and the words that end at or before that character are kept,
        never part of a word. This assumes the TTS speaks at a steady rate in characters
        per second within one chunk (long words take longer than short ones, which a
        per-word proportion would ignore); pauses at commas make it approximate by a word or
        two, which is the granularity the LLM needs.

        ``heard_samples`` <= 0 gives ``""``; at or beyond :attr:`total_samples` gives
        :attr:`text`.

        Raises:
            TypeError: ``heard_samples`` is not an ``int``.
        """
        if isinstance(heard_samples, bool) or not isinstance(heard_samples, int):
            raise TypeError(f"heard_samples must be an int, got {type(heard_samples).__name__}")
        if heard_samples <= 0:
            return ""
        heard: list[str] = []
        start = 0
        for text, end in self._chunks:
            if end <= heard_samples:
                heard.append(text)
            else:
                if heard_samples > start:
                    fraction = (heard_samples - start) / (end - start)
                    heard.append(_leading_words(text, fraction))
                break
            start = end
        return " ".join(part for part in heard if part)

    def __repr__(self) -> str:
        return f"SpokenReply(chunks={len(self._chunks)}, total_samples={self._total_samples})"


def _leading_words(text: str, fraction: float) -> str:
    """The whole words of ``text`` that end within its first ``fraction`` of characters."""
    budget = fraction * len(text)
    words = text.split()
    kept: list[str] = []
    position = 0
    for word in words:
        word_end = text.index(word, position) + len(word)
        if word_end > budget:
            break
        kept.append(word)
        position = word_end
    return " ".join(kept)


@dataclass(slots=True)
class _Turn:
    """One user message and the agent's reply(ies) to it, with their token counts.

    ``messages`` may start with an agent message when the agent spoke first (a greeting).
    """

    messages: list[Message]
    tokens: int


class ConversationHistory:
    """The chat history for the LLM: a system prompt plus user/agent turns within a budget.

    * The system prompt is always the first message and is never dropped (an empty prompt
      means no system message).
    * A turn is a user message plus the agent's reply; truncation drops whole turns, oldest
      first, so the history never starts with an agent reply whose question is gone.
    * Truncation happens on every add and is permanent: a dropped turn never comes back
      (the memory stays bounded in a long session, and the prompt prefix the LLM sees only
      ever loses its oldest turns, which keeps provider prompt caches useful).
    * The turn holding the newest user message (and anything after it) is always kept, even
      when it alone exceeds the budget: answering the user matters more than the budget, and
      the LLM provider will report a context overflow if there really is one.

    Token counts use ``count_tokens`` (default :func:`approx_token_count`, about 4 characters
    per token) plus ``message_overhead_tokens`` per message for the role and separators of
    the chat format (about 4 for OpenAI-style APIs).

    Example::

        history = ConversationHistory("You are a helpful voice agent.", token_budget=2000)
        history.add_user("What's the weather like?")
        messages = [m.to_dict() for m in history.messages()]   # -> the LLM
        history.add_agent(reply.heard_text(heard_samples), interrupted=True)

    Args:
        system_prompt: the instructions; may be empty (then no system message is sent).
        token_budget: maximum size of :meth:`messages` in tokens (>= 0), system prompt
            included.
        count_tokens: counts the tokens of one text; must return an int >= 0.
        message_overhead_tokens: tokens added per message for the chat format (>= 0).

    Raises:
        TypeError: ``system_prompt`` is not a ``str`` or ``count_tokens`` is not callable.
        ConfigError: a negative ``token_budget`` or ``message_overhead_tokens``.
    """

    __slots__ = (
        "_count_tokens",
        "_dropped_turns",
        "_overhead",
        "_system",
        "_system_tokens",
        "_token_budget",
        "_turns",
        "_turns_tokens",
        "on_change",
    )

    def __init__(
        self,
        system_prompt: str,
        *,
        token_budget: int = 3000,
        count_tokens: Callable[[str], int] | None = None,
        message_overhead_tokens: int = 4,
    ) -> None:
        if not isinstance(system_prompt, str):
            raise TypeError(f"system_prompt must be a str, got {type(system_prompt).__name__}")
        for name, value in (
            ("token_budget", token_budget),
            ("message_overhead_tokens", message_overhead_tokens),
        ):
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"{name} must be an int, got {value!r}")
            if value < 0:
                raise ConfigError(f"{name} must be >= 0 tokens, got {value}")
        if count_tokens is not None and not callable(count_tokens):
            raise TypeError(f"count_tokens must be callable, got {type(count_tokens).__name__}")
        self._count_tokens = count_tokens or approx_token_count
        self._overhead = message_overhead_tokens
        self._token_budget = token_budget
        self._system = Message("system", system_prompt.strip()) if system_prompt.strip() else None
        self._system_tokens = self._tokens(self._system) if self._system else 0
        self.on_change: Callable[[], None] | None = None
        """Called after every change of the turns (a conversation store saves them)."""
        self._turns: list[_Turn] = []
        self._turns_tokens = 0
        self._dropped_turns = 0

    @property
    def system_prompt(self) -> str:
        """The system prompt ("" when there is none)."""
        return self._system.content if self._system else ""

    @property
    def token_budget(self) -> int:
        """Maximum prompt size in tokens (the newest turn may exceed it, see the class doc)."""
        return self._token_budget

    @property
    def dropped_turns(self) -> int:
        """How many of the oldest turns truncation has dropped so far."""
        return self._dropped_turns

    @property
    def turns(self) -> int:
        """How many turns the history holds now."""
        return len(self._turns)

    def add_user(self, text: str) -> None:
        """Starts a new turn with what the user said (the final transcript).

        Blank text is ignored: a turn with an empty user message tells the LLM nothing.

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        message = self._message("user", text)
        if message is None:
            return
        self._turns.append(_Turn([message], self._tokens(message)))
        self._turns_tokens += self._turns[-1].tokens
        self._truncate()
        self._changed()

    def retract_user(self, text: str) -> bool:
        """Takes back the newest turn if it is only the user saying ``text`` (the reply to it
        was cut before a word was heard, and the user's words go on into their next turn);
        returns whether it did."""
        if not self._turns:
            return False
        last = self._turns[-1]
        if [(m.role, m.content) for m in last.messages] != [("user", text.strip())]:
            return False
        self._turns.pop()
        self._turns_tokens -= last.tokens
        self._changed()
        return True

    def add_agent(self, text: str, *, interrupted: bool = False) -> None:
        """Adds the agent's reply to the current turn: the text the user actually heard.

        For an interrupted reply pass the heard part (:meth:`SpokenReply.heard_text`) and
        ``interrupted=True``: the content then ends with :data:`INTERRUPTED_MARK` ("…",
        after a space when the heard part ends a sentence), which tells the LLM that it
        was cut off there without a bracketed note it might imitate in its own replies.
        Blank text (nothing was heard) adds nothing. A reply before any user message (a
        greeting) starts a turn of its own.

        Raises:
            TypeError: ``text`` is not a ``str``.
        """
        message = self._message("assistant", text)
        if message is None:
            return
        if interrupted and not message.content.endswith(("…", "...")):
            content = message.content.rstrip(",;:-—")
            separator = " " if content.endswith(_SENTENCE_END) else ""
            message = Message("assistant", f"{content}{separator}{INTERRUPTED_MARK}")
        tokens = self._tokens(message)
        if self._turns:
            self._turns[-1].messages.append(message)
            self._turns[-1].tokens += tokens
        else:
            self._turns.append(_Turn([message], tokens))
        self._turns_tokens += tokens
        self._truncate()
        self._changed()

    def restore(self, messages: Iterable[Message], *, dropped_turns: int = 0) -> None:
        """Replaces the turns with ``messages`` (user and assistant, oldest first: what
        :meth:`messages` gave without the system prompt, e.g. from a conversation store) and
        the count of turns dropped before them; the budget applies as if they had been added
        one by one.

        Raises:
            ValueError: a system message, or a negative ``dropped_turns``.
        """
        if dropped_turns < 0:
            raise ValueError(f"dropped_turns must be >= 0, got {dropped_turns}")
        self._turns.clear()
        self._turns_tokens = 0
        for message in messages:
            if message.role == "system":
                raise ValueError("a restored history holds user and assistant messages only")
            tokens = self._tokens(message)
            if message.role == "assistant" and self._turns:
                self._turns[-1].messages.append(message)
                self._turns[-1].tokens += tokens
            else:
                self._turns.append(_Turn([message], tokens))
            self._turns_tokens += tokens
        self._dropped_turns = dropped_turns
        self._truncate()
        self._changed()

    def messages(self) -> list[Message]:
        """The messages for the next LLM call: the system prompt, then the kept turns."""
        result = [self._system] if self._system else []
        for turn in self._turns:
            result.extend(turn.messages)
        return result

    def prompt_tokens(self) -> int:
        """Size of :meth:`messages` in tokens (as counted by ``count_tokens``), for logging."""
        return self._system_tokens + self._turns_tokens

    def clear(self) -> None:
        """Forgets every turn (the system prompt stays); :attr:`dropped_turns` is kept."""
        self._turns.clear()
        self._turns_tokens = 0
        self._changed()

    def __repr__(self) -> str:
        return (
            f"ConversationHistory(turns={len(self._turns)}, "
            f"prompt_tokens={self.prompt_tokens()}, token_budget={self._token_budget}, "
            f"dropped_turns={self._dropped_turns})"
        )

    def _changed(self) -> None:
        if self.on_change is not None:
            self.on_change()

    def _message(self, role: Role, text: str) -> Message | None:
        if not isinstance(text, str):
            raise TypeError(f"text must be a str, got {type(text).__name__}")
        text = text.strip()
        return Message(role, text) if text else None

    def _tokens(self, message: Message) -> int:
        count = self._count_tokens(message.content)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"count_tokens must return an int >= 0, got {count!r}")
        return count + self._overhead

    def _truncate(self) -> None:
        """Drops the oldest turns while over budget, keeping the newest user message's turn."""
        keep_from = len(self._turns) - 1
        while keep_from > 0 and self._turns[keep_from].messages[0].role != "user":
            keep_from -= 1
        dropped = 0
        while dropped < keep_from and self.prompt_tokens() > self._token_budget:
            self._turns_tokens -= self._turns[dropped].tokens
            dropped += 1
        if dropped:
            del self._turns[:dropped]
            self._dropped_turns += dropped
