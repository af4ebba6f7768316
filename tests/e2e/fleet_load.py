"""What the replicas fleet test (tests/e2e/test_replicas.py) drives and reads: request bodies,
clients that never retry (Load), the router's replica list over time, and counters read off
a /metrics text."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import httpx
import psutil
from PIL import Image

from clients.messages import user_turn
from tests.e2e.launcher import LiveServer, wait_until

MODEL = "tiny-medgemma-random-weights"
LOAD_THREADS = 4


def request_count(metrics: str) -> float:
    """Finished requests a vLLM server reports on /metrics (vllm:request_success_total)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def chat_body(i: int) -> dict[str, object]:
    grey = Image.new("L", (512, 512), (40 * i) % 256)
    return {
        "model": MODEL,
        "messages": [user_turn(f"Describe this X-ray ({i}).", [grey])],
        "max_tokens": 8,
        "temperature": 0,
    }


def mixed_body(i: int) -> dict[str, object]:
    """Request `i` of the rollout's load: image + text when `i` is even, else text only."""
    if i % 2 == 0:
        return chat_body(i)
    return {
        "model": MODEL,
        "messages": [user_turn(f"Say something short ({i}).")],
        "max_tokens": 8,
        "temperature": 0,
    }


def replica_server(launcher_pid: int, port: int) -> psutil.Process | None:
    """The vLLM API server listening on `port` among the launcher's processes."""
    for p in psutil.Process(launcher_pid).children():
        try:
            cmd = p.cmdline()
        except psutil.Error:
            continue
        if "vllm.entrypoints.openai.api_server" in cmd and cmd[cmd.index("--port") + 1] == str(
            port
        ):
            return p
    return None


@dataclass(frozen=True)
class Outcome:
    """One request of the load: its HTTP status (None: no answer), if it failed why, and
    when it was answered (time.time())."""

    status: int | None
    error: str | None
    at: float = 0.0


class Load:
    """Clients that do not retry: threads each sending non-streaming chat requests (`body`
    of a request's number) through the router one after another until the block ends.
    Every request becomes one Outcome; none is retried."""

    def __init__(self, run: LiveServer, body: Callable[[int], dict[str, object]]) -> None:
        self.run, self.body, self.outcomes = run, body, list[Outcome]()
        self.done, self.lock, self.counter = threading.Event(), threading.Lock(), 0
        self.started = time.time()

    def one(self, http: httpx.Client) -> Outcome:
        with self.lock:
            self.counter += 1
            i = self.counter
        try:
            r = http.post("/v1/chat/completions", json=self.body(i))
        except httpx.HTTPError as exc:
            return Outcome(None, f"{type(exc).__name__}: {exc}", time.time())
        if r.status_code != 200:
            return Outcome(r.status_code, f"{r.status_code} {r.text[:300]}", time.time())
        choice = r.json()["choices"][0]
        if choice["finish_reason"] not in ("stop", "length"):
            return Outcome(r.status_code, f"finish_reason {choice['finish_reason']}", time.time())
        return Outcome(200, None, time.time())

    def loop(self) -> None:
        with self.run.get_http_client(timeout=300) as http:
            while not self.done.is_set():
                outcome = self.one(http)
                with self.lock:
                    self.outcomes.append(outcome)

    @property
    def completed(self) -> int:
        return sum(o.error is None for o in self.outcomes)

    @property
    def failed(self) -> list[Outcome]:
        return [o for o in self.outcomes if o.error is not None]

    def summary(self) -> str:
        failed = self.failed
        kinds = Counter(o.error.split(":")[0] for o in failed if o.error)
        rate = self.completed / max(1e-9, time.time() - self.started)
        said = f"sent {len(self.outcomes)}, completed {self.completed} ({rate:.1f}/s), failed "
        if not failed:
            return said + "0"
        window = "-".join(clock(o.at) for o in (failed[0], failed[-1]))
        return said + f"{len(failed)} ({dict(kinds)}; at {window}; first: {failed[0]})"

    def more(self, n: int, timeout_s: float = 600) -> None:
        """Wait until `n` more requests have completed."""
        target = self.completed + n
        wait_until(lambda: self.completed >= target, timeout_s, lambda: self.summary())


def clock(t: float) -> str:
    """A time.time() as the wall clock the logs show, to the tenth of a second."""
    return time.strftime("%H:%M:%S", time.localtime(t)) + f"{t % 1:.1f}"[1:]


@contextmanager
def load(
    run: LiveServer,
    threads_n: int = LOAD_THREADS,
    body: Callable[[int], dict[str, object]] = chat_body,
) -> Iterator[Load]:
    """A running Load of `threads_n` clients; stopped (every request answered) when the
    block ends."""
    gen = Load(run, body)
    threads = [threading.Thread(target=gen.loop, daemon=True) for _ in range(threads_n)]
    for t in threads:
        t.start()
    try:
        yield gen
    finally:
        gen.done.set()
        for t in threads:
            t.join(timeout=600)


@contextmanager
def router_workers(router_url: str) -> Iterator[list[tuple[float, list[str]]]]:
    """The router's replica list (GET /list_workers) with the time.time() of each sample,
    sampled every 0.2 s in the block."""
    seen: list[tuple[float, list[str]]] = []
    done = threading.Event()

    def sample() -> None:
        with httpx.Client(timeout=10) as http:
            while not done.is_set():
                urls = sorted(http.get(f"{router_url}/list_workers").json()["urls"])
                seen.append((time.time(), urls))
                done.wait(0.2)

    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield seen
    finally:
        done.set()
        t.join(timeout=30)


def counter(metrics: str, name: str) -> float:
    """The sum of a Prometheus counter's series in a /metrics text."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )
