"""The edge of a rendered replicas deployment (pure): nginx, and the key check when the
config has a key source, as sidecars of the router pod (serve.render.k8s_router).

The same shape as on one machine (serve.edge): nginx is the pod's only listener on the
API port, the one the Service targets; vllm-router and the key check listen on the pod's
loopback. nginx forwards `/v1/...` and the probes to the router and answers 404 to the
router's management routes. Its configuration is serve.edge.nginx's, in a ConfigMap, with
a placeholder where the replicas' internal key goes: the edge container reads the key
from its Secret (`kubernetes.internal_key_secret`) at start, checks it is a URL-safe
token and writes the real file into the pod's memory. The keys file comes from
`kubernetes.keys_secret`, the single key from `kubernetes.api_key_secret`; no manifest
holds a key. The audit lines go to the edge container's stdout (`kubectl logs -c edge`):
the cluster's log pipeline keeps and rotates them. They are nginx's lines, without the token
and image counts the key check joins in on one machine (the replicas do not report to it
here), and the services' tokens per minute are not charged: requests per minute are.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from serve.command.replicas import ports
from serve.config.deployment import DeploymentConfig
from serve.edge.authz import KEY_ENV, READY_PATH
from serve.edge.nginx import Site, nginx_config
from serve.render.k8s_pod import (
    INTERNAL_KEY_FIELD,
    TLS_CERT,
    TLS_KEY,
    TLS_MOUNT,
    edge_serves_tls,
    secret_env,
    tls_volume,
)

EDGE_DIR = "/etc/medgemma-serve/edge"  # the ConfigMap: nginx.conf with the placeholder
RUN_DIR = "/run/medgemma-edge"  # nginx's real configuration, pid and temporary files
KEYS_DIR = "/etc/medgemma-serve/keys"  # kubernetes.keys_secret: the keys file as `keys`
KEY_PLACEHOLDER = "MEDGEMMA_INTERNAL_KEY_PLACEHOLDER"  # a token nginx_config accepts
INTERNAL_KEY_ENV = "MEDGEMMA_INTERNAL_KEY"
AUDIT = Path("/dev/stdout")
CONFIG_SUFFIX = "-edge"
Manifest = dict[str, Any]


def checks_keys(cfg: DeploymentConfig) -> bool:
    """The edge asks the key check: the keys file's or the single key's Secret is set."""
    return cfg.kubernetes.keys_secret is not None or cfg.kubernetes.api_key_secret is not None


def edge_site(cfg: DeploymentConfig) -> Site:
    """The pod's nginx site: every pod address on the API port, the router and the key
    check on loopback, the internal key as the placeholder."""
    p = ports(cfg)
    return Site(
        host="0.0.0.0",
        port=cfg.port,
        router_port=p.router,
        authz_port=p.authz if checks_keys(cfg) else None,
        internal_key=KEY_PLACEHOLDER,
        audit_path=AUDIT,
        run_dir=Path(RUN_DIR),
        max_body_bytes=cfg.max_request_bytes,
        timeout_s=cfg.router.request_timeout_s,
        tls=(Path(TLS_CERT), Path(TLS_KEY)) if edge_serves_tls(cfg) else None,
        checks_keys=checks_keys(cfg),
    )


def edge_start_script(secret: str) -> str:
    """sh: refuse a key nginx could not hold, put it in place of the placeholder, run
    nginx in the foreground. `secret` names the Secret in the refusal."""
    refusal = (
        f"edge: the internal key (Secret {secret}, key {INTERNAL_KEY_FIELD}) must be a "
        "URL-safe token of 16+ characters (A-Z a-z 0-9 _ -)"
    )
    return "\n".join(
        [
            "set -eu",
            f'key="${INTERNAL_KEY_ENV}"',
            'case "$key" in',
            f"  *[!A-Za-z0-9_-]*|'') echo '{refusal}' >&2; exit 1 ;;",
            "esac",
            f"if [ ${{#key}} -lt 16 ]; then echo '{refusal}' >&2; exit 1; fi",
            # nginx's workers (not root) must reach their temporary files below it.
            f"mkdir -p {RUN_DIR} && chmod 711 {RUN_DIR}",
            f'(umask 077; sed "s/{KEY_PLACEHOLDER}/$key/" {EDGE_DIR}/nginx.conf '
            f"> {RUN_DIR}/nginx.conf)",
            f"unset {INTERNAL_KEY_ENV} key",
            f"exec nginx -c {RUN_DIR}/nginx.conf -p {RUN_DIR} -e stderr",
        ]
    )


def edge_config_map(cfg: DeploymentConfig, meta: dict[str, Any]) -> Manifest:
    """nginx.conf of serve.edge.nginx with the placeholder (no key in it)."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {**meta, "name": edge_config_name(meta["name"])},
        "data": {"nginx.conf": nginx_config(edge_site(cfg))},
    }


