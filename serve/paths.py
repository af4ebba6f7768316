"""The project's cache folder (stand-in models, one folder per preset and seed; vLLM's and
inductor's compile caches) and where each stand-in lives in it.

It is where a user's caches live (the XDG cache folder), not in the checkout: a second
checkout, or CI on the same machine, starts with the stand-ins built and vLLM's compile
caches warm. `MEDGEMMA_CACHE` moves it (an empty folder gives a cold start)."""

from __future__ import annotations

import fcntl
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path


def cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """`$MEDGEMMA_CACHE`, else `$XDG_CACHE_HOME/medgemma-serve`, else
    `~/.cache/medgemma-serve`."""
    env = os.environ if environ is None else environ
    if root := env.get("MEDGEMMA_CACHE"):
        return Path(root).expanduser()
    xdg = env.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "medgemma-serve"


def build_once(folder: Path, build: Callable[[Path], object]) -> Path:
    """Return `folder`, first running `build(tmp)` into a sibling and renaming it into
    place if `folder` has no `.complete` marker (which `build` writes last), so an
    interrupted build never leaves a folder that looks finished. One process builds at a
    time (a lock file beside it): another that needs the folder meanwhile (a parallel test
    worker, say) waits and uses that build, rather than replacing the folder under it."""
    if (folder / ".complete").exists():
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    with open(folder.with_name(folder.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (folder / ".complete").exists():
            tmp = folder.with_name(folder.name + f".building-{os.getpid()}")
            build(tmp)
            if folder.exists():  # a half-built folder from an interrupted run
                shutil.rmtree(folder)
            tmp.rename(folder)
    return folder


def standin_dir(preset: str, seed: int, root: Path | None = None) -> Path:
    """The folder of one stand-in model (built or not)."""
    return (root or cache_dir()) / f"tiny-medgemma-{preset}-seed{seed}"
