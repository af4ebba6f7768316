"""Headless runs: one Locust process per level, a results folder that reproduces the run.

`run_benchmark` is the reusable entry point (the CLI, `make bench`, the baseline, the
headroom check and other scenarios call it). Each level (a number of users in closed
loop, an arrival rate in open loop) runs `locust --headless` as a subprocess: gevent's
monkey-patching stays out of this process (which may also start a vLLM server or run
transformers), the load generator is a process of its own, and Locust writes its own CSV
and HTML report exactly as a person running the printed command would get them.

The folder `results/<scenario>-<UTC time>/` holds: scenario.yaml (resolved), command.txt,
server.json (/v1/models, /version), metrics-before.txt / metrics-after.txt (vLLM's
/metrics), server_series.csv (its /metrics sampled during the levels) and client_series.csv
on one time axis, records.jsonl (every request of every level, in its window), summary.json,
the plots, and per level: records.jsonl, window.json, locust_stats*.csv,
locust_failures.csv, locust.html, locust.log.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import secrets
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from benchmarks.runner import preflight, report, server_metrics, timeline
from benchmarks.runner.cli import (
    add_scenario_args,
    add_server_args,
    reported,
    scenario_from_args,
)
from benchmarks.runner.errors import BenchError
from benchmarks.runner.followups import by_role
from benchmarks.runner.metrics import best_level, in_window, summarise
from benchmarks.runner.prepared import sessions, write_workload
from benchmarks.runner.records import RequestRecord, read_records, write_records
from benchmarks.runner.scenario import Scenario, rate_units, to_yaml
from benchmarks.runner.server_metrics import Sampler
from benchmarks.runner.workload import prepare

if TYPE_CHECKING:
    from serve.config.deployment import DeploymentConfig

LOCUSTFILE = Path(__file__).with_name("locustfile.py")
LevelHook = Callable[[float, Path], AbstractContextManager[Any]]
RESULTS = Path("results")


@dataclass
class LevelResult:
    level: float
    summary: dict[str, Any]
    records: list[RequestRecord]  # inside the measurement window
    folder: Path
    next_index: int = 0  # the next level starts at this session: fresh images, nothing cached


@dataclass
class RunResult:
    folder: Path
    summary: dict[str, Any]
    levels: list[LevelResult] = field(default_factory=list)


def with_seed(scenario: Scenario) -> Scenario:
    """The scenario with a seed: its own, or a new random one (recorded in the folder)."""
    if scenario.seed is not None:
        return scenario
    return scenario.model_copy(update={"seed": secrets.randbelow(2**31)})


def served_model(scenario: Scenario) -> str:
    """The model name to send: the scenario's, else the deployment config's served name."""
    if scenario.model:
        return scenario.model
    from serve.config.deployment import ConfigError, load_config

    try:
        return load_config(scenario.deployment).model_name
    except ConfigError as exc:
        raise BenchError(
            f"scenario has no `model:` and its deployment is unusable: {exc}"
        ) from None


def cpu_note(base_url: str) -> str:
    """Say that server and load generator share this machine's cores, when they do."""
    host = urlsplit(base_url).hostname
    if host in ("127.0.0.1", "localhost", "::1"):
        return f"{os.cpu_count()} CPU cores shared by the server and the load generator"
    return f"load generator on {os.cpu_count()} CPU cores; server at {host}"


def level_name(scenario: Scenario, level: float) -> str:
    return f"users-{int(level)}" if scenario.load.mode == "closed" else f"rate-{level:g}"


def locust_command(
    scenario: Scenario, level: float, base_url: str, workload: Path, folder: Path, start: int = 0
) -> list[str]:
    """The `locust --headless` command line of one level (the API key stays in the env)."""
    load = scenario.load
    closed = load.mode == "closed"
    users = int(level) if closed else 1
    spawn = load.spawn_rate if (closed and load.spawn_rate) else users
    return [
        sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless",
        "--host", base_url, "-u", str(users), "-r", f"{spawn:g}", "-t", f"{load.duration_s}s",
        "--stop-timeout", "0", "--exit-code-on-error", "0", "--only-summary",
        "--csv", str(folder / "locust"), "--html", str(folder / "locust.html"),
        "--workload", str(workload), "--records", str(folder / "records.jsonl"),
        "--window-file", str(folder / "window.json"), "--warmup-s", str(load.warmup_s),
        "--api-key-env", scenario.api_key_env,
        "--request-timeout", f"{scenario.request_timeout_s:g}",
        "--arrival-rate", f"{level:g}", "--max-in-flight", str(load.max_in_flight),
        "--level", f"{level:g}", "--seed", str(scenario.seed or 0),
        "--start-index", str(start),
        user_class(scenario),
    ]  # fmt: skip


