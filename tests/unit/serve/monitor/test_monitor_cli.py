"""`python -m serve --monitor` and `python -m serve panels`: bad input answered with one
line before anything starts, the Prometheus `--monitor` runs, and the panels' pure parts."""

from __future__ import annotations

import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from serve.config.deployment import load_config
from serve.monitor.panels import Series, empty_queries, legend, to_series
from serve.monitor.prometheus import RULES_FILE, for_deployment
from serve.process import free_port
from serve.render.alerts import render_alerts
from serve.render.dashboard import Panel, Query
from tests.conftest import CONFIGS, REPO
from tests.in_process import run_main

TINY = CONFIGS / "cpu-tiny.yaml"


def serve(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=False,
    )


def in_process(capsys: pytest.CaptureFixture[str], *args: str) -> subprocess.CompletedProcess[str]:
    """`python -m serve ARGS` as serve's `main(argv)` in this process: for the refusals
    before anything starts (the tests that start Prometheus keep their own process)."""
    from serve.__main__ import main

    return run_main(main, args, capsys)


def one_error_line(done: subprocess.CompletedProcess[str]) -> str:
    lines = [x for x in done.stderr.splitlines() if x.strip()]
    assert "Traceback" not in done.stderr, done.stderr
    assert lines and lines[-1].startswith("error: "), done.stderr
    return lines[-1]


def test_monitor_port_without_monitor_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    done = in_process(capsys, "--config", str(TINY), "--monitor-port", "9999")
    assert done.returncode == 2
    assert "--monitor-port needs --monitor" in one_error_line(done)


@pytest.mark.parametrize("port", ["0", "70000"])
def test_monitor_port_out_of_range_is_refused(
    port: str, capsys: pytest.CaptureFixture[str]
) -> None:
    done = in_process(capsys, "--config", str(TINY), "--monitor", "--monitor-port", port)
    assert done.returncode == 2
    assert f"--monitor-port: {port} is not a TCP port" in one_error_line(done)


def test_monitor_port_that_is_the_servers_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    args = ("--config", str(TINY), "--port", "8123", "--monitor", "--monitor-port", "8123")
    done = in_process(capsys, *args)
    assert done.returncode == 2
    assert "8123 is a port of the deployment itself" in one_error_line(done)


def test_monitor_port_in_use_fails_before_vllm_starts(tmp_path: Path) -> None:
    if not any(Path(d, "prometheus").exists() for d in os.environ["PATH"].split(":")):
        pytest.skip("prometheus not installed (make install, as root)")
    log = tmp_path / "server.log"
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        done = serve(
            "--config", str(TINY), "--port", str(free_port()), "--log-file", str(log),
            "--monitor", "--monitor-port", str(port),
        )  # fmt: skip
    assert done.returncode == 2
    line = one_error_line(done)
    assert f"monitor port {port}" in line and "in use" in line, line
    assert not log.exists()  # vLLM was never started


def test_monitor_without_prometheus_names_the_install_command(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}  # python, no prometheus
    done = serve(
        "--config", str(TINY), "--port", str(free_port()), "--log-file", str(log),
        "--monitor", "--monitor-port", str(free_port()),
        env=env,
    )  # fmt: skip
    assert done.returncode == 2
    line = one_error_line(done)
    assert "prometheus is not installed" in line and "apt-get install prometheus" in line, line
    assert not log.exists()


def test_the_monitor_scrapes_the_deployment_and_loads_its_alerts() -> None:
    cfg = load_config(TINY, ["port=8123"])
    prometheus = for_deployment(cfg, 9999)
    config = yaml.safe_load(prometheus.config_text)
    assert config["rule_files"] == [RULES_FILE]
    assert config["scrape_configs"][0]["static_configs"][0]["targets"] == ["127.0.0.1:8123"]
    assert yaml.safe_load(prometheus.rules_text or "") == render_alerts(cfg)
    assert prometheus.rules_path.parent == prometheus.config_path.parent


def test_legend_fills_labels_like_grafana() -> None:
    labels = {"replica": "1", "status": "2xx"}
    assert legend("replica {{replica}} {{ status }}", labels) == "replica 1 2xx"
    assert legend("{{missing}}x", labels) == "x"


def test_to_series_reads_prometheus_matrix_values() -> None:
    result = [
        {"metric": {"replica": "0"}, "values": [[1.0, "0.5"], [3.0, "NaN"]]},
        {"metric": {"replica": "1"}, "values": [[1.0, "NaN"]]},
    ]
    series = to_series(Query("r{{replica}}", "x"), result)
    assert [s.legend for s in series] == ["r0", "r1"]
    assert series[0].points[0] == (1.0, 0.5) and math.isnan(series[0].points[1][1])
    assert [s.has_data for s in series] == [True, False]


def test_empty_queries_names_each_query_without_a_finite_value() -> None:
    shown = [
        Panel("A", "short", "", (Query("", "a1"), Query("", "a2"))),
        Panel("B", "short", "", (Query("", "b1"),)),
    ]
    nan = Series("", [(1.0, math.nan)])
    data = [[[Series("", [(1.0, 2.0)])], [nan]], [[]]]
    assert empty_queries(shown, data) == ["A: a2", "B: b1"]


def test_panels_with_prometheus_unreachable_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    done = in_process(
        capsys,
        "panels",
        "--config",
        str(TINY),
        "--prometheus",
        url,
        "--out",
        str(tmp_path / "p.png"),
    )
    assert done.returncode == 1
    assert f"cannot reach Prometheus at {url}" in one_error_line(done)
    assert not (tmp_path / "p.png").exists()


def test_panels_with_bad_minutes_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    done = in_process(capsys, "panels", "--config", str(TINY), "--minutes", "0")
    assert done.returncode == 2
    assert "--minutes must be above 0" in one_error_line(done)
