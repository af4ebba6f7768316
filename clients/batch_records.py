"""A batch's JSONL output file: one record per line, each with the study's `id`.

Reading tolerates a torn or corrupt line (a killed writer); the last record of a study is
its state; a study is pending until its last record succeeded; `compact` rewrites the file
with one record per study through an atomic rename; JsonlWriter appends, flushed and
fsynced before the next record. clients.batch runs the studies.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

Record = dict[str, Any]


class Keyed(Protocol):
    """What has a record: a study with its stable id."""

    @property
    def id(self) -> str: ...


Item = TypeVar("Item", bound=Keyed)


def parse_batch_records(text: str) -> list[Record]:
    """Records of a JSONL file; a torn or corrupt line (killed writer) is skipped (pure)."""
    records = []
    for line in text.splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(rec, dict) and isinstance(rec.get("id"), str):
            records.append(rec)
    return records


def latest(records: Iterable[Record]) -> dict[str, Record]:
    """The last record of each study id, in order of those last records (pure)."""
    last: dict[str, Record] = {}
    for rec in records:
        last.pop(rec["id"], None)
        last[rec["id"]] = rec
    return last


def pending(studies: Sequence[Item], done: dict[str, Record]) -> list[Item]:
    """Studies without a successful last record (pure)."""
    return [s for s in studies if done.get(s.id, {}).get("status") != "ok"]


def read_batch_records(out: Path) -> list[Record]:
    """Every record of a batch's JSONL output file ([] if it does not exist yet)."""
    return parse_batch_records(out.read_text(errors="replace")) if out.exists() else []


def compact(out: Path) -> dict[str, Record]:
    """Rewrite `out` with one record per study (the last), atomically; return them."""
    last = latest(read_batch_records(out))
    if not out.exists():
        return last
    tmp = out.with_name(f".{out.name}.tmp")
    with tmp.open("w") as f:
        f.writelines(json.dumps(r, ensure_ascii=False) + "\n" for r in last.values())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, out)
    return last


class JsonlWriter:
    """Appends one record per line, flushed and fsynced before the next."""

    def __init__(self, out: Path) -> None:
        out.parent.mkdir(parents=True, exist_ok=True)
        self.f = out.open("a", encoding="utf-8")

    def write(self, rec: Record) -> None:
        self.f.write(json.dumps(rec, ensure_ascii=False) + "\n")
        self.f.flush()
        os.fsync(self.f.fileno())

    def close(self) -> None:
        self.f.close()
