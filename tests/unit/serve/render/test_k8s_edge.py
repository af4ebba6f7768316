"""The edge in the router pod of `render k8s` (serve.render.k8s_edge): the Service reaches
nginx only, vllm-router listens on loopback, nginx's configuration is serve.edge.nginx's
with no key in it, the edge's start script puts the internal key from its Secret in place
(run with the real sh), the keys file and the keys come from Secrets, the replicas require
the internal key. Every object validated strictly against the Kubernetes schemas.
"""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from serve.command.replicas import ports
from serve.config.deployment import load_config
from serve.edge.nginx import API_ROUTE, PROBES, nginx_config
from serve.edge.process import find_nginx
from serve.render.k8s_edge import EDGE_DIR, KEY_PLACEHOLDER, RUN_DIR, edge_site
from tests.certs import self_signed_cert
from tests.in_process import run_main
from tests.unit.serve.render.render_checks import K8S_VERSIONS, validate_strict
from tests.unit.serve.render.test_k8s_prod import REPLICAS, manifests, one, workload

KEYS = ["auth.keys_file=/nowhere/on/this/machine/keys.json", "kubernetes.keys_secret=svc-keys"]
MANAGEMENT = ["/add_worker", "/remove_worker", "/list_workers", "/workers", "/workers/1"]
MANAGEMENT += ["/flush_cache", "/get_loads"]
Manifest = dict[str, Any]


def router_pod(ms: list[Manifest]) -> dict[str, Any]:
    spec: dict[str, Any] = one(ms, "Deployment", "router")["spec"]["template"]["spec"]
    return spec


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    (c,) = [c for c in pod["containers"] if c["name"] == name]
    return c


def edge_conf(ms: list[Manifest]) -> str:
    text: str = one(ms, "ConfigMap", "router")["data"]["nginx.conf"]
    return text


@pytest.mark.parametrize("sets", [[], KEYS, ["kubernetes.api_key_secret=null"]])
def test_the_service_reaches_nginx_only_and_the_router_listens_on_loopback(
    sets: list[str],
) -> None:
    ms = manifests(REPLICAS, *sets)
    for m in ms:
        for version in K8S_VERSIONS:
            validate_strict(m, version)
    cfg = load_config(REPLICAS, sets)
    pod = router_pod(ms)
    (svc_port,) = one(ms, "Service")["spec"]["ports"]
    # The Service's named target port resolves to the edge's port and nothing else.
    targets = [
        (c["name"], p["containerPort"])
        for c in pod["containers"]
        for p in c.get("ports", [])
        if p.get("name") == svc_port["targetPort"]
    ]
    assert targets == [("edge", cfg.port)], targets
    router = container(pod, "router")
    args = router["args"]
    assert args[args.index("--host") + 1] == "127.0.0.1", args
    assert args[args.index("--port") + 1] == str(ports(cfg).router) != str(cfg.port), args
    open_ports = {p["containerPort"] for c in pod["containers"] for p in c.get("ports", [])}
    assert open_ports == {cfg.port, ports(cfg).metrics}, open_ports
    assert "--prometheus-port" in args  # metrics only on the other pod-wide port
    # nginx proxies to the router's loopback port, listens on the Service's.
    conf = edge_conf(ms)
    assert f"server 127.0.0.1:{ports(cfg).router};" in conf
    assert re.search(rf"listen 0\.0\.0\.0:{cfg.port};", conf), conf


def locations(conf: str) -> list[str]:
    return re.findall(r"^\s*location\s+(.+?)\s*\{\s*$", conf, re.MULTILINE)


def test_nginx_is_the_edge_modules_configuration_and_closes_the_management_routes() -> None:
    ms = manifests(REPLICAS, *KEYS)
    cfg = load_config(REPLICAS, KEYS)
    conf = edge_conf(ms)
    assert conf == nginx_config(edge_site(cfg))
    assert KEY_PLACEHOLDER in conf and "auth_request /_medgemma_authz;" in conf
    found = locations(conf)
    proxied_prefixes = {f"= {p}" for p in PROBES} | {"= /_medgemma_authz"}
    assert set(found) == proxied_prefixes | {
        f'~ "{API_ROUTE}"',
        "@medgemma_denied",
        "@medgemma_too_large",
        "/",
    }, found
    for route in MANAGEMENT:
        # No exact location names it and the API's regex does not match it: nginx's
        # `location /` answers, with 404.
        assert f"= {route}" not in found and not re.match(API_ROUTE, route), route
    assert re.search(r"location / \{\s*default_type application/json;\s*return 404", conf)


