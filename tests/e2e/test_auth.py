"""With an API key configured, every route the server publishes refuses requests without
it (401) and accepts them with it; only the probes (/health, /ping, /metrics, /version,
/load) stay open.

vLLM's own key check covers /v1 (and /v2, /inference, /cohere); serve.guard.middleware extends it to
the other routes, among them /invocations, which runs chat completions. The routes come
from the server's own /openapi.json, so a route added by a vLLM upgrade is covered
without editing this file.
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from serve.guard.middleware import OPEN_PATHS
from tests.e2e.launcher import LiveServer

METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture(scope="module")
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.get_http_client(auth=False) as client:
        yield client


@pytest.fixture(scope="module")
def routes(http: httpx.Client, server: LiveServer) -> list[tuple[str, str]]:
    spec = http.get("/openapi.json", headers=server.auth)
    assert spec.status_code == 200, (spec.status_code, spec.text[:300])
    found = sorted(
        (method.upper(), path)
        for path, ops in spec.json()["paths"].items()
        for method in ops
        if method in METHODS
    )
    # The core of the OpenAI API must be among them, or the spec is not the server's.
    paths = {p for _, p in found}
    assert {"/v1/chat/completions", "/v1/completions", "/v1/models", "/health"} <= paths, paths
    return found


def concrete(path: str, server: LiveServer) -> str:
    """Fill path parameters ({model}, {response_id}, ...) with plausible values."""
    return re.sub(r"\{[^}]+\}", lambda m: server.model if "model" in m[0] else "x", path)


def bad_auth(server: LiveServer) -> list[dict[str, str]]:
    """No key, a wrong key, and the right key without its "Bearer" scheme."""
    return [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": server.api_key}]


def call(http: httpx.Client, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    body = {} if method in ("POST", "PUT", "PATCH") else None
    return http.request(method, path, json=body, headers=headers)


def test_every_v1_route_refuses_requests_without_the_key(
    http: httpx.Client, routes: list[tuple[str, str]], server: LiveServer
) -> None:
    v1 = [(m, p) for m, p in routes if p.startswith("/v1/")]
    let_in = [
        (method, path, headers, r.status_code, r.text[:120])
        for method, path in v1
        for headers in bad_auth(server)
        if (r := call(http, method, concrete(path, server), headers)).status_code != 401
    ]
    assert not let_in, let_in
    assert len(v1) >= 5, v1


def test_every_other_route_but_the_probes_refuses_requests_without_the_key(
    http: httpx.Client, routes: list[tuple[str, str]], server: LiveServer
) -> None:
    others = [(m, p) for m, p in routes if not p.startswith("/v1/") and p not in OPEN_PATHS]
    assert ("POST", "/invocations") in others, others  # chat completions under another name
    let_in = [
        (method, path, r.status_code, r.text[:120])
        for method, path in others
        if (r := call(http, method, concrete(path, server), {})).status_code != 401
    ]
    assert not let_in, let_in


def test_every_route_accepts_the_key(
    http: httpx.Client, routes: list[tuple[str, str]], server: LiveServer
) -> None:
    auth = server.auth
    refused = [
        (method, path, r.text[:120])
        for method, path in routes
        if (r := call(http, method, concrete(path, server), auth)).status_code == 401
    ]
    assert not refused, refused
    models = http.get("/v1/models", headers=auth)
    assert models.status_code == 200 and models.json()["data"][0]["id"] == server.model


def test_invocations_with_the_key_serves_a_chat(http: httpx.Client, server: LiveServer) -> None:
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": "Describe this X-ray"}],
        "max_tokens": 2,
    }
    r = http.post("/invocations", json=body, headers=server.auth)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.json()["usage"]["completion_tokens"] >= 1, r.json()


@pytest.mark.parametrize("path", ["/health", "/ping"])
def test_probes_are_open(http: httpx.Client, path: str) -> None:
    r = http.get(path)
    assert r.status_code == 200, (path, r.status_code, r.text)
