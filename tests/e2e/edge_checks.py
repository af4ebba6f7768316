"""What the edge of a replicas deployment (serve.edge: nginx and its key check) must do,
checked against a running fleet (tests/e2e/test_replicas.py starts it): service keys
(good, wrong, revoked, malformed, oversized, the single key), each of vllm-router's
management routes from outside (no key and a service key: 404, nothing changed in the
router), a rate-limited service next to an unlimited one, a key added and one revoked
while serving, the audit trail (one line per request; no prompt, no key), and a replica
or the router reached directly without the internal key.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from serve.auth.keys import KeysTable, add_service, new_key, revoke_service, write_keys_file
from tests.conftest import REPO
from tests.e2e.launcher import API_KEY, wait_until

CANARY = "CANARY-e49b-patient-John-Doe"
MODEL = "tiny-medgemma-random-weights"
# name -> (requests, tokens) per minute (None: unlimited); `gone` is revoked before the
# launch; `metered` may spend one token a minute: its first answer puts it over.
SERVICES = {
    "ris": (None, None),
    "limited": (2, None),
    "gone": (None, None),
    "metered": (None, 1),
}
MANAGEMENT = [
    ("GET", "/list_workers"),
    ("GET", "/workers"),
    ("GET", "/workers/http://127.0.0.1:1"),
    ("POST", "/add_worker?url=http://127.0.0.1:1"),
    ("POST", "/remove_worker?url=http://127.0.0.1:1"),
    ("POST", "/flush_cache"),
    ("GET", "/get_loads"),
    ("GET", "/get_load"),
    ("GET", "/get_server_info"),
    ("GET", "/metrics"),
]


@dataclass(frozen=True)
class EdgeKeys:
    path: Path
    keys: dict[str, str]


def make_keys(folder: Path) -> EdgeKeys:
    """A keys file with SERVICES (serve.auth.keys, as `python -m serve keys` writes it)."""
    table, keys = KeysTable(), {}
    for name, (rpm, tpm) in SERVICES.items():
        keys[name] = new_key()
        table = add_service(table, name, keys[name], "2026-12-07T00:00:00Z", rpm, tpm)
    table = revoke_service(table, "gone", "2026-12-07T00:00:01Z")
    folder.mkdir(parents=True, exist_ok=True)
    write_keys_file(folder / "keys.json", table)
    return EdgeKeys(folder / "keys.json", keys)


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def chat(text: str) -> dict[str, object]:
    return {
        "model": MODEL,
        "messages": [{"role": "user", "content": text}],
        "max_tokens": 4,
        "temperature": 0,
    }


def keys_cli(*args: str) -> str:
    """`python -m serve keys ...` (the real CLI); its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", "serve", "keys", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def internal_key(conf: Path) -> str:
    """The replicas' key as the edge's nginx.conf holds it (root reads it; mode 0600)."""
    assert conf.stat().st_mode & 0o777 == 0o600, oct(conf.stat().st_mode)
    found = re.search(
        r'proxy_set_header Authorization "Bearer ([A-Za-z0-9_-]+)";', conf.read_text()
    )
    assert found, "no internal key in the edge's configuration"
    return found[1]


