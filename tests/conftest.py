"""Session fixtures: the stand-in model and ONE real vLLM server for all end-to-end tests.

The server is the real vLLM OpenAI server (configs/deployments/cpu-tiny.yaml) serving the tiny
MedGemma-architecture model from a local folder (the real-weight local-path route), with
an API key enforced. It starts on a free port when the first test asks for it and stops
at the end of the session; its log goes to logs/ and is printed if start-up fails.

For quick iteration, MEDGEMMA_TEST_SERVER_URL (root URL, e.g. http://127.0.0.1:8100) and
MEDGEMMA_TEST_API_KEY make the fixture use a server you started yourself with the same
config instead.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
CONFIGS = REPO / "configs" / "deployments"
LOG_DIR = REPO / "logs"
TEST_API_KEY = "test-key-not-a-secret"


@dataclass(frozen=True)
class LiveServer:
    """What a test needs to talk to the session's server."""

    root_url: str
    base_url: str
    api_key: str
    model: str
    model_dir: Path
    log_path: Path | None  # None when the server was started outside the session


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    """The tiny stand-in model, built into .cache/ on first use (never downloaded)."""
    from serve.standin import tiny_model

    return tiny_model.ensure("tiny", 0)


@pytest.fixture(scope="session")
def server(tiny_model_dir: Path) -> Iterator[LiveServer]:
    """One real vLLM OpenAI server for the whole session."""
    from serve.config.deployment import load_config
    from serve.launch.process import LaunchError, ServerProcess, free_port

    external = os.environ.get("MEDGEMMA_TEST_SERVER_URL")
    cfg = load_config(
        CONFIGS / "cpu-tiny.yaml",
        {"model": str(tiny_model_dir), "port": free_port()},
    )
    if external:
        root = external.rstrip("/")
        yield LiveServer(
            root,
            root + "/v1",
            os.environ.get("MEDGEMMA_TEST_API_KEY", TEST_API_KEY),
            cfg.model_name,
            tiny_model_dir,
            None,
        )
        return
    LOG_DIR.mkdir(exist_ok=True)
    log_path = LOG_DIR / f"pytest-server-{cfg.port}.log"
    environ = {**os.environ, cfg.api_key_env: TEST_API_KEY}
    proc = ServerProcess(cfg, log_path, environ=environ)
    try:
        proc.start()
    except LaunchError as exc:
        pytest.fail(f"the session's vLLM server did not start: {exc}", pytrace=False)
    print(f"\nvLLM server ready in {proc.started_s:.1f} s at {proc.base_url} (log {log_path})")
    try:
        yield LiveServer(
            proc.root_url, proc.base_url, TEST_API_KEY, cfg.model_name, tiny_model_dir, log_path
        )
    finally:
        proc.stop()


@pytest.fixture(scope="session")
def openai_client(server: LiveServer):
    """The plain OpenAI SDK client, pointed at the session's server with its key."""
    from openai import OpenAI

    return OpenAI(base_url=server.base_url, api_key=server.api_key, max_retries=0, timeout=120)
