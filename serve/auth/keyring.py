"""The keys file as a running edge sees it: re-read when it changes, the last good table
kept when the new one is bad (the I/O shell around serve.auth.keys).

`KeyRing.table(now)` looks at the file at most once per `check_s` seconds (one stat);
when its inode, size or mtime changed it is read again. A file that became malformed,
readable by others or missing leaves the last good keys in force, and the problem is
reported once (through `report`, one line naming the file, never a key) until the file
changes again. A new key and a revocation are thus in force within `check_s` seconds of
the `python -m serve keys` that wrote them, without a restart.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from serve.auth.keys import KeysFileError, KeysTable, read_keys_file

Signature = tuple[int, int, int, int] | None  # inode, size, mtime ns, mode; None: missing


def signature(path: Path) -> Signature:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_mode)


@dataclass
class KeyRing:
    """The keys of `path`, reloaded on change. Raises KeysFileError at construction if
    the file is unusable then (a server must not start on it)."""

    path: Path
    report: Callable[[str], None]
    check_s: float = 1.0
    current: KeysTable = field(init=False)
    seen: Signature = field(init=False)
    checked_at: float = field(init=False, default=float("-inf"))

    def __post_init__(self) -> None:
        self.seen = signature(self.path)
        self.current = read_keys_file(self.path)
        self.report(f"keys file {self.path}: {len(self.names())} services with a valid key")

    def names(self) -> list[str]:
        return sorted(s.name for s in self.current.services if s.revoked is None)

    def table(self, now: float) -> KeysTable:
        """The keys in force at `now` (time.monotonic())."""
        if now - self.checked_at >= self.check_s:
            self.checked_at = now
            sig = signature(self.path)
            if sig != self.seen:
                self.seen = sig
                self.reload()
        return self.current

    def reload(self) -> None:
        try:
            table = read_keys_file(self.path)
        except KeysFileError as exc:
            self.report(
                f"keys file changed but cannot be used, keeping the last good keys "
                f"({len(self.names())} services): {exc}"
            )
            return
        self.current = table
        self.report(
            f"keys file {self.path} reloaded: {len(self.names())} services with a valid key"
        )
