"""A replicas config -> one config per replica and vllm-router's command line (pure).

Replica i is the deployment config on 127.0.0.1, port `replicas.first_port + i`, bound to
its own cores (VLLM_CPU_OMP_THREADS_BIND) or GPUs (CUDA_VISIBLE_DEVICES). The router
listens on 127.0.0.1 and sends each request to one replica; the edge (nginx, serve.edge)
is the only listener on the config's host and port: it checks the callers' keys and
forwards the API and the probes to the router, never the router's management routes.

Keys: vllm-router 0.1.17 does not check clients' keys itself; it forwards the
`Authorization` header unchanged to the replica it picks. The edge replaces every caller's
header with an internal key made for each launch, the only key the replicas accept
(their `api_key_env`); a request that reaches a replica or the router any other way gets
the replica's 401, which the router relays (tests/e2e/test_replicas.py). Seen with 0.1.17
against stub workers (2026-11-30): a 401 is not retried and does not count against the
replica's circuit breaker. Its health checks GET /health, which needs no key. Its
`--api-key` flag, which sends one key to the workers, is not used: it would put the key on
the router's command line. Service keys, limits and the audit trail (`auth:`) are the
edge's: a replica's config has none.

A rolling restart (SIGHUP to the launcher) restarts the replicas with a re-read config;
`rollout_blockers` names the changes it cannot apply, the ones that shape the router's
command line, the replicas' ports and URLs, or each replica's cores or GPUs.
"""

from __future__ import annotations

import sys
from collections.abc import Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from serve.command.argv import flag
from serve.config.auth import AuthSettings
from serve.config.deployment import DeploymentConfig
from serve.config.replicas import ReplicaSettings, core_ids

REPLICA_HOST = "127.0.0.1"
# How long vllm-router waits for a replica's /health, at start and on POST /add_worker.
WORKER_STARTUP_TIMEOUT_S = 60
# Fields a rolling restart keeps as the launcher started them: the router's command line
# (host, port, router), the replicas' ports (replicas.first_port, replicas.count), each
# replica's cores or GPUs (device, replicas.cpus/gpus, the ranks per replica), and the
# edge's keys, limits and audit (auth, api_key_env: the edge and the replicas' internal
# key are set up once per launch).
FIXED_IN_ROLLOUT = (
    "api_key_env",
    "auth",
    "device",
    "host",
    "port",
    "replicas",
    "router",
    "tensor_parallel_size",
    "pipeline_parallel_size",
)


class PlacementError(ValueError):
    """The replicas do not fit this machine; the message names the field."""


@dataclass(frozen=True)
class Ports:
    """Every port a replicas deployment listens on: the edge (nginx) on the config's host,
    the rest on 127.0.0.1 but the router's metrics (the config's host)."""

    edge: int
    replicas: list[int]
    metrics: int
    router: int  # vllm-router's API, on loopback: only the edge and the launcher reach it
    authz: int  # the edge's key check (serve.edge.authz), on loopback


def settings(cfg: DeploymentConfig) -> ReplicaSettings:
    if cfg.replicas is None:
        raise ValueError("the config has no `replicas:` section")
    return cfg.replicas


def ports(cfg: DeploymentConfig) -> Ports:
    """The edge on `port`, replica i on first_port + i, the router's metrics after them,
    then the router's own API port and the key check's (metrics + 1, metrics + 2)."""
    r = settings(cfg)
    first = r.first_port or cfg.port + 1
    replica_ports = [first + i for i in range(r.count)]
    metrics = cfg.router.metrics_port or replica_ports[-1] + 1
    return Ports(cfg.port, replica_ports, metrics, metrics + 1, metrics + 2)


