"""The README's first-screen examples (curl and the OpenAI SDK) run against the real server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from PIL import Image

from tests.conftest import REPO, LiveServer

README = (REPO / "README.md").read_text()
DEFAULT_ROOT = "http://127.0.0.1:8000"


def block(lang: str, needle: str) -> str:
    """The first fenced block of `lang` in the README that contains `needle`."""
    for body in re.findall(rf"```{lang}\n(.*?)```", README, flags=re.S):
        if needle in body:
            return body
    raise AssertionError(f"no ```{lang} block with {needle!r} in README.md")


def env_for(server: LiveServer) -> dict[str, str]:
    return {**os.environ, "MEDGEMMA_API_KEY": server.api_key}


def test_readme_curl_example(server: LiveServer) -> None:
    script = block("bash", "curl").replace(DEFAULT_ROOT, server.root_url)
    script = script.replace('"tiny-medgemma-random-weights"', json.dumps(server.model))
    r = subprocess.run(
        ["bash", "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=env_for(server),
    )
    assert r.returncode == 0, r.stderr
    reply = json.loads(r.stdout)
    assert reply["choices"][0]["message"]["content"], reply
    assert reply["usage"]["prompt_tokens"] > 256, reply["usage"]


def test_readme_sdk_example(server: LiveServer, tmp_path: Path) -> None:
    Image.new("L", (640, 512), 90).save(tmp_path / "chest.png")
    script = block("python", "OpenAI(").replace(DEFAULT_ROOT, server.root_url)
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env=env_for(server),
    )
    assert r.returncode == 0, r.stderr
    assert "prompt_tokens=" in r.stdout and "completion_tokens=" in r.stdout, r.stdout


def test_readme_clients_example(server: LiveServer, tmp_path: Path) -> None:
    Image.new("L", (1200, 1000), 90).save(tmp_path / "cxr.png")
    script = block("python", "from clients.chat import MedGemmaClient")
    env = {**env_for(server), "MEDGEMMA_BASE_URL": server.base_url, "PYTHONPATH": str(REPO)}
    r = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    assert "ConsistencyCheck(" in r.stdout or "consistent=" in r.stdout, r.stdout
