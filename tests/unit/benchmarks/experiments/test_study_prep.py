"""`python -m benchmarks study-prep` on a tiny series: it prints every round and the medians
(the numbers are not asserted: this machine is shared)."""

from __future__ import annotations

import re

import pytest

from benchmarks.__main__ import main
from tests.pacs_fixture import needs_orthanc


@needs_orthanc
def test_prints_each_round_and_the_medians(capsys: pytest.CaptureFixture[str]) -> None:
    args = ["--rounds", "2", "--sizes", "64,96", "--slices", "6", "--send", "6,2"]
    assert main(["study-prep", *args]) == 0
    out = capsys.readouterr().out
    rounds = re.findall(
        r"^round (\d) (\d+) px: fetch [\d.]+ s, prepare 6 [\d.]+ s, prepare 2", out, re.M
    )
    assert rounds == [("1", "64"), ("1", "96"), ("2", "96"), ("2", "64")], out  # alternating
    assert re.search(
        r"^  96 px: fetch [\d.]+ s, prepare 6: [\d.]+ s, prepare 2: [\d.]+ s$", out, re.M
    )
    assert "load average" in out


@pytest.mark.parametrize("args", [["--sizes", "0"], ["--send", "x"]])
def test_bad_lists_are_refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["study-prep", *args])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert "need whole numbers" in err or "not a list" in err, err
