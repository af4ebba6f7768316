"""The readiness probe (serve.launch.probe): the request it builds, how it judges an answer,
its CLI, and the launcher's use of it (ServerProcess.prove) against a real child process
that answers like vLLM's chat route with a chosen status. The probe against vLLM itself is
tests/e2e/test_launcher.py's and every e2e module's server start."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from PIL import Image

from serve.command.argv import probes_images
from serve.config.deployment import DeploymentConfig, load_config
from serve.launch.probe import PROBE_TEXT, judge, probe, probe_body, probe_png
from serve.launch.server import ServerProcess
from serve.process import LaunchError
from tests.conftest import REPO
from tests.e2e.launcher import free_ports

REPO = REPO

# A chat endpoint in one file: GET /health and /v1/models answer 200; POST
# /v1/chat/completions answers STATUS and appends what it got to RECORD (one JSON line).
CHAT_SERVER = textwrap.dedent(
    """
    import json, sys
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    port, status, record = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def answer(self, code, body):
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self.answer(200 if self.path in ("/health", "/v1/models") else 404, {"data": []})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen = {"auth": self.headers.get("Authorization"), "body": body}
            with open(record, "a") as f:
                f.write(json.dumps(seen) + "\\n")
            if status == 200:
                self.answer(200, {"choices": [{"index": 0}], "usage": {"prompt_tokens": 266}})
            else:
                self.answer(status, {"error": {"message": "refused by the test server"}})

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
    """
)


@dataclass
class ChatServer(ServerProcess):
    """A ServerProcess whose child is CHAT_SERVER answering the probe with `status`."""

    status: int = 200
    record: Path = Path()

    def command(self, model_path: str) -> tuple[list[str], dict[str, str]]:
        argv = [str(self.cfg.port), str(self.status), str(self.record)]
        return [sys.executable, "-c", CHAT_SERVER, *argv], {}

    def requests(self) -> list[dict[str, object]]:
        return [json.loads(line) for line in self.record.read_text().splitlines()]


def config(tmp_path: Path, *overrides: str) -> DeploymentConfig:
    model = tmp_path / "model"
    model.mkdir(exist_ok=True)
    (model / "config.json").write_text("{}")
    port = free_ports(1)
    return load_config(
        None,
        [f"model={model}", "device=cpu", f"port={port}", "startup_timeout_s=30", *overrides],
    )


def test_probe_image_is_a_small_png() -> None:
    img = Image.open(io.BytesIO(probe_png()))
    assert (img.format, img.size, img.mode) == ("PNG", (32, 32), "L")
    assert img.getpixel((0, 0)) == 0 and img.getpixel((31, 0)) == 255
    assert probe_png() == probe_png()


def test_probe_body_is_greedy_one_token_with_the_image_first() -> None:
    body = probe_body("m", with_image=True)
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("m", 1, 0)
    image, text = body["messages"][0]["content"]
    assert image["type"] == "image_url" and text == {"type": "text", "text": PROBE_TEXT}
    data = image["image_url"]["url"].removeprefix("data:image/png;base64,")
    assert base64.b64decode(data) == probe_png()
    assert (
        body["messages"][0]["content"][1:]
        == probe_body("m", with_image=False)["messages"][0]["content"]
    )


def test_text_only_models_are_probed_without_an_image() -> None:
    assert probes_images({"image": 1})
    assert not probes_images({})  # medgemma-27b-text-it-tp2.yaml
    assert not probes_images({"image": 0})
    cfg = load_config(REPO / "configs" / "deployments" / "medgemma-27b-text-it-tp2.yaml")
    assert not probes_images(cfg.limit_mm_per_prompt)


@pytest.mark.parametrize(
    ("status", "body", "ok", "detail"),
    [
        (200, {"choices": [{}], "usage": {"prompt_tokens": 5}}, True, "200, 5 prompt tokens"),
        (200, {"choices": []}, False, "200 without choices"),
        (401, {"error": "Unauthorized"}, False, "HTTP 401: Unauthorized"),
        (400, {"error": {"message": "bad image"}}, False, "HTTP 400: bad image"),
        (502, None, False, "HTTP 502"),
    ],
)
def test_judge(status: int, body: object, ok: bool, detail: str) -> None:
    assert judge(status, body) == (ok, detail)


def test_probe_never_raises_when_nothing_listens() -> None:
    result = probe(f"http://127.0.0.1:{free_ports(1)}/v1", "m", timeout_s=2)
    assert not result.ok and result.status is None and result.retryable, result


def test_launcher_is_ready_after_the_image_probe_with_the_key(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    env = {"MEDGEMMA_API_KEY": "k-123"}
    server = ChatServer(cfg, tmp_path / "s.log", environ=env, record=tmp_path / "r.jsonl")
    with server:
        assert server.health_s is not None and server.started_s is not None
        assert server.started_s >= server.health_s
        (req,) = server.requests()
        assert req["auth"] == "Bearer k-123", req
        assert req["body"] == probe_body(cfg.model_name, with_image=True)


def test_launcher_refuses_a_server_whose_probe_is_refused(tmp_path: Path) -> None:
    server = ChatServer(config(tmp_path), tmp_path / "s.log", status=400, record=tmp_path / "r")
    with pytest.raises(LaunchError) as err:
        server.start()
    msg = str(err.value)
    assert "answers /health but its image + text probe failed: HTTP 400" in msg, msg
    assert "refused by the test server" in msg, msg
    assert not server.alive()
    assert len(server.requests()) == 1  # a 4xx is not retried


def test_launcher_retries_a_5xx_until_the_start_up_timeout(tmp_path: Path) -> None:
    cfg = config(tmp_path, "startup_timeout_s=4")
    server = ChatServer(cfg, tmp_path / "s.log", status=503, record=tmp_path / "r")
    with pytest.raises(LaunchError, match="probe had not succeeded after 4 s .HTTP 503"):
        server.start()
    assert len(server.requests()) >= 2
    assert not server.alive()


def test_text_only_config_probes_with_text(tmp_path: Path) -> None:
    cfg = config(tmp_path, "limit_mm_per_prompt={}")
    with ChatServer(cfg, tmp_path / "s.log", record=tmp_path / "r.jsonl") as server:
        (req,) = server.requests()
        assert req["body"] == probe_body(cfg.model_name, with_image=False)


def run_probe(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "probe", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def test_probe_cli_exit_status_and_one_line(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    with ChatServer(cfg, tmp_path / "s.log", record=tmp_path / "r.jsonl") as server:
        r = run_probe("--base-url", server.base_url, "--model", cfg.model_name)
        assert r.returncode == 0, r.stderr
        assert r.stdout.startswith("ready: image + text probe of") and r.stderr == "", r
        assert r.stdout.count("\n") == 1 and "266 prompt tokens" in r.stdout, r.stdout
        r = run_probe("--base-url", server.base_url, "--model", "m", "--text-only")
        assert r.returncode == 0 and r.stdout.startswith("ready: text probe"), r
    for out in (r.stdout, r.stderr):
        assert PROBE_TEXT not in out and "base64" not in out
    r = run_probe("--base-url", server.base_url, "--model", "m", "--timeout", "3")
    assert r.returncode == 1 and r.stdout == "", r
    assert r.stderr.startswith("error: not ready:") and r.stderr.count("\n") == 1, r.stderr


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        ((), "error: give --config X, or --base-url URL and --model NAME"),
        (("--config", "no-such.yaml"), "error: "),
        (("--base-url", "http://x/v1", "--model", "m", "--timeout", "0"), "--timeout: 0"),
    ],
)
def test_probe_cli_bad_input(args: tuple[str, ...], needle: str) -> None:
    r = run_probe(*args)
    assert r.returncode == 1 and needle in r.stderr, r
    assert "Traceback" not in r.stderr, r.stderr
