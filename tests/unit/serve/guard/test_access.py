"""The guard with a keys file (serve.guard.access): who is admitted, what is refused with
which status, and the audit line of each. The downstream app is a stand-in that answers
like vLLM's chat route (this test is about the guard; tests/e2e/test_service_keys.py runs
the same against the real server)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest

from serve.auth.keys import KeysTable, add_service, new_key, revoke_service, write_keys_file

NOW = "2026-12-07T00:00:00+00:00"
ANSWER = {"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 7}}


@pytest.fixture()
def setup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, dict[str, str], Path]:
    from serve.guard.middleware import RequestGuard

    keys = {name: new_key() for name in ("ris", "batch", "gone")}
    table = KeysTable()
    for name, key in keys.items():
        table = add_service(
            table, name, key, NOW, requests_per_minute=1 if name == "batch" else None
        )
    write_keys_file(tmp_path / "keys.json", revoke_service(table, "gone", NOW))
    audit = tmp_path / "audit.jsonl"
    monkeypatch.delenv("VLLM_API_KEY", raising=False)
    monkeypatch.setenv("MEDGEMMA_GUARD_KEYS_FILE", str(tmp_path / "keys.json"))
    monkeypatch.setenv("MEDGEMMA_GUARD_AUDIT_FILE", str(audit))
    monkeypatch.setenv("MEDGEMMA_GUARD_API_KEY", "single")

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await receive()
        body = json.dumps(ANSWER).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return RequestGuard(app), keys, audit


def call(guard: Any, authorization: str | None, path: str = "/v1/chat/completions") -> list[dict]:
    sent: list[dict] = []
    body = json.dumps(
        {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "PROMPT-CANARY"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}},
                    ],
                }
            ],
            "max_tokens": 8,
        }
    ).encode()
    headers = [(b"content-type", b"application/json")]
    if authorization is not None:
        headers.append((b"authorization", authorization.encode()))

    async def receive() -> dict:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(guard(scope, receive, send))
    return sent


def test_service_keys_are_admitted_refused_limited_and_audited(setup: Any) -> None:
    guard, keys, audit = setup
    statuses = {
        "ris": call(guard, f"Bearer {keys['ris']}")[0]["status"],
        "single": call(guard, "Bearer single")[0]["status"],
        "gone": call(guard, f"Bearer {keys['gone']}")[0]["status"],
        "unknown": call(guard, "Bearer mgs-nope")[0]["status"],
        "none": call(guard, None)[0]["status"],
        "huge": call(guard, "Bearer " + "k" * 5000)[0]["status"],
        "batch 1": call(guard, f"Bearer {keys['batch']}")[0]["status"],
    }
    limited = call(guard, f"Bearer {keys['batch']}")
    statuses["batch 2"] = limited[0]["status"]
    assert statuses == {
        "ris": 200,
        "single": 200,
        "gone": 403,
        "unknown": 401,
        "none": 401,
        "huge": 431,
        "batch 1": 200,
        "batch 2": 429,
    }
    retry = dict(limited[0]["headers"])[b"retry-after"]
    assert int(retry) == 60, retry  # one per minute, just used
    assert "over its requests per minute" in json.loads(limited[1]["body"])["error"]["message"]
    assert call(guard, "Bearer x", path="/health")[0]["status"] == 200  # probes stay open
    lines = [json.loads(x) for x in audit.read_text().splitlines()]
    assert [(x["service"], x["status"]) for x in lines] == [
        ("ris", 200),
        ("(api_key_env)", 200),
        ("gone", 403),
        (None, 401),
        (None, 401),
        (None, 431),
        ("batch", 200),
        ("batch", 429),
    ]
    first = lines[0]
    assert (first["prompt_tokens"], first["completion_tokens"], first["images"]) == (300, 7, 1)
    assert first["route"] == "/v1/chat/completions" and first["method"] == "POST"
    text = audit.read_text()
    assert "PROMPT-CANARY" not in text and not [k for k in keys.values() if k in text]


def test_tokens_per_minute_refuse_after_a_costly_answer(
    tmp_path: Path, setup: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.guard.middleware import RequestGuard

    guard, _keys, _audit = setup
    key = new_key()
    write_keys_file(
        tmp_path / "tpm.json", add_service(KeysTable(), "t", key, NOW, tokens_per_minute=200)
    )
    monkeypatch.setenv("MEDGEMMA_GUARD_KEYS_FILE", str(tmp_path / "tpm.json"))
    guard = RequestGuard(guard.app)
    assert call(guard, f"Bearer {key}")[0]["status"] == 200  # charged 307 tokens after
    refused = call(guard, f"Bearer {key}")
    assert refused[0]["status"] == 429
    assert int(dict(refused[0]["headers"])[b"retry-after"]) == 33  # 107 tokens at 200/min