def cpu_placement(cfg: DeploymentConfig, cores: Collection[int]) -> list[str]:
    """Each replica's VLLM_CPU_OMP_THREADS_BIND on a machine with these cores: the listed
    `replicas.cpus`, else the cores split evenly (a core per rank at least).
    Raises PlacementError when the replicas do not fit."""
    r = settings(cfg)
    have = sorted(cores)
    ranks = cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    if r.cpus is not None:
        for i, spec in enumerate(r.cpus):
            missing = sorted(set(core_ids(spec)) - set(have))
            if missing:
                raise PlacementError(
                    f"replicas.cpus: replica {i} is bound to core(s) {missing}, which this "
                    f"machine does not offer (cores {have})"
                )
        return list(r.cpus)
    need = r.count * ranks
    if need > len(have):
        raise PlacementError(
            f"replicas.count: {r.count} replicas x {ranks} rank(s) need {need} cores; this "
            f"machine offers {len(have)}"
        )
    per_rank = len(have) // need
    groups = [have[i * per_rank : (i + 1) * per_rank] for i in range(need)]
    specs = [",".join(str(c) for c in g) for g in groups]
    return ["|".join(specs[i * ranks : (i + 1) * ranks]) for i in range(r.count)]


def gpu_placement(cfg: DeploymentConfig, gpu_count: int) -> list[str]:
    """Each replica's CUDA_VISIBLE_DEVICES on a machine with `gpu_count` GPUs: the listed
    `replicas.gpus`, else consecutive blocks. Raises PlacementError when they do not fit."""
    r = settings(cfg)
    ranks = cfg.tensor_parallel_size * cfg.pipeline_parallel_size
    if r.gpus is not None:
        for i, spec in enumerate(r.gpus):
            missing = [g for g in spec.split(",") if int(g) >= gpu_count]
            if missing:
                raise PlacementError(
                    f"replicas.gpus: replica {i} uses GPU(s) {','.join(missing)}; this "
                    f"machine has {gpu_count} GPU(s)"
                )
        return list(r.gpus)
    need = r.count * ranks
    if need > gpu_count:
        raise PlacementError(
            f"replicas.count: {r.count} replicas x {ranks} GPU(s) need {need} GPUs; this "
            f"machine has {gpu_count}"
        )
    return [",".join(str(i * ranks + k) for k in range(ranks)) for i in range(r.count)]


def replica_configs(cfg: DeploymentConfig, placement: Sequence[str]) -> list[DeploymentConfig]:
    """One single-server config per replica: its port on 127.0.0.1, its devices, and
    vLLM's count of the requests its API server is handling on GET /load (a rolling restart
    waits for 0 before stopping it: vLLM's own drain covers only requests its engine holds,
    and aborts those still being preprocessed, e.g. their images)."""
    out = []
    for port, devices in zip(ports(cfg).replicas, placement, strict=True):
        update: dict[str, object] = {
            "host": REPLICA_HOST,
            "port": port,
            "replicas": None,
            "auth": AuthSettings(),  # keys, limits and audit are the edge's (serve.edge)
            "extra_args": {**cfg.extra_args, "enable_server_load_tracking": True},
        }
        if cfg.device == "cpu":
            update["cpu_omp_threads_bind"] = devices
        else:
            update["env"] = {**cfg.env, "CUDA_VISIBLE_DEVICES": devices}
        out.append(cfg.model_copy(update=update))
    return out


def replica_url(replica: DeploymentConfig) -> str:
    scheme = "https" if replica.ssl_certfile else "http"
    return f"{scheme}://{REPLICA_HOST}:{replica.port}"


