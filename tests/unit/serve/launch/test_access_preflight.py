"""No open port without a key (serve.launch.preflight): a non-loopback host needs
$api_key_env or auth.keys_file unless allow_unauthenticated; the keys file must be there,
private and well-formed. And how the keys reach the server (serve.command.argv)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from serve.auth.keys import KeysTable, add_service, new_key, write_keys_file
from serve.command.argv import audit_file, render_shell, to_server_env
from serve.config.deployment import ConfigError, load_config
from serve.launch.preflight import is_loopback, preflight
from tests.conftest import CONFIGS

TINY = CONFIGS / "cpu-tiny.yaml"
GPU = CONFIGS / "medgemma-4b-it.yaml"


def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.json"
    write_keys_file(path, add_service(KeysTable(), "ris", new_key(), "t"))
    return path


def refusal(cfg_path: Path, overrides: list[str], environ: dict[str, str] | None) -> str | None:
    try:
        preflight(load_config(cfg_path, overrides), str(cfg_path), environ)
    except ConfigError as exc:
        return str(exc)
    return None


def test_an_open_port_without_a_key_is_refused_naming_the_fields(tmp_path: Path) -> None:
    said = refusal(GPU, [], {})
    assert said is not None and said.splitlines()[1].strip() == (
        "(top level): host: 0.0.0.0 is reachable from other machines and no key is set: set "
        "$MEDGEMMA_API_KEY (api_key_env) or auth.keys_file, or allow_unauthenticated: true "
        "to serve anyone on purpose"
    ), said
    assert refusal(GPU, [], {"MEDGEMMA_API_KEY": "k"}) is None
    assert refusal(GPU, [f"auth.keys_file={keys_file(tmp_path)}"], {}) is None
    assert refusal(GPU, ["allow_unauthenticated=true"], {}) is None
    assert refusal(TINY, [], {}) is None  # loopback
    assert refusal(TINY, ["host=::"], {}) is not None
    assert refusal(GPU, [], None) is None  # a client of the config (verify) binds nothing


def test_loopback_addresses() -> None:
    assert all(map(is_loopback, ["127.0.0.1", "127.0.0.2", "::1", "localhost"]))
    assert not any(map(is_loopback, ["0.0.0.0", "::", "10.0.0.5", "host.example"]))


def written(text: str, mode: int) -> Callable[[Path], None]:
    def make(path: Path) -> None:
        path.write_text(text)
        path.chmod(mode)

    return make


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda p: None, "no such keys file"),
        (written("{", 0o600), "not JSON"),
        (written("{}", 0o644), "other users (mode 0644)"),
    ],
)
def test_a_bad_keys_file_is_named_before_anything_starts(
    tmp_path: Path, make: Callable[[Path], None], says: str
) -> None:
    path = tmp_path / "keys.json"
    make(path)
    said = refusal(TINY, [f"auth.keys_file={path}"], {})
    assert said is not None and f"auth.keys_file: {path}: " in said and says in said, said


def test_with_a_keys_file_the_guard_alone_checks_keys(tmp_path: Path) -> None:
    path = keys_file(tmp_path)
    plain = to_server_env(load_config(TINY), {"MEDGEMMA_API_KEY": "s3cret"})
    assert plain["VLLM_API_KEY"] == "s3cret" and "MEDGEMMA_GUARD_KEYS_FILE" not in plain
    cfg = load_config(TINY, [f"auth.keys_file={path}", "auth.audit.retention_days=7"])
    env = to_server_env(cfg, {"MEDGEMMA_API_KEY": "s3cret"})
    assert "VLLM_API_KEY" not in env, "vLLM's own check would refuse every service key"
    assert env["MEDGEMMA_GUARD_API_KEY"] == "s3cret"
    assert env["MEDGEMMA_GUARD_KEYS_FILE"] == str(path)
    assert env["MEDGEMMA_GUARD_AUDIT_RETENTION_DAYS"] == "7"
    assert "s3cret" not in render_shell(["python"], env)
    assert audit_file(cfg, Path("logs/serve-8000.log")) == Path("logs/audit-8000.jsonl")
    assert audit_file(load_config(TINY), Path("logs/x.log")) is None


def test_keys_file_with_replicas_is_the_edges_and_no_replicas() -> None:
    """The edge (serve.edge) checks service keys in front of the router; each replica's
    config has none: it requires only the launch's internal key."""
    from serve.command.replicas import replica_configs

    cfg = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", ["auth.keys_file=/k.json"])
    assert cfg.auth.keys_file == Path("/k.json")
    assert all(r.auth.keys_file is None for r in replica_configs(cfg, ["0", "1"]))


def test_the_launcher_and_its_dry_run_refuse_an_open_port_without_a_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.launch import cli

    monkeypatch.delenv("MEDGEMMA_API_KEY", raising=False)
    for args in ([], ["--dry-run"]):
        assert cli.main(["--config", str(GPU), *args]) == 2
        err = capsys.readouterr().err
        assert "host: 0.0.0.0 is reachable from other machines and no key is set" in err, err
        assert "api_key_env" in err and "auth.keys_file" in err and "Traceback" not in err


def test_renders_refuse_service_keys_they_would_not_check(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from serve.render import cli

    # GPU is one server: render k8s checks service keys only at the edge in front of
    # replicas; render ray has no edge at all.
    for target, says in (
        ("k8s", "error: auth.keys_file: render k8s checks service keys at the edge in front of"),
        ("ray", "error: auth.keys_file: "),
    ):
        assert cli.main([target, "--config", str(GPU), "--set", "auth.keys_file=/k.json"]) == 2
        err = capsys.readouterr().err
        assert err.startswith(says) and len(err.splitlines()) == 1, err
