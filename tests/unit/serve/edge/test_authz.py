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


def test_a_token_limit_is_charged_when_the_replica_reports(tmp_path: Path) -> None:
    table = add_service(KeysTable(), "batch", "mgs-batch", NOW, tokens_per_minute=60)
    table = add_service(table, "ris", "mgs-ris", NOW)
    write_keys_file(tmp_path / "keys.json", table)
    check = Check(KeyRing(tmp_path / "keys.json", lambda _line: None), None)
    assert check(b"Bearer mgs-batch", 0.0).status == 204
    check.spent("batch", 90, 0.5)  # a minute and a half's tokens: 30 below zero
    over = check(b"Bearer mgs-batch", 1.0)
    h = headers(over)
    assert over.status == 403 and h["x-medgemma-denial"] == "429", h
    assert "over its tokens per minute" in json.loads(h["x-medgemma-error"])["error"]["message"]
    assert 29 <= int(h["retry-after"]) <= 30  # 29.5 s of refill at one token a second
    check.spent("ris", 10_000, 1.0)  # no limit: nothing charged
    assert check(b"Bearer mgs-ris", 1.0).status == 204
    assert check(b"Bearer mgs-batch", 31.0).status == 204


def test_where_no_replica_reports_a_token_limit_is_said_once_not_enforced(
    tmp_path: Path,
) -> None:
    table = add_service(KeysTable(), "batch", "mgs-batch", NOW, tokens_per_minute=10)
    write_keys_file(tmp_path / "keys.json", table)
    said: list[str] = []
    ring = KeyRing(tmp_path / "keys.json", lambda _line: None)
    check = Check(ring, None, charges_tokens=False, report=said.append)
    check.spent("batch", 1000, 0.0)  # nothing reports here; even so, nothing is refused
    assert all(check(b"Bearer mgs-batch", 1.0).status == 204 for _ in range(3))
    assert len(said) == 1 and "tokens_per_minute is not enforced here" in said[0], said
    assert "mgs-" not in said[0]


def test_no_keys_file_takes_the_single_key_only() -> None:
    check = Check(None, hashlib.sha256(b"single").digest())
    assert check(b"Bearer single", 0.0).status == 204
    assert check(b"Bearer mgs-ris", 0.0).status == 401


def call(
    app: App, path: str, auth: bytes | None = None, body: bytes = b"", method: str = "GET"
) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: Any) -> None:
        sent.append(dict(message))

    async def receive() -> Any:
        return {"type": "http.request", "body": body}

    scope = {
        "type": "http",
        "method": method,
        "path": path,
        "headers": [(b"authorization", auth)] if auth else [],
    }
    asyncio.run(app(scope, receive, send))
    return sent


def test_the_app_answers_check_and_ready_only(tmp_path: Path) -> None:
    app = App(Check(ring(tmp_path), None))
    start = call(app, "/check", b"Bearer mgs-ris")[0]
    assert start["status"] == 204 and (b"x-medgemma-service", b"ris") in start["headers"]
    assert call(app, "/check")[0]["status"] == 401
    assert call(app, "/ready")[0]["status"] == 200
    assert call(app, "/add_worker", b"Bearer mgs-ris")[0]["status"] == 404


def test_a_replicas_usage_report_needs_the_internal_key_and_charges_its_service(
    tmp_path: Path,
) -> None:
    table = add_service(KeysTable(), "batch", "mgs-batch", NOW, tokens_per_minute=60)
    write_keys_file(tmp_path / "keys.json", table)
    check = Check(KeyRing(tmp_path / "keys.json", lambda _line: None), None)
    app = App(check, None, hashlib.sha256(b"internal").digest())
    report = {
        "request_id": "r1",
        "service": "batch",
        "status": 200,
        "prompt_tokens": 100,
        "completion_tokens": 20,
        "images": 1,
        "spent_tokens": 120,
    }
    body = json.dumps(report).encode()
    for auth in (None, b"Bearer mgs-batch", b"Bearer wrong"):
        assert call(app, "/usage", auth, body, "POST")[0]["status"] == 401, auth
    assert check(b"Bearer mgs-batch", 0.0).status == 204  # nothing charged yet
    for bad in (b"{", b"[]", b'{"request_id": "r1"}', b'{"request_id": 1, "status": 200}'):
        assert call(app, "/usage", b"Bearer internal", bad, "POST")[0]["status"] == 400, bad
    assert call(app, "/usage", b"Bearer internal", body, "POST")[0]["status"] == 204
    assert headers(check(b"Bearer mgs-batch", 0.0))["x-medgemma-denial"] == "429"
    assert call(app, "/usage", b"Bearer internal", body)[0]["status"] == 404  # GET: no route
