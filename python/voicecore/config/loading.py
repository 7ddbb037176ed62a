"""Loading the configuration from its layers, later ones winning: defaults < TOML file <
environment variables < command-line flags (:func:`load_config`); every problem is reported
at once, naming the setting and where its value came from."""

from __future__ import annotations

import os
import re
import tomllib
import types
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from voicecore.config.sections import (
    SECTIONS,
    SETTINGS,
    SETTINGS_BY_PATH,
    VoicecoreConfig,
    section_settings,
)
from voicecore.config.settings import ENV_PREFIX, FALSE_WORDS, Setting, shown, suggest
from voicecore.exceptions import ConfigError, InvalidValueError

__all__ = [
    "CONFIG_ENV",
    "load_config",
    "load_layers",
]

CONFIG_ENV = "VOICECORE_CONFIG"
"""Environment variable naming the TOML file to read when no ``--config`` is given."""

_BY_ENV: dict[str, Setting] = {s.env_name: s for s in SETTINGS}


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
        if section not in SECTIONS:
            problems.append(
                f"{section} (in {path}): unknown section{suggest(section, SECTIONS)}; "
                f"the sections are {', '.join(SECTIONS)}"
            )
            continue
        if not isinstance(table, dict):
            problems.append(f"{section} (in {path}): expected a table, got {shown(table)}")
            continue
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in SETTINGS_BY_PATH:
                names = [s.name for s in SETTINGS if s.section == section]
                problems.append(f"{key} (in {path}): unknown setting{suggest(name, names)}")
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
    section_prefixes = tuple(f"{ENV_PREFIX}{section.upper()}_" for section in SECTIONS)
    items = []
    for name, text in sorted(env.items()):
        if not name.startswith(section_prefixes):
            continue
        setting = _BY_ENV.get(name)
        if setting is None:
            problems.append(f"{name}: names no setting{suggest(name, _BY_ENV)}")
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
    return load_layers(path, env, flags or {}, {})


def _fallback_items(env: Mapping[str, str]) -> list[tuple[Setting, str, str]]:
    """The conventional variables (``OPENAI_API_KEY``...) that settings fall back to, set
    and not blank, as ``(setting, text, source)``."""
    return [
        (setting, env[setting.fallback_env], f"env {setting.fallback_env}")
        for setting in SETTINGS
        if setting.fallback_env is not None and env.get(setting.fallback_env, "").strip()
    ]


def load_layers(
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
        setting = SETTINGS_BY_PATH.get(key)
        if setting is None:
            problems.append(f"{key}: no such setting{suggest(key, SETTINGS_BY_PATH)}")
            continue
        flag = spelled.get(key, setting.flag)
        if setting.base is bool and text.strip().lower() in FALSE_WORDS:
            flag = f"--no-{flag.removeprefix('--')}"  # what BooleanOptionalAction spells
        flag_items.append((setting, text, f"flag {flag}"))
    merged.update(_text_layer(flag_items, problems))

    sections: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        kwargs: dict[str, Any] = {}
        section_ok = True
        for setting in section_settings(cls):
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
