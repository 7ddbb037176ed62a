"""The configuration's sections, settings, loading, flags and display (see ``voicecore.config``)."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import inspect
import json
import logging
import math
import os
import re
import tomllib
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, TypeVar

from voicecore.engine.session import SessionConfig
from voicecore.exceptions import ConfigError, InvalidValueError
from voicecore.protocol import DEFAULT_MAX_MESSAGE_BYTES

__all__ = [
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SETTINGS",
    "WEB_ROOT",
    "LlmConfig",
    "ServerConfig",
    "Setting",
    "SttConfig",
    "TtsConfig",
    "VadConfig",
    "VoicecoreConfig",
    "add_config_arguments",
    "config_from_args",
    "format_config",
    "load_config",
]

_log = logging.getLogger("voicecore.config")
T = TypeVar("T")

ENV_PREFIX = "VOICECORE_"
"""Prefix of the environment variables of settings: ``VOICECORE_<SECTION>_<SETTING>``."""

CONFIG_ENV = "VOICECORE_CONFIG"
"""Environment variable naming the TOML file to read when no ``--config`` is given."""

_MASK = "********"
_TRUE_WORDS = frozenset({"true", "1", "yes", "on"})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})


# --- value checks ------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]
"""A value check: returns what is wrong with a (well-typed, not None) value, or None."""


def _greater_than(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value > low else f"must be > {low:g}, got {value}"

    return check


def _at_least(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value >= low else f"must be >= {low:g}, got {value}"

    return check


def _zero_or_at_least(low: float) -> Check:
    def check(value: float) -> str | None:
        return None if value == 0 or value >= low else f"must be 0 or >= {low:g}, got {value}"

    return check


def _between(low: float, high: float, *, open_ends: bool = False) -> Check:
    def check(value: float) -> str | None:
        inside = low < value < high if open_ends else low <= value <= high
        interval = f"({low:g}, {high:g})" if open_ends else f"[{low:g}, {high:g}]"
        return None if inside else f"must be in {interval}, got {value}"

    return check


def _http_url(value: str) -> str | None:
    if re.match(r"^https?://[^/\s]+", value):
        return None
    return f"must be an http:// or https:// URL, got {value!r}"


def _not_blank(value: str) -> str | None:
    return None if value.strip() else "must not be empty"


def _setting(
    default: Any,
    *,
    check: Check | None = None,
    secret: bool = False,
    fallback_env: str | None = None,
    aliases: tuple[str, ...] = (),
) -> Any:
    """A dataclass field of a configuration section: its default, check, secrecy, the
    conventional variable it falls back to, and its short flags.

    A secret is left out of the section's ``repr``. ``fallback_env`` names a variable that is
    not voicecore's (``OPENAI_API_KEY``) read when no source sets the setting. ``aliases``
    are command-line flags besides ``--<section>-<setting>`` (``--port``).
    """
    metadata = {"check": check, "secret": secret, "fallback_env": fallback_env, "aliases": aliases}
    return field(default=default, metadata=metadata, repr=not secret)


# --- the sections ------------------------------------------------------------------------


class _Section:
    """Validation shared by the sections voicecore defines (types, ranges, cross-checks)."""

    def __post_init__(self) -> None:
        problems = []
        for setting in _section_settings(type(self)):
            value = getattr(self, setting.name)
            try:
                checked = setting.check_value(value)
            except InvalidValueError as exc:
                problems.append(f"{setting.path}: {exc}")
            else:
                if checked is not value:  # an int given for a float: stored as the float
                    object.__setattr__(self, setting.name, checked)
        if not problems:
            problems = list(self._cross_checks())
        if problems:
            raise ConfigError("\n".join(problems))

    def _cross_checks(self) -> Iterable[str]:
        """Problems that involve several fields (each message names the field to fix)."""
        return ()


@dataclass(frozen=True)
class VadConfig(_Section):
    """Voice activity detection: which VAD tells the engine when the user speaks.

    Attributes:
        kind: ``"silero"``: the Silero neural VAD (onnxruntime) behind the Rust energy VAD's
            gate; ``"energy"``: the Rust energy VAD alone (no model, ~1 µs per frame).
        model_path: the ``silero_vad.onnx`` file; unset: the cached one that
            ``voicecore models fetch`` downloads.
        fallback: with ``kind = "silero"``, use the energy VAD (with a warning) when the
            model or onnxruntime is missing; false: refuse to start instead.
        threshold: Silero speech probability at which speech starts, in (0, 1).
        neg_threshold: Silero probability below which a window inside speech is silence,
            in (0, threshold]; unset: ``threshold - 0.15``.
        min_speech_ms: Silero speech must last this long to be reported, in ms.
        min_silence_ms: Silero silence must last this long to end speech, in ms.
        speech_pad_ms: speech starts are moved this much earlier (Silero rises a little
            after the onset), in ms.
        gate: run Silero only on the audio the energy VAD does not call silence (saves
            most of its CPU; decisions agree with the ungated model on 99.9 % of windows).
        background: run Silero in the VAD's own thread, off the event loop (its verdicts
            come one frame later); false: inline, on the event loop (~0.2 ms per 32 ms).
    """

    kind: Literal["silero", "energy"] = _setting("silero")
    model_path: str | None = _setting(None, check=_not_blank)
    fallback: bool = _setting(True)
    threshold: float = _setting(0.5, check=_between(0.0, 1.0, open_ends=True))
    neg_threshold: float | None = _setting(None, check=_between(0.0, 1.0, open_ends=True))
    min_speech_ms: float = _setting(64.0, check=_between(0.0, 10_000.0))
    min_silence_ms: float = _setting(100.0, check=_between(0.0, 10_000.0))
    speech_pad_ms: float = _setting(32.0, check=_between(0.0, 1000.0))
    gate: bool = _setting(True)
    background: bool = _setting(True)

    def _cross_checks(self) -> Iterable[str]:
        if self.neg_threshold is not None and self.neg_threshold > self.threshold:
            yield (
                f"vad.neg_threshold: must be <= vad.threshold ({self.threshold}), "
                f"got {self.neg_threshold}"
            )


@dataclass(frozen=True)
class SttConfig(_Section):
    """Speech to text: who transcribes the user's speech.

    Attributes:
        kind: ``"sphinx"``: PocketSphinx in process, streaming partials (offline, en-US
            model in the ``pocketsphinx`` wheel); ``"openai"``: an OpenAI-compatible
            ``/v1/audio/transcriptions`` endpoint, once per utterance.
        sphinx_hmm: PocketSphinx acoustic model directory; unset: the wheel's en-US model.
        sphinx_lm: PocketSphinx language model file; unset: the wheel's.
        sphinx_dict: PocketSphinx pronunciation dictionary file; unset: the wheel's.
        base_url: ``"openai"``: the API root with its version, e.g.
            ``http://localhost:8000/v1``; unset: ``$OPENAI_BASE_URL``, else
            ``https://api.openai.com/v1``.
        model: ``"openai"``: the transcription model; unset: ``"whisper-1"``.
        api_key: ``"openai"``: the API key (a secret); unset: ``$OPENAI_API_KEY``, else
            none.
        language: ``"openai"``: the spoken language as an ISO-639-1 code (``"en"``);
            unset: the server detects it.
        prompt: ``"openai"``: text that guides the model (names, spelling); unset: none.
        connect_timeout_s: ``"openai"``: time allowed to connect, in seconds (the
            transcript's deadline is ``session.stt_final_timeout_s``).
        max_retries: ``"openai"``: further attempts after a retryable failure.
    """

    kind: Literal["sphinx", "openai"] = _setting("sphinx")
    sphinx_hmm: str | None = _setting(None, check=_not_blank)
    sphinx_lm: str | None = _setting(None, check=_not_blank)
    sphinx_dict: str | None = _setting(None, check=_not_blank)
    base_url: str | None = _setting(None, check=_http_url, fallback_env="OPENAI_BASE_URL")
    model: str | None = _setting(None, check=_not_blank)
    api_key: str | None = _setting(None, secret=True, fallback_env="OPENAI_API_KEY")
    language: str | None = _setting(None, check=_not_blank)
    prompt: str | None = _setting(None)
    connect_timeout_s: float = _setting(5.0, check=_greater_than(0))
    max_retries: int = _setting(2, check=_between(0, 10))


@dataclass(frozen=True)
class LlmConfig(_Section):
    """The language model: who writes the agent's replies.

    Attributes:
        kind: ``"responder"``: the offline rule-based responder (no model; answers the
            time, the date, greetings, and repeats what it heard); ``"openai"``: an
            OpenAI-compatible Chat Completions server, streamed (OpenAI, Ollama, vLLM,
            llama.cpp's server, LM Studio).
        system_prompt: the agent's instructions, the first message of every request.
        base_url: ``"openai"``: the API root with its version, e.g.
            ``http://localhost:11434/v1``; unset: ``$OPENAI_BASE_URL``, else
            ``https://api.openai.com/v1``.
        model: ``"openai"``: the model name the server knows (e.g. ``llama3.2``); unset:
            ``"gpt-4o-mini"``.
        api_key: ``"openai"``: the API key (a secret); unset: ``$OPENAI_API_KEY``, else
            none (local servers need none).
        temperature: ``"openai"``: sampling temperature, in [0, 2]; unset: the server's.
        max_tokens: ``"openai"``: longest reply, in tokens; unset: the server's limit.
        connect_timeout_s: ``"openai"``: time allowed to connect, in seconds (the first
            token's deadline is ``session.llm_first_token_timeout_s``).
        max_retries: ``"openai"``: further attempts after a retryable failure, made only
            before the first token.
        token_delay_s: ``"responder"``: delay between its words, in seconds (it streams
            its reply word by word like a model).
    """

    kind: Literal["responder", "openai"] = _setting("responder")
    system_prompt: str = _setting(
        "You are a helpful voice agent. Answer briefly, in plain spoken sentences."
    )
    base_url: str | None = _setting(None, check=_http_url, fallback_env="OPENAI_BASE_URL")
    model: str | None = _setting(None, check=_not_blank)
    api_key: str | None = _setting(None, secret=True, fallback_env="OPENAI_API_KEY")
    temperature: float | None = _setting(None, check=_between(0.0, 2.0))
    max_tokens: int | None = _setting(None, check=_greater_than(0))
    connect_timeout_s: float = _setting(5.0, check=_greater_than(0))
    max_retries: int = _setting(2, check=_between(0, 10))
    token_delay_s: float = _setting(0.02, check=_between(0.0, 10.0))


@dataclass(frozen=True)
class TtsConfig(_Section):
    """Text to speech: who speaks the agent's replies.

    Attributes:
        kind: ``"espeak"``: espeak-ng in process (offline, streamed as it synthesizes);
            ``"openai"``: an OpenAI-compatible ``/v1/audio/speech`` endpoint, streamed PCM.
        voice: the voice: for espeak-ng a language code or voice name with an optional
            variant (``"en-us"``, ``"de"``, ``"en-us+f3"``;
            ``voicecore.providers.espeak.espeak_voices()`` lists them), for ``"openai"`` the
            server's voice name; unset: ``"en-us"`` (espeak), ``"alloy"`` (openai).
        rate_wpm: ``"espeak"``: speaking rate in words per minute, 80-450.
        base_url: ``"openai"``: the API root with its version; unset:
            ``$OPENAI_BASE_URL``, else ``https://api.openai.com/v1``.
        model: ``"openai"``: the speech model; unset: ``"gpt-4o-mini-tts"``.
        api_key: ``"openai"``: the API key (a secret); unset: ``$OPENAI_API_KEY``, else
            none.
        sample_rate: ``"openai"``: the rate of the server's PCM, in Hz (OpenAI: 24000).
        speed: ``"openai"``: speaking speed factor, in [0.25, 4]; unset: the server's.
        instructions: ``"openai"``: the voice's style (``gpt-4o-mini-tts``); unset: none.
        connect_timeout_s: ``"openai"``: time allowed to connect, in seconds (the first
            audio's deadline is ``session.tts_first_audio_timeout_s``).
        max_retries: ``"openai"``: further attempts after a retryable failure, made only
            before the first audio.
    """

    kind: Literal["espeak", "openai"] = _setting("espeak")
    voice: str | None = _setting(None, check=_not_blank)
    rate_wpm: int = _setting(175, check=_between(80, 450))
    base_url: str | None = _setting(None, check=_http_url, fallback_env="OPENAI_BASE_URL")
    model: str | None = _setting(None, check=_not_blank)
    api_key: str | None = _setting(None, secret=True, fallback_env="OPENAI_API_KEY")
    sample_rate: int = _setting(24000, check=_between(8000, 48000))
    speed: float | None = _setting(None, check=_between(0.25, 4.0))
    instructions: str | None = _setting(None)
    connect_timeout_s: float = _setting(5.0, check=_greater_than(0))
    max_retries: int = _setting(2, check=_between(0, 10))


WEB_ROOT = Path(__file__).resolve().parents[3] / "web"
"""The browser client's folder in a checkout: the default of ``server.web_root``."""


@dataclass(frozen=True)
class ServerConfig(_Section):
    """The voice server (``voicecore serve``, ``voicecore.server.app.VoiceServer``): how it
    listens and what it allows. Durations in seconds, sizes in bytes.

    Attributes:
        host: address to listen on (``127.0.0.1``: this machine only; ``0.0.0.0`` or
            empty: every interface).
        port: TCP port, 0-65535; 0 picks a free one (the server prints which).
        allowed_origins: the ``Origin`` values a browser page may open ``/ws`` from, e.g.
            ``https://voice.example.com`` (others get HTTP 403: no cross-site WebSocket
            hijacking); unset: the server's own origins. Requests without ``Origin`` (not
            from a browser) are allowed.
        token: a bearer token the client must present on ``/ws`` (``Authorization: Bearer``
            or ``?token=``; open the page as ``/?token=...`` and it passes it on), a secret;
            unset: none needed.
        max_sessions: concurrent conversations on ``/ws``; more are refused (close 1013 and
            a ``busy`` error).
        max_message_bytes: largest client message (close 1009 above it), at least 1024.
        providers: the pipeline ``voicecore serve`` runs: ``"config"``: the providers this
            configuration chooses; ``"scripted"``: test doubles that need no model.
        web_root: the folder of the static files served: the browser client (the
            checkout's ``web/`` by default).
        timeline: record the diagnostic timeline to this JSON file, every 10 s and at
            shutdown, for ``voicecore diagnose``; unset: not recorded.
        hello_timeout_s: time allowed for the client's ``hello`` after the socket opens.
        send_queue_ms: how far behind, in agent audio, a client may fall before it is
            disconnected with 4000 (its send queue holds ``send_queue_ms / frame_ms``
            messages at most), at least 100 ms.
        send_buffer_bytes: the kernel send buffer of each connection, at least 4096; 0: the
            OS default (often megabytes, which would hide a stalled client for a minute).
        close_timeout_s: time allowed to a client to complete the closing handshake.
        shutdown_timeout_s: time allowed for a graceful shutdown before the rest is
            cancelled.
        recent_sessions: finished sessions kept for ``/metrics``.
        diagnostics: run the process diagnostics (event-loop lag, GC pauses, CPU
            throttling) for ``/metrics`` and the timeline.
    """

    host: str = _setting("127.0.0.1", aliases=("--host",))
    port: int = _setting(8000, check=_between(0, 65535), aliases=("--port",))
    allowed_origins: tuple[str, ...] | None = _setting(
        None, check=_not_blank, aliases=("--allowed-origin",)
    )
    token: str | None = _setting(None, check=_not_blank, secret=True, aliases=("--token",))
    max_sessions: int = _setting(20, check=_at_least(1), aliases=("--max-sessions",))
    max_message_bytes: int = _setting(
        DEFAULT_MAX_MESSAGE_BYTES, check=_at_least(1024), aliases=("--max-message-bytes",)
    )
    providers: Literal["config", "scripted"] = _setting("config", aliases=("--providers",))
    web_root: Path = _setting(WEB_ROOT, aliases=("--web-root",))
    timeline: Path | None = _setting(None, aliases=("--timeline",))
    hello_timeout_s: float = _setting(10.0, check=_greater_than(0))
    send_queue_ms: int = _setting(2000, check=_at_least(100))
    send_buffer_bytes: int = _setting(64 * 1024, check=_zero_or_at_least(4096))
    close_timeout_s: float = _setting(2.0, check=_greater_than(0))
    shutdown_timeout_s: float = _setting(5.0, check=_greater_than(0))
    recent_sessions: int = _setting(100, check=_at_least(0))
    diagnostics: bool = _setting(True)


@dataclass(frozen=True)
class VoicecoreConfig:
    """The whole configuration: the providers, their settings and the engine's timings.

    Build it with :func:`load_config` (file, environment, flags) or directly (every
    section defaults to the offline pipeline); every section validates itself when
    constructed, raising ``voicecore.ConfigError`` with the name of the bad setting.

    Attributes:
        server: the voice server's address, limits and pipeline (``voicecore serve``).
        vad: the voice activity detector.
        stt: speech to text.
        llm: the language model.
        tts: text to speech.
        session: the engine's turn-taking thresholds, timeouts and playout sizes
            (``voicecore.SessionConfig``: durations in ms unless the name ends in ``_s``).
        sources: where each setting's value came from, by dotted path
            (``"llm.model" -> "env VOICECORE_LLM_MODEL"``); settings left at their
            defaults are absent. Not part of equality.
    """

    server: ServerConfig = field(default_factory=ServerConfig)
    vad: VadConfig = field(default_factory=VadConfig)
    stt: SttConfig = field(default_factory=SttConfig)
    llm: LlmConfig = field(default_factory=LlmConfig)
    tts: TtsConfig = field(default_factory=TtsConfig)
    session: SessionConfig = field(default_factory=SessionConfig)
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)

    def get(self, path: str) -> Any:
        """The value of the setting at ``path`` (``"llm.model"``).

        Raises:
            KeyError: no such setting.
        """
        section, _, name = path.partition(".")
        if path not in _BY_PATH:
            raise KeyError(f"no setting {path!r}{_suggest(path, _BY_PATH)}")
        return getattr(getattr(self, section), name)


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerConfig,
    "vad": VadConfig,
    "stt": SttConfig,
    "llm": LlmConfig,
    "tts": TtsConfig,
    "session": SessionConfig,
}


# --- settings: the fields of the sections, with their names in every source --------------


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
                raise InvalidValueError(f"expected {self.describe_type()}, got {_shown(value)}")
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
            raise InvalidValueError(f"expected {expected}, got {_shown(value)}")
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
            if lowered in _FALSE_WORDS:
                return False
        else:
            try:
                return self.base(stripped)
            except ValueError:
                pass
        raise InvalidValueError(f"expected {self.describe_type()}, got {text!r}")


def _shown(value: Any) -> str:
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


def _section_settings(cls: type[Any]) -> tuple[Setting, ...]:
    """The settings of one section class, in field order."""
    cached: tuple[Setting, ...] | None = _SETTINGS_CACHE.get(cls)
    if cached is not None:
        return cached
    section = next(name for name, c in _SECTIONS.items() if c is cls)
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
    result = tuple(settings)
    _SETTINGS_CACHE[cls] = result
    return result


_SETTINGS_CACHE: dict[type[Any], tuple[Setting, ...]] = {}

SETTINGS: tuple[Setting, ...] = tuple(
    setting for cls in _SECTIONS.values() for setting in _section_settings(cls)
)
"""Every setting of :class:`VoicecoreConfig`, section by section, in field order."""

_BY_PATH: dict[str, Setting] = {s.path: s for s in SETTINGS}
_BY_ENV: dict[str, Setting] = {s.env_name: s for s in SETTINGS}


def _suggest(word: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


# --- loading -------------------------------------------------------------------------------


def _toml_layer(path: Path, problems: list[str]) -> dict[str, tuple[Any, str]]:
    """The settings a TOML file sets: ``{path: (value, source)}``; problems appended."""
    source = f"file {path}"
    try:
        with path.open("rb") as file:
            document = tomllib.load(file)
    except FileNotFoundError:
        problems.append(f"config file {path} not found")
        return {}
    except OSError as exc:
        problems.append(f"config file {path} cannot be read: {exc.strerror or exc}")
        return {}
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"config file {path} is not valid TOML: {exc}")
        return {}
    layer: dict[str, tuple[Any, str]] = {}
    for section, table in document.items():
        if section not in _SECTIONS:
            problems.append(
                f"{section} (in {path}): unknown section{_suggest(section, _SECTIONS)}; "
                f"the sections are {', '.join(_SECTIONS)}"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{section} (in {path}): expected a table, got {_shown(table)}")
            continue
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in _BY_PATH:
                names = [s.name for s in SETTINGS if s.section == section]
                problems.append(f"{key} (in {path}): unknown setting{_suggest(name, names)}")
                continue
            layer[key] = (value, source)
    return layer


def _text_layer(
    items: Iterable[tuple[Setting, str, str]], problems: list[str]
) -> dict[str, tuple[Any, str]]:
    """Settings written as text: ``(setting, text, source)`` parsed by type."""
    layer: dict[str, tuple[Any, str]] = {}
    for setting, text, source in items:
        try:
            layer[setting.path] = (setting.parse_text(text), source)
        except InvalidValueError as exc:
            problems.append(f"{setting.path} (from {source}): {exc}")
    return layer


def _env_items(env: Mapping[str, str], problems: list[str]) -> list[tuple[Setting, str, str]]:
    """The ``VOICECORE_<SECTION>_...`` variables of ``env`` as ``(setting, text, name)``."""
    section_prefixes = tuple(f"{ENV_PREFIX}{section.upper()}_" for section in _SECTIONS)
    items = []
    for name, text in sorted(env.items()):
        if not name.startswith(section_prefixes):
            continue
        setting = _BY_ENV.get(name)
        if setting is None:
            problems.append(f"{name}: names no setting{_suggest(name, _BY_ENV)}")
            continue
        items.append((setting, text, f"env {name}"))
    return items


def load_config(
    path: str | os.PathLike[str] | None = None,
    *,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, str] | None = None,
) -> VoicecoreConfig:
    """The configuration from defaults, a TOML file, the environment and flags, in that
    order of precedence (later wins), validated.

    Args:
        path: the TOML file; None: the file ``$VOICECORE_CONFIG`` names, if set, else none.
        env: the environment (default ``os.environ``): ``VOICECORE_<SECTION>_<SETTING>``
            variables set settings; the conventional ``OPENAI_API_KEY`` and
            ``OPENAI_BASE_URL`` are the fallbacks of the ``api_key`` and ``base_url`` of
            ``stt``, ``llm`` and ``tts`` (below the file, the ``VOICECORE_`` variables and
            the flags).
        flags: settings given on the command line, as text by dotted path
            (``{"llm.model": "llama3.2"}``); :func:`config_from_args` builds it from parsed
            arguments. Parsed like environment values.

    Returns:
        The validated configuration; its ``sources`` say where each value came from.

    Raises:
        ConfigError: every problem found, one per line, each naming the setting (or the
            file, section or variable) and where the bad value came from.
    """
    return _load(path, env, flags or {}, {})


def _fallback_items(env: Mapping[str, str]) -> list[tuple[Setting, str, str]]:
    """The conventional variables (``OPENAI_API_KEY``...) that settings fall back to, set
    and not blank, as ``(setting, text, source)``."""
    return [
        (setting, env[setting.fallback_env], f"env {setting.fallback_env}")
        for setting in SETTINGS
        if setting.fallback_env is not None and env.get(setting.fallback_env, "").strip()
    ]


def _load(
    path: str | os.PathLike[str] | None,
    env: Mapping[str, str] | None,
    flags: Mapping[str, str],
    spelled: Mapping[str, str],
) -> VoicecoreConfig:
    """:func:`load_config`, with the flags as the user spelled them (``--port`` for
    ``server.port``) by dotted path in ``spelled`` (the others are named by their
    ``--<section>-<setting>`` flag)."""
    env = os.environ if env is None else env
    problems: list[str] = []
    if path is None and env.get(CONFIG_ENV, "").strip():
        path = env[CONFIG_ENV].strip()
    merged: dict[str, tuple[Any, str]] = {}
    merged.update(_text_layer(_fallback_items(env), problems))
    if path is not None:
        merged.update(_toml_layer(Path(path), problems))
    merged.update(_text_layer(_env_items(env, problems), problems))
    flag_items = []
    for key, text in flags.items():
        setting = _BY_PATH.get(key)
        if setting is None:
            problems.append(f"{key}: no such setting{_suggest(key, _BY_PATH)}")
            continue
        flag = spelled.get(key, setting.flag)
        if setting.base is bool and text.strip().lower() in _FALSE_WORDS:
            flag = f"--no-{flag.removeprefix('--')}"  # what BooleanOptionalAction spells
        flag_items.append((setting, text, f"flag {flag}"))
    merged.update(_text_layer(flag_items, problems))

    sections: dict[str, Any] = {}
    for section, cls in _SECTIONS.items():
        kwargs: dict[str, Any] = {}
        section_ok = True
        for setting in _section_settings(cls):
            if setting.path not in merged:
                continue
            value, source = merged[setting.path]
            try:
                kwargs[setting.name] = setting.check_value(value)
            except InvalidValueError as exc:
                problems.append(f"{setting.path} (from {source}): {exc}")
                section_ok = False
        if not section_ok:
            continue
        try:
            sections[section] = cls(**kwargs)
        except ValueError as exc:  # ConfigError too
            problems.extend(_section_problems(section, str(exc), merged))
    if problems:
        count = f"{len(problems)} configuration problems" if len(problems) > 1 else ""
        raise ConfigError("\n".join([count, *problems]) if count else problems[0])
    sources = types.MappingProxyType({k: source for k, (_, source) in merged.items()})
    return VoicecoreConfig(**sections, sources=sources)


def _section_problems(
    section: str, message: str, merged: Mapping[str, tuple[Any, str]]
) -> list[str]:
    """A section constructor's error message as problems naming the setting.

    voicecore's sections already write ``section.name: ...``; ``SessionConfig`` writes
    ``name must be ...``: both become ``section.name (from <source>): ...`` when the name
    is that of a setting.
    """
    problems = []
    names = sorted((s.name for s in SETTINGS if s.section == section), key=len, reverse=True)
    for line in message.splitlines():
        text = line.removeprefix(f"{section}.")
        name = next((n for n in names if re.match(rf"^{re.escape(n)}\b:? ?", text)), None)
        if name is None:
            problems.append(f"{section}: {line}")
            continue
        rest = re.sub(rf"^{re.escape(name)}:? ?", "", text)
        key = f"{section}.{name}"
        where = f" (from {merged[key][1]})" if key in merged else ""
        problems.append(f"{key}{where}: {rest}")
    return problems


# --- command-line flags ------------------------------------------------------------------


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """Adds ``--config FILE`` and one flag per setting (grouped by section) to ``parser``.

    Flags are ``--<section>-<setting>`` (``--llm-model``); booleans also have a
    ``--no-`` form (``--no-vad-gate``). An unset flag leaves the setting to the file, the
    environment or the default. Read the result with :func:`config_from_args`.
    """
    parser.add_argument(
        "--config",
        metavar="FILE",
        help=f"TOML configuration file (default: the file ${CONFIG_ENV} names, if set)",
    )
    for section in _SECTIONS:
        group = parser.add_argument_group(f"{section} settings")
        for setting in (s for s in SETTINGS if s.section == section):
            default = "unset" if setting.default is None else _toml_value(setting.default)
            sources = f"env {setting.env_name}"
            if setting.sequence:
                sources += ", comma-separated; repeatable flag"
            if setting.fallback_env is not None:
                sources += f", else env {setting.fallback_env}"
            help_text = f"{setting.doc} [default {default}; {sources}]"
            help_text = help_text.replace("%", "%%")  # argparse formats help with %
            if setting.base is bool:
                group.add_argument(
                    *setting.aliases,
                    setting.flag,
                    dest=setting.dest,
                    action=argparse.BooleanOptionalAction,
                    default=None,
                    help=help_text,
                )
            else:
                metavar = "{" + ",".join(setting.choices) + "}" if setting.choices else None
                group.add_argument(
                    *setting.aliases,
                    setting.flag,
                    dest=setting.dest,
                    action=_AddFlag if setting.sequence else _StoreFlag,
                    default=None,
                    metavar=metavar or setting.name.upper(),
                    help=help_text,
                )


class _FlagText(NamedTuple):
    """A setting's value as given on the command line, and the flag that gave it."""

    text: str
    flag: str


class _StoreFlag(argparse.Action):
    """Stores a flag's text with the flag as spelled (``--port`` or ``--server-port``), so
    that a bad value is reported under the name the user typed."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        setattr(namespace, self.dest, _FlagText(str(values), option_string or self.dest))


class _AddFlag(_StoreFlag):
    """Like :class:`_StoreFlag`, for a list: each use of the flag adds its (comma-separated)
    items to the previous ones."""

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        given: _FlagText | None = getattr(namespace, self.dest, None)
        text = str(values) if given is None else f"{given.text},{values}"
        setattr(namespace, self.dest, _FlagText(text, option_string or self.dest))


def config_from_args(
    args: argparse.Namespace, *, env: Mapping[str, str] | None = None
) -> VoicecoreConfig:
    """The configuration for arguments parsed by a parser given :func:`add_config_arguments`.

    Args:
        args: the parsed arguments.
        env: the environment (default ``os.environ``).

    Raises:
        ConfigError: see :func:`load_config`.
    """
    flags: dict[str, str] = {}
    spelled: dict[str, str] = {}
    for setting in SETTINGS:
        value = getattr(args, setting.dest, None)
        if isinstance(value, bool):
            flags[setting.path] = "true" if value else "false"
        elif isinstance(value, _FlagText):
            flags[setting.path] = value.text
            spelled[setting.path] = value.flag
    return _load(getattr(args, "config", None), env, flags, spelled)


# --- showing -------------------------------------------------------------------------------


def _toml_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("nan" if value != value else "inf")
    if isinstance(value, int):
        return str(value)
    # A JSON string is a TOML basic string (same escapes).
    return json.dumps(value, ensure_ascii=False)


def format_config(
    config: VoicecoreConfig, *, reveal_secrets: bool = False, sources: bool = True
) -> str:
    """The configuration as TOML that :func:`load_config` reads back to the same values.

    Unset settings are shown as comments (TOML has no null). Secrets that are set are
    shown as ``"********"`` unless ``reveal_secrets``.

    Args:
        config: the configuration.
        reveal_secrets: show API keys as they are (never do that in logs).
        sources: end each line with a comment saying where its value came from, for the
            settings not left at their defaults.
    """
    lines: list[str] = []
    for section in _SECTIONS:
        if lines:
            lines.append("")
        lines.append(f"[{section}]")
        for setting in (s for s in SETTINGS if s.section == section):
            value = config.get(setting.path)
            notes = []
            masked = setting.secret and value is not None and not reveal_secrets
            if masked:
                notes.append("masked")
            origin = config.sources.get(setting.path)
            if sources and origin:
                notes.append(origin)
            comment = f"  # {'; '.join(notes)}" if notes else ""
            if value is None:
                lines.append(f"# {setting.name} = (unset){comment}")
            else:
                shown = _toml_value(_MASK if masked else value)
                lines.append(f"{setting.name} = {shown}{comment}")
    return "\n".join(lines) + "\n"
