"""The audit trail: one JSON line per request, with who, what route, what status, how
many tokens and images and how long; never a prompt, an image, an answer or a key.

`request_facts` (the request body) and `UsageTap` (the response body as it streams past)
extract numbers only; `record` builds the line (pure); `AuditLog` appends lines to a
file rotated at midnight UTC, keeping `retention_days` rotated files (the I/O shell).
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import logging.handlers
from dataclasses import dataclass
from pathlib import Path
from typing import Any

IMAGE_TYPES = frozenset({"image_url", "input_image", "image"})
MAX_JSON_TAP_BYTES = 4 * 2**20  # a non-streamed answer larger than this reports no usage


@dataclass(frozen=True)
class RequestFacts:
    """What the audit and the token limit need of a request body."""

    images: int = 0
    max_tokens: int | None = None


def count_images(node: Any) -> int:
    """Content parts of an image type (chat, responses and anthropic shapes) in a JSON
    document."""
    if isinstance(node, dict):
        own = 1 if node.get("type") in IMAGE_TYPES else 0
        return own + sum(count_images(v) for v in node.values())
    if isinstance(node, list):
        return sum(count_images(v) for v in node)
    return 0


def request_facts(body: bytes) -> RequestFacts:
    """Image count and max_tokens of a JSON request body (zero and None if it is not one)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return RequestFacts()
    if not isinstance(doc, dict):
        return RequestFacts()
    limit = doc.get("max_completion_tokens", doc.get("max_tokens"))
    max_tokens = limit if isinstance(limit, int) and not isinstance(limit, bool) else None
    return RequestFacts(count_images(doc.get("messages", doc.get("input", doc))), max_tokens)


def usage_of(doc: Any) -> tuple[int, int] | None:
    """(prompt, completion) tokens of a response document's `usage`, if it has one."""
    usage = doc.get("usage") if isinstance(doc, dict) else None
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int):
        return None
    return prompt, completion if isinstance(completion, int) else 0


class UsageTap:
    """Reads the token usage out of a response body as its chunks pass: a JSON answer's
    `usage`, or a server-sent-events stream's last chunk with a `usage` (sent when the
    client asked `stream_options: {include_usage: true}`). Keeps no text once parsed."""

    def __init__(self, content_type: bytes) -> None:
        self.stream = b"event-stream" in content_type.lower()
        self.json = b"json" in content_type.lower()
        self.buffer = bytearray()
        self.usage: tuple[int, int] | None = None

    def feed(self, chunk: bytes) -> None:
        if self.stream:
            self.buffer += chunk
            *lines, rest = bytes(self.buffer).split(b"\n")
            self.buffer = bytearray(rest)
            for line in lines:
                if line.startswith(b"data:") and b'"usage"' in line:
                    try:
                        found = usage_of(json.loads(line[5:]))
                    except ValueError:
                        continue
                    self.usage = found or self.usage
        elif self.json and len(self.buffer) + len(chunk) <= MAX_JSON_TAP_BYTES:
            self.buffer += chunk
        else:
            self.json = False
            self.buffer = bytearray()

    def done(self) -> tuple[int, int] | None:
        if self.json and self.buffer:
            with contextlib.suppress(ValueError):
                self.usage = usage_of(json.loads(bytes(self.buffer)))
        self.buffer = bytearray()
        return self.usage


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds")


def record(
    *,
    time: str,
    request_id: str,
    service: str | None,
    method: str,
    route: str,
    status: int,
    usage: tuple[int, int] | None,
    images: int | None,
    latency_s: float,
) -> dict[str, Any]:
    """One audit line (pure): numbers and names only (None: not known)."""
    return {
        "time": time,
        "request_id": request_id,
        "service": service,
        "method": method,
        "route": route,
        "status": status,
        "prompt_tokens": usage[0] if usage else None,
        "completion_tokens": usage[1] if usage else None,
        "images": images,
        "latency_ms": round(latency_s * 1000, 1),
    }


class AuditHandler(logging.handlers.TimedRotatingFileHandler):
    """A failed write (a full disk) is said in one line on stderr, not a traceback, and
    does not fail the request."""

    def handleError(self, record: logging.LogRecord) -> None:  # noqa: N802 (logging's name)
        import sys

        sys.stderr.write(f"medgemma: audit line not written to {self.baseFilename}\n")


class AuditLog:
    """Appends audit lines to `path`; at midnight UTC the file is renamed to
    `path.YYYY-MM-DD` and a new one begun; rotated files beyond `retention_days` are
    deleted (logging's TimedRotatingFileHandler, one writer process)."""

    def __init__(self, path: Path, retention_days: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.handler = AuditHandler(
            path, when="midnight", utc=True, backupCount=retention_days, encoding="utf-8"
        )
        self.handler.setFormatter(logging.Formatter("%(message)s"))
        self.logger = logging.getLogger(f"medgemma.audit.{path}")
        self.logger.propagate = False  # never into the server log
        for old in list(self.logger.handlers):  # one writer per file in this process
            self.logger.removeHandler(old)
            old.close()
        self.logger.setLevel(logging.INFO)
        self.logger.addHandler(self.handler)

    def write(self, line: dict[str, Any]) -> None:
        self.logger.info(json.dumps(line, separators=(",", ":")))

    def close(self) -> None:
        self.logger.removeHandler(self.handler)
        self.handler.close()
