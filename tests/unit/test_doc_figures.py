"""Every measured table of README.md and docs/*.md says how, when and where it was measured
(issue 25: "every number in a 'measured' table has a command next to it").

A Markdown table is **measured** when
- a `<!-- measured -->` comment is the line right above it, or
- its header row names a measurement: a round or a run, a load average, req/s, UTC, a TTFT,
  a unit column `(s)` or `(ms)`; or
- the paragraph right above it says "measured", "round(s)", "alternating" or "load average".

Its **context** is the text from the heading or the table above it, whichever is nearer (the
heading included), to the next table or heading, its own cells included: the paragraphs and
fenced blocks before and after it that no other table or section claims. It must hold all
three of
- a **command**: inline code or a fenced line that runs `python -m ...`, `pytest ...` or
  `make ...` (behind `flock`, a venv path or variables too);
- a **date**: YYYY-MM-DD;
- a **machine**: its cores (`2 cores`, `2-core`), a CPU (`Xeon`, `EPYC`, `AVX2`, `AVX-512`)
  or a GPU (`L4`, `H100`, ...).
A table without them fails, naming the file, the line and what is missing.

docs/planning.md quotes the planner: every line of a ```text block right after a shell block of
one `python -m serve plan` line must be what that command prints now.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from tests.conftest import REPO
from tests.doc_blocks import DOC_FILES, blocks, shell_lines

MARKER = "<!-- measured -->"
HEADER_CUES = re.compile(
    r"\b(rounds?|run|load|req/s|UTC|TTFT)\b|\((m?s)\)|\bload (average|avg|1m)\b", re.I
)
PARAGRAPH_CUES = re.compile(r"\b(measured|rounds?|alternating|load average)\b", re.I)
COMMAND = re.compile(r"(?:^|[\s/=])(?:python3? -m [\w.]+|pytest|make)(?:\s|$)")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")
MACHINE = re.compile(
    r"\b\d+[- ](?:CPU )?cores?\b|\b(?:Xeon|EPYC|AVX2|AVX-512|L4|L40S|A100|H100|H200)\b"
)
HEADING = re.compile(r"^#+\s")
SEPARATOR = re.compile(r"^\|\s*:?-+")


@dataclass(frozen=True)
class Table:
    """One Markdown table: its first line (1-based), whether it is measured, its context."""

    line: int
    measured: bool
    context: str


def fenced_lines(lines: list[str]) -> list[bool]:
    """For each line: is it a fence or inside a fenced block?"""
    out, inside = [], False
    for line in lines:
        fence = line.startswith("```")
        out.append(inside or fence)
        if fence:
            inside = not inside
    return out


def tables(text: str) -> list[Table]:
    """The tables of a Markdown text, each with its measured flag and its context."""
    lines = text.splitlines()
    fenced = fenced_lines(lines)
    spans = []  # (first line, line after the last) of each table, 0-based
    for i in range(len(lines) - 1):
        above = lines[i - 1] if i else ""
        new = not fenced[i] and lines[i].startswith("|") and not above.startswith("|")
        if new and SEPARATOR.match(lines[i + 1]):
            end = next((j for j in range(i, len(lines)) if not lines[j].startswith("|")), None)
            spans.append((i, end if end is not None else len(lines)))
    headings = [j for j in range(len(lines)) if not fenced[j] and HEADING.match(lines[j])]
    found = []
    for start, end in spans:
        begin = max([j for j in headings if j < start] + [e for _s, e in spans if e <= start] + [0])
        stop = min(
            [j for j in headings if j >= end] + [s for s, _e in spans if s >= end] + [len(lines)]
        )
        last = start  # the paragraph above: the non-blank lines before the blank ones
        while last > 0 and not lines[last - 1].strip():
            last -= 1
        first = last
        while first > 0 and lines[first - 1].strip():
            first -= 1
        paragraph = "\n".join(lines[first:last])
        measured = (
            MARKER in paragraph
            or bool(HEADER_CUES.search(lines[start]))
            or bool(PARAGRAPH_CUES.search(paragraph))
        )
        found.append(Table(start + 1, measured, "\n".join(lines[begin:stop])))
    return found


def missing(context: str) -> list[str]:
    """What a measured table's context lacks: 'command', 'date', 'machine'."""
    lines = context.splitlines()
    fenced = fenced_lines(lines)
    prose = "\n".join(line for line, f in zip(lines, fenced, strict=True) if not f)
    spans = [s.replace("\n", " ") for s in re.findall(r"`([^`]+)`", prose)]
    code = [line for line, f in zip(lines, fenced, strict=True) if f]
    out = []
    if not any(COMMAND.search(s) for s in spans + code):
        out.append("command")
    if not DATE.search(context):
        out.append("date")
    if not MACHINE.search(context):
        out.append("machine")
    return out


