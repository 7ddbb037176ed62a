"""What a setting is (:class:`Setting`): its section and name, its names in every source
(TOML key, environment variable, command-line flag), its type as the section's field declares
it, and how a value is parsed from text and checked."""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import re
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from voicecore.exceptions import InvalidValueError

__all__ = [
    "ENV_PREFIX",
    "FALSE_WORDS",
    "Check",
    "Setting",
    "read_section",
    "shown",
    "suggest",
]

ENV_PREFIX = "VOICECORE_"
"""Prefix of the environment variables of settings: ``VOICECORE_<SECTION>_<SETTING>``."""

_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
FALSE_WORDS = frozenset({"false", "0", "no", "off"})

Check = Callable[[Any], "str | None"]
"""A value check: returns what is wrong with a (well-typed, not None) value, or None."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: its section, name, type, default and how each source spells it.

    Attributes:
        section: the section's name (``"llm"``).
        name: the setting's name in its section (``"model"``).
        base: its value type: ``bool``, ``int``, ``float``, ``str`` or ``Path``; for a
            list, the type of its items.
        choices: the allowed values of a string that has a fixed set of them, else None.
        optional: whether it may be unset (None).
        sequence: whether it is a list of strings (a tuple; comma-separated when written
            as text, and its flag may be repeated).
        default: its default value.
        doc: its description (from the section's docstring).
        secret: whether it is a secret (masked when shown).
        check: the range check of a (well-typed, set) value, or of each item of a list.
        fallback_env: a variable that is not voicecore's (``OPENAI_API_KEY``), read when
            neither the file, the ``VOICECORE_`` environment nor a flag sets the setting.
        aliases: command-line flags besides :attr:`flag` (``--port``).
    """

    section: str
    name: str
    base: type
    choices: tuple[str, ...] | None
    optional: bool
    sequence: bool
    default: Any
    doc: str
    secret: bool
    check: Check | None
    fallback_env: str | None
    aliases: tuple[str, ...]

    @property
    def path(self) -> str:
        """``section.name``: how messages and :attr:`VoicecoreConfig.sources` name it."""
        return f"{self.section}.{self.name}"

    @property
    def env_name(self) -> str:
        """Its environment variable: ``VOICECORE_<SECTION>_<NAME>``."""
        return f"{ENV_PREFIX}{self.section.upper()}_{self.name.upper()}"

    @property
    def flag(self) -> str:
        """Its command-line flag: ``--<section>-<name-with-dashes>``."""
        return f"--{self.section}-{self.name.replace('_', '-')}"

    @property
    def dest(self) -> str:
        """The attribute of parsed ``argparse`` arguments holding its flag's value."""
        return f"voicecore_config__{self.section}__{self.name}"

    def describe_type(self) -> str:
        """What a valid value looks like, for messages (``"a number"``)."""
        if self.sequence:
            kind = "a list of strings (comma-separated in text)"
        elif self.choices is not None:
            kind = "one of " + ", ".join(repr(c) for c in self.choices)
        else:
            kinds = {bool: "true or false", int: "an integer", float: "a number", Path: "a path"}
            kind = kinds.get(self.base, "a string")
        return kind + (" (or unset)" if self.optional else "")

    def check_value(self, value: Any) -> Any:
        """``value`` as the setting's type (an integer is a valid number), range-checked.

        Raises:
            ConfigError: a value of the wrong type, not finite, or out of range (the
                message says what is wrong, not which setting: callers add that).
        """
        if value is None:
            if self.optional:
                return None
            raise InvalidValueError(f"expected {self.describe_type()}, got nothing")
        if self.sequence:
            if not isinstance(value, list | tuple):
                raise InvalidValueError(f"expected {self.describe_type()}, got {shown(value)}")
            items = []
            for number, item in enumerate(value, 1):
                try:
                    items.append(self._check_item(item))
                except InvalidValueError as exc:
                    raise InvalidValueError(f"item {number}: {exc}") from None
            return tuple(items)
        return self._check_item(value)

    def _check_item(self, value: Any) -> Any:
        """A set value (an item, for a list) as its type, range-checked."""
        expected = "a string" if self.sequence else self.describe_type()
        if self.base is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.base is Path and isinstance(value, str) and value.strip():
            value = Path(value)
        # bool is an int subclass: true is no integer here.
        well_typed = isinstance(value, Path) if self.base is Path else type(value) is self.base
        if not well_typed:
            raise InvalidValueError(f"expected {expected}, got {shown(value)}")
        if self.choices is not None and value not in self.choices:
            raise InvalidValueError(f"expected {self.describe_type()}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidValueError(f"must be a finite number, got {value}")
        if self.check is not None:
            problem = self.check(value)
            if problem is not None:
                raise InvalidValueError(problem)
        return value

    def parse_text(self, text: str) -> Any:
        """The value of ``text`` as written in the environment or a flag.

        An empty text unsets an optional setting; booleans are ``true``/``false``,
        ``1``/``0``, ``yes``/``no`` or ``on``/``off`` in any case; a list's items are
        separated by commas.

        Raises:
            ConfigError: text that is not a value of the setting's type (the message does
                not name the setting: callers add that).
        """
        stripped = text.strip()
        if self.sequence:
            items = tuple(item.strip() for item in text.split(",") if item.strip())
            return items if items or not self.optional else None
        if not stripped and self.optional:
            return None
        if self.base is str:
            return text
        if self.base is Path:
            return Path(stripped) if stripped else text
        if self.base is bool:
            lowered = stripped.lower()
            if lowered in _TRUE_WORDS:
                return True
            if lowered in FALSE_WORDS:
                return False
        else:
            try:
                return self.base(stripped)
            except ValueError:
                pass
        raise InvalidValueError(f"expected {self.describe_type()}, got {text!r}")


def shown(value: Any) -> str:
    """A value and its type, for messages: ``3 (int)``."""
    return f"{value!r} ({type(value).__name__})"


def _attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` entries of a Google-style class docstring, by name."""
    doc = inspect.getdoc(cls) or ""
    docs: dict[str, str] = {}
    inside = False
    current: str | None = None
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            inside = True
            continue
        if not inside:
            continue
        entry = re.match(r"^    (\w+): (.*)$", line)
        if entry:
            current = entry.group(1)
            docs[current] = entry.group(2).strip()
        elif line.startswith("        ") and current is not None:
            docs[current] += " " + line.strip()
        elif line.strip():
            break  # the next docstring section
    return docs


def _type_of(hint: Any) -> tuple[type, tuple[str, ...] | None, bool, bool]:
    """(base type, choices, optional, sequence) of a field's type hint."""
    optional = False
    origin = typing.get_origin(hint)
    if origin in (types.UnionType, typing.Union):
        members = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(members) < len(typing.get_args(hint))
        if len(members) != 1:
            raise TypeError(f"unsupported setting type {hint!r}")
        hint = members[0]
        origin = typing.get_origin(hint)
    if origin is Literal:
        choices = tuple(typing.get_args(hint))
        if not all(isinstance(c, str) for c in choices):
            raise TypeError(f"unsupported setting type {hint!r}")
        return str, choices, optional, False
    if origin is tuple:
        if typing.get_args(hint) != (str, Ellipsis):
            raise TypeError(f"unsupported setting type {hint!r}")
        return str, None, optional, True
    if hint not in (bool, int, float, str, Path):
        raise TypeError(f"unsupported setting type {hint!r}")
    return hint, None, optional, False


def read_section(cls: type[Any], section: str) -> tuple[Setting, ...]:
    """The settings of the section class ``cls`` named ``section``, in field order: each
    field's type hint, default, ``Attributes:`` entry and metadata (check, secrecy,
    fallback variable, short flags)."""
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    settings = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        base, choices, optional, sequence = _type_of(hints[f.name])
        default = f.default if f.default is not dataclasses.MISSING else None
        settings.append(
            Setting(
                section=section,
                name=f.name,
                base=base,
                choices=choices,
                optional=optional,
                sequence=sequence,
                default=default,
                doc=docs.get(f.name, ""),
                secret=bool(f.metadata.get("secret", False)),
                check=f.metadata.get("check"),
                fallback_env=f.metadata.get("fallback_env"),
                aliases=tuple(f.metadata.get("aliases", ())),
            )
        )
    return tuple(settings)


def suggest(word: str, candidates: Iterable[str]) -> str:
    """`` (did you mean '...'?)`` with the closest of ``candidates`` to ``word``, if any is
    close, else nothing."""
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
