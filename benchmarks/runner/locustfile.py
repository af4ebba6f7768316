"""Locust users sending the prepared streaming image + text chat completions.

`benchmarks.runner.run` starts one headless `locust` process per level; by hand:

    python -m locust -f benchmarks/locustfile.py --headless --host http://127.0.0.1:8000/v1 \
        -u 4 -t 30s --workload W.jsonl --records R.jsonl ClosedLoopChat
    python benchmarks/locustfile.py --host http://127.0.0.1:8000/v1 --workload W.jsonl  # one user

`ClosedLoopChat`: each user sends its next session when the last one ends (fixed
concurrency). `OpenLoopChat`: one user starts sessions at Poisson arrival times
(`--arrival-rate`), whatever the latency, up to `--max-in-flight`. A session is one
request, or a study's first question then its follow-ups (benchmarks.runner.prepared),
sent in order by the same user; each request's record carries its role.

Both are `FastHttpUser`s (geventhttpclient: much less CPU per request than `HttpUser`'s
requests, which matters when the load generator shares 2 cores with the server). The SSE
stream is read line by line from the raw response and parsed by `records.StreamParser`.
Each request fires two Locust request events, `TTFT` and `E2E`, so Locust's own stats,
CSV and HTML report show time to first token and end-to-end latency (E2E's response
length is the output token count); a request that never streams a token fails both.
Locust's "Aggregated" row therefore counts each request twice: read the E2E row. Every
request is also written as one JSON line to `--records`. Prompts and images are never
logged.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path
from time import perf_counter
from typing import Any

import gevent
import gevent.pool
from locust import FastHttpUser, HttpUser, constant, events, task
from locust.env import Environment

from benchmarks.runner.prepared import PreparedRequest, read_workload
from benchmarks.runner.records import RequestRecord, StreamParser
from clients.error_body import error_message

STATE: dict[str, Any] = {
    "workload": [],
    "records": None,  # open file
    "window": {},
    "pools": [],
    "headers": {},
    "url": "",
    "level": 0.0,
}
NEXT = itertools.count()  # index of the next prepared session (reset by --start-index)


@events.init_command_line_parser.add_listener
def add_options(parser: Any) -> None:
    parser.add_argument(
        "--workload",
        env_var="BENCH_WORKLOAD",
        default="",
        help="prepared requests (JSONL from benchmarks.runner.workload)",
    )
    parser.add_argument(
        "--records",
        env_var="BENCH_RECORDS",
        default="",
        help="append one JSON record per request here",
    )
    parser.add_argument(
        "--window-file",
        env_var="BENCH_WINDOW",
        default="",
        help="write the measurement window (wall-clock start and warm-up end when the test "
        "starts, for samplers that follow it; the stop too when Locust quits)",
    )
    parser.add_argument(
        "--warmup-s",
        type=float,
        env_var="BENCH_WARMUP_S",
        default=0.0,
        help="reset Locust's stats after this many seconds",
    )
    parser.add_argument(
        "--api-key-env",
        env_var="BENCH_API_KEY_ENV",
        default="MEDGEMMA_API_KEY",
        help="environment variable holding the Bearer token",
    )
    parser.add_argument(
        "--request-timeout",
        type=float,
        env_var="BENCH_REQUEST_TIMEOUT",
        default=600.0,
        help="seconds a request may wait between bytes",
    )
    parser.add_argument(
        "--arrival-rate",
        type=float,
        env_var="BENCH_ARRIVAL_RATE",
        default=1.0,
        help="OpenLoopChat: mean arrivals per second (Poisson)",
    )
    parser.add_argument(
        "--max-in-flight",
        type=int,
        env_var="BENCH_MAX_IN_FLIGHT",
        default=256,
        help="OpenLoopChat: most requests in flight",
    )
    parser.add_argument(
        "--level",
        type=float,
        env_var="BENCH_LEVEL",
        default=0.0,
        help="sweep level recorded in each record",
    )
    parser.add_argument(
        "--seed", type=int, env_var="BENCH_SEED", default=0, help="seed of the arrival times"
    )
    parser.add_argument(
        "--start-index",
        type=int,
        env_var="BENCH_START_INDEX",
        default=0,
        help="first prepared session to send (the runner gives each level fresh ones: "
        "vLLM caches the images and prefixes it has seen)",
    )


@events.init.add_listener
def on_init(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    if opts is None or not opts.workload:
        raise SystemExit("benchmarks/locustfile.py needs --workload FILE (prepared requests)")
    STATE["workload"] = read_workload(Path(opts.workload))
    if not STATE["workload"]:
        raise SystemExit(f"{opts.workload}: no prepared requests")
    if opts.records:
        STATE["records"] = open(opts.records, "a")  # noqa: SIM115 - closed on quit
    STATE["level"] = opts.level
    global NEXT
    NEXT = itertools.count(opts.start_index)
    host = (environment.host or "").rstrip("/")
    STATE["url"] = f"{host}/chat/completions"
    headers = {"Content-Type": "application/json", "Accept": "text/event-stream"}
    if key := os.environ.get(opts.api_key_env):
        headers["Authorization"] = f"Bearer {key}"
    STATE["headers"] = headers
    for cls in (ClosedLoopChat, OpenLoopChat):
        cls.network_timeout = cls.connection_timeout = opts.request_timeout
    OpenLoopChat.concurrency = opts.max_in_flight
    # The imports and the workload read above kept gevent's loop from running; its cached
    # clock would make Locust's --run-time timer (and ours) fire seconds early.
    gevent.get_hub().loop.update_now()


@events.test_start.add_listener
def on_test_start(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    now = time.time()
    warmup = opts.warmup_s if opts is not None else 0.0
    STATE["window"] = {"start": now, "warmup_end": now + warmup}
    if opts is not None and opts.window_file:
        Path(opts.window_file).write_text(json.dumps(STATE["window"]))
    if warmup > 0 and environment.runner is not None:
        gevent.spawn_later(warmup, environment.runner.stats.reset_all)


@events.test_stopping.add_listener
def on_test_stopping(environment: Environment, **_: Any) -> None:
    STATE["window"]["stop"] = time.time()
    for pool in STATE["pools"]:
        pool.kill(block=False)


@events.quitting.add_listener
def on_quitting(environment: Environment, **_: Any) -> None:
    opts = environment.parsed_options
    window = STATE["window"]
    window.setdefault("stop", time.time())
    window["next_index"] = next(NEXT)  # sessions taken, including any cut off at the stop
    if opts is not None and opts.window_file:
        Path(opts.window_file).write_text(json.dumps(window))
    if STATE["records"] is not None:
        STATE["records"].close()
        STATE["records"] = None


def next_session() -> list[PreparedRequest]:
    """The next prepared session: its requests, to be sent in order by one user."""
    work = STATE["workload"]
    return work[next(NEXT) % len(work)]


def parser_for(req: PreparedRequest) -> StreamParser:
    """A stream parser started now for `req` (its record says what the request carried)."""
    return StreamParser(
        perf_counter(), time.time(), req.n_images, req.kind, STATE["level"], req.role, req.session
    )


def report(environment: Environment, record: RequestRecord) -> None:
    """Fire Locust's TTFT and E2E events and append the record."""
    fire = environment.events.request.fire
    failure = None if record.success else RuntimeError(record.error.splitlines()[0][:300])
    ttft = record.ttft_s if record.ttft_s is not None else record.latency_s
    fire(
        request_type="STREAM",
        name="TTFT",
        response_time=ttft * 1000,
        response_length=0,
        exception=None if record.ttft_s is not None else failure,
        context={},
    )
    fire(
        request_type="STREAM",
        name="E2E",
        response_time=record.latency_s * 1000,
        response_length=record.output_tokens,
        exception=failure,
        context={},
    )
    if STATE["records"] is not None:
        STATE["records"].write(record.to_json() + "\n")


