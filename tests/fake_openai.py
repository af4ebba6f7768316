"""A small OpenAI-compatible HTTP server for unit tests of the clients (no model, no vLLM).

It serves /v1/models and /v1/chat/completions with answers the test sets, streams in
vLLM's format (the fake endpoint's), and keeps every request it received. The real vLLM
server is tested in tests/e2e.
"""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from benchmarks.tools.fake_endpoint import stream_reply


class FakeOpenAI(BaseHTTPRequestHandler):
    """/v1/models lists `models` (each with the fields in `card`); a chat completion answers
    `content` with `finish_reason` (streamed: the fake endpoint's vLLM-format stream).
    Requests are kept in `seen`."""

    # HTTP/1.1 keeps the connection open as the streamed reply's `Connection: keep-alive`
    # promises; under HTTP/1.0 the server closed it and the client's next request on it
    # could fail with "Server disconnected without sending a response".
    protocol_version = "HTTP/1.1"
    models: list[str] = ["medgemma"]
    card: dict[str, Any] = {}  # extra fields of each model entry (the guard's limits, say)
    content = "an answer"
    finish_reason = "stop"
    seen: list[tuple[str, str, dict[str, Any]]] = []

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def reply(self, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.seen.append(("GET", self.path, {}))
        data = [{"id": m, "object": "model", **self.card} for m in self.models]
        self.reply({"object": "list", "data": data})

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append(("POST", self.path, body))
        if body.get("stream"):
            self.wfile.write(stream_reply(body["model"], body["max_tokens"], 0))
            return
        usage = {"prompt_tokens": 30, "completion_tokens": 5, "total_tokens": 35}
        message = {"role": "assistant", "content": self.content}
        choice = {"index": 0, "finish_reason": self.finish_reason, "message": message}
        head = {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"]}
        self.reply({**head, "choices": [choice], "usage": usage})


@contextlib.contextmanager
def serve_fake_openai() -> Iterator[tuple[str, type[FakeOpenAI]]]:
    """A fake OpenAI server on a free port: (its base URL, a handler class of its own to
    configure and inspect)."""
    handler = type("Handler", (FakeOpenAI,), {"seen": []})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", handler
    finally:
        server.shutdown()
        server.server_close()
