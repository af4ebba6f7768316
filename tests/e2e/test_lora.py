"""LoRA fine-tunes served beside the base model, on the session's `verify_server`
(configs/deployments/cpu-verify.yaml: the `verify` stand-in plus `verify-lora`, a random
rank-8 peft adapter built locally, runtime loading on, an API key enforced; shared with
test_verify, which checks the adapter against transformers + peft).

/v1/models lists the base and its adapter; greedy output through the adapter differs from
the base's on the same image + text; `python -m clients chat --model ADAPTER` works and
the clients' default stays the base; adapters load and unload at runtime only with the key,
and a path that does not exist gets a clear error without harming later requests.
"""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
import pytest

from serve.config.deployment import DeploymentConfig, load_config
from serve.launch.lora import adapter_paths
from tests.conftest import CONFIGS, REPO
from tests.e2e.launcher import LiveServer
from tests.images import chest_like_png, data_url

pytestmark = pytest.mark.slow  # verify_server: a vLLM server besides the session's `server`
ADAPTER = "verify-lora"


@pytest.fixture(scope="module")
def lora_cfg() -> DeploymentConfig:
    return load_config(CONFIGS / "cpu-verify.yaml")


@pytest.fixture
def lora_server(verify_server: LiveServer) -> LiveServer:
    """The session's cpu-verify server: the `verify` stand-in plus `verify-lora`."""
    return verify_server


def image_chat(model: str) -> dict:
    return {
        "model": model,
        "max_tokens": 24,
        "temperature": 0,
        "messages": [
            {"role": "system", "content": "You are an expert radiologist."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Describe this X-ray"},
                    {"type": "image_url", "image_url": {"url": data_url(chest_like_png())}},
                ],
            },
        ],
    }


def answer(http: httpx.Client, model: str) -> str:
    r = http.post("/v1/chat/completions", json=image_chat(model))
    assert r.status_code == 200, (model, r.status_code, r.text[:300])
    body = r.json()
    assert body["usage"]["completion_tokens"] > 0, body
    return str(body["choices"][0]["message"]["content"])


def models(http: httpx.Client) -> dict[str, dict]:
    r = http.get("/v1/models")
    assert r.status_code == 200, (r.status_code, r.text[:300])
    return {m["id"]: m for m in r.json()["data"]}


def test_models_list_the_base_and_its_adapter(lora_server: LiveServer) -> None:
    with lora_server.get_http_client() as http:
        served = models(http)
    assert set(served) == {lora_server.model, ADAPTER}, served
    assert served[ADAPTER]["parent"] == lora_server.model, served[ADAPTER]
    assert served[lora_server.model]["parent"] is None, served[lora_server.model]


def test_adapter_output_differs_from_the_base(lora_server: LiveServer) -> None:
    with lora_server.get_http_client() as http:
        base, tuned = answer(http, lora_server.model), answer(http, ADAPTER)
        again = answer(http, ADAPTER)
    assert tuned == again, "greedy decoding through the adapter is not deterministic"
    assert tuned != base, f"the adapter changed nothing: both answered {base!r}"


def clients_chat(server: LiveServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "clients", "chat", "--max-tokens", "24", *args],
        cwd=REPO,
        env=server.client_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_clients_chat_with_the_adapter_and_the_base_by_default(
    lora_server: LiveServer, tmp_path: Path
) -> None:
    img = tmp_path / "chest.png"
    img.write_bytes(chest_like_png())
    tuned = clients_chat(lora_server, "--model", ADAPTER, "--image", str(img), "Describe")
    assert tuned.returncode == 0, tuned.stderr[-800:]
    assert f"[{ADAPTER}:" in tuned.stderr, tuned.stderr[-800:]
    base = clients_chat(lora_server, "--image", str(img), "Describe")
    assert base.returncode == 0, base.stderr[-800:]
    assert f"[{lora_server.model}:" in base.stderr, base.stderr[-800:]
    assert tuned.stdout != base.stdout, (tuned.stdout, base.stdout)


def test_runtime_load_and_unload_need_the_key(
    lora_server: LiveServer, lora_cfg: DeploymentConfig
) -> None:
    name = f"runtime-{uuid.uuid4().hex[:8]}"
    path = adapter_paths(lora_cfg)[ADAPTER]  # the same files, under another name
    load = {"lora_name": name, "lora_path": path}
    with (
        lora_server.get_http_client() as http,
        lora_server.get_http_client(auth=False) as anon,
    ):
        r = anon.post("/v1/load_lora_adapter", json=load)
        assert r.status_code == 401, (r.status_code, r.text[:300])
        # vLLM's other adapter routes (outside /v1) are closed too (serve.guard).
        r = anon.post("/adapters", json=load)
        assert r.status_code == 401, (r.status_code, r.text[:300])
        r = anon.delete(f"/adapters/{ADAPTER}")
        assert r.status_code == 401, (r.status_code, r.text[:300])
        assert name not in models(http) and ADAPTER in models(http)
        r = http.post("/v1/load_lora_adapter", json=load)
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert models(http)[name]["parent"] == lora_server.model
        assert answer(http, name) == answer(http, ADAPTER)  # same weights, same greedy text

        r = anon.post("/v1/unload_lora_adapter", json={"lora_name": name})
        assert r.status_code == 401, (r.status_code, r.text[:300])
        assert name in models(http)
        r = http.post("/v1/unload_lora_adapter", json={"lora_name": name})
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert name not in models(http)
        r = http.post("/v1/chat/completions", json=image_chat(name))
        assert r.status_code == 404, (r.status_code, r.text[:300])


def test_loading_a_missing_path_is_a_clear_error(lora_server: LiveServer, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-adapter"
    with lora_server.get_http_client() as http:
        t0 = time.perf_counter()
        r = http.post(
            "/v1/load_lora_adapter", json={"lora_name": "missing", "lora_path": str(missing)}
        )
        assert r.status_code in (400, 404), (r.status_code, r.text[:300])
        message = r.json()["error"]["message"]
        assert "No adapter found" in message, message
        assert time.perf_counter() - t0 < 60
        assert "missing" not in models(http)
        assert answer(http, ADAPTER)  # the server still serves the adapter
