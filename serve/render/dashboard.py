"""A Grafana dashboard for one deployment, built with grafanalib (pure).

`panels(cfg)` is the dashboard as data: each panel's title, unit and PromQL queries, one
series per replica and one for the whole deployment. Replicas are told apart by the
`replica` label serve.monitor.scrape puts on every target ("0", "1", ... and "router"
for vllm-router, whose own series are named vllm_router_* and so drop out of every query
here but `up`). `render_dashboard(cfg)` turns them into Grafana's JSON
model; `panel_queries(cfg)` lists every (panel title, expression) so a test can evaluate
each against a real Prometheus.

Metric names are vLLM 0.32's, as its API server exports them (a prometheus_client
Counter gains `_total`, a Histogram `_bucket`/`_sum`/`_count`):
  vllm/v1/metrics/loggers.py, PrometheusStatLogger.__init__:
    vllm:num_requests_running (l. 528), vllm:num_requests_waiting (l. 538),
    vllm:kv_cache_usage_perc (l. 620), vllm:prefix_cache_queries / _hits (l. 662, 673),
    vllm:mm_cache_queries / _hits (l. 714, 725), vllm:num_preemptions (l. 739),
    vllm:prompt_tokens (l. 748), vllm:generation_tokens (l. 799),
    vllm:request_success with `finished_reason` (l. 809),
    vllm:time_to_first_token_seconds (l. 931),
    vllm:request_time_per_output_token_seconds (l. 951),
    vllm:e2e_request_latency_seconds (l. 961).
  Every one carries `model_name` (the served model name) and `engine` (the data-parallel
  rank). HTTP responses come from prometheus-fastapi-instrumentator 8.1, which vLLM
  attaches in vllm/entrypoints/serve/instrumentator/metrics.py (attach_router):
  `http_requests_total` with `handler`, `method` and `status` grouped as 2xx/4xx/5xx
  (prometheus_fastapi_instrumentator/metrics.py, default()). `up` is Prometheus' own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from grafanalib._gen import DashboardEncoder
from grafanalib.core import Dashboard, GridPos, Target, Template, Templating, TimeSeries

from serve.config.deployment import DeploymentConfig

# The window of every rate(): a few scrapes at the scrape configuration's interval.
RATE_WINDOW = "1m"
QUANTILES = (0.5, 0.9, 0.99)
DATASOURCE = "${datasource}"


@dataclass(frozen=True)
class Query:
    """One series (or family of series) of a panel."""

    legend: str  # Grafana legend format, e.g. "replica {{replica}}"
    expr: str  # PromQL


@dataclass(frozen=True)
class Panel:
    """One dashboard panel as data."""

    title: str
    unit: str  # Grafana unit id: reqps, s, percentunit, short, ...
    description: str
    queries: tuple[Query, ...]


def label_value(value: str) -> str:
    """A PromQL string literal: `"..."` with backslashes and quotes escaped."""
    return json.dumps(value)


def model_selector(cfg: DeploymentConfig) -> str:
    """The label matcher for this deployment's vLLM series: its served model name."""
    return f"{{model_name={label_value(cfg.model_name)}}}"


def rate(metric: str, selector: str = "", window: str = RATE_WINDOW) -> str:
    return f"rate({metric}{selector}[{window}])"


def per_replica_and_total(expr_of: str, agg: str = "sum") -> tuple[Query, Query]:
    """`agg by (replica) (X)` and `agg (X)` for an inner expression X."""
    return (
        Query("replica {{replica}}", f"{agg} by (replica) ({expr_of})"),
        Query("total", f"{agg} ({expr_of})"),
    )


def ratio(num: str, den: str) -> tuple[Query, Query]:
    """num / den per replica and in total, from two rates."""
    return (
        Query(
            "replica {{replica}}",
            f"sum by (replica) ({num}) / sum by (replica) ({den})",
        ),
        Query("total", f"sum ({num}) / sum ({den})"),
    )


def quantiles(histogram: str, selector: str) -> tuple[Query, ...]:
    """p50/p90/p99 of a vLLM histogram for the deployment, and p99 per replica."""
    buckets = rate(f"{histogram}_bucket", selector)
    total = tuple(
        Query(f"p{round(q * 100)}", f"histogram_quantile({q}, sum by (le) ({buckets}))")
        for q in QUANTILES
    )
    per_replica = Query(
        "p99 replica {{replica}}",
        f"histogram_quantile(0.99, sum by (le, replica) ({buckets}))",
    )
    return (*total, per_replica)


def error_ratio(status: str = "5xx", window: str = RATE_WINDOW, by: str = "") -> str:
    """Share of HTTP responses with `status` (0 when there are none, not an empty result)."""
    grouping = f" by ({by})" if by else ""
    errors = rate("http_requests_total", f"{{status={label_value(status)}}}", window)
    every = rate("http_requests_total", "", window)
    return f"(sum{grouping} ({errors}) or sum{grouping} ({every}) * 0) / sum{grouping} ({every})"