SOURCED = """## Rounds

Measured 2026-12-07 on a 2-core Xeon with `python -m benchmarks ab --rounds 3`:

| round | A req/s | B req/s |
| --- | --- | --- |
| 1 | 1.0 | 2.0 |
"""


def test_a_sourced_table_passes_and_each_missing_part_is_named() -> None:
    (table,) = tables(SOURCED)
    assert table.measured and table.line == 5 and missing(table.context) == []
    for part, text in [
        ("command", SOURCED.replace("`python -m benchmarks ab --rounds 3`", "a script")),
        ("date", SOURCED.replace("2026-12-07", "today")),
        ("machine", SOURCED.replace("2-core Xeon", "machine")),
    ]:
        (table,) = tables(text)
        assert missing(table.context) == [part], part


def test_what_makes_a_table_measured() -> None:
    plain = "## Files\n\nEach file:\n\n| file | what |\n| --- | --- |\n| a | b |\n"
    assert [t.measured for t in tables(plain)] == [False]
    marked = plain.replace("Each file:", f"Each file:\n{MARKER}")
    assert [t.measured for t in tables(marked)] == [True]
    said = plain.replace("Each file:", "Measured here:")
    assert [t.measured for t in tables(said)] == [True]
    header = plain.replace("| file | what |", "| file | load average |")
    assert [t.measured for t in tables(header)] == [True]
    fenced = "```text\n| round | x |\n| --- | --- |\n```\n"
    assert tables(fenced) == []


def test_the_context_stops_at_the_next_table_or_heading() -> None:
    text = SOURCED + "\n## Next\n\n| round | x |\n| --- | --- |\n| 1 | 2 |\n"
    first, second = tables(text)
    assert missing(first.context) == [] and "## Next" not in first.context
    assert missing(second.context) == ["command", "date", "machine"]
    text = SOURCED + "\nPer policy:\n\n| round | x |\n| --- | --- |\n| 1 | 2 |\n"
    first, second = tables(text)
    assert missing(first.context) == [] and "Measured" not in second.context
    assert missing(second.context) == ["command", "date", "machine"]


MEASURED = [
    (f"{doc.relative_to(REPO)}:{t.line}", t)
    for doc in DOC_FILES
    for t in tables(doc.read_text())
    if t.measured
]


def test_the_docs_have_measured_tables() -> None:
    assert len(MEASURED) >= 10, [w for w, _t in MEASURED]


@pytest.mark.parametrize(("where", "table"), MEASURED, ids=[w for w, _t in MEASURED])
def test_a_measured_table_has_its_command_date_and_machine(where: str, table: Table) -> None:
    lacks = missing(table.context)
    assert not lacks, f"{where}: a measured table with no {', no '.join(lacks)} next to it"


PLANNING = REPO / "docs" / "planning.md"


def quoted_plans() -> list[tuple[str, list[str], str]]:
    """(where, argv, quoted output): a shell block of one `python -m serve plan` line
    followed by a ```text block, in docs/planning.md."""
    found, bs = [], blocks(PLANNING)
    for b, nxt in zip(bs, bs[1:], strict=False):
        lines = shell_lines(b) if b.lang == "bash" else []
        if (
            len(lines) == 1
            and lines[0].text.startswith("python -m serve plan")
            and nxt.lang == "text"
        ):
            found.append((b.where, lines[0].text.split()[3:], nxt.body))
    return found


QUOTED = quoted_plans()


@pytest.mark.parametrize(("where", "args", "quoted"), QUOTED, ids=[q[0] for q in QUOTED])
def test_a_quoted_plan_is_what_the_planner_prints_now(
    where: str,
    args: list[str],
    quoted: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Every line of the quoted output (a whole plan or the part the text names) is printed."""
    from serve.__main__ import main

    monkeypatch.chdir(REPO)
    main(args)
    printed = set(capsys.readouterr().out.splitlines())
    stale = [line for line in quoted.splitlines() if line.strip() and line not in printed]
    assert not stale, f"{where}: the planner no longer prints {stale[:3]}"


def test_planning_quotes_plans() -> None:
    assert len(QUOTED) >= 3, [q[0] for q in QUOTED]
