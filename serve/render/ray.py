"""Deployment config -> the commands of vLLM's own multi-node mode on Ray (pure).

`render_ray` returns the `ray start` command of the head node, the one every worker node
runs, and the vLLM server command (run on the head once the cluster is up) with
`--distributed-executor-backend ray` and the config's parallel sizes: tensor parallel
within a node, pipeline stages and/or data-parallel replicas across nodes
(`--data-parallel-backend ray`). `to_script` lays them out as a commented shell script.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from serve.command.argv import SERVER_MODULE, for_host, to_server_env, to_vllm_argv
from serve.config.deployment import DeploymentConfig
from serve.host import host_cpu

HEAD_IP_VAR = "RAY_HEAD_IP"


class RenderError(ValueError):
    """A config that a target cannot express; the message names the field."""


@dataclass(frozen=True)
class RayLaunch:
    """What to run where. Commands are argv lists; `env` is the server's environment
    (also needed on every node: vLLM copies VLLM_* and HF_* variables to Ray workers)."""

    head: list[str]
    worker: list[str]
    workers: int
    serve: list[str]
    env: dict[str, str]
    notes: list[str] = field(default_factory=list)


def head_address(cfg: DeploymentConfig) -> str:
    """host:port workers join; `${RAY_HEAD_IP}` when the config names no address."""
    host = cfg.ray.head_address or "${" + HEAD_IP_VAR + "}"
    return f"{host}:{cfg.ray.port}"


def node_resources(cfg: DeploymentConfig) -> list[str]:
    """What each node offers Ray: its GPUs, or (CPU configs) the cores it lends."""
    if cfg.device == "cuda":
        return [f"--num-gpus={cfg.devices_per_node}"]
    if cfg.ray.num_cpus_per_node is not None:
        return [f"--num-cpus={cfg.ray.num_cpus_per_node}"]
    return []


def ray_head_command(cfg: DeploymentConfig) -> list[str]:
    """`ray start` on the head node."""
    cmd = ["ray", "start", "--disable-usage-stats", *node_resources(cfg), "--head"]
    cmd.append(f"--port={cfg.ray.port}")
    if cfg.ray.head_address:
        cmd.append(f"--node-ip-address={cfg.ray.head_address}")
    return cmd


def ray_worker_command(cfg: DeploymentConfig, address: str | None = None) -> list[str]:
    """`ray start` on each worker node: join the head and stay in the foreground."""
    address = address or head_address(cfg)
    return ["ray", "start", "--disable-usage-stats", *node_resources(cfg), "--block"] + [
        f"--address={address}"
    ]


def ray_backend_flags(cfg: DeploymentConfig) -> list[str]:
    """vLLM flags that put the engine's workers (and data-parallel engines) on Ray."""
    flags = ["--distributed-executor-backend", "ray"]
    if cfg.data_parallel_size > 1:
        flags += ["--data-parallel-backend", "ray"]
        if cfg.nodes > 1:
            local = max(cfg.data_parallel_size // cfg.nodes, 1)
            flags += ["--data-parallel-size-local", str(local)]
    return flags


def topology_notes(cfg: DeploymentConfig) -> list[str]:
    """Warnings about a layout that runs but is slow."""
    notes = []
    if cfg.nodes > 1 and cfg.tensor_parallel_size > cfg.devices_per_node:
        notes.append(
            f"tensor_parallel_size {cfg.tensor_parallel_size} spans nodes "
            f"({cfg.devices_per_node} devices each): every layer then all-reduces across "
            "the network; prefer tensor parallel within a node, pipeline stages across nodes"
        )
    return notes


def check_multi_node(cfg: DeploymentConfig) -> None:
    """Refuse data-parallel replicas that cannot sit whole on the nodes."""
    if cfg.nodes > 1 and cfg.data_parallel_size > 1 and cfg.data_parallel_size % cfg.nodes:
        raise RenderError(
            f"data_parallel_size: {cfg.data_parallel_size} replicas cannot be spread evenly "
            f"over {cfg.nodes} nodes (each node must hold whole replicas of tensor x pipeline "
            f"= {cfg.tensor_parallel_size * cfg.pipeline_parallel_size} devices); use a "
            f"multiple of {cfg.nodes}"
        )


def on_ray(cfg: DeploymentConfig) -> DeploymentConfig:
    """`cfg` as the Ray executor can run it: without the processed-image cache. vLLM keeps
    that cache in shared memory (serve.command.argv.MM_CACHE_TYPE), whose readers need a lock
    that Ray's executor does not pass to its workers (vllm/v1/executor/ray_executor.py; the
    worker then fails to start: vllm/multimodal/cache/factories.py). Data-parallel engines
    use an API-server-only cache instead, which Ray does not affect."""
    if cfg.mm_processor_cache_gb > 0 and cfg.data_parallel_size == 1:
        return cfg.model_copy(update={"mm_processor_cache_gb": 0})
    return cfg


def render_ray(cfg: DeploymentConfig, model_path: str | None = None) -> RayLaunch:
    """Head, worker and server commands for `cfg` (pure but for the host CPU flags that
    resolve `dtype: auto` on the CPU, as `python -m serve` does). `model_path` replaces
    `cfg.model`, e.g. with the folder a stand-in was built into."""
    if cfg.stand_in is not None and model_path is None:
        raise RenderError("stand_in: pass the folder the stand-in was built into as model_path")
    check_multi_node(cfg)
    # the same command as `python -m serve` (dtype auto resolved as on this machine)
    host = for_host(on_ray(cfg), host_cpu()["flags"])
    serve = ["python", "-m", SERVER_MODULE, *to_vllm_argv(host, model_path)]
    env = {"RAY_ADDRESS": head_address(cfg), **to_server_env(cfg, {})}
    return RayLaunch(
        head=ray_head_command(cfg),
        worker=ray_worker_command(cfg),
        workers=cfg.nodes - 1,
        serve=serve + ray_backend_flags(cfg),
        env=env,
        notes=topology_notes(cfg) + cache_notes(cfg),
    )


def cache_notes(cfg: DeploymentConfig) -> list[str]:
    if on_ray(cfg).mm_processor_cache_gb == cfg.mm_processor_cache_gb:
        return []
    return [
        f"mm_processor_cache_gb {cfg.mm_processor_cache_gb:g} is rendered as 0: vLLM's "
        "shared-memory image cache cannot run on Ray's executor, so every request's images "
        "are processed again"
    ]


def _shell_words(argv: list[str]) -> str:
    """shlex.join, but leave ${RAY_HEAD_IP} expandable by the shell."""
    return " ".join(f'"{a}"' if "${" in a else shlex.quote(a) for a in argv)


def env_assignments(env: dict[str, str]) -> str:
    """`K=V` prefix words the shell treats as assignments (only the value is quoted)."""
    return " ".join(f'{k}="{v}"' if "${" in v else f"{k}={shlex.quote(v)}" for k, v in env.items())


def to_script(launch: RayLaunch, cfg: DeploymentConfig) -> str:
    """The launch as a commented shell script (run each part on the node it names)."""
    what = (
        f"tensor_parallel_size {cfg.tensor_parallel_size} x pipeline_parallel_size "
        f"{cfg.pipeline_parallel_size} x data_parallel_size {cfg.data_parallel_size} = "
        f"{cfg.world_size} {'GPUs' if cfg.device == 'cuda' else 'CPU ranks'} "
        f"on {cfg.nodes} node(s), {cfg.devices_per_node} each"
    )
    lines = [
        f"# {cfg.model_name} with vLLM's Ray backend: {what}.",
        "# Every node needs the same vLLM (0.32.0) and Python environment, the model (export",
        "# HF_TOKEN for gated hub repos, or the same local path), and the head's address; the",
        "# head also needs this project installed (`pip install .`: the API server imports serve);",
        f"# export {HEAD_IP_VAR}=<head node IP> on every node"
        + (f" (set here to {cfg.ray.head_address})." if cfg.ray.head_address else "."),
        "# The API key comes from $" + cfg.api_key_env + " on the head node (never written here).",
    ]
    lines += [f"# NOTE: {n}" for n in launch.notes]
    lines += ["", "# 1. On the head node:", _shell_words(launch.head)]
    if launch.workers:
        lines += [
            "",
            f"# 2. On each of the {launch.workers} worker node(s) (stays in the foreground):",
            _shell_words(launch.worker),
        ]
    lines += [
        "",
        f"# {3 if launch.workers else 2}. On the head node, once `ray status` shows "
        f"{cfg.nodes} node(s):",
        f'[ -n "${{{cfg.api_key_env}:-}}" ] && export VLLM_API_KEY="${cfg.api_key_env}"',
        env_assignments(launch.env) + " " + _shell_words(launch.serve),
        "",
        "# Stop: Ctrl-C the server, then `ray stop` on every node.",
    ]
    return "\n".join(lines) + "\n"
