"""What this project relies on in vllm-router itself, checked against stub replicas (fast,
no vLLM): which failures it retries, its worker routes, and the breaker threshold that lets
consistent_hash's retries reach another replica (tests/e2e/test_replicas.py runs the real
fleet)."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from serve.config.deployment import load_config
from serve.launch.router import Router
from tests.conftest import CONFIGS
from tests.e2e.fleet_load import (
    MODEL,
)
from tests.e2e.launcher import (
    free_ports,
)

CONFIG = CONFIGS / "cpu-tiny-2replicas.yaml"


class StubReplica(BaseHTTPRequestHandler):
    """A replica as the router sees it: GET answers 200 (/health, /v1/models); POST answers
    what the server's `mode` says: "ok" (a chat completion), an HTTP status, or "drop"
    (the connection closed with no answer, as when an API server dies mid-request)."""

    protocol_version = "HTTP/1.1"
    server: StubServer

    def log_message(self, *_: object) -> None:
        pass

    def answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        self.answer(200, b'{"data": []}')

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.server.posts += 1
        mode = self.server.mode
        if mode == "drop":
            self.close_connection = True
            return
        status = 200 if mode == "ok" else int(mode)
        self.answer(status, b'{"choices": [{"finish_reason": "stop"}]}')


class StubServer(ThreadingHTTPServer):
    mode = "ok"
    posts = 0


@contextmanager
def stub_replica(port: int) -> Iterator[StubServer]:
    server = StubServer(("127.0.0.1", port), StubReplica)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class StubFleet:
    """vllm-router (as the launcher runs it) in front of stub replicas A and B."""

    router: Router
    a: StubServer
    b: StubServer
    http: httpx.Client

    def statuses(self, n: int = 4, session: str = "") -> list[int]:
        """`n` chat requests through the router, each answered; with `session`, sent with
        the X-Session-ID header that consistent_hash keys on."""
        url = f"{self.router.root_url}/v1/chat/completions"
        body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
        headers = {"X-Session-ID": session} if session else {}
        return [self.http.post(url, json=body, headers=headers).status_code for _ in range(n)]


@contextmanager
def stub_fleet(workdir: Path, *overrides: str) -> Iterator[StubFleet]:
    port = free_ports(6)
    cfg = load_config(CONFIG, [f"port={port}", *overrides])
    urls = [f"http://127.0.0.1:{port + 1}", f"http://127.0.0.1:{port + 2}"]
    router = Router(cfg, urls, workdir / "router.log")
    with (
        stub_replica(port + 1) as a,
        stub_replica(port + 2) as b,
        httpx.Client(timeout=30) as http,
    ):
        router.start()
        try:
            yield StubFleet(router, a, b, http)
        finally:
            router.stop()


def test_what_vllm_router_retries_and_its_worker_routes(tmp_path: Path) -> None:
    """What the kill and the rollout rely on, checked against the installed vllm-router
    with stub replicas A (failing in turn each way a dying vLLM server fails) and B:
    a request A fails is retried on B (5xx, a dropped connection, a refused one), a 4xx is
    not; /remove_worker takes A out, /add_worker puts it back."""
    with stub_fleet(tmp_path, "router.circuit_breaker.enabled=false") as f:
        for failure in ("500", "502", "503", "504", "drop"):
            f.a.mode, f.a.posts, f.b.posts = failure, 0, 0
            assert f.statuses() == [200] * 4, failure
            assert f.a.posts >= 1 and f.b.posts == 4, (failure, f.a.posts)
        f.a.mode = "400"
        assert 400 in f.statuses(), "a 400 was retried"
        f.a.mode = "ok"

        a, b = sorted(f.router.worker_urls())
        f.router.remove_worker(a)
        assert f.router.worker_urls() == [b]
        f.a.posts = 0
        assert f.statuses() == [200] * 4 and f.a.posts == 0, f.a.posts
        # What a rollout reads before the next replica leaves (serve.launch.rejoin): the
        # router lists a replica it adds healthy at once, and counts the requests it got
        # an answer for from it (by URL: the count goes on from before its removal).
        out = f.router.view()
        assert out.health == {b: True} and out.answered[b] >= 4, out
        f.router.add_worker(a)
        assert sorted(f.router.worker_urls()) == [a, b]
        added = f.router.view()
        assert added.health == {a: True, b: True}, added
        assert f.statuses() == [200] * 4 and f.a.posts >= 1, f.a.posts
        now = f.router.view()
        assert now.answered[a] - added.answered.get(a, 0) == f.a.posts, (added, now, f.a.posts)

        f.a.mode = "drop"  # as a dead process: open connections dropped, new ones refused
        f.a.shutdown()
        f.a.server_close()
        f.b.posts = 0
        assert f.statuses() == [200] * 4 and f.b.posts == 4, f.b.posts


@pytest.mark.parametrize(("threshold", "ok"), [(None, True), (10, False)])
def test_consistent_hash_retries_reach_another_replica_once_the_breaker_opens(
    tmp_path: Path, threshold: int | None, ok: bool
) -> None:
    """consistent_hash sends every attempt of a session to the same replica. With the
    config's circuit_breaker.failure_threshold (below retries.max_retries) A's breaker opens
    within one request's attempts and the last ones go to B; with vllm-router's default of
    10, all five attempts fail on A and the client gets A's 500."""
    sets = ["router.policy=consistent_hash"]
    sets += [f"router.circuit_breaker.failure_threshold={threshold}"] if threshold else []
    cfg = load_config(CONFIG, sets)
    assert (cfg.router.circuit_breaker.failure_threshold < cfg.router.retries.max_retries) == ok
    with stub_fleet(tmp_path, *sets) as f:
        on_a = next(s for s in (f"session-{i}" for i in range(50)) if stays_on_a(f, s))
        f.a.mode, f.a.posts, f.b.posts = "500", 0, 0
        assert f.statuses(1, on_a) == ([200] if ok else [500]), (f.a.posts, f.b.posts)
        assert f.a.posts == min(cfg.router.circuit_breaker.failure_threshold, 5), f.a.posts


def stays_on_a(f: StubFleet, session: str) -> bool:
    """True if consistent_hash sends `session` to stub A."""
    before = f.a.posts
    f.statuses(1, session)
    return f.a.posts > before
