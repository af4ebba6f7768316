"""Prometheus alerting rules for one deployment (pure).

`alert_rules(cfg, thresholds)` is the rules as data: each alert's `signal` (the quantity
it watches, which returns a value whenever the deployment is scraped) and its `expr`
(the signal compared with its threshold, which returns series only while the alert is
pending or firing). `render_alerts` wraps them in Prometheus' rule-file format, checked
by `promtool check rules`. Metric names and where vLLM 0.32 defines them: see
serve.render.dashboard's docstring.

The TTFT objective defaults to DEFAULT_TTFT_SLO_MS (10 s: the `slo.ttft_ms` of the
shipped benchmark scenarios bench-cpu, bench-open and bench-overload); `python -m serve
render alerts --scenario S` takes the scenario's `slo.ttft_ms` instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from serve.config.deployment import DeploymentConfig
from serve.render.dashboard import error_ratio, model_selector

DEFAULT_TTFT_SLO_MS = 10_000.0
# Prometheus durations: 30s, 5m, 1h, 1h30m.
DURATION = r"^([0-9]+(ms|s|m|h|d|w|y))+$"


class AlertThresholds(BaseModel):
    """When the alerts fire."""

    model_config = ConfigDict(extra="forbid")

    ttft_slo_ms: float = Field(
        DEFAULT_TTFT_SLO_MS, gt=0, description="TTFT p99 above this (ms) fires VllmTtftP99AboveSlo."
    )
    kv_cache_usage: float = Field(
        0.9,
        gt=0,
        le=1,
        description="KV cache usage (1 = full) above this fires VllmKvCacheNearFull.",
    )
    error_ratio: float = Field(
        0.05, gt=0, le=1, description="Share of 5xx responses above this fires VllmErrorRatioHigh."
    )
    window: str = Field(
        "5m", pattern=DURATION, description="The range of the rate()s and of deriv()."
    )
    queue_for: str = Field(
        "5m",
        pattern=DURATION,
        description="How long requests must wait, in a growing queue, before VllmQueueGrowing.",
    )
    for_: str = Field(
        "5m", pattern=DURATION, description="How long every other condition must hold."
    )
    down_for: str = Field(
        "1m", pattern=DURATION, description="How long a target must fail its scrapes."
    )


@dataclass(frozen=True)
class AlertRule:
    """One alert as data."""

    name: str
    signal: str  # PromQL: the watched quantity
    expr: str  # PromQL: signal compared with its threshold
    for_: str
    severity: str
    summary: str


def alert_rules(cfg: DeploymentConfig, t: AlertThresholds | None = None) -> list[AlertRule]:
    """The deployment's alerts (pure)."""
    t = t or AlertThresholds()
    m = model_selector(cfg)
    waiting = f"sum by (replica) (vllm:num_requests_waiting{m})"
    rising = f"sum by (replica) (deriv(vllm:num_requests_waiting{m}[{t.window}]))"
    kv = f"max by (replica) (vllm:kv_cache_usage_perc{m})"
    errors = error_ratio(window=t.window, by="replica")
    ttft = (
        "histogram_quantile(0.99, sum by (le, replica) "
        f"(rate(vllm:time_to_first_token_seconds_bucket{m}[{t.window}])))"
    )
    up = 'up{replica!=""}'
    slo_s = t.ttft_slo_ms / 1000
    return [
        AlertRule(
            "VllmReplicaDown",
            up,
            f"{up} == 0",
            t.down_for,
            "critical",
            "Prometheus cannot scrape replica {{ $labels.replica }} ({{ $labels.instance }}).",
        ),
        AlertRule(
            "VllmQueueGrowing",
            waiting,
            f"({waiting} > 0) and ({rising} > 0)",
            t.queue_for,
            "warning",
            "Replica {{ $labels.replica }}: {{ $value }} requests waiting and the queue grows.",
        ),
        AlertRule(
            "VllmKvCacheNearFull",
            kv,
            f"{kv} > {t.kv_cache_usage:g}",
            t.for_,
            "warning",
            f"Replica {{{{ $labels.replica }}}}: KV cache above {t.kv_cache_usage:.0%} "
            "(preemptions follow).",
        ),
        AlertRule(
            "VllmErrorRatioHigh",
            errors,
            f"{errors} > {t.error_ratio:g}",
            t.for_,
            "critical",
            f"Replica {{{{ $labels.replica }}}}: more than {t.error_ratio:.0%} of responses "
            "are 5xx.",
        ),
        AlertRule(
            "VllmTtftP99AboveSlo",
            ttft,
            f"{ttft} > {slo_s:g}",
            t.for_,
            "warning",
            f"Replica {{{{ $labels.replica }}}}: TTFT p99 above the {slo_s:g} s objective.",
        ),
    ]


def render_alerts(cfg: DeploymentConfig, t: AlertThresholds | None = None) -> dict[str, Any]:
    """A Prometheus rule file (one group) as plain data (pure)."""
    return {
        "groups": [
            {
                "name": f"medgemma-serve {cfg.model_name}",
                "rules": [
                    {
                        "alert": r.name,
                        "expr": r.expr,
                        "for": r.for_,
                        "labels": {"severity": r.severity, "model_name": cfg.model_name},
                        "annotations": {"summary": r.summary},
                    }
                    for r in alert_rules(cfg, t)
                ],
            }
        ]
    }
