"""Service keys, rate limits and the audit trail inside the request guard (ASGI shell).

With a keys file (MEDGEMMA_GUARD_KEYS_FILE, from `auth.keys_file`), `Gate.admit` decides
who a request is (serve.auth.keys, the file reloaded on change by serve.auth.keyring) and
whether its service is within its limits (serve.auth.limits); a refusal is answered here
(401 no or unknown key, 403 revoked key, 431 oversized Authorization header, 429 with
Retry-After over a limit). An admitted request gets a `Ticket` that watches its response
(status, token usage) and, when it ends, charges its tokens and writes its audit line
(serve.auth.audit; MEDGEMMA_GUARD_AUDIT_FILE, MEDGEMMA_GUARD_AUDIT_RETENTION_DAYS). Every
request but the probes gets a request id (the client's X-Request-Id, if it sent a sane
one) that its audit line and its response's X-Request-Id header carry.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from serve.auth.audit import (
    AuditLog,
    RequestFacts,
    UsageTap,
    record,
    request_facts,
    utc_now,
)
from serve.auth.keyring import KeyRing
from serve.auth.keys import Verdict, identify
from serve.auth.limits import Limiter, over_limit_message, retry_after

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]
ErrorSender = Callable[[Send, int, str, tuple[tuple[bytes, bytes], ...]], Awaitable[None]]

REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")


def header(scope: Scope, name: bytes) -> bytes | None:
    for key, value in scope.get("headers", []):
        if key.lower() == name:
            return bytes(value)
    return None


def request_id(scope: Scope) -> str:
    """The client's X-Request-Id if it is a sane token (vLLM takes it as its own request
    id too), else a new one. The request is not changed: a `request_id` in its body stays
    vLLM's."""
    given = header(scope, b"x-request-id")
    if given is not None and REQUEST_ID.fullmatch(given):
        return given.decode()
    return uuid.uuid4().hex


def log_line(message: str) -> None:
    """One line in the server log (stderr), never with a key or a request's content."""
    print(f"medgemma guard: {message}", file=sys.stderr, flush=True)


@dataclass
class Meter:
    """A request's numbers, read as it passes: its image count and max_tokens (from its
    body), its status and token usage (from its response)."""

    facts: RequestFacts = RequestFacts()
    status: int = 0
    tap: UsageTap | None = None

    def saw_body(self, body: bytes) -> None:
        self.facts = request_facts(body)

    def watch(self, send: Send, extra: tuple[tuple[bytes, bytes], ...] = ()) -> Send:
        """`send`, reading the response as it goes out (and adding `extra` headers)."""

        async def inner(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.status = int(message["status"])
                kind = b""
                for key, value in message.get("headers", []):
                    if key.lower() == b"content-type":
                        kind = bytes(value)
                self.tap = UsageTap(kind)
                if extra:
                    message = {**message, "headers": [*message.get("headers", []), *extra]}
            elif message["type"] == "http.response.body" and self.tap is not None:
                self.tap.feed(bytes(message.get("body", b"")))
            await send(message)

        return inner

    def usage(self) -> tuple[int, int] | None:
        """(prompt, completion) tokens of the finished response, if it said."""
        return self.tap.done() if self.tap is not None else None

    def spent(self, usage: tuple[int, int] | None) -> int:
        """The tokens to charge: the usage, else max_tokens (a stream that reported none)."""
        return sum(usage) if usage else (self.facts.max_tokens or 0)


@dataclass
class Ticket:
    """One admitted request, from admission to the end of its response."""

    gate: Gate
    scope: Scope
    service: str
    rid: str
    started: float
    wall: str
    meter: Meter = field(default_factory=Meter)

    def watch(self, send: Send) -> Send:
        return self.meter.watch(send, ((b"x-request-id", self.rid.encode()),))

    def done(self) -> None:
        usage = self.meter.usage()
        now = time.monotonic()
        limits = self.gate.limits_of(self.service)
        self.gate.limiter.spent(self.service, now, self.meter.spent(usage), limits[1])
        self.gate.audit_line(self, self.meter.status or 499, usage, now - self.started)


@dataclass
class Gate:
    """Keys, limits and audit of one guard (configured from the environment)."""

    ring: KeyRing
    audit: AuditLog | None
    single_key_hash: bytes | None = None
    limiter: Limiter = field(default_factory=Limiter)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> Gate | None:
        """None without MEDGEMMA_GUARD_KEYS_FILE. Raises KeysFileError if the file is bad
        (the server must not start on it: the launcher's pre-flight said so first)."""
        keys_file = environ.get("MEDGEMMA_GUARD_KEYS_FILE")
        if not keys_file:
            return None
        audit_file = environ.get("MEDGEMMA_GUARD_AUDIT_FILE")
        days = int(environ.get("MEDGEMMA_GUARD_AUDIT_RETENTION_DAYS") or 30)
        single = environ.get("MEDGEMMA_GUARD_API_KEY")
        return cls(
            KeyRing(Path(keys_file), log_line),
            AuditLog(Path(audit_file), days) if audit_file else None,
            hashlib.sha256(single.encode()).digest() if single else None,
        )

    def limits_of(self, service: str) -> tuple[int | None, int | None]:
        entry = self.ring.current.active(service)
        return (entry.requests_per_minute, entry.tokens_per_minute) if entry else (None, None)

    def allows(self, scope: Scope) -> bool:
        """Whether a websocket's key is a valid service key (no limits, no audit)."""
        table = self.ring.table(time.monotonic())
        verdict = identify(table, header(scope, b"authorization"), self.single_key_hash)
        return verdict.status == 0

    async def admit(self, scope: Scope, send: Send, refuse: ErrorSender) -> Ticket | None:
        """A Ticket for an admitted request; None when the refusal has been sent."""
        started, wall = time.monotonic(), utc_now()
        rid = request_id(scope)
        verdict = identify(
            self.ring.table(started), header(scope, b"authorization"), self.single_key_hash
        )
        ticket = Ticket(self, scope, verdict.service or "", rid, started, wall)
        if verdict.status:
            await self.refuse(ticket, verdict, send, refuse)
            return None
        assert verdict.service is not None
        rpm, tpm = self.limits_of(verdict.service)
        wait = self.limiter.admit(verdict.service, started, rpm, tpm)
        if wait > 0:
            message = over_limit_message(verdict.service, rpm, tpm, wait)
            await self.refuse(ticket, Verdict(429, message, verdict.service), send, refuse, wait)
            return None
        return ticket

    async def refuse(
        self, ticket: Ticket, verdict: Verdict, send: Send, refuse: ErrorSender, wait: float = 0
    ) -> None:
        extra: tuple[tuple[bytes, bytes], ...] = ((b"x-request-id", ticket.rid.encode()),)
        if verdict.status == 429:
            extra += ((b"retry-after", str(retry_after(wait)).encode()),)
        if verdict.status == 401:
            extra += ((b"www-authenticate", b"Bearer"),)
        await refuse(send, verdict.status, verdict.message, extra)
        self.audit_line(ticket, verdict.status, None, time.monotonic() - ticket.started)

    def audit_line(
        self, ticket: Ticket, status: int, usage: tuple[int, int] | None, latency_s: float
    ) -> None:
        if self.audit is None:
            return
        scope = ticket.scope
        line = record(
            time=ticket.wall,
            request_id=ticket.rid,
            service=ticket.service or None,
            method=str(scope.get("method", "")),
            route=str(scope.get("path", "")),
            status=status,
            usage=usage,
            images=ticket.meter.facts.images,
            latency_s=latency_s,
        )
        self.audit.write(line)  # a failed write is reported by the handler, not raised
