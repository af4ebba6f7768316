"""The audit file's rotation names (serve.edge.plan) and the edge's rotation at midnight
UTC (serve.edge.process.Edge.rotate), on files."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from serve.config.deployment import load_config
from serve.edge.plan import expired, rotated_name
from serve.edge.process import Edge
from tests.conftest import CONFIGS


def test_rotated_names_and_retention() -> None:
    path = Path("/logs/audit-8000.jsonl")
    assert rotated_name(path, dt.date(2026, 12, 6)) == Path("/logs/audit-8000.jsonl.2026-12-06")
    days = [path.with_name(f"audit-8000.jsonl.2026-12-0{d}") for d in (3, 1, 2)]
    assert expired(path, [*days, Path("/logs/other.jsonl.2026-01-01")], 2) == [days[1]]
    assert expired(path, days, 5) == []


def test_rotation_at_midnight_keeps_retention_days(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", ["auth.audit.retention_days=1"])
    edge = Edge(cfg, tmp_path, "k" * 32, None)
    edge.day = dt.date(2026, 12, 5)
    old = rotated_name(edge.audit_path, dt.date(2026, 12, 4))
    old.write_text("{}\n")
    edge.audit_path.write_text('{"status":200}\n')
    edge.rotate(dt.datetime(2026, 12, 5, 23, 59, tzinfo=dt.UTC))
    assert edge.audit_path.exists() and old.exists(), "rotated before midnight"
    edge.rotate(dt.datetime(2026, 12, 6, 0, 0, 1, tzinfo=dt.UTC))
    assert not edge.audit_path.exists()  # nginx (not running here) would reopen it
    kept = rotated_name(edge.audit_path, dt.date(2026, 12, 5))
    assert kept.read_text() == '{"status":200}\n'
    assert not old.exists(), "beyond retention_days"
