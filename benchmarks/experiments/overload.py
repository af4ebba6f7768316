"""Overload run: a scenario far past saturation, while /health and the server's memory are
sampled before, during and after.

    python -m benchmarks overload --scenario configs/scenarios/bench-overload.yaml --start-server
    python -m benchmarks overload --scenario configs/scenarios/bench-overload.yaml --base-url URL

It runs the scenario with `benchmarks.runner.run.run_benchmark` (the Locust runner) and adds to
its results folder: health.jsonl and rss.jsonl (one sample a second), after.json (a normal
request once the load stops) and overload.json, the figures: requests sent, completed,
errored by kind, p99 latency, the longest request against its timeout, /health answers
that were not 200 or slow, and the server's RSS (API server + engine processes) before,
at its peak and after.
"""

from __future__ import annotations

import argparse
import json
import os
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import psutil

from benchmarks.runner import preflight
from benchmarks.runner.cli import add_server_args
from benchmarks.runner.errors import BenchError, report
from benchmarks.runner.metrics import percentile
from benchmarks.runner.records import RequestRecord, read_records
from benchmarks.runner.run import RESULTS, RunResult, run_benchmark
from benchmarks.runner.scenario import Scenario, ScenarioError, load_scenario


def listening_pid(port: int) -> int | None:
    """The process listening on a local TCP port (the vLLM API server), if visible."""
    for conn in psutil.net_connections(kind="tcp"):
        if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
            return conn.pid
    return None


def tree_rss(pid: int) -> dict[str, int]:
    """RSS in bytes of a process and its descendants, by process title (vLLM sets them:
    VLLM::EngineCore, VLLM::Worker), plus `total`."""
    out: Counter[str] = Counter()
    try:
        root = psutil.Process(pid)
        procs = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return {}
    for p in procs:
        try:
            title = " ".join(p.cmdline()[:1]) or p.name()
            name = title.split("/")[-1][:40] if p.pid != pid else "api_server"
            out[name] += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    out["total"] = sum(v for k, v in out.items() if k != "total")
    return dict(out)


@dataclass
class Sampler:
    """Once a second: GET /health (status, seconds) and the server tree's RSS."""

    root_url: str
    pid: int | None
    period_s: float = 1.0
    health: list[dict[str, Any]] = field(default_factory=list)
    rss: list[dict[str, Any]] = field(default_factory=list)
    phase: str = "before"
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def sample(self) -> None:
        t = time.time()
        t0 = time.perf_counter()
        try:
            status = httpx.get(f"{self.root_url}/health", timeout=10).status_code
        except httpx.HTTPError as exc:
            status = 0
            self.health.append({"t": t, "phase": self.phase, "status": 0, "error": repr(exc)})
        else:
            self.health.append(
                {"t": t, "phase": self.phase, "status": status, "s": time.perf_counter() - t0}
            )
        if self.pid is not None:
            self.rss.append({"t": t, "phase": self.phase, **tree_rss(self.pid)})

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.period_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=15)


def errors_by_kind(records: Sequence[RequestRecord]) -> dict[str, int]:
    """Failed requests grouped by HTTP status and the start of the error text."""
    kinds: Counter[str] = Counter()
    for r in records:
        if not r.success:
            text = r.error.split(": ", 1)[-1].strip()[:80] if r.error else "no error text"
            kinds[f"{r.status or 'no status'}: {text}"] += 1
    return dict(kinds.most_common())


