"""The dashboard and the alerting rules: every panel, every expression parsed by promtool,
every metric name found in the installed vLLM (or its HTTP instrumentator), and the CLI."""

from __future__ import annotations

import importlib.util
import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from grafanalib.core import Dashboard

from serve.config.deployment import DeploymentConfig, load_config
from serve.render.alerts import AlertThresholds, alert_rules, render_alerts
from serve.render.dashboard import build_dashboard, panel_queries, panels, render_dashboard
from tests.conftest import REPO
from tests.in_process import run_main
from tests.unit.serve.render.render_checks import run_render

REPO = REPO
DEPLOYMENTS = sorted((REPO / "configs" / "deployments").glob("*.yaml"))
TWO_REPLICAS = REPO / "configs" / "deployments" / "cpu-tiny-2replicas.yaml"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed")

# What the dashboard must show (issue 12, item 2).
PANELS = [
    "Finished requests",
    "HTTP responses by status",
    "Server error ratio (5xx)",
    "Time to first token",
    "Time per output token",
    "End-to-end request latency",
    "Running requests",
    "Waiting requests",
    "KV cache usage",
    "Prefix cache hit rate",
    "Multimodal cache hit rate",
    "Preemptions",
    "Tokens per second",
    "Targets up",
]
MM_PANEL = "Multimodal cache hit rate"  # only with the multimodal processor cache on


def expected_panels(cfg: DeploymentConfig) -> list[str]:
    return [t for t in PANELS if t != MM_PANEL or cfg.mm_processor_cache_gb > 0]


ALERTS = [
    "VllmReplicaDown",
    "VllmQueueGrowing",
    "VllmKvCacheNearFull",
    "VllmErrorRatioHigh",
    "VllmTtftP99AboveSlo",
]
# A metric name right before its label matchers or range: `name{...}` or `name[5m]`.
SELECTOR = re.compile(r"([a-zA-Z_:][a-zA-Z0-9_:]*)\s*[{\[]")
BY_REPLICA = re.compile(r"by \([^)]*\breplica\b")
SUFFIXES = ("_total", "_bucket", "_sum", "_count")


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)
    assert spec is not None and spec.origin is not None, f"{name} is not installed"
    return Path(spec.origin).parent


def defined_names(package: str, pattern: str) -> set[str]:
    """Every quoted metric name matching `pattern` in the installed package's sources."""
    out = subprocess.run(
        ["grep", "-rhoE", "--include=*.py", f'"{pattern}"', str(package_dir(package))],
        capture_output=True,
        text=True,
        check=False,
    ).stdout
    return {line.strip('"') for line in out.split()}


@pytest.fixture(scope="module")
def exported() -> set[str]:
    """The names vLLM 0.32's API server can export, before prometheus_client's suffixes."""
    vllm = defined_names("vllm", "vllm:[a-z0-9_]+")
    http = defined_names("prometheus_fastapi_instrumentator", "http_[a-z0-9_]+")
    assert "vllm:num_requests_waiting" in vllm, sorted(vllm)[:20]
    assert "http_requests_total" in http, sorted(http)
    return vllm | http | {"up"}


def metric_names(expr: str) -> set[str]:
    return set(SELECTOR.findall(expr))


def base_name(name: str, exported: set[str]) -> str:
    """`vllm:prompt_tokens_total` -> `vllm:prompt_tokens` (the name the source registers)."""
    if name in exported:
        return name
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name.removesuffix(suffix)
    return name


def every_expr() -> list[tuple[str, str]]:
    """(where, PromQL) of every dashboard query and alert signal and expression (the
    multimodal cache on, so its panel is among them)."""
    cfg = load_config(TWO_REPLICAS, ["mm_processor_cache_gb=1"])
    out = [(f"panel {title!r}", expr) for title, expr in panel_queries(cfg)]
    for rule in alert_rules(cfg):
        out += [(f"alert {rule.name} signal", rule.signal), (f"alert {rule.name}", rule.expr)]
    return out


