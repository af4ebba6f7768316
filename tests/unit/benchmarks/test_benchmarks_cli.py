"""`python -m benchmarks`: one table of commands, each a module with `add_cli_args(parser)`
and `main(args)`; `--help` lists them all and `COMMAND --help` shows that command's options."""

from __future__ import annotations

import pytest

from benchmarks.__main__ import COMMANDS, main
from serve.process import PORTS_ENV
from tests.conftest import REPO
from tests.in_process import run_main


def test_the_top_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    for name, (_module, text) in COMMANDS.items():
        assert f"    {name} " in out and text.split()[0] in out, f"{name} not listed:\n{out}"


@pytest.mark.parametrize("name", list(COMMANDS))
def test_each_command_shows_its_own_options(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([name, "--help"])
    out = capsys.readouterr().out
    assert exit_.value.code == 0, out
    assert out.startswith(f"usage: python -m benchmarks {name} [-h]"), out
    if name != "fields":  # the one command without options
        assert out.count("--") > 1, f"no options of {name}:\n{out}"


def test_a_launch_error_no_command_catches_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bad MEDGEMMA_PORTS reaches `free_port` in the headroom command, which catches no
    LaunchError itself: `python -m benchmarks` says it in one line, exit 1."""
    monkeypatch.setenv(PORTS_ENV, "bad")
    monkeypatch.chdir(REPO)
    out = run_main(
        main, ["headroom", "--scenario", "configs/scenarios/bench-headroom.yaml"], capsys
    )
    assert out.returncode == 1, out
    assert out.stderr == "error: MEDGEMMA_PORTS='bad': expected LOW-HIGH, e.g. 20000-26383\n"