class ChatUser(FastHttpUser):
    """Sends one prepared request and records its stream; never raises."""

    abstract = True
    max_retries = 0  # a timed request is never retried

    def on_start(self) -> None:
        # Handle every status ourselves, so that an error body can be read and recorded.
        agent: Any = self.client.client
        agent.valid_response_codes = frozenset(range(100, 600))

    def send(self, req: PreparedRequest) -> RequestRecord:
        parser = parser_for(req)
        status, error = 0, ""
        try:
            resp = self.client.client.urlopen(
                STATE["url"], method="POST", payload=req.body, headers=STATE["headers"]
            )
            status = resp.status_code
            if status != 200:
                error = f"HTTP {status}: {error_text(resp.content)}"
            else:
                raw = resp._response
                while line := raw.readline(b"\n"):
                    parser.feed(line, perf_counter())
        except Exception as exc:  # noqa: BLE001 - every failure becomes a record
            error = f"{type(exc).__name__}: {exc}"[:500]
        record = parser.finish(perf_counter(), status=status, error=error)
        report(self.environment, record)
        return record

    def send_session(self, session: list[PreparedRequest]) -> None:
        """The session's requests in order; a failed request ends it (a follow-up whose
        first question failed would not find its images cached)."""
        for req in session:
            if not self.send(req).success:
                return


