"""A replica's usage reports to the edge (serve.guard.usage): the guard behind the edge
posts each POST's numbers, never its text, with the internal key. The edge's key check is
a recording HTTP server here and the downstream app a stand-in answering like vLLM's chat
route (this test is about the guard; tests/e2e/test_replicas.py runs the real fleet)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from serve.guard.usage import report_doc

ANSWER = {"choices": [], "usage": {"prompt_tokens": 300, "completion_tokens": 7}}
CANARY = "CANARY-patient-Jane-Roe"
REPORT = {
    "request_id": "r1",
    "service": "ris",
    "status": 200,
    "prompt_tokens": 300,
    "completion_tokens": 7,
    "images": 2,
    "spent_tokens": 307,
}


class Edge(ThreadingHTTPServer):
    reports: list[tuple[str | None, dict[str, Any]]]


class Recorder(BaseHTTPRequestHandler):
    server: Edge

    def log_message(self, *_: object) -> None:
        pass

    def do_POST(self) -> None:  # noqa: N802 (http.server's name)
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.reports.append((self.headers.get("Authorization"), json.loads(body)))
        self.send_response(204)
        self.end_headers()


@pytest.fixture()
def edge() -> Iterator[Edge]:
    server = Edge(("127.0.0.1", 0), Recorder)
    server.reports = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_the_report_is_numbers_and_names() -> None:
    assert json.loads(report_doc("r1", "ris", 200, (300, 7), 2, 307)) == REPORT
    assert json.loads(report_doc("r2", None, 499, None, 0, 16))["prompt_tokens"] is None


def test_the_guard_behind_the_edge_reports_each_post(
    edge: Edge, monkeypatch: pytest.MonkeyPatch
) -> None:
    from serve.guard.middleware import RequestGuard

    monkeypatch.setenv("VLLM_API_KEY", "internal-key")
    monkeypatch.setenv("MEDGEMMA_GUARD_USAGE_URL", f"http://127.0.0.1:{edge.server_port}/usage")
    monkeypatch.delenv("MEDGEMMA_GUARD_KEYS_FILE", raising=False)

    async def app(scope, receive, send) -> None:  # type: ignore[no-untyped-def]
        await receive()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": json.dumps(ANSWER).encode()})

    guard = RequestGuard(app)
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
    text = {"type": "text", "text": CANARY}
    body = json.dumps({"messages": [{"role": "user", "content": [image, image, text]}]})

    async def request(method: str, key: str) -> int:
        sent: list[dict] = []

        async def receive() -> dict:
            return {"type": "http.request", "body": body.encode(), "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        headers = [
            (b"authorization", f"Bearer {key}".encode()),
            (b"content-type", b"application/json"),
            (b"x-request-id", b"edge-rid-1"),
            (b"x-medgemma-service", b"ris"),
        ]
        path = "/v1/chat/completions" if method == "POST" else "/v1/models"
        scope = {"type": "http", "method": method, "path": path, "headers": headers}
        await guard(scope, receive, send)
        await asyncio.sleep(0)  # let the report's worker thread be scheduled
        return int(sent[0]["status"])

    async def scenario() -> list[int]:
        return [
            await request("POST", "internal-key"),
            await request("GET", "internal-key"),  # not a POST: no report
            await request("POST", "wrong"),  # refused before the app: no report
        ]

    assert asyncio.run(scenario()) == [200, 200, 401]
    deadline = time.monotonic() + 10
    while not edge.reports and time.monotonic() < deadline:
        time.sleep(0.02)
    assert edge.reports, "no report reached the edge"
    auth, doc = edge.reports[0]
    assert auth == "Bearer internal-key"
    assert doc == {**REPORT, "request_id": "edge-rid-1"}
    assert len(edge.reports) == 1 and CANARY not in json.dumps(edge.reports)


def test_an_edge_that_does_not_answer_costs_one_log_line_and_no_request(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from serve.guard.usage import UsageReporter

    reporter = UsageReporter("http://127.0.0.1:1/usage", "k")
    reporter.send(b"{}")
    reporter.send(b"{}")
    err = capsys.readouterr().err
    assert err.count("usage report to the edge failed") == 1, err