def check_the_edge(
    edge: str, keys: EdgeKeys, work: Path, port: int, replicas: list[int], router: str
) -> str:
    """Every check of the module docstring; returns a one-line summary for the test log."""
    secret = internal_key(work / f"edge-{port}" / "nginx.conf")
    audit = work / f"audit-{port}.jsonl"
    k = keys.keys
    with httpx.Client(base_url=edge, timeout=120) as http:
        # Keys: one status each; the single api_key_env key still works.
        r = http.get("/v1/models")
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer", r.text
        assert r.json()["error"]["type"] == "AuthenticationError", r.text
        assert http.get("/v1/models", headers=bearer("mgs-wrong")).status_code == 401
        assert http.get("/v1/models", headers={"Authorization": k["ris"]}).status_code == 401
        r = http.get("/v1/models", headers=bearer(k["gone"]))
        assert r.status_code == 403 and "revoked" in r.json()["error"]["message"], r.text
        r = http.get("/v1/models", headers=bearer("x" * 2000))
        assert r.status_code == 431, (r.status_code, r.text[:200])
        assert http.get("/v1/models", headers=bearer(k["ris"])).status_code == 200
        assert http.get("/v1/models", headers=bearer(API_KEY)).status_code == 200
        assert http.get("/health").status_code == 200  # the probes need no key

        # The router's management routes: 404 at the edge, with no key and a service key.
        before = httpx.get(f"{router}/list_workers", timeout=10).json()["urls"]
        for headers in ({}, bearer(k["ris"]), bearer(API_KEY)):
            for method, path in MANAGEMENT:
                r = http.request(method, path, headers=headers)
                assert r.status_code == 404, (method, path, r.status_code, r.text[:200])
        assert httpx.get(f"{router}/list_workers", timeout=10).json()["urls"] == before

        # A rate-limited service gets 429 + Retry-After; the unlimited one is served.
        statuses = [http.get("/v1/models", headers=bearer(k["limited"])) for _ in range(3)]
        assert [r.status_code for r in statuses] == [200, 200, 429], statuses
        assert int(statuses[2].headers["retry-after"]) >= 1, statuses[2].headers
        assert statuses[2].json()["error"]["type"] == "RateLimitError", statuses[2].text
        rid = f"edge-{uuid.uuid4().hex}"
        r = http.post(
            "/v1/chat/completions",
            json=chat(f"Findings for {CANARY}?"),
            headers={**bearer(k["ris"]), "X-Request-Id": rid},
        )
        assert r.status_code == 200, (r.status_code, r.text[:300])
        assert r.headers["x-request-id"] == rid, r.headers
        usage = r.json()["usage"]

        # Tokens per minute, charged at the edge when the replica reports the answer's
        # tokens: the metered service is refused (429) once its answer is counted.
        r = http.post("/v1/chat/completions", json=chat("Hello"), headers=bearer(k["metered"]))
        assert r.status_code == 200, (r.status_code, r.text[:300])

        def refused() -> list[httpx.Response]:
            m = http.get("/v1/models", headers=bearer(k["metered"]))
            return [m] if m.status_code == 429 else []

        [over] = wait_until(
            refused,
            10,
            "a service over its tokens per minute was still served after 10 s",
            interval_s=0.2,
        )
        assert "over its tokens per minute" in over.json()["error"]["message"], over.text
        assert http.get("/v1/models", headers=bearer(k["ris"])).status_code == 200

        # A key added and one revoked while serving (the real CLI), without a restart.
        late = keys_cli("add", "late", "--keys-file", str(keys.path)).strip().splitlines()[-1]
        t0 = time.monotonic()
        wait_until(
            lambda: http.get("/v1/models", headers=bearer(late)).status_code == 200,
            10,
            "a new key was not accepted within 10 s",
            interval_s=0.2,
        )
        added_s = time.monotonic() - t0
        keys_cli("revoke", "late", "--keys-file", str(keys.path))
        t0 = time.monotonic()
        wait_until(
            lambda: http.get("/v1/models", headers=bearer(late)).status_code == 403,
            10,
            "a revoked key was still served after 10 s",
            interval_s=0.2,
        )
        revoked_s = time.monotonic() - t0

    # A replica or the router reached directly: only the internal key is taken.
    for url in [f"http://127.0.0.1:{p}/v1/models" for p in replicas] + [f"{router}/v1/models"]:
        for headers in ({}, bearer(k["ris"]), bearer(API_KEY)):
            r = httpx.get(url, headers=headers, timeout=30)
            assert r.status_code == 401, (url, headers.keys(), r.status_code, r.text[:200])
    r = httpx.get(f"http://127.0.0.1:{replicas[0]}/v1/models", headers=bearer(secret))
    assert r.status_code == 200, "the internal key is not the replicas' key"

    # The audit trail: a line per request with its service; no prompt, no key.
    def canary_line() -> dict[str, Any]:
        return next((json.loads(x) for x in audit.read_text().splitlines() if rid in x), {})

    line: dict[str, Any] = wait_until(
        canary_line,
        10,
        "no audit line for the canary request",
        interval_s=0.2,
    )
    assert line["service"] == "ris" and line["status"] == 200, line
    assert line["route"] == "/v1/chat/completions" and line["method"] == "POST", line
    assert isinstance(line["latency_ms"], float), line
    # The replica's numbers, joined in at the edge: the answer's own usage, no image.
    assert line["prompt_tokens"] == usage["prompt_tokens"], (line, usage)
    assert line["completion_tokens"] == usage["completion_tokens"], (line, usage)
    assert line["images"] == 0 and line["upstream_status"] == "200", line
    text = audit.read_text()
    records = [json.loads(x) for x in text.splitlines()]
    assert any(x["status"] == 429 and x["service"] == "limited" for x in records), records[-5:]
    assert any(x["status"] == 403 and x["service"] == "gone" for x in records), records[-5:]
    assert any(x["status"] == 404 and x["route"] == "/add_worker" for x in records)
    files = [*work.glob("*.log"), *work.glob("launcher.*")]
    logs = [text, *(p.read_text(errors="replace") for p in files)]
    for secret_text in [CANARY, API_KEY, secret, late, *k.values()]:
        for log in logs:
            assert secret_text not in log, f"{secret_text[:12]}... in a log or the audit trail"
    return (
        f"edge: {len(records)} audit lines; a new key served after {added_s:.1f} s, a revoked "
        f"one refused after {revoked_s:.1f} s"
    )
