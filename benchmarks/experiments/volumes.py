"""`python -m benchmarks volumes`: is a follow-up question on the same CT volume cheap?
Issue 21's target: on the CPU twin the follow-up on the same 85-slice volume completes in
at most 0.6x the first question's wall time (goal 0.3x).

    flock /tmp/server.lock python -m benchmarks volumes --rounds 3 [--split-rounds 1]

Starts the scenario's deployment (bench-volumes.yaml: cpu-volumes.yaml) once, or uses a
running one with --base-url. Each round prepares a fresh study (a new phantom seed: nothing
of it is cached), laid out by the runner's workload code as a client sends it, then sends
its first question and its follow-up(s) one at a time, streaming, as the runner's records
(benchmarks.runner.records). The first round is a warm-up (printed, not counted). Before
and after every request it reads vLLM's /metrics, so each request's prefix-cache hits
(tokens) and processed-image-cache hits (images) are its own. Prints every round (first and
follow-up wall time and TTFT, the ratio, the hits, the load average), then the median ratio.

What makes a follow-up fast is two caches: vLLM's prefix cache (the engine skips the
prefill of every token before the question) and the API server's processed-image cache
(`mm_processor_cache_gb`: the 85 slices are not run through Gemma 3's image processor
again). `--split-rounds N` then stops the server and starts the same deployment with
`mm_processor_cache_gb: 0` for N more rounds: the prefix cache alone.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from dataclasses import asdict
from pathlib import Path
from time import perf_counter, time
from typing import Any

import httpx

from benchmarks.runner import preflight
from benchmarks.runner.cli import reported
from benchmarks.runner.errors import BenchError
from benchmarks.runner.machine import machine_state
from benchmarks.runner.prepared import PreparedRequest
from benchmarks.runner.records import RequestRecord, StreamParser
from benchmarks.runner.run import RESULTS, cpu_note, new_folder, served_model, with_seed
from benchmarks.runner.scenario import Scenario, load_scenario, to_yaml
from benchmarks.runner.server_metrics import cache_totals
from benchmarks.runner.workload import prepare

SCENARIO = Path("configs/scenarios/bench-volumes.yaml")
TARGET, GOAL = 0.6, 0.3  # follow-up / first wall time (issue 21)
NO_IMAGE_CACHE = "mm_processor_cache_gb=0"


def study(scenario: Scenario, model: str, seed: int) -> list[PreparedRequest]:
    """One fresh volume (phantom seed `seed`): its first question, then its follow-ups."""
    one = scenario.model_copy(
        update={
            "seed": seed,
            "images": scenario.images.model_copy(update={"distinct": 1, "radiograph_share": 0}),
        }
    )
    return prepare(one, model)


def send(
    base_url: str, api_key: str | None, req: PreparedRequest, timeout_s: float
) -> RequestRecord:
    """Stream one prepared request: its record (never raises for a failed request)."""
    parser = StreamParser(
        perf_counter(), time(), req.n_images, req.kind, 1.0, req.role, req.session
    )
    headers = {"Content-Type": "application/json", **preflight.auth_headers(api_key)}
    status, error = 0, ""
    try:
        with httpx.stream(
            "POST", f"{base_url}/chat/completions", content=req.body, headers=headers,
            timeout=timeout_s,
        ) as resp:  # fmt: skip
            status = resp.status_code
            if status != 200:
                error = f"HTTP {status}: {resp.read()[:300].decode('utf-8', 'replace')}"
            else:
                for line in resp.iter_lines():
                    parser.feed(line, perf_counter())
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"[:300]
    return parser.finish(perf_counter(), status=status, error=error)


def metrics(base_url: str) -> str:
    text = preflight.snapshot(f"{preflight.root_url(base_url)}/metrics")
    if text is None:
        raise BenchError(f"{base_url}: /metrics did not answer; the caches cannot be read")
    return text


def one_round(
    scenario: Scenario, base_url: str, api_key: str | None, model: str, seed: int
) -> dict[str, Any]:
    """A fresh study's questions in order: each one's record and cache hits."""
    requests = study(scenario, model, seed)
    load = os.getloadavg()[0]
    out: list[dict[str, Any]] = []
    for req in requests:
        before = metrics(base_url)
        record = send(base_url, api_key, req, scenario.request_timeout_s)
        caches = cache_totals(before, metrics(base_url))
        out.append({"record": asdict(record), "caches": caches})
        if not record.success:
            raise BenchError(f"the {req.role} question failed: {record.error}")
    first, follow = out[0]["record"], out[1]["record"]
    return {
        "seed": seed,
        "load_average": round(load, 2),
        "requests": out,
        "ratio": round(follow["latency_s"] / first["latency_s"], 3),
    }


def round_line(label: str, row: dict[str, Any]) -> str:
    first, follow = (r["record"] for r in row["requests"][:2])
    caches = row["requests"][1]["caches"]
    prefix, images = caches.get("prefix_cache", {}), caches.get("mm_cache", {})
    return (
        f"{label}: first {first['latency_s']:.2f} s (TTFT {first['ttft_s']:.2f} s, "
        f"{first['prompt_tokens']:,} prompt tokens), follow-up {follow['latency_s']:.2f} s "
        f"(TTFT {follow['ttft_s']:.2f} s): {row['ratio']:.3f}x; follow-up hits: prefix cache "
        f"{prefix.get('hits', 0):,.0f} of {prefix.get('queries', 0):,.0f} tokens, processed "
        f"images {images.get('hits', 0):,.0f} of {images.get('queries', 0):,.0f}; "
        f"load average {row['load_average']:.2f}"
    )


def rounds_on(
    scenario: Scenario, base_url: str, api_key: str | None, model: str, label: str, n: int,
    seed: int,
) -> list[dict[str, Any]]:  # fmt: skip
    """A warm-up round (printed, not counted), then n rounds, each a fresh study."""
    rows = []
    for r in range(n + 1):
        row = one_round(scenario, base_url, api_key, model, seed + r)
        name = f"{label} warm-up" if r == 0 else f"{label} round {r}"
        print(round_line(name, row), flush=True)
        if r > 0:
            rows.append(row)
    return rows


def median_line(label: str, rows: list[dict[str, Any]]) -> str:
    ratios = [row["ratio"] for row in rows]
    med = statistics.median(ratios)
    verdict = "goal met" if med <= GOAL else "target met" if med <= TARGET else "target missed"
    return (
        f"{label}: follow-up / first wall time {med:.3f}x (median of {len(ratios)} rounds; "
        f"min {min(ratios):.3f}, max {max(ratios):.3f}); target <= {TARGET}x, goal "
        f"<= {GOAL}x: {verdict}"
    )


def run(args: argparse.Namespace) -> None:
    from serve.process import free_port

    if args.rounds < 1 or args.split_rounds < 0:
        raise BenchError("--rounds must be at least 1 and --split-rounds at least 0")
    scenario = with_seed(load_scenario(args.scenario, args.set))
    if not scenario.prompts.follow_ups or scenario.images.kind != "ct":
        raise BenchError(f"{args.scenario}: needs images.kind ct and prompts.follow_ups")
    model = served_model(scenario)
    folder = new_folder(args.out, f"{scenario.name}-volumes")
    (folder / "scenario.yaml").write_text(to_yaml(scenario))
    seed = scenario.seed or 0
    print(f"{cpu_note(args.base_url or 'http://127.0.0.1')}; results in {folder}", flush=True)
    result: dict[str, Any] = {"machine": machine_state(), "scenario": scenario.name}
    arms: list[tuple[str, list[str], int]] = [("cached", [], args.rounds)]
    if args.split_rounds:
        arms.append(("mm cache 0", [NO_IMAGE_CACHE], args.split_rounds))
    for label, overrides, n in arms:
        if args.base_url:
            if overrides:
                raise BenchError("--split-rounds starts its own server: drop --base-url")
            api_key = os.environ.get(scenario.api_key_env) or None
            result[label] = rounds_on(
                scenario, args.base_url.rstrip("/"), api_key, model, label, n, seed
            )
        else:
            server = preflight.start_deployment(
                scenario, free_port(), overrides, what=f"{label} server", log_name="volumes"
            )
            try:
                result[label] = rounds_on(
                    scenario, server.base_url, server.api_key, model, label, n, seed
                )
            finally:
                server.stop()
        seed += n + 1
    result["machine_after"] = machine_state()
    (folder / "volumes.json").write_text(json.dumps(result, indent=2) + "\n")
    for label, _, _ in arms:
        print(median_line(label, result[label]))


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scenario", type=Path, default=SCENARIO, help="a CT scenario with follow-ups")
    p.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="scenario override"
    )
    p.add_argument("--rounds", type=int, default=3, help="rounds after the warm-up (default 3)")
    p.add_argument(
        "--split-rounds", type=int, default=0,
        help=f"then as many rounds on a server started with {NO_IMAGE_CACHE} (default 0)",
    )  # fmt: skip
    p.add_argument("--base-url", help="a running server's /v1 URL (default: start the scenario's)")
    p.add_argument("--out", type=Path, default=RESULTS, help="results root folder")


DESCRIPTION = __doc__.split("\n\n")[0]


def main(args: argparse.Namespace) -> int:
    return reported(lambda: run(args))