def user_class(scenario: Scenario) -> str:
    """The Locust user class (in benchmarks/locustfile.py) a level runs."""
    if scenario.load.mode == "open":
        return "OpenLoopChat"
    return "ClosedLoopChat" if scenario.load.user_class == "fast" else "RequestsChat"


def run_level(
    scenario: Scenario, level: float, base_url: str, workload: Path, folder: Path, start: int = 0
) -> LevelResult:
    """Run one level in a Locust process, sending prepared requests from index `start` on,
    and summarise its measurement window."""
    folder.mkdir(parents=True, exist_ok=True)
    cmd = locust_command(scenario, level, base_url, workload, folder, start)
    log_path = folder / "locust.log"
    limit = scenario.load.duration_s + scenario.request_timeout_s + 120
    with log_path.open("w") as log:
        try:
            proc = subprocess.run(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, timeout=limit
            )
        except subprocess.TimeoutExpired:
            raise BenchError(
                f"locust did not finish within {limit:.0f} s; see {log_path}"
            ) from None
    window_path = folder / "window.json"
    window = json.loads(window_path.read_text()) if window_path.exists() else {}
    if proc.returncode != 0 or "stop" not in window:  # "stop" is written when Locust quits
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
        raise BenchError(f"locust exited with status {proc.returncode}; {log_path}:\n{tail}")
    start, stop = window["warmup_end"], window["stop"]
    if stop <= start:
        raise BenchError(f"level {level:g} stopped before its warm-up ended; see {log_path}")
    records = in_window(read_records(folder / "records.jsonl"), start, stop)
    summary = {
        "level": level,
        **summarise(records, stop - start, scenario.slo),
        **by_role(records, stop - start),
    }
    return LevelResult(level, summary, records, folder, window.get("next_index", 0))


def new_folder(out_root: Path, name: str) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    folder = out_root / f"{name}-{stamp}"
    n = 1
    while folder.exists():
        n += 1
        folder = out_root / f"{name}-{stamp}-{n}"
    folder.mkdir(parents=True)
    return folder


