"""The project's cache folder (stand-in models, one folder per preset and seed; vLLM's and
inductor's compile caches) and where each stand-in lives in it."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

# The checkout this package runs from (an editable install), if it is one.
_CHECKOUT = Path(__file__).resolve().parents[2]


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$MEDGEMMA_CACHE`, else `.cache/` in the checkout, else `~/.cache/medgemma-serve`."""
    root = (os.environ if environ is None else environ).get("MEDGEMMA_CACHE")
    if root:
        return Path(root)
    if (_CHECKOUT / "pyproject.toml").exists():
        return _CHECKOUT / ".cache"
    return Path.home() / ".cache" / "medgemma-serve"


def standin_dir(preset: str, seed: int, root: Path | None = None) -> Path:
    """The folder of one stand-in model (built or not)."""
    return (root or cache_dir()) / f"tiny-medgemma-{preset}-seed{seed}"
