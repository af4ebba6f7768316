"""Per-service keys on the session's server (`auth.keys_file` beside its API key): a
service key is served and audited; unknown, revoked and malformed keys are refused with one
status each; a rate-limited service gets 429 while another is served; `python -m serve
keys` revokes and adds keys on the running server; a bad keys file at reload leaves the
last good keys in force; no key and no prompt reaches a log or the audit trail.

The keys file and its services come from tests/e2e/conftest.py (`service_keys`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO
from tests.e2e.conftest import ServiceKeys
from tests.e2e.launcher import API_KEY, LiveServer, wait_until
from tests.images import chest_like_png, data_url

CANARY = "CANARY-7f3a-patient-Jane-Roe"


@pytest.fixture()
def http(server: LiveServer) -> Iterator[httpx.Client]:
    with server.get_http_client(auth=False) as client:
        yield client


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def audit_lines(keys: ServiceKeys) -> list[dict]:
    if not keys.audit.exists():
        return []
    return [json.loads(line) for line in keys.audit.read_text().splitlines() if line.strip()]


def audited(keys: ServiceKeys, rid: str) -> dict:
    """The audit line of request `rid`, once written."""
    return wait_until(
        lambda: next((r for r in audit_lines(keys) if r["request_id"] == rid), None),
        10,
        lambda: f"no audit line for {rid}: {audit_lines(keys)[-5:]}",
        interval_s=0.1,
    )


def keys_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "serve", "keys", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_service_key_is_served_and_audited_without_prompt_image_or_key(
    http: httpx.Client, server: LiveServer, service_keys: ServiceKeys
) -> None:
    rid = f"test-{uuid.uuid4().hex}"
    parts = [
        {"type": "text", "text": f"{CANARY}: describe this X-ray"},
        {"type": "image_url", "image_url": {"url": data_url(chest_like_png())}},
    ]
    body = {
        "model": server.model,
        "messages": [{"role": "user", "content": parts}],
        "max_tokens": 3,
    }
    headers = {**bearer(service_keys.keys["ris"]), "X-Request-Id": rid}
    r = http.post("/v1/chat/completions", json=body, headers=headers)
    assert r.status_code == 200, (r.status_code, r.text[:300])
    assert r.headers.get("x-request-id") == rid, r.headers
    usage = r.json()["usage"]
    line = audited(service_keys, rid)
    assert line["service"] == "ris" and line["status"] == 200, line
    assert line["route"] == "/v1/chat/completions" and line["images"] == 1, line
    assert (line["prompt_tokens"], line["completion_tokens"]) == (
        usage["prompt_tokens"],
        usage["completion_tokens"],
    ), (line, usage)
    assert line["latency_ms"] > 0, line
    # The single api_key_env key works beside the service keys, audited as such.
    r = http.get("/v1/models", headers={**server.auth, "X-Request-Id": rid + "-single"})
    assert r.status_code == 200, r.text[:200]
    assert audited(service_keys, rid + "-single")["service"] == "(api_key_env)"
    audit = service_keys.audit.read_text()
    canaries = [CANARY, API_KEY, *service_keys.keys.values()]
    assert not [c for c in canaries if c in audit], "a prompt or a key is in the audit trail"
    assert server.log_path is not None
    log = server.log_path.read_text(errors="replace")
    assert not [c for c in canaries if c in log], "a prompt or a key is in the server log"


@pytest.mark.parametrize(
    ("what", "headers", "status"),
    [
        ("no key", {}, 401),
        ("unknown key", bearer("mgs-not-a-key-of-this-server"), 401),
        ("revoked key", "revoked", 403),
        ("key without Bearer", "plain", 401),
        ("basic auth", {"Authorization": "Basic dXNlcjpwYXNz"}, 401),
        ("oversized header", {"Authorization": "Bearer " + "k" * 4000}, 431),
    ],
)
def test_bad_keys_get_one_clear_status(
    http: httpx.Client,
    service_keys: ServiceKeys,
    what: str,
    headers: dict[str, str] | str,
    status: int,
) -> None:
    if headers == "revoked":
        headers = bearer(service_keys.keys["revoked"])
    elif headers == "plain":
        headers = {"Authorization": service_keys.keys["ris"]}
    assert isinstance(headers, dict)
    rid = f"test-{uuid.uuid4().hex}"
    r = http.get("/v1/models", headers={**headers, "X-Request-Id": rid})
    assert r.status_code == status, (what, r.status_code, r.text[:300])
    message = r.json()["error"]["message"]
    assert "Bearer" in message or "revoked" in message, (what, message)
    line = audited(service_keys, rid)
    assert line["status"] == status, line
    assert line["service"] == ("revoked" if status == 403 else None), line


def test_a_flood_from_a_limited_service_gets_429_while_another_is_served(
    http: httpx.Client, service_keys: ServiceKeys
) -> None:
    limited, other = bearer(service_keys.keys["limited"]), bearer(service_keys.keys["reports"])

    def get(headers: dict[str, str]) -> tuple[int, str | None]:
        with httpx.Client(base_url=str(http.base_url), timeout=60) as c:
            r = c.get("/v1/models", headers=headers)
        return r.status_code, r.headers.get("retry-after")

    with ThreadPoolExecutor(8) as pool:
        flood = [pool.submit(get, limited) for _ in range(30)]
        served = [pool.submit(get, other) for _ in range(10)]
        flood_results = [f.result() for f in flood]
        served_results = [f.result() for f in served]
    codes = sorted(code for code, _ in flood_results)
    print(f"\nflood of 30 from a 2/min service: {codes.count(200)} x 200, {codes.count(429)} x 429")
    assert set(codes) <= {200, 429} and codes.count(200) <= 3, codes  # 2 + one refill at most
    assert codes.count(429) >= 27, codes
    waits = [int(ra) for code, ra in flood_results if code == 429 and ra is not None]
    assert len(waits) == codes.count(429) and min(waits) >= 1, flood_results
    assert [code for code, _ in served_results] == [200] * 10, served_results


def test_revocation_and_a_new_key_take_effect_without_a_restart(
    http: httpx.Client, service_keys: ServiceKeys
) -> None:
    old = bearer(service_keys.keys["to-revoke"])
    assert http.get("/v1/models", headers=old).status_code == 200
    r = keys_cli("revoke", "to-revoke", "--keys-file", str(service_keys.path))
    assert r.returncode == 0, r.stderr
    t0 = time.perf_counter()
    wait_until(
        lambda: http.get("/v1/models", headers=old).status_code == 403,
        5,
        "not revoked",
        interval_s=0.05,
    )
    revoked_s = time.perf_counter() - t0
    r = keys_cli("add", "newcomer", "--keys-file", str(service_keys.path))
    assert r.returncode == 0, r.stderr
    new = bearer(r.stdout.strip().splitlines()[-1])
    t0 = time.perf_counter()
    wait_until(
        lambda: http.get("/v1/models", headers=new).status_code == 200,
        5,
        "not added",
        interval_s=0.05,
    )
    added_s = time.perf_counter() - t0
    print(
        f"\nrevocation in force {revoked_s:.2f} s after `keys revoke` returned; "
        f"a new key {added_s:.2f} s after `keys add`"
    )
    text = service_keys.path.read_text()
    assert os.stat(service_keys.path).st_mode & 0o077 == 0 and '"newcomer"' in text
    assert new["Authorization"].removeprefix("Bearer ") not in text, "the file holds a key"


def replace_file(path: Path, text: str, mode: int = 0o600) -> None:
    tmp = path.with_name(f".{path.name}.test")
    tmp.write_text(text)
    tmp.chmod(mode)
    os.replace(tmp, path)


def bad_file_kept_out(
    http: httpx.Client, log: Path, keys: ServiceKeys, text: str, mode: int, says: str
) -> None:
    """Write `text` with `mode` as the keys file; the log says `says` once and the keys of
    before keep working meanwhile (the guard looks at the file when a request comes)."""
    offset = log.stat().st_size
    replace_file(keys.path, text, mode)
    ris = bearer(keys.keys["ris"])
    statuses: list[int] = []

    def said() -> str:
        return log.read_bytes()[offset:].decode(errors="replace")

    def reported() -> bool:
        statuses.append(http.get("/v1/models", headers=ris).status_code)
        return says in said()

    wait_until(reported, 10, lambda: f"the log does not say {says!r}: {said()[-500:]}", 0.2)
    statuses.append(http.get("/v1/models", headers=ris).status_code)
    assert set(statuses) == {200}, (says, statuses)
    assert said().count("keeping the last good keys") == 1, said()


def test_a_bad_keys_file_at_reload_keeps_the_last_good_keys(
    http: httpx.Client, server: LiveServer, service_keys: ServiceKeys
) -> None:
    assert server.log_path is not None
    good = service_keys.path.read_text()
    broken = '{"format": "medgemma-serve service keys 1", "salt": '
    try:
        bad_file_kept_out(http, server.log_path, service_keys, broken, 0o600, "not JSON")
        bad_file_kept_out(http, server.log_path, service_keys, good, 0o644, "other users")
    finally:
        replace_file(service_keys.path, good)
    log = server.log_path.read_text(errors="replace")
    assert not [k for k in service_keys.keys.values() if k in log], "a key is in the server log"
