"""`python -m benchmarks profile`: where the CPU goes when the server answers image + text chat.

    python -m benchmarks profile --scenario configs/scenarios/bench-baseline.yaml --start-server

The scenario runs at two levels, one user and its highest level (saturation), through the
usual runner. Inside each level's measurement window py-spy samples every process of the
server (the API server listening on the port, vLLM's engine core, its workers) and the
Locust process, and psutil reads each process's CPU time from the kernel. The results
folder holds, per level, `<process>.collapsed` (py-spy's raw stacks), `<process>.svg` (a
flame graph) and, at the top, `profile.json` (CPU ms per request for each stage, each
process's share of the CPU and the cores it kept busy) and `stages.png`.

Method (benchmarks.experiments.stages): a process's CPU seconds are the kernel's; they are
split over stages in proportion to py-spy's non-idle samples (py-spy samples Python threads
only, so OpenMP's threads count through the kernel's total, under the stage whose Python
frame started them). Busy polling (vLLM's shared-memory queues spin while they wait) is a stage
of its own. py-spy itself costs CPU on the same cores: its processes' CPU is reported as
`profiler`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psutil

from benchmarks.experiments import stages
from benchmarks.experiments.flame import write_flame_svg
from benchmarks.runner.cli import (
    add_scenario_args,
    add_server_args,
    needs_images,
    reported,
    scenario_from_args,
)
from benchmarks.runner.errors import BenchError
from benchmarks.runner.run import RESULTS, cpu_note, run_benchmark, served_model, with_seed
from benchmarks.runner.scenario import Scenario

SAMPLE_RATE_HZ = 50  # py-spy's cost grows with the rate; 50 Hz gives ~1,500 samples a level


def py_spy() -> str:
    """The py-spy executable beside this Python (installed with the project), or on PATH."""
    import sys

    here = Path(sys.executable).with_name("py-spy")
    found = str(here) if here.exists() else shutil.which("py-spy")
    if not found:
        raise BenchError("py-spy is not installed: run `make install`")
    return found


def listening_pid(base_url: str) -> int:
    """The process listening on the base URL's port on this machine."""
    parts = urlsplit(base_url)
    if parts.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise BenchError(f"profile samples local processes only, not a server at {base_url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        conns = psutil.net_connections(kind="tcp")
    except psutil.AccessDenied:
        raise BenchError(
            "cannot list listening sockets (run as root, or as the server's user)"
        ) from None
    for c in conns:
        if c.status == psutil.CONN_LISTEN and c.laddr and c.laddr.port == port and c.pid:
            return int(c.pid)
    raise BenchError(f"no local process listens on port {port} ({base_url})")


def process_kind(proc: psutil.Process) -> str | None:
    """api_server / engine_core / worker for vLLM's processes, None for helpers."""
    try:
        name = proc.name()
        cmdline = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None
    if "EngineCor" in name or "EngineCore" in cmdline:
        return "engine_core"
    if "Worker" in name:
        return "worker"
    if "api_server" in cmdline:
        return "api_server"
    return None


def server_processes(base_url: str) -> dict[str, list[psutil.Process]]:
    """The server's processes by kind: the listener and its vLLM descendants."""
    root = psutil.Process(listening_pid(base_url))
    found: dict[str, list[psutil.Process]] = {"api_server": [root]}
    for child in root.children(recursive=True):
        kind = process_kind(child)
        if kind and kind != "api_server":
            found.setdefault(kind, []).append(child)
    if "engine_core" not in found:
        raise BenchError(
            f"the process on {base_url} (pid {root.pid}) has no vLLM engine core child; "
            "is it a vLLM server?"
        )
    return found


def locust_child(timeout_s: float = 30) -> psutil.Process:
    """The Locust process this process started for the current level (polled for)."""
    deadline = time.monotonic() + timeout_s
    me = psutil.Process()
    while time.monotonic() < deadline:
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if "locust" in " ".join(child.cmdline()):
                    return child
        time.sleep(0.2)
    raise BenchError("the level's Locust process did not appear")


def cpu_seconds(proc: psutil.Process) -> float:
    """user + system CPU seconds of a live process (all threads); 0 once it has exited."""
    try:
        t = proc.cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0
    return float(t.user + t.system)


def started_window(path: Path, timeout_s: float = 60) -> dict[str, float]:
    """The level's window.json as Locust writes it when its test starts (polled for)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, json.JSONDecodeError):
            return dict(json.loads(path.read_text()))
        time.sleep(0.2)
    raise BenchError(f"the level's Locust run did not start within {timeout_s:g} s ({path})")


def sampled_interval(window: dict[str, float], duration_s: float) -> tuple[float, int]:
    """When py-spy starts (wall clock) and for how many whole seconds: from 1 s after the
    level's warm-up ends to 2 s before its run time ends, at least 5 s. The clock is Locust's,
    not the level's launch: under load Locust itself can take seconds to start."""
    begin = window["warmup_end"] + 1
    end = window["start"] + duration_s - 2
    return begin, max(5, int(end - begin))


@dataclass
class LevelProfile:
    """What one level's sampling found (filled in by `sample_level`)."""

    level: float
    folder: Path
    start: float = 0.0  # wall-clock seconds: the sampled interval
    stop: float = 0.0
    processes: list[tuple[str, int, float, Path]] = field(default_factory=list)
    profiler_cpu_s: float = 0.0
    error: str = ""


def sample_level(
    base_url: str, scenario: Scenario, level: float, folder: Path, out: list[LevelProfile]
) -> Iterator[None]:
    """Context manager body (see `hook`): in a thread, wait for the level's warm-up to end
    (Locust's window.json), then run py-spy on every server process and Locust for the rest
    of the window."""
    folder.mkdir(parents=True, exist_ok=True)
    prof = LevelProfile(level, folder)
    out.append(prof)

    def work() -> None:
        try:
            targets = [
                (kind, p) for kind, procs in server_processes(base_url).items() for p in procs
            ]
            targets.append(("load_generator", locust_child()))
            window = started_window(folder / "window.json")
            begin, seconds = sampled_interval(window, scenario.load.duration_s)
            wait = begin - time.time()
            if wait > 0:
                time.sleep(wait)  # a measurement schedule: the window starts after warm-up
            spies = []
            before = {p.pid: cpu_seconds(p) for _, p in targets}
            prof.start = time.time()
            for kind, p in targets:
                raw = folder / f"{kind}-{p.pid}.collapsed"
                cmd = [
                    py_spy(), "record", "--pid", str(p.pid), "--rate", str(SAMPLE_RATE_HZ),
                    "--duration", str(seconds), "--format", "raw", "--idle", "--nonblocking",
                    "--output", str(raw),
                ]  # fmt: skip
                log = (folder / f"py-spy-{kind}-{p.pid}.log").open("w")
                spy = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
                spies.append((kind, p, raw, spy, psutil.Process(spy.pid)))
            spy_cpu = 0.0
            while any(s[3].poll() is None for s in spies):
                spy_cpu = sum(cpu_seconds(s[4]) for s in spies) or spy_cpu
                time.sleep(0.5)
            prof.stop = time.time()
            prof.profiler_cpu_s = spy_cpu
            for kind, p, raw, _, _ in spies:
                prof.processes.append((kind, p.pid, cpu_seconds(p) - before[p.pid], raw))
        except (BenchError, psutil.Error, OSError) as exc:
            prof.error = str(exc)

    thread = threading.Thread(target=work, name=f"profile-{level:g}", daemon=True)
    thread.start()
    yield
    thread.join(timeout=60)


def hook(base_url: str, scenario: Scenario, out: list[LevelProfile]) -> Any:
    """A `level_hook` for run_benchmark that samples each level."""

    def for_level(level: float, folder: Path) -> contextlib.AbstractContextManager[None]:
        return contextlib.contextmanager(sample_level)(base_url, scenario, level, folder, out)

    return for_level


def completed_between(records: list[Any], start: float, stop: float) -> int:
    return sum(1 for r in records if r.success and start <= r.end_s <= stop)


def level_report(prof: LevelProfile, records: list[Any]) -> dict[str, Any]:
    """profile.json's entry for one level; writes the flame graphs."""
    if prof.error:
        raise BenchError(f"profiling level {prof.level:g} failed: {prof.error}")
    window = prof.stop - prof.start
    n = completed_between(records, prof.start, prof.stop)
    profiles = []
    for kind, pid, cpu_s, raw in prof.processes:
        stacks = stages.parse_collapsed(raw.read_text() if raw.exists() else "")
        profiles.append(
            stages.ProcessProfile(kind, cpu_s, stages.stage_samples(stacks, stages.RULES[kind]))
        )
        if stacks:
            write_flame_svg(
                stacks, raw.with_suffix(".svg"), f"{kind} (pid {pid}), {prof.level:g} users"
            )
    processes = stages.summarise_processes(profiles, n, window)
    return {
        "level": prof.level,
        "window_s": round(window, 2),
        "completed_requests": n,
        "request_throughput": round(n / window, 3) if window > 0 else None,
        "processes": processes,
        "profiler": {
            "cpu_s": round(prof.profiler_cpu_s, 3),
            "cores": round(prof.profiler_cpu_s / window, 3) if window > 0 else 0.0,
        },
        "folder": str(prof.folder),
    }


def thread_binding(log: Path | None) -> list[str]:
    """vLLM's `OpenMP thread binding info` lines from a server log, if there is one."""
    if log is None or not log.exists():
        return []
    lines = log.read_text(errors="replace").splitlines()
    for i, line in enumerate(lines):
        if "OpenMP thread binding info" in line:
            return [ln.split("] ", 1)[-1].strip() for ln in lines[i + 1 : i + 5]]
    return []


def run_profile(
    scenario: Scenario,
    base_url: str,
    *,
    start_server: bool = False,
    out_root: Path = RESULTS,
    command: list[str] | None = None,
) -> dict[str, Any]:
    """Profile one user and the scenario's top level; write profile.json and the plots."""
    from benchmarks.runner import preflight

    py_spy()  # fail before any load if it is missing
    if os.cpu_count() is None:
        raise BenchError("cannot count this machine's CPU cores")
    top = max(scenario.load.levels)
    if scenario.load.mode != "closed":
        raise BenchError("profile runs closed-loop levels (users); this scenario is open-loop")
    scenario = with_seed(scenario).model_copy(
        update={"load": scenario.load.model_copy(update={"users": sorted({1, int(top)})})}
    )
    model = served_model(scenario)
    sampled: list[LevelProfile] = []
    log = None
    with preflight.server_for(scenario, base_url, start_server) as server:
        if server is not None:
            log = server.log_path
        preflight.check_server(base_url, os.environ.get(scenario.api_key_env) or None, model)
        server_processes(base_url)  # names a server that is not local or not vLLM, before load
        result = run_benchmark(
            scenario,
            base_url,
            out_root=out_root,
            command=command,
            name=f"{scenario.name}-profile",
            level_hook=hook(base_url, scenario, sampled),
        )
    levels = [level_report(p, lv.records) for p, lv in zip(sampled, result.levels, strict=True)]
    report = {
        "scenario": scenario.name,
        "note": cpu_note(base_url),
        "sample_rate_hz": SAMPLE_RATE_HZ,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
        "openmp_thread_binding": thread_binding(log),
        "levels": levels,
    }
    (result.folder / "profile.json").write_text(json.dumps(report, indent=2) + "\n")
    write_stage_chart(levels, result.folder / "stages.png")
    print_profile(report, result.folder)
    return report


def write_stage_chart(levels: list[dict[str, Any]], path: Path) -> None:
    """One horizontal bar per process and stage: CPU ms per request, one colour per level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = sorted(
        {(kind, stage) for lv in levels for kind, p in lv["processes"].items()
         for stage in p["stages_ms_per_request"]}
    )  # fmt: skip
    fig, ax = plt.subplots(figsize=(10, 0.3 * len(rows) + 1.5))
    height = 0.8 / max(len(levels), 1)
    for i, lv in enumerate(levels):
        vals = [
            lv["processes"].get(kind, {}).get("stages_ms_per_request", {}).get(stage, 0.0)
            for kind, stage in rows
        ]
        ys = [r + i * height for r in range(len(rows))]
        ax.barh(ys, vals, height=height, label=f"{lv['level']:g} users")
    ax.set_yticks([r + 0.4 - height / 2 for r in range(len(rows))])
    ax.set_yticklabels([f"{k}: {s}" for k, s in rows], fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("CPU ms per completed request")
    ax.legend()
    ax.set_title("CPU per request by process and stage (server and load generator share the cores)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def print_profile(report: dict[str, Any], folder: Path) -> None:
    print(f"profile: {report['note']}; load average {report['loadavg']}")
    for line in report["openmp_thread_binding"]:
        print(f"  vLLM: {line}")
    for lv in report["levels"]:
        print(
            f"{lv['level']:g} users: {lv['completed_requests']} requests in {lv['window_s']} s "
            f"({lv['request_throughput']} req/s); py-spy used {lv['profiler']['cores']} cores"
        )
        for kind, p in lv["processes"].items():
            print(
                f"  {kind}: {p['cores']} cores, {p['share'] * 100:.1f}% of the CPU, "
                f"{p['cpu_ms_per_request']} ms per request"
            )
            for stage, ms in p["stages_ms_per_request"].items():
                print(f"    {stage}: {ms} ms")
    print(f"profile folder: {folder}")


def add_cli_args(parser: argparse.ArgumentParser) -> None:
    add_scenario_args(parser)
    add_server_args(parser)


def main(args: argparse.Namespace) -> int:
    """`python -m benchmarks profile`."""
    return reported(
        lambda: run_profile(
            needs_images(scenario_from_args(args), "profile"),
            args.base_url,
            start_server=args.start_server,
            out_root=args.out,
            command=args.command_line,
        )
    )
