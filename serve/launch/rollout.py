"""What the running replicas fleet decides, as pure functions (serve.launch.fleet acts).

On SIGHUP: whether a re-read config can be rolled out (a config that changes what a
rolling restart cannot apply, serve.command.replicas.rollout_blockers, is refused with
one `error:` line and nothing is touched) and the replica configs it rolls out, one at a
time in replica order. When vllm-router exits: whether the config's `restart` policy lets
it be started again. And the one-line messages of each.
"""

from __future__ import annotations

from collections.abc import Sequence

from serve.command.replicas import replica_configs, rollout_blockers
from serve.config.deployment import DeploymentConfig, RestartPolicy


def one_line(message: str) -> str:
    """A message of several lines (a ConfigError's: the file, then a line per field) as
    one line: `first: second; third`."""
    first, *rest = [ln.strip() for ln in message.splitlines() if ln.strip()] or [""]
    return f"{first}: {'; '.join(rest)}" if rest else first


def refusal(running: DeploymentConfig, new: DeploymentConfig) -> str | None:
    """Why `new` cannot be rolled out over `running`, or None if it can."""
    blockers = rollout_blockers(running, new)
    if not blockers:
        return None
    return (
        f"a rolling restart cannot change {', '.join(blockers)}; these stay as the "
        "launcher started them (replica count, ports, router, device): stop and "
        "start the launcher to change them"
    )


def refused_line(why: str) -> str:
    return f"error: SIGHUP: {why}; still serving with the running config"


def rollout_plan(new: DeploymentConfig, devices: Sequence[str]) -> list[DeploymentConfig]:
    """The replica configs a rollout of `new` starts, in the order it restarts them (the
    replicas keep their cores or GPUs)."""
    return replica_configs(new, list(devices))


def restart_refusal(policy: RestartPolicy, restarts: int) -> str | None:
    """Why vllm-router or the edge, after `restarts` restarts, may not be started again (the
    field that says so), or None if it may."""
    if not policy.enabled:
        return "restart.enabled is off"
    if restarts >= policy.max_restarts:
        return "restart.max_restarts"
    return None


def stopped_line(replica: int, elapsed_s: float) -> str:
    """A rollout that stopped at `replica` (which did not take the new config)."""
    return (
        f"rolling restart stopped at replica {replica} after {elapsed_s:.0f} s: replicas "
        "before it run the new config, the others the previous one"
    )


def done_line(count: int, elapsed_s: float) -> str:
    return f"rolling restart done: {count} replicas restarted one at a time in {elapsed_s:.0f} s"
