"""The test and benchmark harness: everything tests and benchmarks share, and nothing the
product imports.

One module per tool, most runnable as ``python -m harness.<tool>``; they target 127.0.0.1
only and bound every process they start in count and time. ``harness.serve`` runs the real
server with a benchmark's faults or pacing baseline injected from outside the product.
"""

import os
from pathlib import Path
from typing import Final

ROOT: Final = Path(__file__).resolve().parents[1]
"""The checkout (``harness`` is importable from it: pytest's ``pythonpath``)."""


def subprocess_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a child process that runs ``python -m harness.<tool>``: this one's,
    with the checkout on ``PYTHONPATH``, plus ``extra``."""
    path = os.environ.get("PYTHONPATH")
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT) if not path else f"{ROOT}{os.pathsep}{path}",
        **(extra or {}),
    }
