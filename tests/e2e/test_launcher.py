"""`python -m serve`: dry run, and the clear failures a user can cause.

What a command prints before it starts anything runs in this process (`in_process`, serve's
`main(argv)`); the dry run of cpu-tiny, the port check (it installs the launcher's signal
handlers), a start that fails inside vLLM and the probe keep their own process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.e2e.launcher import LiveServer
from tests.in_process import run_main


def serve(*args: str, env: dict[str, str] | None = None, timeout: float = 300):
    return subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env or {})},
    )


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m serve ARGS` as serve's `main(argv)` in this process."""
    from serve.__main__ import main

    return run_main(main, args, capsys)


def no_traceback(r: subprocess.CompletedProcess) -> None:
    assert "Traceback (most recent call last)" not in r.stderr.split("last lines of")[0], r.stderr


def test_dry_run_prints_command_and_env_without_the_key() -> None:
    r = serve(
        "--config",
        "configs/deployments/cpu-tiny.yaml",
        "--port",
        "8123",
        "--dry-run",
        env={"MEDGEMMA_API_KEY": "s3cret-value"},
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "-m vllm.entrypoints.openai.api_server" in out
    assert "--port 8123" in out and "--limit-mm-per-prompt" in out
    assert "VLLM_CPU_KVCACHE_SPACE=1" in out and "HF_HUB_OFFLINE=1" in out
    assert "VLLM_API_KEY=<set from environment>" in out and "s3cret-value" not in out


@pytest.mark.parametrize(
    "name",
    [
        "medgemma-4b-it.yaml",
        "medgemma-4b-it-dp4.yaml",
        "medgemma-27b-text-it-tp2.yaml",
        "medgemma-27b-it-tp4.yaml",
    ],
)
def test_dry_run_of_gpu_configs(
    name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEDGEMMA_API_KEY", "k")  # they bind 0.0.0.0: no start without a key
    r = in_process(capsys, "--config", str(REPO / "configs" / "deployments" / name), "--dry-run")
    assert r.returncode == 0, r.stderr
    assert "--model google/medgemma-" in r.stdout and "HF_HUB_OFFLINE" not in r.stdout


def test_malformed_config_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("stand_in: {preset: tiny}\ndevice: cpu\nmax_num_seqs: -3\nbogus: 1\n")
    r = in_process(capsys, "--config", str(bad))
    assert r.returncode == 2
    assert "max_num_seqs" in r.stderr and "bogus" in r.stderr and str(bad) in r.stderr
    no_traceback(r)


def test_missing_model_path(capsys: pytest.CaptureFixture[str]) -> None:
    # The schema loads it (plan and render would); the launcher's pre-flight refuses it.
    config = str(REPO / "configs" / "deployments" / "cpu-tiny.yaml")
    r = in_process(capsys, "--config", config, "--model", "/nonexistent/medgemma")
    assert r.returncode == 2 and r.stderr.splitlines() == [
        f"error: {config}: invalid deployment config",
        "  (top level): model: local path '/nonexistent/medgemma' does not exist or is not a "
        "folder",
    ], r.stderr
    no_traceback(r)
    dry = in_process(capsys, "--config", config, "--model", "/nonexistent/medgemma", "--dry-run")
    assert dry.returncode == 2 and dry.stderr == r.stderr, dry.stderr


def test_port_in_use_is_refused_before_starting() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = serve("--config", "configs/deployments/cpu-tiny.yaml", "--port", str(port), timeout=60)
    assert r.returncode == 1 and "already in use" in r.stderr, r.stderr
    no_traceback(r)


@pytest.mark.slow  # a vLLM start that fails inside vLLM
def test_server_dying_during_start_up(tiny_model_dir: Path, tmp_path: Path) -> None:
    # Passes the config and vLLM's parser, then fails inside vLLM: the stand-in has no
    # AWQ quantization config. (A max_model_len above the model's is refused by the
    # config now, before vLLM starts: tests/unit/serve/model/test_pitfalls.py.)
    log = tmp_path / "serve.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = serve(
        "--config",
        "configs/deployments/cpu-tiny.yaml",
        "--model",
        str(tiny_model_dir),
        "--port",
        str(port),
        "--set",
        "extra_args.quantization=awq",
        "--log-file",
        str(log),
    )
    assert r.returncode == 1, r.stderr
    first = r.stderr.strip().splitlines()[-1 - r.stderr.strip().count("\n")]
    assert "exited with status" in r.stderr and "config file for awq" in r.stderr, r.stderr
    assert str(log) in r.stderr, r.stderr
    assert first.startswith(("starting", "error:")), first
    no_traceback(r)


def test_probe_command_against_the_live_server(server: LiveServer) -> None:
    """`python -m serve probe` (the Kubernetes readinessProbe) against the real server: 200
    with the key and the image's 256 tokens in the prompt; without the key, exit 1 and the
    server's 401 on one line."""
    base = ["probe", "--base-url", server.base_url, "--model", server.model]
    r = serve(*base, "--api-key-env", "PROBE_KEY", env={"PROBE_KEY": server.api_key})
    assert r.returncode == 0, r.stderr
    line = r.stdout.strip()
    assert line.startswith("ready: image + text probe of") and "\n" not in line, r.stdout
    tokens = int(line.split("200, ")[1].split(" prompt tokens")[0])
    assert tokens > 256, line  # the image's 256 soft tokens and the text
    r = serve(*base, "--text-only", "--api-key-env", "PROBE_KEY", env={"PROBE_KEY": server.api_key})
    assert r.returncode == 0 and int(r.stdout.split("200, ")[1].split(" ")[0]) < 256, r.stdout
    r = serve(*base, "--api-key-env", "NO_SUCH_VARIABLE_SET")
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr.startswith("error: not ready:") and "HTTP 401" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr
    no_traceback(r)
