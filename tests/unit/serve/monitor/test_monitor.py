"""Prometheus for a deployment: the scrape configuration (pure, checked by promtool) and
the real `prometheus` binary scraping a stand-in /metrics page."""

from __future__ import annotations

import ast
import contextlib
import http.server
import importlib.util
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serve.config.deployment import load_config
from serve.guard.middleware import OPEN_PATHS
from serve.monitor.prometheus import MonitorError, Prometheus, find_binary, install_hint
from serve.monitor.scrape import scrape_config, to_yaml
from serve.process import free_port, port_in_use
from tests.conftest import REPO

ROOT = REPO
DEPLOYMENTS = ROOT / "configs" / "deployments"
needs_prometheus = pytest.mark.skipif(
    shutil.which("prometheus") is None or shutil.which("promtool") is None,
    reason="prometheus not installed (make install, as root)",
)


def targets(config: dict[str, Any]) -> dict[str, tuple[str, dict[str, str]]]:
    """{address: (job, labels)} of every static target."""
    out = {}
    for job in config["scrape_configs"]:
        for group in job["static_configs"]:
            for address in group["targets"]:
                out[address] = (job["job_name"], group["labels"])
    return out


def promtool_check(tmp_path: Path, text: str) -> None:
    path = tmp_path / "prometheus.yml"
    path.write_text(text)
    out = subprocess.run(
        ["promtool", "check", "config", str(path)], capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stdout + out.stderr


def test_one_server_is_one_target() -> None:
    cfg = load_config(DEPLOYMENTS / "cpu-tiny.yaml")
    config = scrape_config(cfg)
    assert targets(config) == {
        "127.0.0.1:8000": ("vllm", {"replica": "0", "role": "replica"}),
    }
    assert config["global"]["scrape_interval"] == "2s"
    assert config["scrape_configs"][0]["metrics_path"] == "/metrics"


def test_replicas_and_the_router_are_targets() -> None:
    cfg = load_config(DEPLOYMENTS / "cpu-tiny-2replicas.yaml")
    assert targets(scrape_config(cfg)) == {
        "127.0.0.1:8001": ("vllm", {"replica": "0", "role": "replica"}),
        "127.0.0.1:8002": ("vllm", {"replica": "1", "role": "replica"}),
        "127.0.0.1:8003": ("vllm-router", {"replica": "router", "role": "router"}),
    }


def test_moved_ports_move_the_targets() -> None:
    cfg = load_config(
        DEPLOYMENTS / "cpu-tiny-2replicas.yaml", ["port=9100", "router.metrics_port=9200"]
    )
    assert sorted(targets(scrape_config(cfg))) == [
        "127.0.0.1:9101",
        "127.0.0.1:9102",
        "127.0.0.1:9200",
    ]


def test_metrics_need_no_key_so_none_is_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """vLLM checks its key only under these prefixes and the guard leaves /metrics open: if
    either changes, the scrape configuration needs `authorization: credentials_file`."""
    spec = importlib.util.find_spec("vllm")  # its source, read: importing vllm takes ~20 s
    assert spec is not None and spec.origin is not None
    source = Path(spec.origin).parent / "entrypoints/serve/middleware/authenticate.py"
    prefixes = [
        ast.literal_eval(node.value)
        for node in ast.parse(source.read_text()).body
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "GUARDED_PREFIX" for t in node.targets)
    ]
    assert len(prefixes) == 1, f"{source}: no single GUARDED_PREFIX"
    guarded = prefixes[0]
    assert not "/metrics".startswith(guarded), guarded
    assert "/metrics" in OPEN_PATHS, OPEN_PATHS
    monkeypatch.setenv("MEDGEMMA_API_KEY", "sk-secret-test-key")
    for name in ("cpu-tiny.yaml", "cpu-tiny-2replicas.yaml"):
        text = to_yaml(scrape_config(load_config(DEPLOYMENTS / name)))
        assert "sk-secret-test-key" not in text
        assert "authorization" not in text and "MEDGEMMA_API_KEY" not in text, text


@needs_prometheus
@pytest.mark.parametrize("name", ["cpu-tiny.yaml", "cpu-tiny-2replicas.yaml"])
def test_promtool_accepts_the_configuration(tmp_path: Path, name: str) -> None:
    promtool_check(tmp_path, to_yaml(scrape_config(load_config(DEPLOYMENTS / name))))


@needs_prometheus
def test_promtool_accepts_the_tls_configuration(tmp_path: Path) -> None:
    cert = tmp_path / "cert.pem"
    cert.write_text("not read by the pure function")
    cfg = load_config(
        DEPLOYMENTS / "cpu-tiny.yaml", [f"ssl_certfile={cert}", f"ssl_keyfile={cert}"]
    )
    config = scrape_config(cfg)
    assert config["scrape_configs"][0]["scheme"] == "https"
    promtool_check(tmp_path, to_yaml(config))


METRICS_PAGE = b"""# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{model_name="m"} 3.0
"""


