"""What the edge of a replicas deployment is, from its config (pure): the nginx site
(serve.edge.nginx.Site), the audit file, and where the replicas report their usage."""

from __future__ import annotations

from pathlib import Path

from serve.command.replicas import ports
from serve.config.deployment import DeploymentConfig
from serve.edge.authz import USAGE_PATH
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


def usage_url(cfg: DeploymentConfig) -> str:
    """Where each replica's guard posts its requests' numbers: the key check's /usage."""
    return f"http://127.0.0.1:{ports(cfg).authz}{USAGE_PATH}"


def site_for(
    cfg: DeploymentConfig, log_dir: Path, internal_key: str, api_key: str | None, audit_tag: str
) -> Site:
    """The edge's nginx site for a replicas config (`api_key`: $api_key_env's value;
    `audit_tag`: the launch's secret tag on nginx's audit lines to the key check)."""
    p = ports(cfg)
    tls = None
    if cfg.ssl_certfile is not None and cfg.ssl_keyfile is not None:
        tls = (cfg.ssl_certfile.expanduser().absolute(), cfg.ssl_keyfile.expanduser().absolute())
    return Site(
        host=cfg.host,
        port=p.edge,
        router_port=p.router,
        authz_port=p.authz,
        internal_key=internal_key,
        audit_path=audit_path(cfg, log_dir),
        run_dir=run_dir(cfg, log_dir),
        max_body_bytes=cfg.max_request_bytes,
        timeout_s=cfg.router.request_timeout_s,
        tls=tls,
        checks_keys=checks_keys(cfg, api_key),
        audit_tag=audit_tag,
    )
