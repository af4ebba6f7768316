"""The edge's key check: the small loopback service nginx's `auth_request` asks about
each API request (`python -m serve.edge.authz --port N [--keys-file PATH]`).

nginx sends it the request's `Authorization` header (never its body); it answers with
serve.auth's verdict (the keys file through serve.auth.keyring, reloaded on change, and
the per-service request limits of serve.auth.limits, kept here, so they survive a replica
restart):

- admitted: 204 with `X-Medgemma-Service: NAME`, which nginx writes into the audit line;
- refused: 401 (no, unknown or malformed key) or 403 (everything else), since nginx's
  auth_request passes only those two through (any other status becomes 500). The status
  the client must get (401, 403 revoked, 429 over a limit, 431 oversized header) is in
  `X-Medgemma-Denial`, its OpenAI-format error body in `X-Medgemma-Error`, and
  `Retry-After` / `WWW-Authenticate` as the client must see them; nginx's error page
  (serve.edge.nginx) answers with them.

The single `api_key_env` key (MEDGEMMA_EDGE_API_KEY in its environment, never on its
command line) is accepted beside the file's keys, as the request guard does. Tokens per
minute are not charged here: nginx does not show this service the answers' token counts
(docs/security.md, "The edge"); a service's requests per minute are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.auth.keyring import KeyRing
from serve.auth.keys import KeysFileError, KeysTable, Verdict, identify
from serve.auth.limits import Limiter, retry_after
from serve.guard.middleware import error_doc

CHECK_PATH = "/check"
READY_PATH = "/ready"
SERVICE_HEADER = "x-medgemma-service"
DENIAL_HEADER = "x-medgemma-denial"
ERROR_HEADER = "x-medgemma-error"
KEY_ENV = "MEDGEMMA_EDGE_API_KEY"
EMPTY = KeysTable(salt="", services=())

Headers = tuple[tuple[str, str], ...]


@dataclass(frozen=True)
class Answer:
    """What the key check answers nginx: a status and its headers."""

    status: int
    headers: Headers = ()


def admitted(service: str) -> Answer:
    return Answer(204, ((SERVICE_HEADER, service),))


def denied(status: int, message: str, wait_s: float = 0.0, service: str | None = None) -> Answer:
    """A refusal as nginx's auth_request can carry it (pure): 401 stays 401, every other
    status travels as 403 with the real one in X-Medgemma-Denial."""
    body = json.dumps(error_doc(status, message, None), ensure_ascii=True)
    headers: Headers = ((DENIAL_HEADER, str(status)), (ERROR_HEADER, body))
    if service:
        headers += ((SERVICE_HEADER, service),)
    if status == 429:
        headers += (("retry-after", str(retry_after(wait_s))),)
    if status == 401:
        headers += (("www-authenticate", "Bearer"),)
    return Answer(401 if status == 401 else 403, headers)


def over_limit_message(service: str, rpm: int | None, wait_s: float) -> str:
    return (
        f"service {service!r} is over its requests per minute (requests_per_minute {rpm}); "
        f"retry after {retry_after(wait_s)} s"
    )


@dataclass
class Check:
    """The decision for one request's Authorization header at `now` (monotonic seconds)."""

    ring: KeyRing | None
    single_key_hash: bytes | None
    report: Callable[[str], None] = lambda _line: None
    limiter: Limiter = field(default_factory=Limiter)
    told: set[str] = field(default_factory=set)  # services told about their token limit

    def table(self, now: float) -> KeysTable:
        return self.ring.table(now) if self.ring is not None else EMPTY

    def __call__(self, authorization: bytes | None, now: float) -> Answer:
        table = self.table(now)
        verdict: Verdict = identify(table, authorization, self.single_key_hash)
        if verdict.status:
            return denied(verdict.status, verdict.message, service=verdict.service)
        service = verdict.service or ""
        entry = table.active(service)
        rpm = entry.requests_per_minute if entry else None
        if entry is not None and entry.tokens_per_minute is not None and service not in self.told:
            self.told.add(service)
            self.report(
                f"service {service!r}: tokens_per_minute is not enforced at the edge of a "
                "replicas deployment (requests_per_minute is); see docs/security.md"
            )
        wait = self.limiter.admit(service, now, rpm, None)
        if wait > 0:
            return denied(429, over_limit_message(service, rpm, wait), wait, service)
        return admitted(service)


Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


class App:
    """The ASGI application: GET /check decides, GET /ready answers 200 (the launcher's
    readiness poll); anything else is 404."""

    def __init__(self, check: Check) -> None:
        self.check = check

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope.get("path") == READY_PATH:
            answer = Answer(200)
        elif scope.get("path") != CHECK_PATH:
            answer = Answer(404)
        else:
            auth = next(
                (bytes(v) for k, v in scope.get("headers", []) if k.lower() == b"authorization"),
                None,
            )
            answer = self.check(auth, time.monotonic())
        headers = [(k.encode(), v.encode("latin-1")) for k, v in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})


def log_line(message: str) -> None:
    """One line in the edge's log, never with a key or a request's content."""
    print(f"medgemma edge: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.edge.authz", description=__doc__)
    p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1")
    p.add_argument("--keys-file", type=Path, help="keys file of `python -m serve keys`")
    args = p.parse_args(argv)
    single = os.environ.pop(KEY_ENV, "")
    try:
        ring = KeyRing(args.keys_file, log_line) if args.keys_file else None
    except KeysFileError as exc:
        log_line(f"error: {exc}")
        return 2
    check = Check(ring, hashlib.sha256(single.encode()).digest() if single else None, log_line)
    import uvicorn

    uvicorn.run(App(check), host="127.0.0.1", port=args.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
