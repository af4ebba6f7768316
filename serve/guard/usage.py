"""A replica's report of what each request cost, to the edge of a replicas deployment.

Behind the edge (serve.edge), a replica's guard knows what nginx cannot: the tokens of each
answer and the images of each request (serve.guard.access.Meter). With
MEDGEMMA_GUARD_USAGE_URL set (the launcher sets it for its replicas: the key check's
`/usage` on loopback), the guard posts one small JSON document per answered POST: the
request id (the edge's X-Request-Id, which vllm-router passes on), the service (the edge's
X-Medgemma-Service), the status, the token counts, the image count and the tokens to charge.
Numbers and names only, never a prompt, an image or an answer; sent with the replica's own
key (the internal key, which only the edge and the replicas hold). The key check charges
the service's tokens per minute and writes the audit line (serve.edge.ledger).

The post runs in a worker thread after the response has gone out; it never delays or fails
a request. A failed post is said in the server log at most once a minute.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
import urllib.request
from collections.abc import Mapping

USAGE_URL_ENV = "MEDGEMMA_GUARD_USAGE_URL"
SERVICE_HEADER = b"x-medgemma-service"
TIMEOUT_S = 5.0
QUIET_S = 60.0


def report_doc(
    rid: str,
    service: str | None,
    status: int,
    usage: tuple[int, int] | None,
    images: int,
    spent: int,
) -> bytes:
    """The report of one request (pure)."""
    doc = {
        "request_id": rid,
        "service": service,
        "status": status,
        "prompt_tokens": usage[0] if usage else None,
        "completion_tokens": usage[1] if usage else None,
        "images": images,
        "spent_tokens": spent,
    }
    return json.dumps(doc, separators=(",", ":")).encode()


class UsageReporter:
    """Posts reports to the edge's key check, off the event loop."""

    def __init__(self, url: str, key: str | None) -> None:
        self.url, self.key = url, key
        self.failed_at = -QUIET_S

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> UsageReporter | None:
        url = environ.get(USAGE_URL_ENV)
        return cls(url, environ.get("VLLM_API_KEY") or None) if url else None

    def send(self, body: bytes) -> None:
        """Post one report (in a worker thread)."""
        headers = {"Content-Type": "application/json"}
        if self.key:
            headers["Authorization"] = f"Bearer {self.key}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as answer:
                answer.read()
        except (OSError, ValueError) as exc:
            now = time.monotonic()
            if now - self.failed_at >= QUIET_S:
                self.failed_at = now
                print(
                    f"medgemma guard: a usage report to the edge failed ({type(exc).__name__}); "
                    "its audit line will have no token counts",
                    file=sys.stderr,
                    flush=True,
                )

    def report(self, body: bytes) -> None:
        """Send `body` from a worker thread; returns at once."""
        asyncio.get_running_loop().run_in_executor(None, self.send, body)