def run_benchmark(
    scenario: Scenario,
    base_url: str,
    *,
    out_root: Path = RESULTS,
    start_server: bool = False,
    command: list[str] | None = None,
    quiet: bool = False,
    name: str | None = None,
    level_hook: LevelHook | None = None,
) -> RunResult:
    """Check the server, prepare the requests, run every level, write the results folder.

    `level_hook(level, folder)`, if given, is entered around each level's Locust run (the
    profiler samples the processes there)."""
    base_url = base_url.rstrip("/")
    scenario = with_seed(scenario)
    model = served_model(scenario)
    api_key = os.environ.get(scenario.api_key_env) or None
    with preflight.server_for(scenario, base_url, start_server) as server:
        models = preflight.check_server(base_url, api_key, model)
        t0 = time.perf_counter()
        requests = prepare(scenario, model)
        prep_s = time.perf_counter() - t0
        preflight.probe(base_url, api_key, requests[0], scenario.request_timeout_s)
        folder = new_folder(out_root, name or scenario.name)
        say = (lambda *_: None) if quiet else print
        n_sessions = len(sessions(requests))
        say(
            f"prepared {len(requests)} requests ({n_sessions} sessions) in {prep_s:.1f} s; "
            f"results in {folder}"
        )
        write_identity(folder, scenario, base_url, models, api_key, command)
        levels = []
        index = 1  # the probe sent session 0's first request
        root = preflight.root_url(base_url)
        urls = server_metrics.targets(root, None if server else replicas_config(scenario))
        sampler = Sampler(urls, scenario.metrics_interval_s)
        origin = time.time()  # t = 0 of the server and client series
        with tempfile.TemporaryDirectory(prefix="bench-workload-") as tmp, sampler:
            workload = Path(tmp) / "workload.jsonl"
            write_workload(workload, requests)
            for level in scenario.load.levels:
                sampler.level = level
                say(f"level {level_name(scenario, level)}: {scenario.load.duration_s} s ...")
                name = level_name(scenario, level)
                hook = level_hook(level, folder / name) if level_hook else contextlib.nullcontext()
                with hook:
                    result = run_level(scenario, level, base_url, workload, folder / name, index)
                levels.append(result)
                index = max(result.next_index, index)
                sampler.level = None
        if index > n_sessions:
            say(
                f"warning: {index} sessions sent but only {n_sessions} distinct "
                "(images.distinct): repeats may hit vLLM's image and prefix caches"
            )
        (folder / "metrics-after.txt").write_text(preflight.snapshot(f"{root}/metrics") or "")
    summary = overall_summary(scenario, base_url, model, levels, prep_s)
    # sessions: one request each, or a study's first question and its follow-ups
    summary["requests_sent"], summary["distinct_requests"] = index, n_sessions
    summary["questions_per_session"] = 1 + len(scenario.prompts.follow_ups)
    summary["caches"] = server_metrics.cache_totals(
        (folder / "metrics-before.txt").read_text(), (folder / "metrics-after.txt").read_text()
    )
    summary["series_origin_unix_s"] = round(origin, 3)
    summary["server_metrics"] = sampler.report()
    (folder / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    write_records(folder / "records.jsonl", [r for lv in levels for r in lv.records])
    report.write_plots(folder, scenario.load.mode, levels, summary["note"])
    write_series(folder, scenario, levels, sampler, origin, summary["note"])
    if not quiet:
        report.print_table(summary, folder)
        if sampler.failures:
            failed = sum(sampler.failures.values())
            print(
                f"warning: {failed} of {sampler.scrapes} /metrics scrapes failed (last: "
                f"{sampler.last_error}); server_series.csv holds the {len(sampler.samples)} "
                "samples taken"
            )
    return RunResult(folder, summary, levels)


def replicas_config(scenario: Scenario) -> DeploymentConfig | None:
    """The scenario's deployment config, if it loads and has `replicas:` (its replicas'
    /metrics are sampled when the base URL is its router); else None."""
    from serve.config.deployment import ConfigError, load_config
    from serve.config.yaml_file import override_strings

    try:
        cfg = load_config(scenario.deployment, override_strings(scenario.deployment_set))
    except ConfigError:
        return None
    return cfg if cfg.replicas is not None else None


def write_series(
    folder: Path,
    scenario: Scenario,
    levels: list[LevelResult],
    sampler: Sampler,
    origin: float,
    note: str,
) -> None:
    """server_series.csv, client_series.csv and timeline.png: every request each level sent
    (warm-up included) and every /metrics sample, in seconds since `origin`."""
    spans, records = [], []
    for lv in levels:
        window = json.loads((lv.folder / "window.json").read_text())
        spans.append(
            timeline.Span(
                level_name(scenario, lv.level),
                lv.level,
                window["start"],
                window["warmup_end"],
                window["stop"],
            )
        )
        records.extend(read_records(lv.folder / "records.jsonl"))
    server = server_metrics.series_rows(sampler.samples, origin)
    server_metrics.write_series(folder / server_metrics.SERIES_FILE, server)
    client = timeline.client_rows(records, spans, origin)
    timeline.write_client_series(folder / timeline.CLIENT_FILE, client)
    timeline.write_timeline(
        folder / timeline.TIMELINE, client, server, records, spans, origin, note
    )


def write_identity(
    folder: Path,
    scenario: Scenario,
    base_url: str,
    models: dict[str, Any],
    api_key: str | None,
    command: list[str] | None,
) -> None:
    """Resolved scenario, command line, server identity and the /metrics snapshot before."""
    root = preflight.root_url(base_url)
    (folder / "scenario.yaml").write_text(to_yaml(scenario))
    cmd = command if command is not None else sys.argv
    (folder / "command.txt").write_text(shlex.join(cmd) + "\n")
    version = preflight.snapshot(f"{root}/version", api_key)
    identity = {"base_url": base_url, "models": models, "version": version and version.strip()}
    (folder / "server.json").write_text(json.dumps(identity, indent=2) + "\n")
    (folder / "metrics-before.txt").write_text(preflight.snapshot(f"{root}/metrics") or "")


def overall_summary(
    scenario: Scenario, base_url: str, model: str, levels: list[LevelResult], prep_s: float
) -> dict[str, Any]:
    sums = [lv.summary for lv in levels]
    best = best_level(sums)
    return {
        "scenario": scenario.name,
        "mode": scenario.load.mode,
        "base_url": base_url,
        "model": model,
        "finished_utc": datetime.now(UTC).isoformat(timespec="seconds"),
        "note": cpu_note(base_url),
        "prepare_s": round(prep_s, 2),
        "units": rate_units(scenario),
        "levels": sums,
        "best": {
            "level": best["level"],
            "output_throughput": best["output_throughput"],
            "request_throughput": best["request_throughput"],
            "image_throughput": best["image_throughput"],
        },
    }


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    add_scenario_args(parser)
    add_server_args(parser)


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks run`: the scenario's levels, then the results folder's path."""

    def run() -> None:
        result = run_benchmark(
            scenario_from_args(args),
            args.base_url,
            out_root=args.out,
            start_server=args.start_server,
            command=args.command_line,
        )
        print(f"results folder: {result.folder}")

    return reported(run)