def figures(
    records: Sequence[RequestRecord],
    health: Sequence[dict[str, Any]],
    rss: Sequence[dict[str, Any]],
    timeout_s: float,
) -> dict[str, Any]:
    """The overload figures (pure): requests, errors, latency, health and memory."""
    ok = [r for r in records if r.success]
    mib = 2**20

    def rss_of(phase: str, pick: Any) -> float | None:
        vals = [s["total"] for s in rss if s["phase"] == phase and "total" in s]
        return round(pick(vals) / mib, 1) if vals else None

    during = [h for h in health if h["phase"] == "during"]
    return {
        "requests_sent": len(records),
        "completed": len(ok),
        "errored": len(records) - len(ok),
        "errors_by_kind": errors_by_kind(records),
        "p50_latency_s": percentile([r.latency_s for r in ok], 50),
        "p99_latency_s": percentile([r.latency_s for r in ok], 99),
        "p99_error_latency_s": percentile([r.latency_s for r in records if not r.success], 99),
        "max_latency_s": max((r.latency_s for r in records), default=None),
        "request_timeout_s": timeout_s,
        "health_samples_during": len(during),
        "health_not_200_during": sum(1 for h in during if h["status"] != 200),
        "health_max_s_during": max((h.get("s", 0.0) for h in during), default=None),
        "rss_mib_before": rss_of("before", max),
        "rss_mib_peak_during": rss_of("during", max),
        "rss_mib_after": rss_of("after", max),
    }


def normal_request(base_url: str, api_key: str | None, model: str) -> dict[str, Any]:
    """One small chat after the load: does the server serve normally again?"""
    body = {
        "model": model,
        "messages": [{"role": "user", "content": "Describe this X-ray"}],
        "max_tokens": 8,
    }
    t0 = time.perf_counter()
    r = httpx.post(
        f"{base_url}/chat/completions",
        json=body,
        headers=preflight.auth_headers(api_key),
        timeout=120,
    )
    return {"status": r.status_code, "s": round(time.perf_counter() - t0, 3), "body": r.text[:300]}


def run_overload(
    scenario: Scenario,
    base_url: str,
    *,
    start_server: bool = False,
    out_root: Path = RESULTS,
    settle_s: float = 10.0,
    command: list[str] | None = None,
) -> tuple[RunResult, dict[str, Any]]:
    """Run the scenario with health and RSS sampling; write the figures into its folder."""
    base_url = base_url.rstrip("/")
    root = preflight.root_url(base_url)
    api_key = os.environ.get(scenario.api_key_env) or None
    with preflight.server_for(scenario, base_url, start_server) as server:
        started = server.proc if server is not None else None
        pid = started.pid if started is not None else listening_pid(urlsplit(root).port or 80)
        sampler = Sampler(root, pid)
        sampler.start()
        time.sleep(settle_s)
        sampler.phase = "during"
        try:
            result = run_benchmark(scenario, base_url, out_root=out_root, command=command)
        finally:
            sampler.phase = "after"
        time.sleep(settle_s)
        after = normal_request(base_url, api_key, result.summary["model"])
        sampler.stop()
    folder = result.folder
    records = [r for lv in result.levels for r in read_records(lv.folder / "records.jsonl")]
    numbers = figures(records, sampler.health, sampler.rss, scenario.request_timeout_s)
    numbers["normal_request_after"] = after
    numbers["server_pid"] = pid
    numbers["note"] = result.summary["note"]
    for name, rows in (("health.jsonl", sampler.health), ("rss.jsonl", sampler.rss)):
        (folder / name).write_text("".join(json.dumps(row) + "\n" for row in rows))
    (folder / "overload.json").write_text(json.dumps(numbers, indent=2) + "\n")
    return result, numbers


DESCRIPTION = __doc__


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--scenario", type=Path, default=Path("configs/scenarios/bench-overload.yaml")
    )
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    add_server_args(parser)
    parser.add_argument("--out", type=Path, default=RESULTS)


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks overload`: the run, then its figures as JSON."""
    try:
        scenario = load_scenario(args.scenario, args.set)
        result, numbers = run_overload(
            scenario,
            args.base_url,
            start_server=args.start_server,
            out_root=args.out,
            command=args.command_line,
        )
    except (ScenarioError, BenchError) as exc:
        return report(exc)
    print(json.dumps(numbers, indent=2))
    print(f"results folder: {result.folder}")
    return 0
