"""The edge (serve.edge.process.Edge: real nginx and the real key check) in front of a stub
router that records every path it is asked for: no spelling of a management route
reaches it (dot segments, escapes, doubled slashes, sent as raw bytes so no client
library tidies them first), the API and the probes do, with the internal key only.
The fleet test (tests/e2e/test_replicas.py) checks the same edge in front of the real
vllm-router and replicas."""

from __future__ import annotations

import json
import shutil
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from serve.config.deployment import load_config
from serve.config.restart import RestartPolicy
from serve.edge.process import SEARCH_PATH, Edge
from serve.launch.serve_replicas import keep_edge
from serve.process import ManagedProcess
from tests.conftest import CONFIGS
from tests.e2e.edge_checks import make_keys
from tests.e2e.launcher import free_ports, wait_until

pytestmark = pytest.mark.skipif(
    shutil.which("nginx", path=f"/usr/bin:{SEARCH_PATH}") is None,
    reason="nginx is not installed (make install)",
)
INTERNAL = "internal-key-for-the-stub-0123456789"


class Recorder(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: RecordingServer

    def log_message(self, *_: object) -> None:
        pass

    def answer(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    do_GET = do_POST = answer


class RecordingServer(ThreadingHTTPServer):
    seen: list[tuple[str, str | None]]


@pytest.fixture()
def edge(tmp_path: Path) -> Iterator[tuple[int, RecordingServer, dict[str, str]]]:
    port = free_ports(6)
    keys = make_keys(tmp_path / "keys")
    cfg = load_config(
        CONFIGS / "cpu-tiny-2replicas.yaml", [f"port={port}", f"auth.keys_file={keys.path}"]
    )
    stub = RecordingServer(("127.0.0.1", port + 4), Recorder)
    stub.seen = []
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    running = Edge(cfg, tmp_path / "logs", INTERNAL, None)
    try:
        running.start()
        stub.seen.clear()  # the launcher's readiness probe of /health
        yield port, stub, keys.keys
    finally:
        running.stop()
        stub.shutdown()
        stub.server_close()


def raw(port: int, target: str, key: str) -> int:
    """The status of `GET target` sent byte for byte."""
    request = f"GET {target} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(f"{request}Connection: close\r\n\r\n".encode())
        head = s.recv(64).decode(errors="replace")
    return int(head.split()[1])


SPELLINGS = [
    "/list_workers",
    "//list_workers",
    "/v1/../list_workers",
    "/v1/%2e%2e/list_workers",
    "/v1/..%2flist_workers",
    "/v1/models/../../add_worker?url=http://127.0.0.1:1",
    "/%6cist_workers",
    "/v1/../workers",
    "/flush_cache",
    "/get_loads",
]


def test_no_spelling_of_a_management_route_reaches_the_router(
    edge: tuple[int, RecordingServer, dict[str, str]],
) -> None:
    port, stub, keys = edge
    for target in SPELLINGS:
        assert raw(port, target, keys["ris"]) in (400, 404), target
    assert stub.seen == [], stub.seen
    assert raw(port, "/v1/models", keys["ris"]) == 200
    assert raw(port, "/v1/./models", keys["ris"]) == 200
    assert raw(port, "/health", "none") == 200
    assert raw(port, "/v1/models", "wrong") == 401
    assert [path for path, _ in stub.seen] == ["/v1/models", "/v1/models", "/health"]
    assert {auth for _, auth in stub.seen} == {f"Bearer {INTERNAL}"}


def test_a_body_over_the_limit_is_refused_at_the_edge_with_413(
    edge: tuple[int, RecordingServer, dict[str, str]],
) -> None:
    """nginx answers from the declared Content-Length (max_request_bytes), before a byte of
    the body is read and before the router sees anything."""
    port, stub, keys = edge
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        head = (
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n"
            f"Authorization: Bearer {keys['ris']}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {2**40}\r\nConnection: close\r\n\r\n"
        )
        s.sendall(head.encode())
        answer = b""
        while chunk := s.recv(4096):
            answer += chunk
    status = answer.split(b"\r\n", 1)[0]
    assert b" 413 " in status, answer[:300]
    doc = json.loads(answer.split(b"\r\n\r\n", 1)[1])
    assert doc["error"]["type"] == "RequestTooLargeError", doc
    assert "max_request_bytes" in doc["error"]["message"], doc
    assert stub.seen == [], stub.seen
    assert raw(port, "/v1/models", keys["ris"]) == 200  # the next request is served
    assert [path for path, _ in stub.seen] == ["/v1/models"], stub.seen


def audit_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def test_the_audit_trail_has_one_line_per_request_and_no_forged_ones(
    edge: tuple[int, RecordingServer, dict[str, str]], tmp_path: Path
) -> None:
    """nginx's lines reach the key check's audit writer; a datagram without the launch's
    tag (another local process) is not written; a POST whose replica never reports (the
    stub router does not) is written without numbers after the wait."""
    port, _stub, keys = edge
    audit = tmp_path / "logs" / f"audit-{port}.jsonl"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as forger:
        doc = {"request_id": "forged", "method": "GET", "status": 200, "route": "/v1/x"}
        forger.sendto(
            f"<190>Dec  7 10:00:00 guess: {json.dumps(doc)}".encode(), ("127.0.0.1", port + 5)
        )
    assert raw(port, "/v1/models", keys["ris"]) == 200
    assert raw(port, "/add_worker", keys["ris"]) == 404
    assert raw(port, "/v1/models", keys["gone"]) == 403
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        body = b"{}"
        head = (
            f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Request-Id: post-1\r\n"
            f"Authorization: Bearer {keys['ris']}\r\nContent-Length: {len(body)}\r\n"
            "Connection: close\r\n\r\n"
        )
        s.sendall(head.encode() + body)
        assert s.recv(64).split()[1] == b"200"

    def complete() -> list[dict]:
        lines = audit_lines(audit)
        return lines if any(x["request_id"] == "post-1" for x in lines) else []

    lines = wait_until(complete, 10, lambda: f"audit lines: {audit_lines(audit)}", 0.1)
    by_route = {(x["route"], x["status"]): x for x in lines}
    assert by_route[("/v1/models", 200)]["service"] == "ris", lines
    assert by_route[("/add_worker", 404)]["service"] is None, lines
    assert by_route[("/v1/models", 403)]["service"] == "gone", lines
    post = by_route[("/v1/chat/completions", 200)]
    assert post["request_id"] == "post-1" and post["prompt_tokens"] is None, post
    assert post["images"] is None and post["upstream_status"] == "200", post
    # The four, besides the launcher's readiness probe(s) of /health.
    assert len([x for x in lines if x["route"] != "/health"]) == 4, lines
    assert "forged" not in audit.read_text(), lines
    assert by_route[("/health", 200)]["service"] is None, lines
    for key in keys.values():
        assert key not in audit.read_text()


@pytest.fixture()
def running_edge(tmp_path: Path) -> Iterator[tuple[Edge, int, RecordingServer, str]]:
    """The edge with a key check (the config's single key) in front of a stub router."""
    port = free_ports(6)
    cfg = load_config(CONFIGS / "cpu-tiny-2replicas.yaml", [f"port={port}"])
    stub = RecordingServer(("127.0.0.1", port + 4), Recorder)
    stub.seen = []
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    running = Edge(cfg, tmp_path / "logs", INTERNAL, "the-single-key-0123456789")
    try:
        running.start()
        yield running, port, stub, "the-single-key-0123456789"
    finally:
        running.stop()
        stub.shutdown()
        stub.server_close()


def killed(process: ManagedProcess) -> None:
    assert process.proc is not None
    process.proc.kill()
    process.proc.wait(30)


def test_an_edge_process_that_dies_is_started_again_under_the_restart_policy(
    running_edge: tuple[Edge, int, RecordingServer, str], capsys: pytest.CaptureFixture[str]
) -> None:
    edge, port, _stub, key = running_edge
    policy = RestartPolicy(enabled=True, max_restarts=2)
    assert keep_edge(edge, policy, 0) == (0, None)  # all alive: nothing done
    assert edge.authz is not None
    killed(edge.authz)  # nginx alone refuses every API request without its key check
    assert raw(port, "/v1/models", key) >= 500
    assert keep_edge(edge, policy, 0) == (1, None)
    assert raw(port, "/v1/models", key) == 200 and raw(port, "/v1/models", "wrong") == 401
    killed(edge.nginx)
    assert keep_edge(edge, policy, 1) == (2, None)
    assert raw(port, "/v1/models", key) == 200
    out = capsys.readouterr().err
    assert "the edge's key check exited with status -9; restart 1/2 of the edge" in out, out
    assert "nginx (the edge) exited with status -9; restart 2/2 of the edge" in out, out
    assert out.count("the edge restarted: answering again after") == 2, out
    killed(edge.nginx)  # past max_restarts: the deployment stops, saying which field
    assert keep_edge(edge, policy, 2) == (2, 1)
    assert "(restart.max_restarts); stopping" in capsys.readouterr().err