def panels(cfg: DeploymentConfig) -> list[Panel]:
    """Every panel of the deployment's dashboard, in display order (pure). The multimodal
    cache panel only with `mm_processor_cache_gb` above 0: with the cache off (the default)
    its series never move and the panel would stay empty."""
    m = model_selector(cfg)
    shown = [
        Panel(
            "Finished requests",
            "reqps",
            "Requests the engine finished per second (vllm:request_success_total), by "
            "finish reason in total and per replica.",
            (
                Query(
                    "{{finished_reason}}",
                    f"sum by (finished_reason) ({rate('vllm:request_success_total', m)})",
                ),
                Query(
                    "replica {{replica}}",
                    f"sum by (replica) ({rate('vllm:request_success_total', m)})",
                ),
            ),
        ),
        Panel(
            "HTTP responses by status",
            "reqps",
            "Responses of the OpenAI API server per second by status class (2xx, 4xx, "
            "5xx), in total and per replica.",
            (
                Query("{{status}}", f"sum by (status) ({rate('http_requests_total')})"),
                Query(
                    "replica {{replica}} {{status}}",
                    f"sum by (replica, status) ({rate('http_requests_total')})",
                ),
            ),
        ),
        Panel(
            "Server error ratio (5xx)",
            "percentunit",
            "Share of responses that were 5xx.",
            (
                Query("replica {{replica}}", error_ratio(by="replica")),
                Query("total", error_ratio()),
            ),
        ),
        Panel(
            "Time to first token",
            "s",
            "From vLLM's histogram vllm:time_to_first_token_seconds.",
            quantiles("vllm:time_to_first_token_seconds", m),
        ),
        Panel(
            "Time per output token",
            "s",
            "Per request, after the first token (vllm:request_time_per_output_token_seconds).",
            quantiles("vllm:request_time_per_output_token_seconds", m),
        ),
        Panel(
            "End-to-end request latency",
            "s",
            "From vLLM's histogram vllm:e2e_request_latency_seconds.",
            quantiles("vllm:e2e_request_latency_seconds", m),
        ),
        Panel(
            "Running requests",
            "short",
            "Requests in the engine's running batch (vllm:num_requests_running).",
            per_replica_and_total(f"vllm:num_requests_running{m}"),
        ),
        Panel(
            "Waiting requests",
            "short",
            "Requests queued for the engine (vllm:num_requests_waiting).",
            per_replica_and_total(f"vllm:num_requests_waiting{m}"),
        ),
        Panel(
            "KV cache usage",
            "percentunit",
            "Share of the KV cache in use (vllm:kv_cache_usage_perc; 1 is full), "
            "averaged over data-parallel engines and replicas.",
            per_replica_and_total(f"vllm:kv_cache_usage_perc{m}", agg="avg"),
        ),
        Panel(
            "Prefix cache hit rate",
            "percentunit",
            "Prompt tokens found in the prefix cache over prompt tokens looked up.",
            ratio(
                rate("vllm:prefix_cache_hits_total", m),
                rate("vllm:prefix_cache_queries_total", m),
            ),
        ),
        Panel(
            "Preemptions",
            "short",
            "Requests preempted per second for lack of KV cache (vllm:num_preemptions_total).",
            per_replica_and_total(rate("vllm:num_preemptions_total", m)),
        ),
        Panel(
            "Tokens per second",
            "short",
            "Prompt tokens prefilled and tokens generated per second.",
            (
                Query("prompt", f"sum ({rate('vllm:prompt_tokens_total', m)})"),
                Query("generated", f"sum ({rate('vllm:generation_tokens_total', m)})"),
                Query(
                    "generated replica {{replica}}",
                    f"sum by (replica) ({rate('vllm:generation_tokens_total', m)})",
                ),
            ),
        ),
        Panel(
            "Targets up",
            "short",
            "1 when Prometheus' last scrape of the replica (or router) succeeded.",
            (Query("{{replica}}", 'up{replica!=""}'),),
        ),
    ]
    if cfg.mm_processor_cache_gb > 0:  # off, vLLM exports no lookups: the panel stays empty
        shown.insert(
            [p.title for p in shown].index("Prefix cache hit rate") + 1,
            Panel(
                "Multimodal cache hit rate",
                "percentunit",
                "Images whose processed inputs were in the multimodal processor cache over "
                "images looked up (no lookups: no value).",
                ratio(
                    rate("vllm:mm_cache_hits_total", m),
                    rate("vllm:mm_cache_queries_total", m),
                ),
            ),
        )
    return shown


def panel_queries(cfg: DeploymentConfig) -> list[tuple[str, str]]:
    """Every (panel title, PromQL expression) of the dashboard, in order (pure)."""
    return [(p.title, q.expr) for p in panels(cfg) for q in p.queries]


def to_grafanalib(panel: Panel, index: int) -> TimeSeries:
    width, height = 12, 8
    return TimeSeries(
        title=panel.title,
        description=panel.description,
        dataSource=DATASOURCE,
        unit=panel.unit,
        targets=[
            Target(expr=q.expr, legendFormat=q.legend, refId=chr(ord("A") + i))
            for i, q in enumerate(panel.queries)
        ],
        gridPos=GridPos(h=height, w=width, x=(index % 2) * width, y=(index // 2) * height),
    )


def build_dashboard(cfg: DeploymentConfig) -> Dashboard:
    """The grafanalib Dashboard of the deployment (pure)."""
    datasource = Template(
        name="datasource",
        label="Prometheus",
        query="prometheus",
        type="datasource",
    )
    return Dashboard(
        title=f"medgemma-serve: {cfg.model_name}",
        description="vLLM engine and API server series of one medgemma-serve deployment, "
        "per replica and in total (python -m serve render dashboard).",
        tags=["medgemma-serve", "vllm"],
        timezone="utc",
        templating=Templating(list=[datasource]),
        panels=[to_grafanalib(p, i) for i, p in enumerate(panels(cfg))],
    ).auto_panel_ids()


def render_dashboard(cfg: DeploymentConfig) -> dict:
    """Grafana's JSON model of the dashboard, as plain data (pure)."""
    return json.loads(json.dumps(build_dashboard(cfg).to_json_data(), cls=DashboardEncoder))
