"""The edge's key check (serve.edge.authz): the verdicts nginx gets, and the headers that
carry the status the client must see."""

from __future__ import annotations

import asyncio
import hashlib
import json
from pathlib import Path
from typing import Any

from serve.auth.keyring import KeyRing
from serve.auth.keys import KeysTable, add_service, revoke_service, write_keys_file
from serve.edge.authz import Answer, App, Check

NOW = "2026-12-07T00:00:00Z"


def ring(tmp: Path) -> KeyRing:
    table = KeysTable()
    table = add_service(table, "ris", "mgs-ris", NOW)
    table = add_service(table, "slow", "mgs-slow", NOW, requests_per_minute=2)
    table = add_service(table, "gone", "mgs-gone", NOW)
    table = revoke_service(table, "gone", NOW)
    write_keys_file(tmp / "keys.json", table)
    return KeyRing(tmp / "keys.json", lambda _line: None)


def headers(answer: Answer) -> dict[str, str]:
    return dict(answer.headers)


def test_each_verdict(tmp_path: Path) -> None:
    check = Check(ring(tmp_path), hashlib.sha256(b"single").digest())
    ok = check(b"Bearer mgs-ris", 0.0)
    assert ok.status == 204 and headers(ok)["x-medgemma-service"] == "ris"
    assert headers(check(b"Bearer single", 0.0))["x-medgemma-service"] == "(api_key_env)"
    for value in (None, b"Bearer wrong", b"mgs-ris", b"Basic mgs-ris"):
        no = check(value, 0.0)
        assert no.status == 401 and headers(no)["x-medgemma-denial"] == "401", value
        assert headers(no)["www-authenticate"] == "Bearer"
    revoked = check(b"Bearer mgs-gone", 0.0)
    assert revoked.status == 403 and headers(revoked)["x-medgemma-denial"] == "403"
    assert headers(revoked)["x-medgemma-service"] == "gone"
    big = check(b"Bearer " + b"x" * 2000, 0.0)
    assert big.status == 403 and headers(big)["x-medgemma-denial"] == "431"
    doc = json.loads(headers(big)["x-medgemma-error"])
    assert doc["error"]["code"] == 431 and "x" * 20 not in doc["error"]["message"]


def test_a_limited_service_beside_an_unlimited_one(tmp_path: Path) -> None:
    check = Check(ring(tmp_path), None)
    assert [check(b"Bearer mgs-slow", 0.0).status for _ in range(2)] == [204, 204]
    over = check(b"Bearer mgs-slow", 1.0)
    h = headers(over)
    assert over.status == 403 and h["x-medgemma-denial"] == "429", h
    assert h["retry-after"] == "29" and h["x-medgemma-service"] == "slow"
    assert json.loads(h["x-medgemma-error"])["error"]["type"] == "RateLimitError"
    assert all(check(b"Bearer mgs-ris", 1.0).status == 204 for _ in range(50))
    assert check(b"Bearer mgs-slow", 31.0).status == 204  # refilled: one per 30 s


def test_a_token_limit_is_said_once_not_enforced(tmp_path: Path) -> None:
    table = add_service(KeysTable(), "batch", "mgs-batch", NOW, tokens_per_minute=10)
    write_keys_file(tmp_path / "keys.json", table)
    said: list[str] = []
    check = Check(KeyRing(tmp_path / "keys.json", lambda _line: None), None, said.append)
    assert all(check(b"Bearer mgs-batch", 0.0).status == 204 for _ in range(3))
    assert len(said) == 1 and "tokens_per_minute is not enforced at the edge" in said[0]
    assert "mgs-" not in said[0]


def test_no_keys_file_takes_the_single_key_only() -> None:
    check = Check(None, hashlib.sha256(b"single").digest())
    assert check(b"Bearer single", 0.0).status == 204
    assert check(b"Bearer mgs-ris", 0.0).status == 401


def call(app: App, path: str, auth: bytes | None = None) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> Any:
        return {"type": "http.request", "body": b""}

    scope = {"type": "http", "path": path, "headers": [(b"authorization", auth)] if auth else []}
    asyncio.run(app(scope, receive, send))
    return sent


def test_the_app_answers_check_and_ready_only(tmp_path: Path) -> None:
    app = App(Check(ring(tmp_path), None))
    start = call(app, "/check", b"Bearer mgs-ris")[0]
    assert start["status"] == 204 and (b"x-medgemma-service", b"ris") in start["headers"]
    assert call(app, "/check")[0]["status"] == 401
    assert call(app, "/ready")[0]["status"] == 200
    assert call(app, "/add_worker", b"Bearer mgs-ris")[0]["status"] == 404
