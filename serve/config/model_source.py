"""Where a model or adapter comes from: a Hugging Face hub id or a local folder.

The schema decides by the string's form alone (`looks_local`, `HF_ID`), so a config loads
the same on every machine; `is_local_path` also asks the file system (an existing relative
folder named like org/name is local), for the machine that starts the server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from serve.config.standin import StandIn, standin_model_config
from serve.model.shapes import SHAPES_DIR

HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def looks_local(source: str) -> bool:
    """A path by its form: absolute, relative with a leading dot, or under ~ (pure)."""
    return source.startswith(("/", ".", "~"))


def is_local_path(model: str) -> bool:
    """A model string is a local path if it looks like one or exists; else a hub id."""
    return looks_local(model) or Path(model).expanduser().exists()


def form_problem(source: str) -> str | None:
    """Why a string can be neither a local folder nor a hub id (pure), or None."""
    if looks_local(source) or HF_ID.match(source):
        return None
    return (
        f"{source!r} is neither an existing local folder nor a hub id like org/name "
        "(write a relative folder as ./name)"
    )


def hub_model_config(model: str) -> dict[str, Any] | None:
    """The config.json facts of a hub model the repo ships (serve/model/hub_configs), or
    None: a local-looking path, an unknown model, an unreadable file."""
    if looks_local(model) or not HF_ID.match(model):
        return None
    try:
        data = json.loads((SHAPES_DIR / f"{model.split('/', 1)[1]}.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def unpinned_warning(model: str | None, revision: str | None) -> str | None:
    """The warning for a hub model loaded without a pinned commit, or None: a local folder
    (`is_local_path`) or a stand-in (no `model`) never warns."""
    if model is None or revision or is_local_path(model) or not HF_ID.match(model):
        return None
    return (
        f"warning: revision: {model} is a hub id with no commit pinned, so each new cache "
        "loads whatever the hub's main branch holds then; set `revision:` to the commit "
        "hash you verified (docs/deploying.md)"
    )


def known_model_config(model: str | None, stand_in: StandIn | None) -> dict[str, Any] | None:
    """What the config.json of the model is known to hold without the file system: the
    stand-in's preset, or a hub model's shape file (serve/model/hub_configs). None when
    nothing is known (a local folder's is read by the launch pre-flight)."""
    if stand_in is not None:
        return standin_model_config(stand_in)
    return hub_model_config(model) if model is not None else None
