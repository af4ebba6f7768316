"""What the edge of a replicas deployment is, from its config (pure): the nginx site
(serve.edge.nginx.Site), the audit file, and audit rotation's names."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from serve.command.replicas import ports
from serve.config.deployment import DeploymentConfig
from serve.edge.nginx import Site


def audit_path(cfg: DeploymentConfig, log_dir: Path) -> Path:
    """The edge's audit trail: `auth.audit.path`, else audit-PORT.jsonl in the log folder."""
    return (cfg.auth.audit.path or log_dir / f"audit-{cfg.port}.jsonl").expanduser().absolute()


def run_dir(cfg: DeploymentConfig, log_dir: Path) -> Path:
    """nginx's configuration, pid and temporary files (beside the logs, private)."""
    return (log_dir / f"edge-{cfg.port}").absolute()


def checks_keys(cfg: DeploymentConfig, api_key: str | None) -> bool:
    """Whether the edge asks the key check: a keys file or the single key is set."""
    return cfg.auth.keys_file is not None or bool(api_key)


def site_for(cfg: DeploymentConfig, log_dir: Path, internal_key: str, api_key: str | None) -> Site:
    """The edge's nginx site for a replicas config (`api_key`: $api_key_env's value)."""
    p = ports(cfg)
    tls = None
    if cfg.ssl_certfile is not None and cfg.ssl_keyfile is not None:
        tls = (cfg.ssl_certfile.expanduser().absolute(), cfg.ssl_keyfile.expanduser().absolute())
    return Site(
        host=cfg.host,
        port=p.edge,
        router_port=p.router,
        authz_port=p.authz if checks_keys(cfg, api_key) else None,
        internal_key=internal_key,
        audit_path=audit_path(cfg, log_dir),
        run_dir=run_dir(cfg, log_dir),
        max_body_bytes=cfg.max_request_bytes,
        timeout_s=cfg.router.request_timeout_s,
        tls=tls,
    )


def rotated_name(path: Path, day: dt.date) -> Path:
    """Where the audit file of `day` goes at midnight UTC: PATH.YYYY-MM-DD (the request
    guard's TimedRotatingFileHandler names them the same way)."""
    return path.with_name(f"{path.name}.{day.isoformat()}")


def expired(path: Path, existing: list[Path], retention_days: int) -> list[Path]:
    """The rotated files of `path` beyond the newest `retention_days` (pure on names)."""
    prefix = f"{path.name}."
    rotated = sorted(p for p in existing if p.name.startswith(prefix))
    return rotated[: max(0, len(rotated) - retention_days)]
