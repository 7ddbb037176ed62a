"""What outlives a session: the conversation, as a store keeps it between connections.

A client whose connection drops (its server drained or died, its network blinked) reconnects,
to any worker, and sends the token it got in ``ready``; the new session starts from the
:class:`ConversationRecord` the store kept: the history (what the user said and what they
heard the agent say) and the next turn number, so the agent goes on where it was and the
client's per-turn view never sees an id twice.

A record is saved after every change (the user's words joined the history; a reply's text
went out to the client; a reply ended with what was heard of it). A reply still playing is
recorded as heard up to the text sent so far and marked cut off: if the server dies now, the
client plays out what it holds, which is that text (to within the audio of one chunk).

Pure data and JSON, no I/O: the stores are ``voicecore.server.conversations``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from voicecore.engine.history import ConversationHistory, Message
from voicecore.exceptions import ConversationRecordError

__all__ = ["RECORD_VERSION", "ConversationRecord"]

RECORD_VERSION: Final = 1
"""The version of a record's JSON (a store may hold records of an older server)."""


@dataclass(frozen=True, slots=True)
class ConversationRecord:
    """One conversation as the store keeps it.

    Attributes:
        messages: the history, oldest first (user and assistant messages; the system prompt
            is the server's, not the conversation's).
        dropped_turns: turns the history's token budget dropped before ``messages``.
        next_turn_id: the id the conversation's next user turn gets.
        owner: the session that holds the conversation now (the latest to start or resume
            it); a store refuses the saves of any other (an old connection that outlived
            its client must not overwrite what the resumed conversation said since).
    """

    messages: tuple[Message, ...] = ()
    dropped_turns: int = 0
    next_turn_id: int = 1
    owner: str = ""

    @classmethod
    def of(
        cls,
        history: ConversationHistory,
        *,
        next_turn_id: int,
        speaking: str = "",
        owner: str = "",
    ) -> ConversationRecord:
        """The record of a live conversation (held by session ``owner``): ``history``'s
        turns, plus ``speaking``, the text sent so far of a reply still playing, as heard
        and cut off there."""
        messages = [m for m in history.messages() if m.role != "system"]
        if speaking.strip():
            scratch = ConversationHistory("", token_budget=history.token_budget)
            scratch.add_agent(speaking, interrupted=True)
            messages.extend(scratch.messages())
        return cls(tuple(messages), history.dropped_turns, next_turn_id, owner)

    def restore(self, history: ConversationHistory) -> None:
        """Puts this record's turns into ``history`` (a new session's)."""
        history.restore(self.messages, dropped_turns=self.dropped_turns)

    def said(self) -> tuple[dict[str, str], ...]:
        """The messages as ``ready.history`` gives them to the client."""
        return tuple({"role": m.role, "text": m.content} for m in self.messages)

    def to_json(self) -> dict[str, Any]:
        """The record as a JSON object (what a store writes)."""
        return {
            "version": RECORD_VERSION,
            "messages": [m.to_dict() for m in self.messages],
            "dropped_turns": self.dropped_turns,
            "next_turn_id": self.next_turn_id,
            "owner": self.owner,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversationRecord:
        """Reads :meth:`to_json`'s object back.

        Raises:
            ConversationRecordError: not a record of a version this server reads, or malformed.
        """
        try:
            if data["version"] != RECORD_VERSION:
                raise ConversationRecordError(
                    f"record version {data['version']!r} is not {RECORD_VERSION}"
                )
            messages = tuple(
                Message(m["role"], m["content"]) for m in data["messages"] if m["role"] != "system"
            )
            dropped, next_turn_id = data["dropped_turns"], data["next_turn_id"]
            owner = data.get("owner", "")
        except (KeyError, TypeError, ValueError) as exc:
            raise ConversationRecordError(f"a malformed conversation record: {exc!r}") from exc
        for name, value, least in (
            ("dropped_turns", dropped, 0),
            ("next_turn_id", next_turn_id, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConversationRecordError(
                    f"a conversation record's {name} must be an int >= {least}"
                )
        if not isinstance(owner, str):
            raise ConversationRecordError("a conversation record's owner must be a string")
        return cls(messages, dropped, next_turn_id, owner)
