"""docs/deploying.md checked without a server: its table of configs names every file of
configs/deployments; the H100 quickstart has every step, in order, and its `hf` lines use
only options `hf ... --help` lists (nothing reaches the Hub). The other docs' commands,
paths, links and snippets: tests/unit/test_docs.py."""

from __future__ import annotations

import re
import shlex
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.doc_blocks import (
    SHELL_LANGS,
    blocks,
    commands,
    shell_lines,
)

DEPLOYING = REPO / "docs" / "deploying.md"


def section(doc: Path, heading: str) -> str:
    """The text of a `## heading` section, up to the next heading of the same level."""
    text = doc.read_text()
    start = text.index(f"\n{heading}\n")
    level = heading.split(" ", 1)[0]
    end = text.find(f"\n{level} ", start + len(heading) + 2)
    return text[start : end if end != -1 else len(text)]


def test_the_configs_table_names_every_deployment_config() -> None:
    table = section(DEPLOYING, "### Configs")
    listed = re.findall(r"^\| `([\w.-]+\.yaml)` \|", table, re.MULTILINE)
    files = sorted(p.name for p in (REPO / "configs" / "deployments").glob("*.yaml"))
    assert len(listed) == len(set(listed)), f"a config is listed twice: {listed}"
    assert sorted(listed) == files, (
        f"not in docs/deploying.md's table: {sorted(set(files) - set(listed))}; "
        f"no such file: {sorted(set(listed) - set(files))}"
    )


QUICKSTART = section(DEPLOYING, "## The H100 quickstart")
QUICKSTART_LINES = [
    (f"quickstart line {n}", argv)
    for b in blocks(DEPLOYING)
    if b.lang in SHELL_LANGS and b.body in QUICKSTART
    for n, line in enumerate(shell_lines(b), 1)
    for argv, _target in commands(line.text)
]
# The steps a newcomer with an H100 takes, in this order (issue 25: "no step missing").
QUICKSTART_STEPS = [
    ["nvidia-smi", "--query-gpu=name,memory.total,driver_version"],
    ["make", "install", "DEVICE=cuda"],
    ["python", "-m", "serve", "pick-config"],
    ["hf", "download", "google/medgemma-1.5-4b-it", "--revision"],
    ["hf", "cache", "verify", "google/medgemma-1.5-4b-it", "--revision"],
    ["echo"],  # revision: $REV into the config
    ["python", "-m", "serve", "--config", "configs/deployments/medgemma-1.5-4b-it-h100.yaml"],
    ["python", "-m", "serve", "keys", "add"],
    ["make", "serve"],
    ["python", "-m", "serve", "probe", "--config"],
    ["python", "-m", "serve", "verify", "--config"],
    ["python", "-m", "benchmarks", "run", "--scenario", "configs/scenarios/bench-gpu.yaml"],
    ["python", "-m", "benchmarks", "run", "--scenario", "configs/scenarios/bench-gpu-open.yaml"],
    ["python", "-m", "serve", "render", "k8s", "--config"],
    ["kubectl", "apply", "-f", "medgemma.yaml"],
]


def test_the_quickstart_has_every_step_in_order() -> None:
    argvs = [argv for _where, argv in QUICKSTART_LINES]
    at = 0
    for step in QUICKSTART_STEPS:
        found = next((i for i in range(at, len(argvs)) if argvs[i][: len(step)] == step), None)
        assert found is not None, f"the quickstart lacks {shlex.join(step)} after line {at}"
        at = found + 1
    assert "revision:" in QUICKSTART and "--dry-run" in QUICKSTART


HF_LINES = [(where, argv) for where, argv in QUICKSTART_LINES if argv[0] == "hf"]


@pytest.mark.parametrize(("where", "argv"), HF_LINES, ids=[shlex.join(a) for _w, a in HF_LINES])
def test_quickstart_hf_lines_use_options_hf_has(where: str, argv: list[str]) -> None:
    """`hf SUBCOMMAND --help` (offline) lists every option the line uses."""
    import sys

    hf = Path(sys.executable).parent / "hf"
    words = [a for a in argv[1:] if not a.startswith("-")]
    sub = [w for w in words if w.isalpha()][:2]  # download | cache verify
    env = {"HF_HUB_OFFLINE": "1", "PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    r = subprocess.run(
        [str(hf), *sub, "--help"], capture_output=True, text=True, timeout=60, env=env
    )
    assert r.returncode == 0, f"{where}: hf {' '.join(sub)} --help: {r.stderr}"
    options = {a.split("=", 1)[0] for a in argv if a.startswith("--")}
    unknown = [o for o in options if not re.search(rf"{re.escape(o)}\b", r.stdout)]
    assert not unknown, f"{where}: `hf {' '.join(sub)}` has no {unknown}"
