"""The edge's key check and audit writer: the small loopback service nginx's
`auth_request` asks about each API request (`python -m serve.edge.authz --port N
[--keys-file PATH] --audit-file PATH`).

nginx sends it the request's `Authorization` header (never its body); it answers with
serve.auth's verdict (the keys file through serve.auth.keyring, reloaded on change, and
the per-service limits of serve.auth.limits, kept here, so they survive a replica
restart):

- admitted: 204 with `X-Medgemma-Service: NAME`, which nginx writes into the audit line
  and passes on to the replica;
- refused: 401 (no, unknown or malformed key) or 403 (everything else), since nginx's
  auth_request passes only those two through (any other status becomes 500). The status
  the client must get (401, 403 revoked, 429 over a limit, 431 oversized header) is in
  `X-Medgemma-Denial`, its OpenAI-format error body in `X-Medgemma-Error`, and
  `Retry-After` / `WWW-Authenticate` as the client must see them; nginx's error page
  (serve.edge.nginx) answers with them.

It also writes the edge's audit trail, one line per request: nginx sends its line of each
request here (syslog datagrams on the same port number over UDP, with the launch's tag,
MEDGEMMA_EDGE_AUDIT_TAG), the replica that answered posts the request's tokens and images
to `POST /usage` (serve.guard.usage, with the internal key, MEDGEMMA_EDGE_INTERNAL_KEY),
and serve.edge.ledger joins them. The tokens are charged to the service's tokens per
minute when the report comes. The file is rotated at midnight UTC (serve.auth.audit).

The single `api_key_env` key (MEDGEMMA_EDGE_API_KEY in its environment, never on its
command line) is accepted beside the file's keys, as the request guard does.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.auth.audit import AuditLog
from serve.auth.keyring import KeyRing
from serve.auth.keys import KeysFileError, KeysTable, Verdict, identify
from serve.auth.limits import Limiter, over_limit_message, retry_after
from serve.edge.audit_writer import AuditWriter
from serve.edge.ledger import usage_from
from serve.guard.middleware import error_doc

CHECK_PATH = "/check"
READY_PATH = "/ready"
USAGE_PATH = "/usage"
SERVICE_HEADER = "x-medgemma-service"
DENIAL_HEADER = "x-medgemma-denial"
ERROR_HEADER = "x-medgemma-error"
KEY_ENV = "MEDGEMMA_EDGE_API_KEY"
INTERNAL_KEY_ENV = "MEDGEMMA_EDGE_INTERNAL_KEY"
AUDIT_TAG_ENV = "MEDGEMMA_EDGE_AUDIT_TAG"
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


@dataclass
class Check:
    """The decision for one request's Authorization header at `now` (monotonic seconds),
    and the tokens each finished request of a service cost."""

    ring: KeyRing | None
    single_key_hash: bytes | None
    limiter: Limiter = field(default_factory=Limiter)
    # False where no replica reports its usage here (Kubernetes): a token limit is then
    # said once per service in the log, not enforced
    charges_tokens: bool = True
    report: Callable[[str], None] = lambda _line: None
    told: set[str] = field(default_factory=set)

    def table(self, now: float) -> KeysTable:
        return self.ring.table(now) if self.ring is not None else EMPTY

    def limits(self, service: str, now: float) -> tuple[int | None, int | None]:
        entry = self.table(now).active(service)
        return (entry.requests_per_minute, entry.tokens_per_minute) if entry else (None, None)

    def __call__(self, authorization: bytes | None, now: float) -> Answer:
        verdict: Verdict = identify(self.table(now), authorization, self.single_key_hash)
        if verdict.status:
            return denied(verdict.status, verdict.message, service=verdict.service)
        service = verdict.service or ""
        rpm, tpm = self.limits(service, now)
        if tpm is not None and not self.charges_tokens:
            if service not in self.told:
                self.told.add(service)
                self.report(
                    f"service {service!r}: tokens_per_minute is not enforced here (no replica "
                    "reports its token counts to this key check); requests_per_minute is"
                )
            tpm = None
        wait = self.limiter.admit(service, now, rpm, tpm)
        if wait > 0:
            return denied(429, over_limit_message(service, rpm, tpm, wait), wait, service)
        return admitted(service)

    def spent(self, service: str, tokens: int, now: float) -> None:
        """Charge a finished request's tokens (a replica's report) to its service."""
        self.limiter.spent(service, now, tokens, self.limits(service, now)[1])


Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]


async def read_body(receive: Receive, limit: int = 64 * 1024) -> bytes | None:
    """The request body, or None if it is larger than `limit` or the client left."""
    body = b""
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return None
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return body


class App:
    """The ASGI application: GET /check decides, POST /usage takes a replica's report
    (with the internal key), GET /ready answers 200 (the launcher's readiness poll);
    anything else is 404. Its lifespan starts and stops the audit writer."""

    def __init__(
        self,
        check: Check,
        writer: AuditWriter | None = None,
        internal_key_hash: bytes | None = None,
    ) -> None:
        self.check, self.writer, self.internal_key_hash = check, writer, internal_key_hash

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        auth = next(
            (bytes(v) for k, v in scope.get("headers", []) if k.lower() == b"authorization"),
            None,
        )
        path = scope.get("path")
        if path == READY_PATH:
            answer = Answer(200)
        elif path == CHECK_PATH:
            answer = self.check(auth, time.monotonic())
        elif path == USAGE_PATH and scope.get("method") == "POST":
            answer = await self.usage(auth, receive)
        else:
            answer = Answer(404)
        headers = [(k.encode(), v.encode("latin-1")) for k, v in answer.headers]
        await send({"type": "http.response.start", "status": answer.status, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def usage(self, auth: bytes | None, receive: Receive) -> Answer:
        """A replica's report: 204 once charged and handed to the audit writer."""
        expected = self.internal_key_hash
        scheme, _, token = (auth or b"").partition(b" ")
        if (
            expected is None
            or scheme.lower() != b"bearer"
            or not hmac.compare_digest(hashlib.sha256(token).digest(), expected)
        ):
            return Answer(401)
        body = await read_body(receive)
        try:
            doc = json.loads(body) if body is not None else None
        except ValueError:
            doc = None
        found = usage_from(doc)
        if found is None:
            return Answer(400)
        rid, service, usage = found
        now = time.monotonic()
        spent = doc.get("spent_tokens") if isinstance(doc, dict) else None
        if service is not None and isinstance(spent, int) and spent > 0:
            self.check.spent(service, spent, now)
        if self.writer is not None:
            self.writer.report(rid, usage, now)
        return Answer(204)

    async def lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                if self.writer is not None:
                    await self.writer.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.writer is not None:
                    self.writer.stop()
                await send({"type": "lifespan.shutdown.complete"})
                return


def log_line(message: str) -> None:
    """One line in the edge's log, never with a key or a request's content."""
    print(f"medgemma edge: {message}", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m serve.edge.authz", description=__doc__)
    p.add_argument("--port", type=int, required=True, help="port on 127.0.0.1 (TCP and UDP)")
    p.add_argument("--keys-file", type=Path, help="keys file of `python -m serve keys`")
    p.add_argument("--audit-file", type=Path, help="the audit trail (unset: none written)")
    p.add_argument("--retention-days", type=int, default=30, help="rotated audit files kept")
    args = p.parse_args(argv)
    single = os.environ.pop(KEY_ENV, "")
    internal = os.environ.pop(INTERNAL_KEY_ENV, "")
    tag = os.environ.pop(AUDIT_TAG_ENV, "")
    try:
        ring = KeyRing(args.keys_file, log_line) if args.keys_file else None
    except KeysFileError as exc:
        log_line(f"error: {exc}")
        return 2
    if args.audit_file is not None and not tag:
        log_line(f"error: --audit-file needs the syslog tag nginx uses in {AUDIT_TAG_ENV}")
        return 2
    writer = None
    if args.audit_file is not None:
        log = AuditLog(args.audit_file.expanduser().absolute(), args.retention_days)
        writer = AuditWriter(args.port, tag, log)
    check = Check(
        ring,
        hashlib.sha256(single.encode()).digest() if single else None,
        charges_tokens=writer is not None,  # the launcher's edge: its replicas report here
        report=log_line,
    )
    internal_hash = hashlib.sha256(internal.encode()).digest() if internal else None
    import uvicorn

    uvicorn.run(
        App(check, writer, internal_hash),
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        access_log=False,
        lifespan="on",
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
