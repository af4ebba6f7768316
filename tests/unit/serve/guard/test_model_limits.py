"""The guard's limits on GET /v1/models (serve.guard.model_limits), through the middleware
in front of a tiny ASGI app that answers as vLLM's /v1/models does (this test is about the
guard, not vLLM; the e2e test reads the real server's answer)."""

from __future__ import annotations

import asyncio
import json

import pytest

from serve.command.argv import to_server_env
from serve.config.deployment import load_config
from serve.guard.middleware import RequestGuard
from serve.guard.model_limits import PublishedLimits, with_limits
from tests.unit.serve.guard.test_guard import CPU_TINY

# vLLM 0.32's answer: the base model with its max_model_len, an adapter with null.
MODEL_LIST = {
    "object": "list",
    "data": [
        {"id": "base", "object": "model", "max_model_len": 4096, "parent": None},
        {"id": "adapter", "object": "model", "max_model_len": None, "parent": "base"},
    ],
}


def vllm_like(body: bytes, status: int = 200, chunks: int = 2):
    """An ASGI app answering every request with `body`, in `chunks` pieces, with its
    Content-Length."""

    async def app(scope, receive, send) -> None:
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        step = max(1, len(body) // chunks)
        pieces = [body[i : i + step] for i in range(0, len(body), step)] or [b""]
        for i, piece in enumerate(pieces):
            more = i < len(pieces) - 1
            await send({"type": "http.response.body", "body": piece, "more_body": more})

    return app


def get(guard: RequestGuard, path: str, method: str = "GET") -> tuple[dict, bytes]:
    sent: list[dict] = []

    async def receive() -> dict:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(guard(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0], body


def guard_for(monkeypatch: pytest.MonkeyPatch, app, images: str, context: str) -> RequestGuard:
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.setenv("MEDGEMMA_GUARD_IMAGES_PER_PROMPT", images)
    monkeypatch.setenv("MEDGEMMA_GUARD_MAX_MODEL_LEN", context)
    return RequestGuard(app)


def content_length(start: dict) -> int:
    (value,) = [v for k, v in start["headers"] if k.lower() == b"content-length"]
    return int(value)


def test_models_carry_the_image_limit_and_the_adapters_context(monkeypatch):
    guard = guard_for(monkeypatch, vllm_like(json.dumps(MODEL_LIST).encode()), "2", "4096")
    start, body = get(guard, "/v1/models")
    assert start["status"] == 200 and content_length(start) == len(body), (start, body)
    base, adapter = json.loads(body)["data"]
    assert base == {**MODEL_LIST["data"][0], "max_images_per_prompt": 2}, base
    assert (adapter["max_images_per_prompt"], adapter["max_model_len"]) == (2, 4096), adapter


def test_the_list_keeps_vllms_compact_json(monkeypatch):
    """vLLM answers `{"id":"base",...}` without spaces; scripts grep for that
    (clients/examples/curl_chat.sh), so the rewritten list keeps the same separators."""
    compact = json.dumps(MODEL_LIST, separators=(",", ":")).encode()
    _, body = get(guard_for(monkeypatch, vllm_like(compact), "2", "4096"), "/v1/models")
    assert b'"id":"base"' in body and b": " not in body and b", " not in body, body


def test_vllms_own_context_length_is_kept_not_overwritten(monkeypatch):
    guard = guard_for(monkeypatch, vllm_like(json.dumps(MODEL_LIST).encode()), "8", "9999")
    _, body = get(guard, "/v1/models")
    assert json.loads(body)["data"][0]["max_model_len"] == 4096, body


def test_other_routes_errors_and_unset_limits_pass_unchanged(monkeypatch):
    raw = json.dumps(MODEL_LIST).encode()
    guard = guard_for(monkeypatch, vllm_like(raw), "2", "")
    assert get(guard, "/v1/models/other")[1] == raw
    assert get(guard, "/health")[1] == raw
    error = b'{"error": {"message": "nope"}}'
    start, body = get(guard_for(monkeypatch, vllm_like(error, 401), "2", ""), "/v1/models")
    assert (start["status"], body, content_length(start)) == (401, error, len(error))
    quiet = guard_for(monkeypatch, vllm_like(raw), "", "")
    assert not quiet.limits and get(quiet, "/v1/models")[1] == raw


def test_a_body_that_is_not_a_model_list_is_left_alone():
    limits = PublishedLimits(2, 100)
    assert with_limits(b"not json", limits) is None
    assert with_limits(b'{"data": "x"}', limits) is None
    assert with_limits(b"[]", limits) is None


def test_the_config_sets_the_published_limits():
    env = to_server_env(load_config(CPU_TINY), {})
    assert (env["MEDGEMMA_GUARD_IMAGES_PER_PROMPT"], env["MEDGEMMA_GUARD_MAX_MODEL_LEN"]) == (
        "2",
        "4096",
    )
    no_images = to_server_env(load_config(CPU_TINY, {"limit_mm_per_prompt": {}}), {})
    assert "MEDGEMMA_GUARD_IMAGES_PER_PROMPT" not in no_images
