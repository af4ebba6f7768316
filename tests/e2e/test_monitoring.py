"""`python -m serve --monitor`: a real Prometheus scraping the real vLLM server under load,
and every dashboard query and alert expression evaluated through Prometheus' HTTP API.

The server is the session's `launcher` (tests/e2e/conftest.py: cpu-tiny over HTTPS with
`--monitor`; its Prometheus loads the alerting rules with the default thresholds). A second
Prometheus, started from the same code (serve.monitor), scrapes the same server with the
same rules at thresholds a test run crosses (TTFT objective 1 ms, `for: 2s`), so one alert
is seen firing.
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from PIL import Image

from clients.messages import user_turn
from serve.config.deployment import DeploymentConfig, load_config
from serve.monitor.panels import empty_queries, fetch
from serve.monitor.prometheus import RULES_FILE, Prometheus, storage_dir
from serve.monitor.scrape import scrape_config, to_yaml
from serve.process import free_port
from serve.render.alerts import AlertThresholds, alert_rules, render_alerts
from serve.render.dashboard import Panel, Query, panel_queries, panels
from serve.render.k8s import render_k8s
from serve.render.k8s_monitor import prometheus_rule_groups
from tests.conftest import CONFIGS
from tests.e2e.launcher import LiveServer, wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("prometheus") is None,
        reason="prometheus not installed (make install, as root)",
    ),
]

CONFIG = CONFIGS / "cpu-tiny.yaml"
REQUESTS = 24  # image + text chats, 4 at a time
FAST = AlertThresholds(ttft_slo_ms=1, for_="2s")  # any request crosses a 1 ms TTFT


@dataclass(frozen=True)
class Monitored:
    run: LiveServer
    cfg: DeploymentConfig  # the deployment as launched (its port)
    prometheus: str  # URL of the launcher's Prometheus
    fast: str  # URL of the second Prometheus, with FAST thresholds
    storage: Path  # the launcher's Prometheus folder
    start: float  # unix times around the load
    end: float


def instant(url: str, expr: str) -> list[dict[str, Any]]:
    r = httpx.get(f"{url}/api/v1/query", params={"query": expr}, timeout=30)
    assert r.status_code == 200, (expr, r.text[:300])
    return r.json()["data"]["result"]


def finished(url: str, cfg: DeploymentConfig) -> float:
    """Requests the engine finished, as Prometheus last scraped them (0 before any scrape)."""
    result = instant(url, f'sum(vllm:request_success_total{{model_name="{cfg.model_name}"}})')
    return float(result[0]["value"][1]) if result else 0.0


def chat(i: int, model: str) -> dict[str, Any]:
    grey = Image.new("L", (256, 256), (37 * i) % 256)
    return {
        "model": model,
        "messages": [user_turn(f"Describe this X-ray ({i}).", [grey])],
        "max_tokens": 8,
        "min_tokens": 4,  # several output tokens: TPOT has data
        "temperature": 0,
    }


def send_load(run: LiveServer) -> None:
    """REQUESTS chats over 4 threads, plus one request the server refuses (a 4xx)."""
    failures: list[str] = []

    def worker(first: int) -> None:
        with run.get_http_client(timeout=300) as http:
            for i in range(first, REQUESTS, 4):
                r = http.post("/v1/chat/completions", json=chat(i, run.model))
                if r.status_code != 200:
                    failures.append(f"{r.status_code} {r.text[:200]}")

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=900)
    assert failures == [], failures
    with run.get_http_client(timeout=60) as http:
        assert http.post("/v1/chat/completions", json={"model": run.model}).status_code == 400


@pytest.fixture(scope="module")
def monitored(launcher_run: Callable[[], LiveServer]) -> Iterator[Monitored]:
    run = launcher_run()
    said = re.search(r"^monitor:  Prometheus on (http://[\d.:]+)", run.text(), re.M)
    assert said, run.text()[-2000:]
    url, fast_port = said[1], free_port()
    assert run.cert is not None
    server_port = int(run.root_url.rsplit(":", 1)[1])
    tls = [f"ssl_certfile={run.cert}", f"ssl_keyfile={run.cert.with_name('key.pem')}"]
    cfg = load_config(CONFIG, [f"port={server_port}", *tls])
    rules = to_yaml(render_alerts(cfg, FAST))
    config = to_yaml(scrape_config(cfg, rule_files=[RULES_FILE]))
    try:
        with Prometheus(config, fast_port, rules_text=rules) as fast:
            wait_until(  # a sample before the load: rate() then sees it rise
                lambda: instant(url, "up == 1") and instant(fast.url, "up == 1"),
                60,
                "Prometheus did not scrape the server",
            )
            start = time.time()
            before = finished(url, cfg)  # the launcher's earlier tests' requests
            send_load(run)
            wait_until(
                lambda: min(finished(url, cfg), finished(fast.url, cfg)) - before >= REQUESTS,
                120,
                "Prometheus did not scrape the finished requests",
            )
            end = time.time()
            storage = storage_dir(int(url.rsplit(":", 1)[1]))
            yield Monitored(run, cfg, url, fast.url, storage, start, end)
    finally:
        shutil.rmtree(storage_dir(fast_port), ignore_errors=True)


def test_the_launcher_says_where_prometheus_is(monitored: Monitored) -> None:
    err = monitored.run.text()
    assert f"monitor:  Prometheus on {monitored.prometheus}" in err, err[-2000:]


def test_prometheus_scrapes_the_server_with_its_labels(monitored: Monitored) -> None:
    r = httpx.get(f"{monitored.prometheus}/api/v1/targets", timeout=30)
    active = r.json()["data"]["activeTargets"]
    assert [(t["health"], t["labels"]["replica"], t["labels"]["role"]) for t in active] == [
        ("up", "0", "replica")
    ], active
    assert active[0]["scrapeUrl"] == f"{monitored.run.root_url}/metrics"


def panel_of(title: str, expr: str) -> Panel:
    return Panel(title, "short", "", (Query("", expr),))


def test_every_dashboard_query_returns_data(monitored: Monitored) -> None:
    shown = panels(monitored.cfg)
    data = fetch(monitored.prometheus, shown, monitored.start, monitored.end + 10)
    total = len(panel_queries(monitored.cfg))
    assert total >= 20
    assert empty_queries(shown, data) == []
    print(f"\n{total} dashboard queries ({len(shown)} panels) returned data")


def test_every_alert_signal_returns_data_and_every_rule_evaluates(monitored: Monitored) -> None:
    rules = alert_rules(monitored.cfg)
    signals = [panel_of(r.name, r.signal) for r in rules]
    data = fetch(monitored.prometheus, signals, monitored.start, monitored.end + 10)
    assert empty_queries(signals, data) == []
    # Every rule, as loaded, evaluates without error, and none fires on this healthy server.
    r = httpx.get(f"{monitored.prometheus}/api/v1/rules", timeout=30)
    loaded = [rule for g in r.json()["data"]["groups"] for rule in g["rules"]]
    assert sorted(x["name"] for x in loaded) == sorted(x.name for x in rules)
    for rule in loaded:
        assert rule["health"] == "ok", rule
        assert rule["state"] != "firing", rule
    print(f"\n{len(signals)} alert signals returned data; {len(loaded)} rules evaluated ok")


def test_the_rules_loaded_are_the_kubernetes_prometheus_rules(monitored: Monitored) -> None:
    """The rules this Prometheus evaluates (the other tests) are the PrometheusRule's that
    `render k8s` ships for the same deployment with real weights in the pod."""
    cfg = monitored.cfg
    in_a_pod = load_config(
        CONFIG,
        ["stand_in=null", "model=google/medgemma-4b-it", f"served_model_name={cfg.model_name}"],
    )
    written = yaml.safe_load((monitored.storage / RULES_FILE).read_text())
    assert written["groups"] == prometheus_rule_groups(render_k8s(in_a_pod))


def test_an_alert_fires_when_its_threshold_is_crossed(monitored: Monitored) -> None:
    def firing() -> list[dict[str, Any]]:
        r = httpx.get(f"{monitored.fast}/api/v1/alerts", timeout=30)
        alerts = r.json()["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"]

    def evidence() -> str:
        rules = httpx.get(f"{monitored.fast}/api/v1/rules", timeout=30).json()["data"]
        ttft = next(r for r in alert_rules(monitored.cfg, FAST) if r.name == "VllmTtftP99AboveSlo")
        return (
            f"no alert fired with a 1 ms TTFT objective; rules: {rules}; "
            f"TTFT p99 now: {instant(monitored.fast, ttft.signal)}"
        )

    fired = wait_until(firing, 120, evidence)
    names = {a["labels"]["alertname"] for a in fired}
    assert names == {"VllmTtftP99AboveSlo"}, fired
    alert = fired[0]
    assert alert["labels"]["replica"] == "0"
    assert alert["labels"]["model_name"] == monitored.cfg.model_name
    assert float(alert["value"]) > FAST.ttft_slo_ms / 1000
    print(f"\nfiring: {alert['labels']['alertname']} value {float(alert['value']):.3f} s")


def test_panels_draws_the_run_from_prometheus(monitored: Monitored, tmp_path: Path) -> None:
    import subprocess
    import sys

    out = tmp_path / "panels.png"
    cmd = [sys.executable, "-m", "serve", "panels", "--config", str(CONFIG)]
    cmd += ["--prometheus", monitored.prometheus, "--minutes", "10", "--out", str(out)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 0, done.stderr
    total = len(panel_queries(monitored.cfg))
    assert f"{total} of {total} queries ({len(panels(monitored.cfg))} panels)" in done.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