def policy_flags(cfg: DeploymentConfig) -> list[str]:
    """The router's policy, retry, circuit-breaker, health-check, queue and log flags."""
    rt = cfg.router
    argv = flag("policy", rt.policy)
    re_, cb, hc, q = rt.retries, rt.circuit_breaker, rt.health_check, rt.queue
    if re_.enabled:
        argv += flag("retry_max_retries", re_.max_retries)
        argv += flag("retry_initial_backoff_ms", re_.initial_backoff_ms)
        argv += flag("retry_max_backoff_ms", re_.max_backoff_ms)
        argv += flag("retry_backoff_multiplier", re_.backoff_multiplier)
        argv += flag("retry_jitter_factor", re_.jitter_factor)
    else:
        argv += ["--disable-retries"]
    if cb.enabled:
        argv += flag("cb_failure_threshold", cb.failure_threshold)
        argv += flag("cb_success_threshold", cb.success_threshold)
        argv += flag("cb_timeout_duration_secs", cb.timeout_s)
        argv += flag("cb_window_duration_secs", cb.window_s)
    else:
        argv += ["--disable-circuit-breaker"]
    argv += flag("health_check_interval_secs", hc.interval_s)
    argv += flag("health_check_timeout_secs", hc.timeout_s)
    argv += flag("health_failure_threshold", hc.failure_threshold)
    argv += flag("health_success_threshold", hc.success_threshold)
    argv += flag("health_check_endpoint", hc.endpoint)
    argv += flag("max_concurrent_requests", q.max_concurrent_requests)
    argv += flag("queue_size", q.size)
    argv += flag("queue_timeout_secs", q.timeout_s)
    argv += flag("request_timeout_secs", rt.request_timeout_s)
    argv += flag("log_level", rt.log_level)
    return argv


def router_argv(cfg: DeploymentConfig, worker_urls: Sequence[str]) -> list[str]:
    """vllm-router's arguments for a fixed list of replicas on this machine."""
    p = ports(cfg)
    argv = flag("host", REPLICA_HOST) + flag("port", p.router)  # behind the edge only
    argv += ["--worker-urls", *worker_urls]
    argv += policy_flags(cfg)
    argv += flag("prometheus_host", cfg.host) + flag("prometheus_port", p.metrics)
    # The replicas are healthy before the router starts; do not wait long for them.
    argv += flag("worker_startup_timeout_secs", WORKER_STARTUP_TIMEOUT_S)
    argv += flag("worker_startup_check_interval", 1)
    return argv


def router_command(argv: Sequence[str]) -> list[str]:
    """This Python running vllm-router's launcher (its console script's `main`)."""
    return [sys.executable, "-m", "vllm_router.launch_router", *argv]


def check_router_argv(argv: Sequence[str]) -> str | None:
    """Parse `argv` with vllm-router's own parser: None if it accepts it, else its error."""
    import contextlib
    import io

    from vllm_router.launch_router import parse_router_args

    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parse_router_args(list(argv))
    except SystemExit as exc:
        if exc.code:
            lines = [ln for ln in err.getvalue().strip().splitlines() if ln.strip()]
            return lines[-1] if lines else f"vllm-router's parser exited with status {exc.code}"
    return None


def changed_leaves(
    old: Mapping[str, Any], new: Mapping[str, Any], prefix: str = ""
) -> Iterator[tuple[str, Any, Any]]:
    """(dotted name, old value, new value) of every leaf that differs between two nested
    mappings (pure); a section present in one and absent (None) in the other is one leaf."""
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            yield from changed_leaves(a, b, f"{prefix}{key}.")
        elif a != b:
            yield f"{prefix}{key}", a, b


def rollout_blockers(old: DeploymentConfig, new: DeploymentConfig) -> list[str]:
    """The changes from `old` to `new` that a rolling restart cannot apply, each as
    `field (old -> new)`; empty when the replicas can be restarted one at a time with
    `new` (pure)."""
    fixed = set(FIXED_IN_ROLLOUT)
    before = old.model_dump(mode="json", include=fixed)
    after = new.model_dump(mode="json", include=fixed)
    out = [f"{name} ({a!r} -> {b!r})" for name, a, b in changed_leaves(before, after)]
    if (old.ssl_certfile is None) != (new.ssl_certfile is None):
        out.append("ssl_certfile (TLS on or off: the replicas' URLs in the router)")
    return out
