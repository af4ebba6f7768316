"""serve.auth.keyring: a real keys file changed under a KeyRing (the clock is an argument)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from serve.auth.keys import (
    KeysFileError,
    KeysTable,
    add_service,
    new_key,
    revoke_service,
    write_keys_file,
)

NOW = "2026-12-07T00:00:00+00:00"


def test_changes_are_read_bad_files_keep_the_last_good_keys_and_are_said_once(
    tmp_path: Path,
) -> None:
    from serve.auth.keyring import KeyRing

    path = tmp_path / "keys.json"
    key = new_key()
    table = add_service(KeysTable(), "ris", key, NOW)
    write_keys_file(path, table)
    said: list[str] = []
    ring = KeyRing(path, said.append, check_s=1.0)
    assert ring.names() == ["ris"] and ring.table(0.0).active("ris") is not None
    write_keys_file(path, revoke_service(table, "ris", NOW))
    assert ring.table(0.5).active("ris") is not None  # not looked at before check_s
    assert ring.table(1.5).active("ris") is None
    good = path.read_text()
    path.write_text("{ broken")
    for t in (3.0, 4.0, 5.0):
        assert ring.table(t).services[0].name == "ris"
    path.chmod(0o640)
    ring.table(6.0)
    path.chmod(0o600)
    path.unlink()
    ring.table(7.0)
    path.write_text(good)
    os.chmod(path, 0o600)
    ring.table(8.0)
    problems = [s for s in said if "keeping the last good keys" in s]
    assert len(problems) == 3, said  # broken (said once), readable by others, missing
    assert "not JSON" in problems[0] and "other users" in problems[1]
    assert "no such keys file" in problems[2]
    assert said[-1].endswith("reloaded: 0 services with a valid key"), said
    assert not [s for s in said if key in s]


def test_an_unusable_file_at_start_raises(tmp_path: Path) -> None:
    from serve.auth.keyring import KeyRing

    with pytest.raises(KeysFileError, match="no such keys file"):
        KeyRing(tmp_path / "none.json", print)
