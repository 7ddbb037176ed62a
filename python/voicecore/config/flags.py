"""Command-line flags: ``--config FILE`` and one flag per setting
(:func:`add_config_arguments`), and the configuration they give (:func:`config_from_args`)."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from voicecore.config.loading import CONFIG_ENV, load_layers
from voicecore.config.sections import SECTIONS, SETTINGS, VoicecoreConfig
from voicecore.config.show import toml_value

__all__ = [
    "add_config_arguments",
    "config_from_args",
]


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
    for section in SECTIONS:
        group = parser.add_argument_group(f"{section} settings")
        for setting in (s for s in SETTINGS if s.section == section):
            default = "unset" if setting.default is None else toml_value(setting.default)
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
    return load_layers(getattr(args, "config", None), env, flags, spelled)
