"""What the edge of a replicas config is (serve.edge.plan): its nginx site, its audit file
and where the replicas report their usage."""

from __future__ import annotations

from pathlib import Path

from serve.config.deployment import load_config
from serve.edge.plan import site_for, usage_url
from tests.conftest import CONFIGS

KEY = "internal-key-0123456789abcdef"
TAG = "0123456789abcdef0123456789abcdef"


def test_site_for_a_replicas_config(tmp_path: Path) -> None:
    cfg = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", ["port=9000"])
    s = site_for(cfg, tmp_path, KEY, None, TAG)
    assert (s.port, s.router_port, s.authz_port) == (9000, 9004, 9005)
    assert not s.checks_keys and s.audit_tag == TAG  # no key source: audit lines only
    assert s.audit_path == tmp_path.absolute() / "audit-9000.jsonl"
    assert site_for(cfg, tmp_path, KEY, "k", TAG).checks_keys
    keyed = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", ["auth.keys_file=/k.json"])
    s = site_for(keyed, tmp_path, KEY, None, TAG)
    assert s.checks_keys and s.authz_port == 8005


def test_the_replicas_report_to_the_key_check_on_loopback() -> None:
    cfg = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", ["port=9000"])
    assert usage_url(cfg) == "http://127.0.0.1:9005/usage"
