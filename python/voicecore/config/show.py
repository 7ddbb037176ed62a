"""Showing a configuration as TOML that loads back to the same values, with where each
value came from and the secrets masked (:func:`format_config`)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from voicecore.config.sections import SECTIONS, SETTINGS, VoicecoreConfig

__all__ = [
    "format_config",
    "toml_value",
]

_MASK = "********"


def toml_value(value: Any) -> str:
    """A setting's value written as TOML (also how ``--help`` shows defaults)."""
    if isinstance(value, tuple):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
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
    for section in SECTIONS:
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
                shown = toml_value(_MASK if masked else value)
                lines.append(f"{setting.name} = {shown}{comment}")
    return "\n".join(lines) + "\n"
