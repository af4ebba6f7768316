"""Supervision of a server after start-up: the `restart:` section of a deployment config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RestartPolicy(BaseModel):
    """Whether the launcher restarts what dies after start-up: the vLLM server (each
    replica's), and in front of replicas vllm-router and the edge (nginx, its key check)."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(False, description="Restart the server if it exits unexpectedly.")
    max_restarts: int = Field(3, ge=0, description="Give up after this many restarts.")
    backoff_s: float = Field(2.0, ge=0, description="Seconds to wait before each restart.")
    unhealthy_after_s: float | None = Field(
        60.0,
        gt=0,
        description="With `enabled`: treat a server whose process is alive but whose /health "
        "has not answered 200 for this many seconds as dead: kill its process group and "
        "restart it like an exit (vLLM's API server can hang in its own shutdown after its "
        "engine dies). null: only an exit counts.",
    )
