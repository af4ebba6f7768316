"""The README's and docs/ pages' fenced code blocks and shell command lines, as data."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

from tests.conftest import REPO

README = REPO / "README.md"
DOC_FILES = [README, *sorted((REPO / "docs").glob("*.md"))]
SHELL_LANGS = {"bash", "sh", "shell", "console"}
OPERATORS = {"&&", "||", "|", ";", "&", "(", ")"}
REDIRECTS = {">", ">>", "<", "2>", "&>"}
HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")


@dataclass(frozen=True)
class Block:
    """One fenced block: its language tag, its text, and where it starts."""

    path: Path
    lang: str
    body: str
    line: int  # 1-based line of the opening fence

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


@dataclass(frozen=True)
class ShellLine:
    """One logical line of a shell block (continuations joined, heredoc bodies left out)."""

    block: Block
    line: int
    text: str

    @property
    def where(self) -> str:
        return f"{self.block.path.relative_to(REPO)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Every fenced block of a Markdown file, in order."""
    found: list[Block] = []
    lines = path.read_text().splitlines()
    i = 0
    while i < len(lines):
        m = re.match(r"^```(\S*)\s*$", lines[i])
        if m:
            start = i
            i += 1
            body: list[str] = []
            while i < len(lines) and not lines[i].startswith("```"):
                body.append(lines[i])
                i += 1
            found.append(Block(path, m.group(1), "\n".join(body) + "\n", start + 1))
        i += 1
    return found


def block(path: Path, lang: str, needle: str) -> str:
    """The text of the first `lang` block of `path` that contains `needle`."""
    for b in blocks(path):
        if b.lang == lang and needle in b.body:
            return b.body
    raise AssertionError(f"no ```{lang} block containing {needle!r} in {path.relative_to(REPO)}")


def prose_lines(path: Path) -> list[tuple[int, str]]:
    """(1-based line number, text) of every line outside fenced blocks."""
    out: list[tuple[int, str]] = []
    fenced = False
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced:
            out.append((n, line))
    return out


def shell_lines(b: Block) -> list[ShellLine]:
    """Logical lines of a shell block: `\\` continuations joined, heredoc bodies skipped."""
    out: list[ShellLine] = []
    raw = b.body.splitlines()
    i = 0
    while i < len(raw):
        first = i
        text = raw[i]
        while text.endswith("\\") and i + 1 < len(raw):
            i += 1
            text = text[:-1] + " " + raw[i].strip()
        i += 1
        heredoc = HEREDOC.search(text)
        if heredoc:
            while i < len(raw) and raw[i].strip() != heredoc.group(1):
                i += 1
            i += 1
        if text.strip() and not text.lstrip().startswith("#"):
            out.append(ShellLine(b, b.line + 1 + first, text))
    return out


def commands(text: str) -> list[tuple[list[str], str | None]]:
    """The simple commands of one shell line: (argv without leading VAR=value assignments,
    the file its stdout is redirected to). Heredoc markers and `$(...)` bodies are not
    parsed further."""
    lex = shlex.shlex(text, posix=True, punctuation_chars="();<>|&")
    lex.whitespace_split = True
    lex.commenters = "#"
    tokens = list(lex)
    out: list[tuple[list[str], str | None]] = []
    argv: list[str] = []
    target: str | None = None
    it = iter(tokens)
    for tok in it:
        if tok in OPERATORS:
            if argv:
                out.append((argv, target))
            argv, target = [], None
        elif tok in REDIRECTS or tok.startswith("<<"):
            dest = next(it, None)
            if tok in {">", ">>"}:
                target = dest
        else:
            argv.append(tok)
    if argv:
        out.append((argv, target))
    return [
        (argv[n:], target)
        for argv, target in out
        for n in [next((k for k, a in enumerate(argv) if not re.match(r"^\w+=", a)), len(argv))]
        if argv[n:]
    ]
