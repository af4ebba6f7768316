"""A deployment config -> the Prometheus configuration that scrapes it (pure).

One server: its /metrics. With `replicas:`: every replica's /metrics (127.0.0.1, the ports
of serve.command.replicas.ports) and vllm-router's Prometheus port. Every target carries
`replica` ("0", "1", ... or "router") and `role` ("replica" or "router") labels, so a
query can be read per replica and summed over them.

No API key is sent: vLLM 0.32 checks its key only under /v1, /v2, /inference and /cohere
(vllm.entrypoints.serve.middleware.authenticate.GUARDED_PREFIX) and serve.guard leaves
/metrics open (OPEN_PATHS), so the key never enters the configuration or a file.
tests/unit/serve/monitor/test_monitor.py fails if either changes.

With TLS (`ssl_certfile`) the replicas are scraped over https without checking the
certificate: Prometheus reaches them by a loopback address the certificate need not name,
and it has no option to check the chain but not the name.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import yaml

from serve.command.replicas import REPLICA_HOST, ports
from serve.config.deployment import DeploymentConfig
from serve.process import client_host

SCRAPE_INTERVAL_S = 2
METRICS_PATH = "/metrics"


def _target(address: str, replica: str, role: str) -> dict[str, Any]:
    return {"targets": [address], "labels": {"replica": replica, "role": role}}


def scrape_config(
    cfg: DeploymentConfig, interval_s: int = SCRAPE_INTERVAL_S, rule_files: Sequence[str] = ()
) -> dict[str, Any]:
    """Prometheus' configuration (as a dict) scraping the deployment `cfg` runs, evaluating
    the rule files `rule_files` (paths relative to the configuration file)."""
    vllm_job: dict[str, Any] = {"job_name": "vllm", "metrics_path": METRICS_PATH}
    if cfg.ssl_certfile is not None:
        vllm_job["scheme"] = "https"
        vllm_job["tls_config"] = {"insecure_skip_verify": True}
    jobs = [vllm_job]
    if cfg.replicas is None:
        address = f"{client_host(cfg.host)}:{cfg.port}"
        vllm_job["static_configs"] = [_target(address, "0", "replica")]
    else:
        p = ports(cfg)
        vllm_job["static_configs"] = [
            _target(f"{REPLICA_HOST}:{port}", str(i), "replica")
            for i, port in enumerate(p.replicas)
        ]
        router = f"{client_host(cfg.host)}:{p.metrics}"
        jobs.append(
            {
                "job_name": "vllm-router",
                "metrics_path": METRICS_PATH,
                "static_configs": [_target(router, "router", "router")],
            }
        )
    config: dict[str, Any] = {
        "global": {"scrape_interval": f"{interval_s}s", "evaluation_interval": f"{interval_s}s"},
    }
    if rule_files:
        config["rule_files"] = list(rule_files)
    config["scrape_configs"] = jobs
    return config


def to_yaml(config: dict[str, Any]) -> str:
    """The configuration as the YAML file Prometheus reads."""
    return yaml.safe_dump(config, sort_keys=False)