def promtool_check(rules: dict, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rules, sort_keys=False))
    return subprocess.run(
        [str(PROMTOOL), "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )


@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.stem)
def test_dashboard_has_every_panel(path: Path) -> None:
    cfg = load_config(path)
    dashboard = render_dashboard(cfg)
    titles = [p["title"] for p in dashboard["panels"]]
    assert titles == expected_panels(cfg), titles
    assert cfg.model_name in dashboard["title"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(set(ids)) == len(ids) and None not in ids, ids
    # Each panel's targets are exactly its queries, each with a distinct refId.
    by_title = {p.title: p for p in panels(cfg)}
    for panel in dashboard["panels"]:
        exprs = [t["expr"] for t in panel["targets"]]
        assert exprs == [q.expr for q in by_title[panel["title"]].queries], panel["title"]
        refs = [t["refId"] for t in panel["targets"]]
        assert len(set(refs)) == len(refs), (panel["title"], refs)
        assert panel["type"] == "timeseries" and panel["datasource"] == "${datasource}"
        # Every query selects this deployment's vLLM series or a target-wide one.
        for expr in exprs:
            assert (
                f'model_name="{cfg.model_name}"' in expr
                or "http_requests_total" in expr
                or (expr.startswith("up"))
            ), expr


def test_dashboard_is_grafanalib_output() -> None:
    cfg = load_config(TWO_REPLICAS)
    built = build_dashboard(cfg)
    assert isinstance(built, Dashboard)
    dashboard = render_dashboard(cfg)
    assert dashboard == json.loads(json.dumps(dashboard))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    # Panels tile two to a row without overlapping.
    cells = {(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dashboard["panels"]}
    assert len(cells) == len(expected_panels(cfg)), cells


def test_every_panel_shows_replicas_and_total() -> None:
    """Per replica and in total: each panel (but `Targets up`) has a query grouped by
    replica and one that is not."""
    for panel in panels(load_config(TWO_REPLICAS, ["mm_processor_cache_gb=1"])):
        if panel.title == "Targets up":
            continue
        grouped = [BY_REPLICA.search(q.expr) is not None for q in panel.queries]
        assert any(grouped) and not all(grouped), (panel.title, [q.expr for q in panel.queries])


def test_percentiles_come_from_histograms() -> None:
    cfg = load_config(TWO_REPLICAS)
    for title in ("Time to first token", "Time per output token", "End-to-end request latency"):
        exprs = [e for t, e in panel_queries(cfg) if t == title]
        quantiles = sorted({float(m) for e in exprs for m in re.findall(r"quantile\(([\d.]+)", e)})
        assert quantiles == [0.5, 0.9, 0.99], (title, exprs)
        assert all("_bucket{" in e and "by (le" in e for e in exprs), exprs


def test_every_metric_name_is_exported_by_this_vllm(exported: set[str]) -> None:
    used: set[str] = set()
    for where, expr in every_expr():
        names = metric_names(expr)
        assert names, f"{where}: no metric selector found in {expr}"
        used |= names
    missing = {n for n in used if base_name(n, exported) not in exported}
    assert not missing, f"not defined in the installed vLLM: {sorted(missing)}"
    # The series are all there.
    for name in (
        "vllm:time_to_first_token_seconds_bucket",
        "vllm:num_requests_waiting",
        "vllm:kv_cache_usage_perc",
        "vllm:prefix_cache_hits_total",
        "vllm:mm_cache_queries_total",
        "vllm:num_preemptions_total",
        "http_requests_total",
    ):
        assert name in used, name


def test_a_renamed_metric_is_caught(exported: set[str]) -> None:
    """The check above can fail: a name vLLM does not define is reported."""
    assert base_name("vllm:time_to_first_token_total", exported) not in exported
    assert base_name("vllm:num_requests_swapped", exported) not in exported


@needs_promtool
def test_dashboard_queries_parse(tmp_path: Path) -> None:
    """promtool parses each expression of a recording rule: one rule per panel query."""
    queries = panel_queries(load_config(TWO_REPLICAS))
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, (_, expr) in enumerate(queries)
                ],
            }
        ]
    }
    result = promtool_check(rules, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout, result.stdout


@needs_promtool
def test_promtool_rejects_a_bad_query(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "g", "rules": [{"record": "r:bad", "expr": "sum by (le (x)"}]}]}
    result = promtool_check(rules, tmp_path)
    assert result.returncode != 0, result.stdout


@needs_promtool
@pytest.mark.parametrize("path", DEPLOYMENTS, ids=lambda p: p.stem)
def test_alert_rules_pass_promtool(path: Path, tmp_path: Path) -> None:
    rules = render_alerts(load_config(path))
    names = [r["alert"] for r in rules["groups"][0]["rules"]]
    assert names == ALERTS, names
    result = promtool_check(rules, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(ALERTS)} rules found" in result.stdout, result.stdout


