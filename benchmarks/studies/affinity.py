"""`python -m benchmarks affinity`: follow-up TTFT and prefix-cache hits per router policy.

    python -m benchmarks affinity --scenario configs/scenarios/bench-affinity.yaml --rounds 3

The workload is a conversation about one image: the image with a first question, then three
follow-up questions, each sent with the whole conversation so far (the system prompt, the
image in the first user turn, every earlier answer), as clients/examples/multi_turn.py does
with the `interpret` task. A follow-up can reuse the KV cache of the turn before it only on
the replica that served that turn. round_robin spreads the turns of a conversation over the
replicas; cache_aware picks the replica whose router-side prefix tree matches the request's
text best (vllm-router keeps the text parts only, not the images); consistent_hash picks the
replica the conversation's key hashes to. Every request carries an `X-Session-ID` header
unique to its conversation: vllm-router 0.1.17's consistent_hash hashes the first of the
headers x-session-id, x-user-id, x-tenant-id, x-correlation-id, x-request-id, x-trace-id
that is set, else the body's session_params.session_id or `user` (src/policies/hash_key.rs
of vllm-project/router; the header names are in the installed binary too). The other
policies ignore the header.

The scenario's deployment must have a `replicas:` section. Its replicas are started once,
side by side, as `python -m serve` starts them (serve.launch.placement, then
serve.launch.fleet's start, without supervision; each replica on a free port), then one
vllm-router per policy over the same replicas, each with the config's router settings and
only `router.policy` changed (serve.launch.router.Router, so the flags come from
serve.command.replicas.router_argv). A warm-up conversation goes through each router; then
rounds alternate between the routers (A B C A B C ...): each round is `--conversations` new
conversations with new images (distinct pixels, so no round is served from an earlier
round's cache), `load.users` of them in flight. Around each round every replica's /metrics
is read: vLLM's vllm:prefix_cache_queries and vllm:prefix_cache_hits (in tokens) and
vllm:request_success; their deltas give the round's hit rate and the requests each replica
served.

Why not the runner's Locust workload: it is a file of request bodies serialised before the
load starts, while a follow-up's body holds the answer to the turn before (known only during
the run) and its conversation's header. So a small asyncio driver sends the turns with the
project's client (clients.chat.MedGemmaClient.astream: the openai SDK, no retries). TTFT is
the time from sending a request to its first non-empty content delta.

Prints a row per round and policy, then per policy the median over the rounds and the hit
rates over all its rounds; writes results/<scenario>-<UTC time>/ with affinity.json (every
round with the machine's load average, the summary), records.jsonl (one line per request),
scenario.yaml, command.txt and the replicas' and routers' logs.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shlex
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

import numpy as np
from prometheus_client.parser import text_string_to_metric_families

from benchmarks.runner import preflight
from benchmarks.runner.errors import BenchError, report
from benchmarks.runner.machine import machine_state
from benchmarks.runner.metrics import percentile, spread
from benchmarks.runner.records import RequestRecord
from benchmarks.runner.report import ms
from benchmarks.runner.run import RESULTS, cpu_note, new_folder, served_model, with_seed
from benchmarks.runner.scenario import Scenario, ScenarioError, load_scenario, to_yaml
from benchmarks.runner.workload import image_part, request_body
from clients.messages import Message, assistant_turn, user_turn
from clients.tasks import TASKS
from serve.config.replicas import RouterPolicy

if TYPE_CHECKING:
    from rich.table import Table

    from serve.config.deployment import DeploymentConfig
    from serve.launch.router import Router
    from serve.launch.server import ServerProcess

POLICIES = ("round_robin", "cache_aware", "consistent_hash")
REFERENCE = "round_robin"  # the policy the others are compared with, round by round
SESSION_HEADER = "X-Session-ID"
WARM_UP = "warmup"  # the session ids of the warm-up conversations start with it
# Synthetic questions of a clinician about one image (no patient data).
QUESTIONS = (
    "What do you see on this chest X-ray?",
    "Is there any sign of a pleural effusion?",
    "How does the heart size look?",
    "What would you recommend as the next step?",
)
# vLLM counter (without _total) -> CacheCounters field
COUNTERS = {
    "vllm:prefix_cache_queries": "queries",
    "vllm:prefix_cache_hits": "hits",
    "vllm:request_success": "requests",
}
# vllm-router 0.1.17 logs each consistent_hash decision at info level in this form.
HASH_ROUTE = re.compile(
    r"Consistent hash routing: key='header:x-session-id:([^']*)' -> worker='([^']*)'"
)


@dataclass(frozen=True)
class CacheCounters:
    """One replica's vLLM counters: prefix-cache queries and hits (tokens), finished requests."""

    queries: float = 0.0
    hits: float = 0.0
    requests: float = 0.0

    def __sub__(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(
            self.queries - other.queries, self.hits - other.hits, self.requests - other.requests
        )

    def __add__(self, other: CacheCounters) -> CacheCounters:
        return CacheCounters(
            self.queries + other.queries, self.hits + other.hits, self.requests + other.requests
        )

    @property
    def hit_rate(self) -> float | None:
        """Hit tokens over queried tokens; None when nothing was queried."""
        return self.hits / self.queries if self.queries > 0 else None


def cache_counters(metrics_text: str) -> CacheCounters:
    """The prefix-cache and finished-request counters of a vLLM /metrics page, summed over
    engines and labels. Raises ValueError if the page has no prefix-cache counters."""
    totals = dict.fromkeys(COUNTERS.values(), 0.0)
    seen = set()
    for family in text_string_to_metric_families(metrics_text):
        name = COUNTERS.get(family.name)
        if name is None:
            continue
        for sample in family.samples:
            if sample.name == f"{family.name}_total":
                totals[name] += sample.value
                seen.add(name)
    if "queries" not in seen:
        raise ValueError(
            "no vllm:prefix_cache_queries_total on /metrics: not a vLLM server, or a vLLM "
            "that names its prefix-cache counters differently"
        )
    return CacheCounters(**totals)


def total(counters: Sequence[CacheCounters]) -> CacheCounters:
    out = CacheCounters()
    for c in counters:
        out = out + c
    return out


def turn_messages(image: dict[str, Any], replies: Sequence[str]) -> list[Message]:
    """The messages of turn len(replies) + 1 of a conversation about one image: the system
    prompt, each earlier question with its answer (the image with the first question), then
    the next question (the `interpret` task, as clients/examples/multi_turn.py builds it)."""
    if len(replies) >= len(QUESTIONS):
        raise ValueError(f"a conversation has {len(QUESTIONS)} turns, not {len(replies) + 1}")
    turns: list[Message] = []
    for i, reply in enumerate(replies):
        turns += [user_turn(QUESTIONS[i], [image] if i == 0 else []), assistant_turn(reply)]
    images = [] if replies else [image]
    return TASKS["interpret"].build(images, question=QUESTIONS[len(replies)], turns=turns).messages


@dataclass
class TurnRecord:
    """One request of a conversation: which router policy, round, conversation and turn."""

    policy: str
    round: int
    conversation: int
    turn: int  # 1 = the image and the first question; 2.. = follow-ups
    record: RequestRecord

    def to_json(self) -> str:
        head = {k: v for k, v in asdict(self).items() if k != "record"}
        return json.dumps({**head, **asdict(self.record)}, separators=(",", ":"))


@dataclass
class RoundResult:
    """One round of one policy: its requests, each replica's counter deltas, the machine."""

    round: int
    policy: str
    turns: list[TurnRecord]
    replicas: list[CacheCounters]  # deltas over the round, by replica index
    machine: dict[str, Any] = field(default_factory=dict)


def ttfts_ms(turns: Sequence[TurnRecord], follow_up: bool) -> list[float]:
    """TTFT (ms) of the successful follow-up turns, or of the first turns."""
    return [
        t.record.ttft_s * 1000
        for t in turns
        if t.record.success and t.record.ttft_s is not None and (t.turn > 1) == follow_up
    ]


def rounded(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


def round_figures(result: RoundResult) -> dict[str, Any]:
    """One round's figures (pure): follow-up and first-turn TTFT, hit rates, requests."""
    follow, first = ttfts_ms(result.turns, True), ttfts_ms(result.turns, False)
    return {
        "round": result.round,
        "policy": result.policy,
        "requests": len(result.turns),
        "failed": sum(1 for t in result.turns if not t.record.success),
        "followup_ttft_p50_ms": rounded(percentile(follow, 50)),
        "followup_ttft_p90_ms": rounded(percentile(follow, 90)),
        "first_ttft_p50_ms": rounded(percentile(first, 50)),
        "hit_rate": [rounded(c.hit_rate, 4) for c in result.replicas],
        "hit_rate_all": rounded(total(result.replicas).hit_rate, 4),
        "replica_requests": [int(c.requests) for c in result.replicas],
        "replica_hit_tokens": [int(c.hits) for c in result.replicas],
        "replica_queried_tokens": [int(c.queries) for c in result.replicas],
        "loadavg_1m": result.machine.get("loadavg", [None])[0],
    }


def summarise(results: Sequence[RoundResult], reference: str = REFERENCE) -> dict[str, Any]:
    """Per policy (pure): the median, min and max over its rounds of the follow-up TTFT p50
    and p90 and the first-turn TTFT p50; the follow-up p50 over the reference policy's in
    the same round; and each replica's hit rate and requests over all its rounds."""
    rows = [round_figures(r) for r in results]
    ref = {r["round"]: r["followup_ttft_p50_ms"] for r in rows if r["policy"] == reference}
    out: dict[str, Any] = {}
    for policy in dict.fromkeys(r.policy for r in results):
        mine = [r for r in rows if r["policy"] == policy]
        deltas = [r.replicas for r in results if r.policy == policy]
        per_replica = [total(column) for column in zip(*deltas, strict=True)]
        ratios = [
            r["followup_ttft_p50_ms"] / ref[r["round"]]
            if r["followup_ttft_p50_ms"] is not None and ref.get(r["round"])
            else None
            for r in mine
        ]
        out[policy] = {
            "rounds": len(mine),
            "requests": sum(r["requests"] for r in mine),
            "failed": sum(r["failed"] for r in mine),
            "followup_ttft_p50_ms": spread([r["followup_ttft_p50_ms"] for r in mine]),
            "followup_ttft_p90_ms": spread([r["followup_ttft_p90_ms"] for r in mine]),
            "first_ttft_p50_ms": spread([r["first_ttft_p50_ms"] for r in mine]),
            f"followup_p50_vs_{reference}": spread(ratios),
            "hit_rate": [rounded(c.hit_rate, 4) for c in per_replica],
            "hit_rate_all": rounded(total(per_replica).hit_rate, 4),
            "replica_requests": [int(c.requests) for c in per_replica],
            "replica_hit_tokens": [int(c.hits) for c in per_replica],
            "replica_queried_tokens": [int(c.queries) for c in per_replica],
        }
    return out


def session_workers(router_log: str) -> dict[str, set[str]]:
    """Conversation id -> the replicas consistent_hash sent its requests to, from the
    router's log lines whose hash key came from the session header."""
    out: dict[str, set[str]] = {}
    for session, worker in HASH_ROUTE.findall(router_log):
        out.setdefault(session, set()).add(worker)
    return out


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0%}"


def round_cells(row: dict[str, Any]) -> list[str]:
    """A row of the rounds table."""
    return [
        str(row["round"]),
        row["policy"],
        ms(row, "followup_ttft_p50_ms"),
        ms(row, "followup_ttft_p90_ms"),
        ms(row, "first_ttft_p50_ms"),
        " / ".join(percent(h) for h in row["hit_rate"]),
        percent(row["hit_rate_all"]),
        " / ".join(str(n) for n in row["replica_requests"]),
        f"{row['failed']}/{row['requests']}",
        "-" if row["loadavg_1m"] is None else f"{row['loadavg_1m']:.2f}",
    ]


def span(s: dict[str, Any], fmt: str = "ms") -> str:
    """A spread as `median (min-max)`, in ms or as a ratio."""
    if s["median"] is None:
        return "-"
    if fmt == "x":
        return f"{s['median']:.2f}x ({s['min']:.2f}-{s['max']:.2f})"
    return f"{ms(s, 'median')} ({ms(s, 'min')}-{ms(s, 'max')})"


def summary_cells(policy: str, s: dict[str, Any], reference: str = REFERENCE) -> list[str]:
    """A row of the per-policy table."""
    return [
        policy,
        span(s["followup_ttft_p50_ms"]),
        span(s["followup_ttft_p90_ms"]),
        span(s["first_ttft_p50_ms"]),
        "-" if policy == reference else span(s[f"followup_p50_vs_{reference}"], "x"),
        " / ".join(percent(h) for h in s["hit_rate"]),
        percent(s["hit_rate_all"]),
        " / ".join(str(n) for n in s["replica_requests"]),
        f"{s['failed']}/{s['requests']}",
    ]


def tables(results: Sequence[RoundResult], summary: Mapping[str, Any], note: str) -> list[Table]:
    from rich.table import Table

    rounds = Table(title="every round (alternating)", caption="TTFT in ms; replicas r0 / r1 / ...")
    for col in (
        "round", "policy", "follow-up TTFT p50", "p90", "first-turn TTFT p50",
        "prefix-cache hit rate by replica", "all", "requests by replica", "failed", "load 1m",
    ):  # fmt: skip
        rounds.add_column(col, justify="left" if col == "policy" else "right")
    for r in results:
        rounds.add_row(*round_cells(round_figures(r)))
    per = Table(
        title="per policy: median (min-max) over its rounds; hit rates over all its rounds",
        caption=note,
    )
    for col in (
        "policy", "follow-up TTFT p50", "follow-up TTFT p90", "first-turn TTFT p50",
        f"follow-up p50 / {REFERENCE}", "hit rate by replica", "all", "requests by replica",
        "failed",
    ):  # fmt: skip
        per.add_column(col, justify="left" if col == "policy" else "right")
    for policy, s in summary.items():
        per.add_row(*summary_cells(policy, s))
    return [rounds, per]


def deployment(scenario: Scenario) -> DeploymentConfig:
    """The scenario's deployment config; it must run two replicas or more."""
    from serve.config.deployment import ConfigError, load_config
    from serve.config.yaml_file import override_strings

    try:
        cfg = load_config(scenario.deployment, override_strings(scenario.deployment_set))
    except ConfigError as exc:
        raise BenchError(f"cannot use the scenario's deployment: {exc}") from None
    if cfg.replicas is None or cfg.replicas.count < 2:
        raise BenchError(
            f"{scenario.deployment}: affinity compares routers in front of several replicas; "
            "give a deployment with a `replicas:` section of count 2 or more "
            "(e.g. configs/deployments/cpu-tiny-2replicas.yaml)"
        )
    return cfg


def policy_config(
    cfg: DeploymentConfig, policy: str, port: int, metrics_port: int
) -> DeploymentConfig:
    """The deployment config for one more router: only its policy and ports differ."""
    router = cfg.router.model_copy(update={"policy": policy, "metrics_port": metrics_port})
    return cfg.model_copy(update={"port": port, "router": router})


@contextlib.contextmanager
def fleet(
    cfg: DeploymentConfig, policies: Sequence[str], log_dir: Path, api_key: str | None
) -> Iterator[tuple[list[ServerProcess], dict[str, Router]]]:
    """The replicas (each on a free port) and one router per policy in front of them, all
    stopped on exit. Raises BenchError naming a replica or router that did not start."""
    from serve.command.replicas import PlacementError, replica_configs, replica_url
    from serve.launch.fleet import start_all, stop_all
    from serve.launch.placement import placement
    from serve.launch.router import Router
    from serve.launch.server import ServerProcess, model_to_load
    from serve.process import LaunchError, free_port

    try:
        devices = placement(cfg)
    except PlacementError as exc:
        raise BenchError(str(exc)) from None
    replicas = [r.model_copy(update={"port": free_port()}) for r in replica_configs(cfg, devices)]
    servers = [ServerProcess(r, log_dir / f"replica{i}.log") for i, r in enumerate(replicas)]
    urls = [replica_url(r) for r in replicas]
    routers: dict[str, Router] = {}
    try:
        kind = "cores" if cfg.device == "cpu" else "GPUs"
        for i, s in enumerate(servers):
            print(f"starting replica {i} on port {s.cfg.port} ({kind} {devices[i]})", flush=True)
        t0 = time.perf_counter()
        model_to_load(cfg)  # build the stand-in once, not in each replica's thread
        failed = start_all(servers)
        if failed:
            i, why = failed[0]
            raise BenchError(
                f"replica {i} did not become healthy: {str(why).splitlines()[0]}; "
                f"see its log {servers[i].log_path}"
            )
        print(f"replicas ready in {time.perf_counter() - t0:.0f} s", flush=True)
        for policy in policies:
            rcfg = policy_config(cfg, policy, free_port(), free_port())
            routers[policy] = Router(rcfg, urls, log_dir / f"router-{policy}.log", api_key)
            try:
                routers[policy].start()
            except LaunchError as exc:
                raise BenchError(
                    f"vllm-router ({policy}) did not start: {str(exc).splitlines()[0]}; "
                    f"see {routers[policy].log_path}"
                ) from None
            print(f"router {policy}: {routers[policy].root_url}", flush=True)
        yield servers, routers
    finally:
        for router in routers.values():
            router.stop()
        stop_all(servers)


def replica_counters(servers: Sequence[ServerProcess]) -> list[CacheCounters]:
    """Every replica's counters now. Raises BenchError if one has no /metrics to read."""
    out = []
    for i, s in enumerate(servers):
        text = preflight.snapshot(f"{s.root_url}/metrics")
        if text is None:
            raise BenchError(f"replica {i} ({s.root_url}) did not answer /metrics")
        try:
            out.append(cache_counters(text))
        except ValueError as exc:
            raise BenchError(f"replica {i} ({s.root_url}): {exc}") from None
    return out


def send_params(scenario: Scenario, model: str) -> dict[str, Any]:
    """max_tokens and temperature, and the fixed-output fields of the runner's request body
    (ignore_eos, min_tokens) as the SDK's extra_body."""
    body = request_body(scenario, model, [], {})
    extra = {k: body[k] for k in ("ignore_eos", "min_tokens") if k in body}
    params: dict[str, Any] = {"max_tokens": body["max_tokens"], "temperature": body["temperature"]}
    return {**params, "extra_body": extra} if extra else params


async def timed_turn(
    client: Any, messages: list[Message], params: dict[str, Any], level: float
) -> tuple[RequestRecord, str]:
    """Stream one turn: its record (TTFT to the first content delta) and the answer's text.
    Never raises for a failed request: the error goes into the record."""
    import openai

    from clients.error_body import error_message

    stream = client.astream(messages, **params)
    wall, t0 = time.time(), time.perf_counter()
    first: float | None = None
    last = t0
    itl: list[float] = []
    status, error = 200, ""
    try:
        async for _delta in stream:
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                itl.append(now - last)
            last = now
    except openai.APIStatusError as exc:
        status = exc.status_code
        error = f"HTTP {status}: {(error_message(exc.body) or str(exc))[:300]}"
    except openai.APIError as exc:  # connection refused or reset, timeout
        status, error = 0, f"{type(exc).__name__}: {exc}"[:300]
    end = time.perf_counter()
    result = stream.result
    if not error and first is None:
        error = "the stream ended without a content token"
    usage = result.usage if result is not None else {}
    record = RequestRecord(
        start_s=wall,
        success=not error,
        error=error,
        status=status,
        ttft_s=None if first is None else first - t0,
        itl_s=itl,
        latency_s=end - t0,
        prompt_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
        finish_reason=result.finish_reason if result is not None else None,
        n_images=1,
        level=level,
    )
    return record, result.text if result is not None else ""


async def conversations(
    base_url: str,
    api_key: str | None,
    model: str,
    images: Sequence[dict[str, Any]],
    params: dict[str, Any],
    *,
    in_flight: int,
    timeout_s: float,
    label: tuple[str, int],
    session_prefix: str,
) -> list[TurnRecord]:
    """One conversation per image, `in_flight` at a time, each turn after the one before;
    a conversation ends at its first failed turn."""
    from clients.chat import MedGemmaClient

    policy, rnd = label
    gate = asyncio.Semaphore(in_flight)
    async with MedGemmaClient(
        base_url=base_url, api_key=api_key or "EMPTY", model=model, max_retries=0,
        timeout=timeout_s,
    ) as client:  # fmt: skip

        async def converse(c: int, image: dict[str, Any]) -> list[TurnRecord]:
            headers = {SESSION_HEADER: f"{session_prefix}-{c}"}
            out: list[TurnRecord] = []
            replies: list[str] = []
            async with gate:
                for turn in range(1, len(QUESTIONS) + 1):
                    record, text = await timed_turn(
                        client,
                        turn_messages(image, replies),
                        {**params, "extra_headers": headers},
                        float(in_flight),
                    )
                    out.append(TurnRecord(policy, rnd, c, turn, record))
                    if not record.success:
                        break
                    replies.append(text)
            return out

        done = await asyncio.gather(*(converse(c, im) for c, im in enumerate(images)))
    return [t for conv in done for t in conv]


def new_images(scenario: Scenario, n: int, key: Sequence[int]) -> list[dict[str, Any]]:
    """n encoded images whose pixels depend on the scenario's seed and `key` (round, policy)."""
    rng = np.random.default_rng([scenario.seed or 0, *key])
    sizes = scenario.images.sizes
    return [image_part(rng, "image", scenario, sizes[i % len(sizes)]) for i in range(n)]


def run_affinity(
    scenario: Scenario,
    policies: Sequence[str] = POLICIES,
    *,
    rounds: int = 3,
    per_round: int = 8,
    out_root: Path = RESULTS,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Start the replicas and a router per policy, alternate rounds, write and return
    affinity.json's content."""
    if rounds < 1 or per_round < 1:
        raise BenchError("--rounds and --conversations must be at least 1")
    if len(set(policies)) != len(policies):
        raise BenchError(f"--policies names a policy twice: {' '.join(policies)}")
    if len(scenario.load.users) != 1 or scenario.load.mode != "closed":
        raise BenchError(
            "affinity runs one closed-loop level: load.users: [N] (N conversations in flight)"
        )
    in_flight = scenario.load.users[0]
    cfg = deployment(scenario)
    scenario = with_seed(scenario)
    model = served_model(scenario)
    api_key = os.environ.get(scenario.api_key_env) or None
    params = send_params(scenario, model)
    folder = new_folder(out_root, scenario.name)
    (folder / "scenario.yaml").write_text(to_yaml(scenario))
    (folder / "command.txt").write_text(shlex.join(command or sys.argv) + "\n")
    print(f"results in {folder}", flush=True)
    results: list[RoundResult] = []
    sessions: dict[str, set[str]] = {}

    def run(policy: str, rnd: int, n: int, base_url: str) -> list[TurnRecord]:
        images = new_images(scenario, n, (rnd, policies.index(policy)))
        prefix = f"{scenario.seed}-{policy}-{rnd}" if rnd else f"{WARM_UP}-{policy}"
        return asyncio.run(
            conversations(
                base_url, api_key, model, images, params, in_flight=in_flight,
                timeout_s=scenario.request_timeout_s, label=(policy, rnd),
                session_prefix=prefix,
            )
        )  # fmt: skip

    with fleet(cfg, policies, folder, api_key) as (servers, routers):
        first = f"{next(iter(routers.values())).root_url}/v1"
        preflight.check_server(first, api_key, model)
        for policy, router in routers.items():  # warm-up: not counted
            warm = run(policy, 0, 1, f"{router.root_url}/v1")
            if not all(t.record.success for t in warm):
                bad = next(t.record for t in warm if not t.record.success)
                raise BenchError(f"the warm-up conversation through {policy} failed: {bad.error}")
        for rnd in range(1, rounds + 1):
            for policy, router in routers.items():
                state = machine_state()
                before = replica_counters(servers)
                turns = run(policy, rnd, per_round, f"{router.root_url}/v1")
                after = replica_counters(servers)
                result = RoundResult(
                    rnd, policy, turns, [a - b for a, b in zip(after, before, strict=True)], state
                )
                results.append(result)
                row = round_figures(result)
                print(
                    f"round {rnd} {policy}: follow-up TTFT p50 {ms(row, 'followup_ttft_p50_ms')}"
                    f" ms, hit rate {percent(row['hit_rate_all'])}, requests by replica "
                    f"{row['replica_requests']}, failed {row['failed']} (load average "
                    f"{state['loadavg'][0]:.2f})",
                    flush=True,
                )
        if "consistent_hash" in routers:
            log = routers["consistent_hash"].log_path.read_text("utf-8")
            sessions = {k: v for k, v in session_workers(log).items() if not k.startswith(WARM_UP)}
    summary = summarise(results)
    note = (
        f"{cpu_note('http://127.0.0.1')}; {len(servers)} replicas, {in_flight} conversations "
        f"in flight, {per_round} per round, {len(QUESTIONS)} turns each"
    )
    sticky = {
        "seen_in_router_log": len(sessions),
        "on_one_replica": sum(1 for w in sessions.values() if len(w) == 1),
    }
    out = {
        "note": note,
        "policies": list(policies),
        "session_header": SESSION_HEADER,
        "consistent_hash_sessions": sticky,
        "rounds": [{**round_figures(r), "machine": r.machine} for r in results],
        "summary": summary,
        "cpu": machine_state(),
    }
    with (folder / "records.jsonl").open("w") as f:
        f.writelines(t.to_json() + "\n" for r in results for t in r.turns)
    (folder / "affinity.json").write_text(json.dumps(out, indent=2) + "\n")
    from rich.console import Console

    console = Console() if sys.stdout.isatty() else Console(width=170)
    for table in tables(results, summary, note):
        console.print(table)
    if sessions:
        console.print(
            f"consistent_hash: {sticky['on_one_replica']} of {sticky['seen_in_router_log']} "
            "conversations "
            f"had every turn on one replica (keyed on {SESSION_HEADER}, from the router's log)"
        )
    console.print(f"results: {folder}")
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks affinity", description=(__doc__ or "").split("\n\n")[0]
    )
    p.add_argument(
        "--scenario", type=Path, default=Path("configs/scenarios/bench-affinity.yaml"),
        help="a scenario whose deployment has a `replicas:` section",
    )  # fmt: skip
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a scenario field (repeatable), e.g. --set load.users=[2]",
    )  # fmt: skip
    p.add_argument("--rounds", type=int, default=3, help="rounds per policy (default 3)")
    p.add_argument(
        "--conversations", type=int, default=8,
        help="new conversations per round and policy (default 8)",
    )  # fmt: skip
    p.add_argument(
        "--policies", nargs="+", choices=get_args(RouterPolicy), default=list(POLICIES),
        metavar="POLICY",
        help=f"router policies, one router each (default: {' '.join(POLICIES)}); the ratio "
        f"column compares each with {REFERENCE} when it is one of them",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=RESULTS, help="results root folder")
    args = p.parse_args(argv)
    command = [sys.executable, "-m", "benchmarks", "affinity", *(argv or sys.argv[1:])]
    try:
        scenario = load_scenario(args.scenario, args.set)
        run_affinity(
            scenario,
            args.policies,
            rounds=args.rounds,
            per_round=args.conversations,
            out_root=args.out,
            command=command,
        )
    except (ScenarioError, BenchError) as exc:
        return report(exc)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0