def edge_config_name(router_name: str) -> str:
    return router_name[: 63 - len(CONFIG_SUFFIX)].rstrip("-") + CONFIG_SUFFIX


def probe_get(cfg: DeploymentConfig, path: str) -> Manifest:
    """An httpGet probe of the edge's API port (HTTPS when the edge serves TLS)."""
    action: Manifest = {"path": path, "port": cfg.port}
    if edge_serves_tls(cfg):
        action["scheme"] = "HTTPS"
    return action


def edge_container(cfg: DeploymentConfig) -> Manifest:
    """nginx: the pod's API port; ready once the router behind it is (GET /readiness
    goes through the edge to the router). With kubernetes.tls_secret it serves HTTPS with
    the Secret's certificate, mounted 0400 (nginx's master reads it as root)."""
    mounts: list[Manifest] = [
        {"name": "edge-config", "mountPath": EDGE_DIR, "readOnly": True},
        {"name": "edge-run", "mountPath": RUN_DIR},
    ]
    if edge_serves_tls(cfg):
        mounts.append(dict(TLS_MOUNT))
    return {
        "name": "edge",
        "image": cfg.kubernetes.edge_image,
        "command": ["sh", "-c", edge_start_script(cfg.kubernetes.internal_key_secret)],
        "env": [
            secret_env(INTERNAL_KEY_ENV, cfg.kubernetes.internal_key_secret, INTERNAL_KEY_FIELD)
        ],
        "ports": [{"name": "http", "containerPort": cfg.port, "protocol": "TCP"}],
        "readinessProbe": {"httpGet": probe_get(cfg, "/readiness"), "periodSeconds": 5},
        "livenessProbe": {"tcpSocket": {"port": "http"}, "periodSeconds": 10},
        "volumeMounts": mounts,
        "resources": {
            "requests": {"cpu": "250m", "memory": "64Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
    }


def authz_container(cfg: DeploymentConfig) -> Manifest:
    """serve.edge.authz on loopback: the keys file from its Secret, the single key from
    api_key_secret (in its environment, never on its command line)."""
    port = ports(cfg).authz
    args = ["--port", str(port)]
    mounts: list[dict[str, Any]] = []
    if cfg.kubernetes.keys_secret is not None:
        args += ["--keys-file", f"{KEYS_DIR}/keys"]
        mounts.append({"name": "keys", "mountPath": KEYS_DIR, "readOnly": True})
    env = []
    if cfg.kubernetes.api_key_secret is not None:
        env.append(secret_env(KEY_ENV, cfg.kubernetes.api_key_secret, "api-key"))
    ready = f"import urllib.request; urllib.request.urlopen('http://127.0.0.1:{port}{READY_PATH}')"
    container: Manifest = {
        "name": "authz",
        "image": cfg.kubernetes.image,
        "command": ["python3", "-m", "serve.edge.authz"],
        "args": args,
        "env": env,
        "readinessProbe": {"exec": {"command": ["python3", "-c", ready]}, "periodSeconds": 10},
        "resources": {
            "requests": {"cpu": "250m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        },
    }
    if mounts:
        container["volumeMounts"] = mounts
    return container


def edge_containers(cfg: DeploymentConfig) -> list[Manifest]:
    return [edge_container(cfg), *([authz_container(cfg)] if checks_keys(cfg) else [])]


def edge_volumes(cfg: DeploymentConfig, router_name: str) -> list[Manifest]:
    volumes: list[Manifest] = [
        {"name": "edge-config", "configMap": {"name": edge_config_name(router_name)}},
        {"name": "edge-run", "emptyDir": {"medium": "Memory", "sizeLimit": "64Mi"}},
    ]
    if edge_serves_tls(cfg) and cfg.kubernetes.tls_secret is not None:
        volumes.append(tls_volume(cfg.kubernetes.tls_secret))
    if cfg.kubernetes.keys_secret is not None:
        # 0400: the key check refuses a keys file others may read.
        volumes.append(
            {
                "name": "keys",
                "secret": {"secretName": cfg.kubernetes.keys_secret, "defaultMode": 0o400},
            }
        )
    return volumes
