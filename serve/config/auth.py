"""Who may call a deployment: the `auth:` section of a deployment config (per-service
keys and the audit trail). Whether the keys file exists and is private is checked by the
launch pre-flight (serve.launch.preflight), not here."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class AuditSettings(BaseModel):
    """The audit trail: one JSON line per request (time, request id, service, route,
    status, prompt and completion tokens, images, latency; never a prompt, an image, an
    answer or a key). A single server writes it while `auth.keys_file` is set; the edge of
    a `replicas:` deployment always does."""

    model_config = ConfigDict(extra="forbid")

    path: Path | None = Field(
        None,
        description="The audit file. Unset: audit-PORT.jsonl beside the server log "
        "(logs/audit-PORT.jsonl by default). `python -m serve` prints it as `audit: PATH`.",
    )
    retention_days: int = Field(
        30,
        ge=1,
        description="The file is rotated at midnight UTC (the old one renamed PATH.YYYY-MM-DD); "
        "rotated files beyond this many are deleted.",
    )


class AuthSettings(BaseModel):
    """Per-service API keys, beside or instead of the single `api_key_env` key."""

    model_config = ConfigDict(extra="forbid")

    keys_file: Path | None = Field(
        None,
        description="Keys file written by `python -m serve keys add|revoke` (only hashes of "
        "the keys, each service's limits; mode 0600). Each request's key names its service; "
        "changes take effect within about a second, without a restart. Unset: no service keys.",
    )
    audit: AuditSettings = Field(
        default_factory=AuditSettings, description="The audit trail of every request."
    )
