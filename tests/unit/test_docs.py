"""Every command, path, link and snippet of README.md and docs/*.md, checked without a server.

- `make X` lines of shell blocks: `make -n X` (with the line's variables) finds the target.
- `python -m serve|benchmarks|clients ...` lines of shell blocks, and inline commands that
  carry options and no placeholder (the figures' commands): the real CLI parser accepts the
  argv (the module's `main` runs until its parser returns); a benchmark's scenario loads with
  the line's overrides, and an `ab` variant's settings load into the scenario's deployment.
- Run for real, as written: `python -m serve plan` and `render`, `python -m benchmarks
  fields`, `--help`, `--help-config` and `--dry-run` lines; a serving line (`python -m serve
  --config X`) runs with `--dry-run` added, which loads and validates the config.
- Parser checks only, as they need a running server or minutes of CPU: `python -m clients`,
  `python -m serve standin` (builds a model) and the `python -m benchmarks` runs and studies.
- Every repository path named exists, every link and #anchor resolves, Python blocks
  compile and the names they import from this project exist, YAML blocks parse and a
  deployment snippet names only config fields.
- The drift the issue found: a parameter count is written once; curl examples ask the
  server for the model's name instead of writing one.

docs/deploying.md's table of configs and H100 quickstart: tests/unit/test_deploying_doc.py.

tests/e2e/test_docs.py runs the README's examples and the client snippet against a server.
"""

from __future__ import annotations

import argparse
import ast
import glob
import importlib
import importlib.util
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO
from tests.doc_blocks import (
    DOC_FILES,
    SHELL_LANGS,
    Block,
    blocks,
    commands,
    prose_lines,
    shell_lines,
)

MAINS = {m: f"{m}.__main__" for m in ("serve", "benchmarks", "clients")}  # python -m M: main
# A repository path in running text: a top folder of the tree, then anything path-like.
REPO_PATH = re.compile(
    r"(?<![\w/.$-])((?:serve|benchmarks|clients|configs|tests|docs|\.ci)/[\w./*-]*|Makefile)"
)
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*(=[A-Z][A-Z0-9_.]*)?$|[\[\]|<>]|\.\.\.")
HEADING = re.compile(r"^#+\s+(.+?)\s*$")
NOT_DEPLOYMENT_YAML = {"rules"}  # prometheus-adapter's configuration (docs/deploying.md)


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


def python_module(argv: list[str]) -> tuple[str, list[str]] | None:
    """`python -m MODULE ARGS` (any python path) -> (MODULE, ARGS)."""
    if len(argv) >= 3 and Path(argv[0]).name.startswith("python") and argv[1] == "-m":
        return argv[2], argv[3:]
    return None


def shell_commands() -> list[tuple[str, list[str], str | None]]:
    """(where, argv, stdout target) of every simple command in the docs' shell blocks."""
    found = []
    for doc in DOC_FILES:
        for b in blocks(doc):
            if b.lang in SHELL_LANGS:
                for line in shell_lines(b):
                    found += [(line.where, argv, target) for argv, target in commands(line.text)]
    return found


def inline_commands() -> list[tuple[str, list[str]]]:
    """Complete `python -m ...` commands in inline code: with an option, no placeholder."""
    found = []
    for doc in DOC_FILES:
        for n, line in prose_lines(doc):
            for span in re.findall(r"`(python -m [^`]+)`", line):
                argv = shlex.split(span)
                if "--" in span and not any(PLACEHOLDER.search(a) for a in argv):
                    found.append((f"{rel(doc)}:{n} (inline)", argv))
    return found


SHELL = shell_commands()
PYTHON_COMMANDS = [
    (where, mod[0], mod[1], target)
    for where, argv, target in SHELL
    if (mod := python_module(argv)) is not None
] + [
    (where, mod[0], mod[1], None)
    for where, argv in inline_commands()
    if (mod := python_module(argv)) is not None
]
MAKE_LINES = [(where, argv) for where, argv, _ in SHELL if argv[0] == "make"]