def test_no_key_check_without_a_key_source() -> None:
    ms = manifests(REPLICAS, "kubernetes.api_key_secret=null")
    pod = router_pod(ms)
    assert [c["name"] for c in pod["containers"]] == ["edge", "router"]
    assert "auth_request" not in edge_conf(ms)


def run_start_script(tmp_path: Path, conf: str, key: str) -> subprocess.CompletedProcess[str]:
    """The edge container's script, with the real sh and sed, its folders moved under
    tmp_path and nginx replaced by printing the file it would run."""
    (tmp_path / "edge").mkdir()
    (tmp_path / "edge" / "nginx.conf").write_text(conf)
    pod = router_pod(manifests(REPLICAS))
    script = container(pod, "edge")["command"][2]
    script = script.replace(EDGE_DIR, str(tmp_path / "edge")).replace(
        RUN_DIR, str(tmp_path / "run")
    )
    script = re.sub(r"exec nginx -c (\S+) .*", r"exec cat \1", script)
    return subprocess.run(
        ["sh", "-c", script],
        env={"MEDGEMMA_INTERNAL_KEY": key, "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_the_start_script_puts_the_secrets_key_in_place(tmp_path: Path) -> None:
    cfg = load_config(REPLICAS)
    conf = nginx_config(edge_site(cfg))
    key = "k3y_from-the-Secret_0123456789abcdef"
    out = run_start_script(tmp_path, conf, key)
    assert out.returncode == 0, out.stderr
    assert out.stdout == nginx_config(dataclasses.replace(edge_site(cfg), internal_key=key))
    assert (tmp_path / "run" / "nginx.conf").stat().st_mode & 0o077 == 0


def test_debians_nginx_accepts_the_pods_configuration(tmp_path: Path) -> None:
    """`nginx -t` (the real binary the local edge runs) on the ConfigMap's configuration
    with a key in place; only its run folder moved under tmp_path (not root here)."""
    nginx = find_nginx()
    cfg = load_config(REPLICAS, KEYS)
    site = dataclasses.replace(edge_site(cfg), run_dir=tmp_path, internal_key="k" * 32)
    (tmp_path / "nginx.conf").write_text(nginx_config(site))
    out = subprocess.run(
        [nginx, "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "test is successful" in out.stderr, out.stderr


@pytest.mark.parametrize("key", ["", "short_key", "a/b" * 8, "x" * 20 + "'; rm -rf /"])
def test_the_start_script_refuses_a_key_nginx_cannot_hold(tmp_path: Path, key: str) -> None:
    out = run_start_script(tmp_path, nginx_config(edge_site(load_config(REPLICAS))), key)
    assert out.returncode == 1 and out.stdout == "", out
    assert out.stderr.startswith("edge: the internal key (Secret medgemma-internal-key"), out
    assert not (tmp_path / "run" / "nginx.conf").exists()


def test_keys_and_the_internal_key_come_from_secrets() -> None:
    ms = manifests(REPLICAS, *KEYS)
    cfg = load_config(REPLICAS, KEYS)
    pod = router_pod(ms)
    authz = container(pod, "authz")
    args = authz["args"]
    assert args[args.index("--port") + 1] == str(ports(cfg).authz), args
    keys_path = Path(args[args.index("--keys-file") + 1])
    (mount,) = authz["volumeMounts"]
    assert keys_path.parent == Path(mount["mountPath"]) and mount["readOnly"], mount
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    assert volume["secret"] == {"secretName": "svc-keys", "defaultMode": 0o400}, volume
    assert keys_path.name == "keys"  # kubectl create secret generic NAME --from-file=keys=FILE
    # Every key reaches a container from a Secret, never as a literal.
    envs = [e for c in pod["containers"] for e in c.get("env", [])]
    assert envs and all("value" not in e for e in envs), envs
    refs = {e["name"]: e["valueFrom"]["secretKeyRef"] for e in envs}
    assert refs["MEDGEMMA_EDGE_API_KEY"] == {"name": "medgemma-api-key", "key": "api-key"}
    internal = {"name": "medgemma-internal-key", "key": "internal-key"}
    assert refs["MEDGEMMA_INTERNAL_KEY"] == internal
    # The replicas accept that internal key only (not the callers' api-key).
    (vllm,) = workload(ms)["spec"]["template"]["spec"]["containers"]
    server_refs = {
        e["name"]: e["valueFrom"]["secretKeyRef"] for e in vllm["env"] if "valueFrom" in e
    }
    assert server_refs["VLLM_API_KEY"] == internal, server_refs
    probe = vllm["readinessProbe"]["exec"]["command"]
    assert probe[probe.index("--api-key-env") + 1] == "VLLM_API_KEY", probe


def test_the_replica_policy_admits_the_router_pod_only() -> None:
    ms = manifests(REPLICAS, *KEYS)
    policy = one(ms, "NetworkPolicy")
    api = policy["spec"]["ingress"][0]  # the API rule (then the monitoring namespace's)
    assert api["ports"] == [{"protocol": "TCP", "port": 8000}], api
    router_labels = one(ms, "Deployment", "router")["spec"]["template"]["metadata"]["labels"]
    assert api["from"] == [{"podSelector": {"matchLabels": router_labels}}], api
    assert "edge" in policy["metadata"]["annotations"]["medgemma-serve/rules"]


def test_the_cli_renders_keys_without_the_file(capsys: pytest.CaptureFixture[str]) -> None:
    from serve.__main__ import main

    argv = ["render", "k8s", "--config", str(REPLICAS)]
    for item in KEYS:
        argv += ["--set", item]
    out = run_main(main, argv, capsys)
    assert out.returncode == 0 and "kind: ConfigMap" in out.stdout, out.stderr
    assert not Path("/nowhere/on/this/machine/keys.json").exists()


def test_the_ray_render_still_refuses_service_keys(capsys: pytest.CaptureFixture[str]) -> None:
    from serve.__main__ import main

    argv = ["render", "ray", "--config", str(REPLICAS), "--set", KEYS[0]]
    out = run_main(main, argv, capsys)
    assert out.returncode == 2 and out.stdout == "", out
    assert out.stderr.startswith("error: auth.keys_file:") and "the ray render" in out.stderr


def test_tls_ends_at_the_edge_and_the_replicas_behind_it_speak_http(tmp_path: Path) -> None:
    """kubernetes.tls_secret with `replicas:`: nginx serves HTTPS with the Secret's files
    (mounted into the edge container only), the probes through it use HTTPS, and the vLLM
    pods, which vllm-router discovers as http://POD_IP:PORT, get no certificate."""
    ms = manifests(REPLICAS, "kubernetes.tls_secret=medgemma-tls")
    for m in ms:
        for version in K8S_VERSIONS:
            validate_strict(m, version)
    cfg = load_config(REPLICAS, [])
    conf = edge_conf(ms)
    assert re.search(rf"listen 0\.0\.0\.0:{cfg.port} ssl;", conf), conf[:800]
    assert 'ssl_certificate "/etc/medgemma-serve/tls/tls.crt";' in conf
    assert 'ssl_certificate_key "/etc/medgemma-serve/tls/tls.key";' in conf
    pod = router_pod(ms)
    edge = container(pod, "edge")
    assert {"name": "tls", "mountPath": "/etc/medgemma-serve/tls", "readOnly": True} in edge[
        "volumeMounts"
    ]
    assert edge["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    assert container(pod, "router")["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"
    (tls,) = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert tls["secret"] == {"secretName": "medgemma-tls", "defaultMode": 0o400}
    replicas = workload(ms)["spec"]["template"]["spec"]
    assert all(v["name"] != "tls" for v in replicas["volumes"])
    (vllm,) = replicas["containers"]
    assert not any("ssl" in a for a in vllm["args"]), vllm["args"]
    assert "scheme" not in vllm["startupProbe"]["httpGet"]
    # Debian's nginx reads the TLS lines (a certificate made here stands in for the Secret's).
    site = dataclasses.replace(
        edge_site(load_config(REPLICAS, ["kubernetes.tls_secret=medgemma-tls"])),
        run_dir=tmp_path,
        internal_key="k" * 32,
        tls=self_signed_cert(tmp_path / "tls"),
    )
    (tmp_path / "nginx.conf").write_text(nginx_config(site))
    out = subprocess.run(
        [find_nginx(), "-t", "-c", str(tmp_path / "nginx.conf"), "-p", str(tmp_path)]
        + ["-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0 and "test is successful" in out.stderr, out.stderr
