"""The affinity experiment's run: the replicas and a router per policy, a warm-up
conversation through each router, then rounds alternating between the routers (A B C A B C
...), every replica's counters read around each round; prints and writes the results."""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks.experiments.affinity.conversation import (
    QUESTIONS,
    SESSION_HEADER,
    TurnRecord,
    conversations,
    new_images,
    send_params,
)
from benchmarks.experiments.affinity.counters import replica_counters
from benchmarks.experiments.affinity.figures import RoundResult, round_figures, summarise
from benchmarks.experiments.affinity.fleet import deployment, fleet, session_workers
from benchmarks.experiments.affinity.tables import percent, tables
from benchmarks.runner import preflight
from benchmarks.runner.errors import BenchError
from benchmarks.runner.machine import machine_state
from benchmarks.runner.report import ms
from benchmarks.runner.run import RESULTS, cpu_note, new_folder, served_model, with_seed
from benchmarks.runner.scenario import Scenario, to_yaml

POLICIES = ("round_robin", "cache_aware", "consistent_hash")
WARM_UP = "warmup"  # the session ids of the warm-up conversations start with it


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