def error_text(body: bytes) -> str:
    """The message of an error body (or its first 300 bytes), at most 300 characters."""
    return (error_message(body) or body[:300].decode("utf-8", "replace"))[:300]


class ClosedLoopChat(ChatUser):
    """Closed loop: the next request as soon as the last one ended (concurrency = users)."""

    wait_time = constant(0)

    @task
    def chat(self) -> None:
        self.send_session(next_session())


class OpenLoopChat(ChatUser):
    """Open loop: one user starting requests at Poisson arrival times (run with -u 1)."""

    fixed_count = 1
    wait_time = constant(0)

    @task
    def arrivals(self) -> None:
        opts = self.environment.parsed_options
        rate, cap, seed = opts.arrival_rate, opts.max_in_flight, opts.seed
        rng = random.Random(seed)
        pool = gevent.pool.Pool(cap)
        STATE["pools"].append(pool)
        due = perf_counter()
        while True:
            due += rng.expovariate(rate)
            gevent.sleep(max(0.0, due - perf_counter()))
            session = next_session()
            if pool.full():
                saturated = parser_for(session[0])
                report(
                    self.environment,
                    saturated.finish(
                        perf_counter(), error=f"client saturated: {cap} requests in flight"
                    ),
                )
            else:
                pool.spawn(self.send_session, session)


class RequestsChat(HttpUser):
    """The closed loop of ClosedLoopChat on Locust's HttpUser (python-requests), kept to
    measure what the user class costs (`load.user_class: http`). Locust adds its own row
    for the POST beside TTFT and E2E."""

    wait_time = constant(0)

    @task
    def chat(self) -> None:
        for req in next_session():
            if not self.send(req).success:
                return

    def send(self, req: PreparedRequest) -> RequestRecord:
        parser = parser_for(req)
        status, error = 0, ""
        opts = self.environment.parsed_options
        timeout = opts.request_timeout if opts is not None else 600.0
        try:
            with self.client.post(
                STATE["url"], data=req.body, headers=STATE["headers"], stream=True,
                timeout=timeout, name="POST (python-requests)", catch_response=True,
            ) as resp:  # fmt: skip
                status = resp.status_code
                if status != 200:
                    error = f"HTTP {status}: {error_text(resp.content or b'')}"
                else:
                    for line in resp.iter_lines(chunk_size=None):
                        parser.feed(line, perf_counter())
                resp.success()  # the TTFT and E2E events carry the outcome
        except Exception as exc:  # noqa: BLE001 - every failure becomes a record
            error = f"{type(exc).__name__}: {exc}"[:500]
        record = parser.finish(perf_counter(), status=status, error=error)
        report(self.environment, record)
        return record


if __name__ == "__main__":
    from locust import run_single_user

    run_single_user(ClosedLoopChat)
