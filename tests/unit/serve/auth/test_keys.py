"""serve.auth.keys: the keys file's format, its keyed hashes, and who a header names."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

import pytest

from serve.auth.keys import (
    MAX_AUTHORIZATION_BYTES,
    SINGLE_KEY_SERVICE,
    KeysFileError,
    KeysTable,
    add_service,
    file_problem,
    from_json,
    identify,
    new_key,
    read_keys_file,
    revoke_service,
    to_json,
    write_keys_file,
)

NOW = "2026-12-07T00:00:00+00:00"


def table_with(*names: str) -> tuple[KeysTable, dict[str, str]]:
    table, keys = KeysTable(), {}
    for name in names:
        keys[name] = new_key()
        table = add_service(table, name, keys[name], NOW, requests_per_minute=5)
    return table, keys


def bearer(key: str) -> bytes:
    return f"Bearer {key}".encode()


def test_the_file_holds_hashes_not_keys_and_reads_back() -> None:
    table, keys = table_with("ris", "reports")
    text = to_json(table)
    assert not [k for k in keys.values() if k in text], text
    assert from_json(text) == table
    assert len({new_key() for _ in range(100)}) == 100 and len(keys["ris"]) > 40


def test_the_same_key_hashes_differently_under_another_salt() -> None:
    key = new_key()
    a = add_service(KeysTable(), "ris", key, NOW).services[0].key_hash
    b = add_service(KeysTable(), "ris", key, NOW).services[0].key_hash
    assert a != b


def test_identify_names_the_service_or_the_problem() -> None:
    table, keys = table_with("ris", "gone")
    table = revoke_service(table, "gone", NOW)
    single = hashlib.sha256(b"the-single-key").digest()
    cases = {
        bearer(keys["ris"]): (0, "ris"),
        b"bearer " + keys["ris"].encode(): (0, "ris"),
        bearer("the-single-key"): (0, SINGLE_KEY_SERVICE),
        bearer(keys["gone"]): (403, "gone"),
        bearer("mgs-unknown"): (401, None),
        keys["ris"].encode(): (401, None),  # no scheme
        b"Basic dXNlcjpwYXNz": (401, None),
        b"Bearer ": (401, None),
        b"Bearer " + b"k" * MAX_AUTHORIZATION_BYTES: (431, None),
    }
    for header, (status, service) in cases.items():
        verdict = identify(table, header, single)
        assert (verdict.status, verdict.service) == (status, service), (header[:20], verdict)
        assert keys["ris"] not in verdict.message and keys["gone"] not in verdict.message
    assert identify(table, None).status == 401


def test_duplicate_names_bad_names_and_bad_limits_are_refused() -> None:
    table, _ = table_with("ris")
    with pytest.raises(KeysFileError, match="already has a key"):
        add_service(table, "ris", new_key(), NOW)
    with pytest.raises(KeysFileError, match="not a service name"):
        add_service(table, "Bad Name", new_key(), NOW)
    with pytest.raises(KeysFileError, match="at least 1"):
        add_service(table, "x", new_key(), NOW, requests_per_minute=0)
    with pytest.raises(KeysFileError, match="no service 'nope'"):
        revoke_service(table, "nope", NOW)
    # A revoked name may get a new key; the old one stays refused as revoked.
    old = table_with("ris")
    again = add_service(revoke_service(old[0], "ris", NOW), "ris", new_key(), NOW)
    assert identify(again, bearer(old[1]["ris"])).status == 403


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("{", "not JSON"),
        ("[]", "not a keys file"),
        ('{"format": "medgemma-serve service keys 1", "salt": "x"}', "salt"),
        (
            '{"format": "medgemma-serve service keys 1", "salt": "' + "0" * 64 + '", '
            '"services": [{"name": "a", "key_hmac_sha256": "' + "1" * 64 + '", '
            '"requests_per_minute": -1}]}',
            "requests_per_minute",
        ),
        (
            '{"format": "medgemma-serve service keys 1", "salt": "' + "0" * 64 + '", '
            '"services": [{"name": "a", "key_hmac_sha256": "' + "1" * 64 + '"}, '
            '{"name": "a", "key_hmac_sha256": "' + "2" * 64 + '"}]}',
            "two valid keys",
        ),
    ],
)
def test_malformed_files_are_named(text: str, says: str) -> None:
    with pytest.raises(KeysFileError, match=says) as caught:
        from_json(text)
    assert "\n" not in str(caught.value)


def test_written_atomically_private_and_checked_on_read(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "keys.json"
    table, _ = table_with("ris")
    write_keys_file(path, table)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert read_keys_file(path) == table
    assert os.listdir(path.parent) == ["keys.json"]  # no temporary file left
    path.chmod(0o644)
    with pytest.raises(KeysFileError, match=r"other users \(mode 0644\)"):
        read_keys_file(path)
    with pytest.raises(KeysFileError, match="no such keys file"):
        read_keys_file(tmp_path / "missing.json")
    assert file_problem(stat.S_IFDIR | 0o700) == "is not a regular file"