@needs_promtool
def test_alert_signals_parse(tmp_path: Path) -> None:
    rules = alert_rules(load_config(TWO_REPLICAS))
    group = [{"record": f"alert:signal_{i}", "expr": r.signal} for i, r in enumerate(rules)]
    result = promtool_check({"groups": [{"name": "signals", "rules": group}]}, tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_thresholds_reach_the_rules() -> None:
    cfg = load_config(TWO_REPLICAS)
    t = AlertThresholds(ttft_slo_ms=2500, kv_cache_usage=0.8, queue_for="30s")
    rules = {r.name: r for r in alert_rules(cfg, t)}
    assert rules["VllmTtftP99AboveSlo"].expr.endswith("> 2.5"), rules["VllmTtftP99AboveSlo"]
    assert rules["VllmKvCacheNearFull"].expr.endswith("> 0.8"), rules["VllmKvCacheNearFull"]
    assert rules["VllmQueueGrowing"].for_ == "30s"
    assert all(r.expr.startswith(r.signal) or r.signal in r.expr for r in rules.values())


def test_default_ttft_slo_is_the_scenarios() -> None:
    """The default objective is the bench scenarios' slo.ttft_ms (10 s)."""
    from benchmarks.runner.scenario import load_scenario

    scenario = load_scenario(REPO / "configs" / "scenarios" / "bench-cpu.yaml")
    assert AlertThresholds().ttft_slo_ms == scenario.slo.ttft_ms


def test_cli_dashboard_prints_json() -> None:
    result = run_render("dashboard", "--config", str(TWO_REPLICAS))
    assert result.returncode == 0, result.stderr
    dashboard = json.loads(result.stdout)
    assert [p["title"] for p in dashboard["panels"]] == expected_panels(load_config(TWO_REPLICAS))


def test_the_multimodal_cache_panel_follows_the_cache() -> None:
    """Off (the default), vLLM's mm_cache series never move: no panel that stays empty."""
    off = [p.title for p in panels(load_config(TWO_REPLICAS))]
    on = [p.title for p in panels(load_config(TWO_REPLICAS, ["mm_processor_cache_gb=4"]))]
    assert MM_PANEL not in off
    assert on == PANELS


def test_cli_alerts_take_the_scenario_slo() -> None:
    scenario = REPO / "configs" / "scenarios" / "bench-smoke.yaml"  # slo.ttft_ms: 20000
    result = run_render("alerts", "--config", str(TWO_REPLICAS), "--scenario", str(scenario))
    assert result.returncode == 0, result.stderr
    rules = yaml.safe_load(result.stdout)["groups"][0]["rules"]
    ttft = next(r for r in rules if r["alert"] == "VllmTtftP99AboveSlo")
    assert ttft["expr"].endswith("> 20"), ttft
    result = run_render("alerts", "--config", str(TWO_REPLICAS), "--ttft-slo-ms", "1500")
    assert yaml.safe_load(result.stdout)["groups"][0]["rules"][-1]["expr"].endswith("> 1.5")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["dashboard", "--config", "no-such.yaml"], "no-such.yaml: config file not found"),
        (["alerts", "--config", str(TWO_REPLICAS), "--ttft-slo-ms", "0"], "must be above 0"),
        (
            ["alerts", "--config", str(TWO_REPLICAS), "--scenario", "none.yaml"],
            "--scenario: none.yaml",
        ),
        (
            [
                "alerts",
                "--config",
                str(TWO_REPLICAS),
                "--scenario",
                str(REPO / "configs" / "scenarios" / "bench-affinity.yaml"),
            ],
            "sets no slo.ttft_ms",
        ),
    ],
)
def test_cli_bad_input_is_one_line(
    args: list[str],
    message: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from serve.__main__ import main

    monkeypatch.chdir(REPO)  # `python -m serve render ARGS` in this process, from the checkout
    result = run_main(main, ["render", *args], capsys)
    assert result.returncode == 2, (result.returncode, result.stdout, result.stderr)
    assert result.stdout == "", result.stdout
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert "Traceback" not in result.stderr


def test_cli_invalid_config_names_the_field() -> None:
    """The deployment loader's format: the file, then one line per bad field."""
    result = run_render("dashboard", "--config", str(TWO_REPLICAS), "--set", "port=0")
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert result.stdout == "" and "Traceback" not in result.stderr, result.stderr
    first, *rest = result.stderr.strip().splitlines()
    assert first.startswith("error: ") and "invalid deployment config" in first, first
    assert len(rest) == 1 and "port" in rest[0], result.stderr
