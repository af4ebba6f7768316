"""The POSIX shared memory (/dev/shm) a vLLM server's processes leave behind when they are
killed: what they map, read off /proc, and its removal once they are gone
(serve.process.ManagedProcess does both)."""

from __future__ import annotations

import contextlib
from pathlib import Path

import psutil

SHM = Path("/dev/shm")
# The segments vLLM makes and only its own processes unlink: Python's SharedMemory (psm_*:
# the engine's message queue, the image cache) and the CPU tensor-parallel communicator's.
# Semaphores (sem.*) and anything else are left alone.
SEGMENTS = ("psm_", "vllm_dist_")


def shared_memory_in(maps: str, shm: Path = SHM) -> set[Path]:
    """The SEGMENTS under `shm` that a /proc/PID/maps text maps (pure)."""
    found = set()
    for line in maps.splitlines():
        parts = line.split(maxsplit=5)
        if len(parts) == 6 and parts[5].startswith(f"{shm}/"):
            path = Path(parts[5].removesuffix(" (deleted)"))
            if path.name.startswith(SEGMENTS):
                found.add(path)
    return found


def shared_memory_of(pid: int) -> set[Path]:
    """The vLLM shared memory segments (SEGMENTS, in /dev/shm) that the process `pid` and
    its descendants map now; empty if they are gone or /proc cannot be read."""
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.Error:
        return set()
    found: set[Path] = set()
    for proc in procs:
        with contextlib.suppress(OSError):
            found |= shared_memory_in(Path(f"/proc/{proc.pid}/maps").read_text())
    return found


def remove_left_behind(paths: set[Path]) -> list[Path]:
    """Unlink those of `paths` that still exist (segments of a process group that is gone:
    a process killed before it could unlink its own). Returns what it removed."""
    removed = []
    for path in sorted(paths):
        with contextlib.suppress(FileNotFoundError, PermissionError):
            path.unlink()
            removed.append(path)
    return removed
