"""The edge's audit lines, joined (pure).

nginx knows each request's service, route, status and latency, but not what it cost: the
token counts are in the answer, which nginx does not read. The replica that answered knows
them (its request guard taps the answer, serve.guard.usage) and reports them to the key
check. nginx sends its own line of each request to the key check too (syslog over loopback
UDP, tagged with a secret of the launch). `Ledger` joins the two by request id into one
audit line per request, in the request guard's format (serve.auth.audit.record) plus the
edge's own fields (the router's status, bytes in and out):

- a line that can have no report (not a POST, or never forwarded: a refusal, a 404) is
  written at once;
- a line that waits for its report is written when the report comes, or after `wait_s`
  with its tokens and images unknown (null): a router that failed, a replica that died;
- a report that comes first waits `keep_s` for its line, then is dropped (its tokens were
  charged when it came).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from serve.auth.audit import record

EDGE_FIELDS = ("upstream_status", "request_bytes", "response_bytes")


@dataclass(frozen=True)
class Usage:
    """What a replica reports of one request it answered."""

    status: int
    prompt_tokens: int | None
    completion_tokens: int | None
    images: int


def edge_line(datagram: bytes, tag: str) -> dict[str, Any] | None:
    """nginx's audit line out of its syslog datagram (`<PRI>TIMESTAMP TAG: {...}`), or None
    if it does not carry this launch's tag or is not a JSON object (truncated)."""
    head, sep, body = datagram.partition(f" {tag}: ".encode())
    if not sep or not head.startswith(b"<") or b"{" in head:
        return None
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    return doc if isinstance(doc, dict) else None


def usage_from(doc: Any) -> tuple[str, str | None, Usage] | None:
    """(request id, service, usage) of a replica's report, or None if it is not one."""
    if not isinstance(doc, dict) or not isinstance(doc.get("request_id"), str):
        return None
    service = doc.get("service")

    def count(name: str) -> int | None:
        v = doc.get(name)
        return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None

    status = count("status")
    if status is None:
        return None
    usage = Usage(status, count("prompt_tokens"), count("completion_tokens"), count("images") or 0)
    return doc["request_id"], service if isinstance(service, str) and service else None, usage


def expects_usage(line: dict[str, Any]) -> bool:
    """Whether a replica may report on this request: a POST that nginx forwarded."""
    return line.get("method") == "POST" and bool(line.get("upstream_status"))


def number(value: Any, default: float = 0.0) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def joined(line: dict[str, Any], usage: Usage | None) -> dict[str, Any]:
    """The audit line of one request: nginx's facts and the replica's numbers."""
    latency = number(line.get("latency_s"))
    started = dt.datetime.fromtimestamp(number(line.get("msec")) - latency, dt.UTC)
    tokens = None
    if usage is not None and usage.prompt_tokens is not None:
        tokens = (usage.prompt_tokens, usage.completion_tokens or 0)
    out = record(
        time=started.isoformat(timespec="milliseconds"),
        request_id=str(line.get("request_id", "")),
        service=str(line.get("service") or "") or None,
        method=str(line.get("method", "")),
        route=str(line.get("route", "")),
        status=int(number(line.get("status"))),
        usage=tokens,
        images=usage.images if usage is not None else None,
        latency_s=latency,
    )
    return out | {k: line.get(k) for k in EDGE_FIELDS}


class Ledger:
    """The lines and reports waiting for each other, by request id; every method returns
    the audit lines that are complete (`now`: monotonic seconds)."""

    def __init__(self, wait_s: float = 2.0, keep_s: float = 60.0) -> None:
        self.wait_s, self.keep_s = wait_s, keep_s
        self.lines: dict[str, tuple[float, dict[str, Any]]] = {}
        self.reports: dict[str, tuple[float, Usage]] = {}

    def line(self, line: dict[str, Any], now: float) -> list[dict[str, Any]]:
        rid = str(line.get("request_id", ""))
        if not rid or not expects_usage(line):
            return [joined(line, None)]
        report = self.reports.pop(rid, None)
        if report is not None:
            return [joined(line, report[1])]
        self.lines[rid] = (now, line)
        return self.due(now)

    def report(self, rid: str, usage: Usage, now: float) -> list[dict[str, Any]]:
        waiting = self.lines.pop(rid, None)
        if waiting is not None:
            return [joined(waiting[1], usage)]
        self.reports[rid] = (now, usage)
        return self.due(now)

    def due(self, now: float) -> list[dict[str, Any]]:
        """Lines that waited `wait_s` in vain (written without numbers); stale reports
        dropped."""
        late = [rid for rid, (t, _) in self.lines.items() if now - t >= self.wait_s]
        for rid in [r for r, (t, _) in self.reports.items() if now - t >= self.keep_s]:
            del self.reports[rid]
        return [joined(self.lines.pop(rid)[1], None) for rid in late]

    def drain(self) -> list[dict[str, Any]]:
        """Every waiting line, now (the key check is stopping)."""
        out = [joined(line, None) for _, line in self.lines.values()]
        self.lines.clear()
        self.reports.clear()
        return out
