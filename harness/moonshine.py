"""Where tests and benchmarks find the Moonshine model (``moonshine-base-en``).

``voicecore.models.require("moonshine-base-en")`` when the model registry provides it (it
returns the directory, or raises ``ModelNotFoundError`` saying how to fetch it); otherwise
the directory in ``$VOICECORE_MOONSHINE_DIR`` (a development copy: ``encoder_model.ort``,
``decoder_model_merged.ort``, ``tokenizer.bin``). Callers skip with the reason when neither
gives one.
"""

from __future__ import annotations

import os
from pathlib import Path

from voicecore.exceptions import ModelNotFoundError

__all__ = ["ENV_VAR", "moonshine_model_dir"]

ENV_VAR = "VOICECORE_MOONSHINE_DIR"
_FILES = ("encoder_model.ort", "decoder_model_merged.ort", "tokenizer.bin")


def moonshine_model_dir() -> tuple[Path | None, str]:
    """``(directory, "")``, or ``(None, why)`` when the model cannot be found."""
    import voicecore.models

    require = getattr(voicecore.models, "require", None)
    reasons = []
    if require is not None:
        try:
            return Path(require("moonshine-base-en")), ""
        except ModelNotFoundError as missing:
            reasons.append(str(missing))
    else:
        reasons.append("voicecore.models has no require() yet")
    explicit = os.environ.get(ENV_VAR)
    if explicit:
        folder = Path(explicit)
        if all((folder / name).is_file() for name in _FILES):
            return folder, ""
        reasons.append(f"${ENV_VAR}={explicit} lacks one of {', '.join(_FILES)}")
    else:
        reasons.append(f"${ENV_VAR} is not set")
    return None, "Moonshine model not found: " + "; ".join(reasons)
