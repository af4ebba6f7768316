"""`python -m serve keys`: add prints the key once (last line of stdout), list, revoke, and
one line for each mistake; run as serve's `main(argv)` in this process."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from serve.auth.keys import identify, read_keys_file
from tests.in_process import run_main


def keys(capsys: pytest.CaptureFixture[str], *args: str):  # type: ignore[no-untyped-def]
    from serve.__main__ import main

    return run_main(main, ["keys", *args], capsys)


def test_add_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    r = keys(capsys, "add", "ris", "--keys-file", str(path), "--requests-per-minute", "60")
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("mgs-") and key not in path.read_text() and key not in r.stderr
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert identify(read_keys_file(path), f"Bearer {key}".encode()).service == "ris"
    r = keys(capsys, "add", "reports", "--keys-file", str(path), "--tokens-per-minute", "5000")
    assert r.returncode == 0, r.stderr
    listed = keys(capsys, "list", "--keys-file", str(path)).stdout.splitlines()
    assert listed[0].split() == [
        "service",
        "state",
        "requests/min",
        "tokens/min",
        "created",
        "revoked",
    ]
    assert listed[1].split()[:4] == ["ris", "valid", "60", "unlimited"], listed
    assert listed[2].split()[:4] == ["reports", "valid", "unlimited", "5000"], listed
    r = keys(capsys, "revoke", "ris", "--keys-file", str(path))
    assert r.returncode == 0 and "revoked" in r.stderr, r.stderr
    assert identify(read_keys_file(path), f"Bearer {key}".encode()).status == 403
    assert (
        keys(capsys, "list", "--keys-file", str(path)).stdout.splitlines()[1].split()[1]
        == "revoked"
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["add", "ris"], "already has a key"),
        (["add", "Not OK"], "not a service name"),
        (["revoke", "nobody"], "no service 'nobody'"),
        (["add", "x", "--requests-per-minute", "0"], "at least 1"),
    ],
)
def test_mistakes_get_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], says: str
) -> None:
    path = tmp_path / "keys.json"
    assert keys(capsys, "add", "ris", "--keys-file", str(path)).returncode == 0
    before = path.read_text()
    r = keys(capsys, *args, "--keys-file", str(path))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and says in r.stderr, r.stderr
    assert r.stdout == "" and path.read_text() == before


def test_a_bad_file_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "keys.json"
    path.write_text("{}")
    path.chmod(0o644)
    r = keys(capsys, "add", "ris", "--keys-file", str(path))
    assert r.returncode == 2 and "other users" in r.stderr and str(path) in r.stderr, r.stderr
    r = keys(capsys, "list", "--keys-file", str(tmp_path / "none.json"))
    assert r.returncode == 2 and "no such keys file" in r.stderr, r.stderr