def how(module: str, args: list[str]) -> str:
    """run (cheap, no server), dry-run (a serving line, checked with --dry-run) or parse."""
    if "--help" in args or "-h" in args:
        return "run"
    if module == "serve":
        from serve.__main__ import COMMANDS

        command = args[0] if args and args[0] in COMMANDS else "serve"
        if command in ("plan", "render", "pick-config"):
            return "run"
        if command == "serve":
            return "run" if {"--dry-run", "--help-config"} & set(args) else "dry-run"
        return "parse"
    if module == "benchmarks" and args[:1] == ["fields"]:
        return "run"
    return "parse"


def ids(cases: list) -> list[str]:
    return [f"{c[0]}: {shlex.join(['python', '-m', c[1], *c[2]])}"[:150] for c in cases]


class Parsed(Exception):
    """Raised in place of running a command once its parser has accepted the argv."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        self.namespace = namespace


def parse_only(main: Callable[[list[str]], object], argv: list[str]) -> argparse.Namespace | None:
    """Run `main(argv)` until its (real) argparse parser returns: the namespace it returned
    (None if main returned without parsing, as `python -m serve --help` does)."""
    real_parse = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):  # type: ignore[no-untyped-def]
        raise Parsed(real_parse(self, args, namespace))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(argparse.ArgumentParser, "parse_args", parse_then_stop)
        try:
            main(argv)
        except Parsed as done:
            return done.namespace
    return None


def test_docs_have_commands_of_every_kind() -> None:
    kinds = {how(m, a) for _w, m, a, _t in PYTHON_COMMANDS}
    assert kinds == {"run", "dry-run", "parse"}, kinds
    assert {"serve", "benchmarks", "clients"} <= {m for _w, m, _a, _t in PYTHON_COMMANDS}
    assert MAKE_LINES


@pytest.mark.parametrize(
    ("where", "module", "args", "target"), PYTHON_COMMANDS, ids=ids(PYTHON_COMMANDS)
)
def test_command_parses(
    where: str,
    module: str,
    args: list[str],
    target: str | None,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert module in MAINS, f"{where}: `python -m {module}` is not a command this test knows"
    monkeypatch.chdir(REPO)
    main = importlib.import_module(MAINS[module]).main
    try:
        ns = parse_only(main, args)
    except SystemExit as exc:
        if exc.code == 0 and how(module, args) == "run":  # --help printed and exited
            return
        pytest.fail(f"{where}: the parser refused {args}: {capsys.readouterr().err}")
    if ns is None:
        assert "--help" in args and "usage:" in capsys.readouterr().out, f"{where}: not parsed"
        return
    if module == "benchmarks" and getattr(ns, "scenario", None) is not None:
        from benchmarks.runner.cli import scenario_from_args
        from benchmarks.runner.scenario import load_scenario
        from serve.config.deployment import ConfigError, load_config

        try:
            if hasattr(ns, "users"):  # the main parser's shortcuts: --users, --duration
                scenario = scenario_from_args(ns)
            else:
                scenario = load_scenario(ns.scenario, list(getattr(ns, "set", [])))
            for variant in (getattr(ns, n, None) for n in ("a", "b", "c")):  # ab's settings
                if variant:
                    load_config(REPO / scenario.deployment, list(variant))
        except ConfigError as exc:
            pytest.fail(f"{where}: {exc}")


RUNS = [c for c in PYTHON_COMMANDS if how(c[1], c[2]) in ("run", "dry-run")]


@pytest.mark.parametrize(("where", "module", "args", "target"), RUNS, ids=ids(RUNS))
def test_cheap_command_runs(
    where: str,
    module: str,
    args: list[str],
    target: str | None,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The module's main, in this process, from a folder that has the repository's configs/
    (outputs land there); its stdout is what the line prints or sends to its target."""
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MEDGEMMA_API_KEY", "docs-key")  # the GPU configs bind 0.0.0.0
    argv = [*args, "--dry-run"] if how(module, args) == "dry-run" else args
    try:
        code = importlib.import_module(MAINS[module]).main(argv)
    except SystemExit as exc:  # argparse's --help
        code = exc.code
    out, err = capsys.readouterr()
    assert not code, f"{where}: exit {code}\n{out[-2000:]}\n{err[-2000:]}"
    assert out.strip(), f"{where}: no output (the line sends it to {target or 'stdout'})"
    if how(module, args) == "dry-run":
        assert "vllm.entrypoints.openai.api_server" in out, out


