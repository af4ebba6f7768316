"""Every file in clients/examples/ runs against the real server and prints what it says."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from tests.conftest import REPO
from tests.e2e.launcher import LiveServer
from tests.images import chest_like_png

CT = str(get_testdata_file("CT_small.dcm", download=False))


@pytest.fixture(scope="module")
def png(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("examples") / "cxr.png"
    path.write_bytes(chest_like_png(1024))
    return str(path)


def run(server: LiveServer, *cmd: str) -> subprocess.CompletedProcess[str]:
    r = subprocess.run(
        cmd, cwd=REPO, env=server.client_env(), capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, f"{cmd} exited {r.returncode}:\n{r.stdout}\n{r.stderr}"
    return r


def test_curl(server: LiveServer, png: str) -> None:
    r = run(server, "bash", "clients/examples/curl_chat.sh", png)
    assert '"finish_reason"' in r.stdout and '"prompt_tokens"' in r.stdout, r.stdout[:500]


def test_plain_openai_sdk(server: LiveServer, png: str) -> None:
    r = run(server, sys.executable, "clients/examples/openai_sdk.py", png)
    assert r.stdout.strip() and "prompt_tokens=" in r.stderr, r


@pytest.mark.parametrize("image", ["png", "dicom"])
def test_stream_findings(server: LiveServer, png: str, image: str) -> None:
    r = run(
        server,
        sys.executable,
        "-m",
        "clients.examples.stream_findings",
        png if image == "png" else CT,
    )
    assert r.stdout.strip() and "finish_reason=" in r.stderr and "usage=" in r.stderr, r


def test_consistency_check(server: LiveServer, png: str) -> None:
    r = run(
        server, sys.executable, "-m", "clients.examples.consistency_check", png, "Normal chest."
    )
    assert r.stdout.startswith("consistent: "), r


def test_async_many(server: LiveServer, png: str) -> None:
    r = run(server, sys.executable, "-m", "clients.examples.async_many", png, CT, png, CT)
    assert "4 requests in" in r.stdout and r.stdout.count("prompt tokens") == 4, r


def test_multi_turn(server: LiveServer, png: str) -> None:
    r = run(server, sys.executable, "-m", "clients.examples.multi_turn", png)
    assert "> What do you see?" in r.stdout and "> Could this be pneumonia?" in r.stdout, r


def test_every_example_is_tested() -> None:
    here = Path(__file__).read_text()
    examples = [
        p.name for p in (REPO / "clients" / "examples").iterdir() if p.suffix in (".py", ".sh")
    ]
    untested = [n for n in examples if n != "__init__.py" and n.rsplit(".", 1)[0] not in here]
    assert not untested, untested