class MetricsHandler(http.server.BaseHTTPRequestHandler):
    page = METRICS_PAGE

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        body = self.page if self.path == "/metrics" else b"not found\n"
        self.send_response(200 if self.path == "/metrics" else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass


@contextlib.contextmanager
def metrics_page(port: int = 0, page: bytes = METRICS_PAGE) -> Iterator[int]:
    """A stand-in /metrics endpoint on 127.0.0.1:port (0: any free port), in a thread."""
    handler = type("Handler", (MetricsHandler,), {"page": page})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def metrics_port() -> Iterator[int]:
    with metrics_page() as port:
        yield port


def consecutive_free_ports(n: int) -> int:
    """The first of n consecutive ports nothing listens on."""
    for _ in range(50):
        first = free_port()
        if all(not port_in_use("127.0.0.1", first + i) for i in range(n)):
            return first
    raise AssertionError(f"no {n} consecutive free ports found")


def poll(url: str, until: Any, timeout_s: float = 60) -> Any:
    """GET `url` (JSON) until `until(body)` is truthy; return that value."""
    deadline = time.monotonic() + timeout_s
    body: Any = None
    while time.monotonic() < deadline:
        body = httpx.get(url, timeout=5).json()
        found = until(body)
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"{url}: not as expected after {timeout_s} s; last body {body}")


@needs_prometheus
def test_real_prometheus_scrapes_a_metrics_page(tmp_path: Path, metrics_port: int) -> None:
    cfg = load_config(DEPLOYMENTS / "cpu-tiny.yaml", [f"port={metrics_port}"])
    port = free_port()
    prom = Prometheus(to_yaml(scrape_config(cfg, interval_s=1)), port, root=tmp_path)
    with prom:
        assert prom.config_path == tmp_path / "prometheus" / str(port) / "prometheus.yml"
        up = poll(
            f"{prom.url}/api/v1/targets",
            lambda b: [t for t in b["data"]["activeTargets"] if t["health"] == "up"],
        )
        assert up[0]["labels"]["replica"] == "0" and up[0]["labels"]["role"] == "replica", up
        result = poll(
            f"{prom.url}/api/v1/query?query=vllm:num_requests_running",
            lambda b: b["data"]["result"],
        )
        assert result[0]["value"][1] == "3", result
        assert result[0]["metric"]["replica"] == "0", result
    assert prom.proc is not None and prom.proc.returncode == 0, prom.proc
    assert not port_in_use("127.0.0.1", port)


ROUTER_PAGE = b"""# TYPE vllm_router_requests_total counter
vllm_router_requests_total 7
"""


@needs_prometheus
def test_real_prometheus_scrapes_every_replica_and_the_router(tmp_path: Path) -> None:
    first = consecutive_free_ports(3)
    cfg = load_config(
        DEPLOYMENTS / "cpu-tiny-2replicas.yaml",
        [f"replicas.first_port={first}", f"router.metrics_port={first + 2}"],
    )
    with (
        metrics_page(first),
        metrics_page(first + 1),
        metrics_page(first + 2, ROUTER_PAGE),
        Prometheus(to_yaml(scrape_config(cfg, interval_s=1)), free_port(), root=tmp_path) as prom,
    ):
        up = poll(
            f"{prom.url}/api/v1/targets",
            lambda b: (
                [t for t in b["data"]["activeTargets"] if t["health"] == "up"]
                if all(t["health"] == "up" for t in b["data"]["activeTargets"])
                else None
            ),
        )
        seen = {(t["labels"]["job"], t["labels"]["replica"], t["labels"]["role"]) for t in up}
        assert seen == {
            ("vllm", "0", "replica"),
            ("vllm", "1", "replica"),
            ("vllm-router", "router", "router"),
        }, up
        running = poll(
            f"{prom.url}/api/v1/query?query=sum by (replica) (vllm:num_requests_running)",
            lambda b: b["data"]["result"] if len(b["data"]["result"]) == 2 else None,
        )
        assert {r["metric"]["replica"]: r["value"][1] for r in running} == {
            "0": "3",
            "1": "3",
        }, running
        routed = poll(
            f"{prom.url}/api/v1/query?query=vllm_router_requests_total",
            lambda b: b["data"]["result"],
        )
        assert routed[0]["value"][1] == "7" and routed[0]["metric"]["role"] == "router", routed


def test_missing_binary_is_one_line_with_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(MonitorError) as err:
        find_binary({"PATH": str(tmp_path)})
    message = str(err.value)
    assert "\n" not in message and "apt-get install prometheus" in message, message
    assert ("not root" in message) == (os.geteuid() != 0), message
    with pytest.raises(MonitorError):
        Prometheus("", free_port(), root=tmp_path, environ={"PATH": str(tmp_path)}).start()


def test_install_hint_says_when_not_root() -> None:
    assert install_hint(1000) == (
        "sudo apt-get install prometheus (installing needs root; you are not root)"
    )
    assert "not root" not in install_hint(0)


@needs_prometheus
def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(MonitorError) as err:
            Prometheus("", port, root=tmp_path).start()
    message = str(err.value)
    assert "\n" not in message and f"port {port}" in message and "in use" in message, message
    assert not (tmp_path / "prometheus").exists()


@needs_prometheus
def test_a_configuration_prometheus_refuses_fails_fast_with_its_log(tmp_path: Path) -> None:
    port = free_port()
    with pytest.raises(MonitorError) as err:
        Prometheus("scrape_configs: [{job_name: 3, bogus: 1}]\n", port, root=tmp_path).start()
    first, _, rest = str(err.value).partition("\n")
    assert first.startswith("prometheus exited with status"), err.value
    assert "bogus" in rest, err.value
    assert not port_in_use("127.0.0.1", port)