@pytest.mark.parametrize(
    ("where", "argv"), MAKE_LINES, ids=[f"{w}: {shlex.join(a)}" for w, a in MAKE_LINES]
)
def test_make_target_exists(where: str, argv: list[str]) -> None:
    r = subprocess.run(
        ["make", "-n", *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0, f"{where}: `make -n {shlex.join(argv[1:])}`: {r.stderr}"


@pytest.mark.parametrize("doc", DOC_FILES, ids=rel)
def test_named_paths_exist(doc: Path) -> None:
    missing = []
    for path in set(REPO_PATH.findall(doc.read_text())):
        path = path.rstrip(".")
        if not glob.glob(str(REPO / path)):
            missing.append(path)
    assert not missing, f"{rel(doc)} names paths that do not exist: {sorted(missing)}"


def anchors(doc: Path) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces to hyphens."""
    headings = [m.group(1) for _n, line in prose_lines(doc) if (m := HEADING.match(line))]
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOC_FILES, ids=rel)
def test_links_resolve(doc: Path) -> None:
    broken = []
    text = "\n".join(line for _n, line in prose_lines(doc))
    for link in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", link):
            continue
        file, _, anchor = link.partition("#")
        target = (doc.parent / file).resolve() if file else doc
        if not target.exists() or (anchor and anchor not in anchors(target)):
            broken.append(link)
    assert not broken, f"{rel(doc)}: broken links {broken}"


PYTHON_BLOCKS = [b for doc in DOC_FILES for b in blocks(doc) if b.lang == "python"]


@pytest.mark.parametrize("b", PYTHON_BLOCKS, ids=[b.where for b in PYTHON_BLOCKS])
def test_python_block_compiles_and_its_imports_exist(b: Block) -> None:
    tree = ast.parse(b.body, filename=b.where)
    compile(tree, b.where, "exec")
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name) or importlib.util.find_spec(
                    f"{node.module}.{alias.name}"
                ), f"{b.where}: `from {node.module} import {alias.name}`: no such name"


YAML_BLOCKS = [b for doc in DOC_FILES for b in blocks(doc) if b.lang == "yaml"]


@pytest.mark.parametrize("b", YAML_BLOCKS, ids=[b.where for b in YAML_BLOCKS])
def test_yaml_block_parses_and_names_config_fields(b: Block) -> None:
    from serve.config.deployment import DeploymentConfig

    data = yaml.safe_load(b.body)
    assert isinstance(data, dict), f"{b.where}: not a mapping"
    if set(data) & NOT_DEPLOYMENT_YAML:
        return
    unknown = set(data) - set(DeploymentConfig.model_fields)
    assert not unknown, f"{b.where}: not deployment config fields: {sorted(unknown)}"


def test_a_parameter_count_is_written_once() -> None:
    counts = [
        (rel(doc), m)
        for doc in DOC_FILES
        for m in re.findall(r"(\d[\d,.]*\s*(?:[MB]\s+)?)parameters", doc.read_text())
    ]
    stand_in = [c for c in counts if c[1].startswith(("32", "~3", ">2"))]
    assert len(stand_in) == 1, f"the bench stand-in's size, {len(stand_in)} times: {counts}"
    assert len({m for _d, m in counts}) == len(counts), f"a count is written twice: {counts}"


def test_curl_examples_do_not_hard_code_the_model() -> None:
    curl = [
        b
        for doc in DOC_FILES
        for b in blocks(doc)
        if b.lang in SHELL_LANGS and "/chat/completions" in b.body
    ]
    assert curl, "no curl example of /chat/completions in the docs"
    for b in curl:
        named = re.findall(r'"model":\s*"([^"$]+)"', b.body)
        assert not named, f"{b.where}: the model is written as {named}; ask /v1/models"
