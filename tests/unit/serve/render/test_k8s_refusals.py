"""What `python -m serve render k8s` refuses about placement, keys, TLS and the NetworkPolicy
(and the schema about their fields): one line naming the field, exit code 2, nothing on
stdout, no traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.in_process import run_main
from tests.unit.serve.render.test_k8s_prod import H100, REPLICAS


@pytest.mark.parametrize(
    ("config", "sets", "needle"),
    [
        (H100, ["kubernetes.tls_secret=Medgemma_TLS"], "kubernetes.tls_secret: 'Medgemma_TLS'"),
        (H100, ["kubernetes.max_unavailable=0"], "kubernetes.max_unavailable:"),
        (H100, ["kubernetes.max_surge=2"], "kubernetes.max_surge:"),
        (H100, ["kubernetes.gpu_placement=gpu"], "kubernetes.gpu_placement:"),
        (H100, ['kubernetes.gpu_products=["NVIDIA H100"]'], "kubernetes.gpu_products:"),
        (H100, ["kubernetes.gpu_products=[]"], "kubernetes.gpu_products:"),
        (H100, ['kubernetes.node_selector={"gpu type": "h100"}'], "kubernetes.node_selector:"),
        (
            H100,
            ['kubernetes.network_policy.client_cidrs=["10.0.0.0/33"]'],
            "kubernetes.network_policy.client_cidrs: '10.0.0.0/33'",
        ),
        (
            H100,
            ['kubernetes.network_policy.client_pods={"app": "a viewer"}'],
            "kubernetes.network_policy.client_pods:",
        ),
        (
            H100,
            ["kubernetes.network_policy.monitoring_namespace=Monitoring"],
            "kubernetes.network_policy.monitoring_namespace:",
        ),
        (H100, ["gpu_type=h900"], "gpu_type: 'h900' is not in serve/plan/gpus.yaml"),
        (
            H100,
            ["ssl_certfile=/etc/tls/c.pem", "ssl_keyfile=/etc/tls/k.pem"],
            "ssl_certfile: a file on this machine is not in the pod",
        ),
        (
            REPLICAS,
            ["auth.keys_file=/etc/medgemma/keys.json"],
            "auth.keys_file: a file on this machine is not in the pod",
        ),
        (
            H100,
            ["auth.keys_file=/etc/medgemma/keys.json", "kubernetes.keys_secret=medgemma-keys"],
            "auth.keys_file: render k8s checks service keys at the edge in front of `replicas:`",
        ),
        (
            H100,
            ["kubernetes.keys_secret=medgemma-keys"],
            "kubernetes.keys_secret: render k8s checks service keys at the edge",
        ),
        (REPLICAS, ["kubernetes.internal_key_secret=Internal"], "kubernetes.internal_key_secret:"),
        (
            REPLICAS,
            ['kubernetes.network_policy.client_pods={"app": "viewer"}'],
            "kubernetes.network_policy.client_pods: with `replicas:`",
        ),
        (
            H100,
            ["kubernetes.service_type=LoadBalancer"],
            "kubernetes.network_policy.client_cidrs: a LoadBalancer Service",
        ),
        (
            H100,
            ["gpu_type=null", "kubernetes.gpu_placement=product"],
            "kubernetes.gpu_placement: product needs gpu_type",
        ),
    ],
)
def test_bad_input_is_one_line_naming_the_field(
    config: Path, sets: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from serve.__main__ import main

    argv = ["render", "k8s", "--config", str(config)]
    for item in sets:
        argv += ["--set", item]
    out = run_main(main, argv, capsys)
    assert out.returncode == 2, out
    assert out.stdout == "" and "Traceback" not in out.stderr, out
    lines = out.stderr.splitlines()
    # A refusal of the render is one line; the schema's answer adds the file's name first.
    problem = lines[-1].strip().removeprefix("error: ")
    assert problem.startswith(needle), out.stderr
    assert len(lines) <= 2 and lines[0].startswith("error: "), out.stderr
