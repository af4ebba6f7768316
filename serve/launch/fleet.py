"""Run a replicas config: every replica, then vllm-router in front of them; stop them all.

`run` checks every port and the placement before starting anything, starts the replicas
side by side (each a ServerProcess with its own log), starts the router once all are
ready, supervises each replica with the config's restart policy (a restart of one leaves
the others and the router running; the router's health checks take it out and back in),
and on SIGTERM/SIGINT stops the router first, then lets the replicas drain.

SIGHUP is a rolling restart (as gunicorn's): the config is read again with the same
command-line overrides, and each replica in turn is taken out of the router, drained,
started with the new config and put back once ready, the next only after that. A config
that does not load, or that changes what a rolling restart cannot (serve.command.replicas.
rollout_blockers), is refused with one `error:` line and nothing is touched.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

from serve.command.argv import local_server_env, render_shell, server_command
from serve.command.replicas import (
    WORKER_STARTUP_TIMEOUT_S,
    PlacementError,
    cpu_placement,
    gpu_placement,
    ports,
    replica_configs,
    replica_url,
    rollout_blockers,
    router_argv,
    router_command,
)
from serve.config.deployment import ConfigError, DeploymentConfig
from serve.launch.server import ServerProcess, model_to_load
from serve.launch.supervise import supervise
from serve.process import LaunchError, client_host, port_in_use, wait_until_ready


def gpu_count() -> int:
    """GPUs `nvidia-smi -L` lists (0 without the NVIDIA driver)."""
    if shutil.which("nvidia-smi") is None:
        return 0
    out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, check=False)
    return sum(1 for line in out.stdout.splitlines() if line.startswith("GPU "))


def placement(cfg: DeploymentConfig) -> list[str]:
    """Each replica's cores or GPUs on this machine. Raises PlacementError."""
    if cfg.device == "cpu":
        return cpu_placement(cfg, os.sched_getaffinity(0))
    return gpu_placement(cfg, gpu_count())


def busy_ports(cfg: DeploymentConfig) -> list[str]:
    """A line for each port of the deployment that something already listens on."""
    p = ports(cfg)
    named = [("port", "the router", p.router)]
    named += [("replicas.first_port", f"replica {i}", n) for i, n in enumerate(p.replicas)]
    named.append(("router.metrics_port", "the router's metrics", p.metrics))
    host = {"port": cfg.host, "router.metrics_port": cfg.host}
    return [
        f"{field}: port {n} ({who}) is already in use; stop what listens there or choose "
        "another (--port N moves them all)"
        for field, who, n in named
        if port_in_use(host.get(field, "127.0.0.1"), n)
    ]


def dry_run(cfg: DeploymentConfig, model_path: str) -> str:
    """Every replica's command and the router's, one shell line each."""
    lines = []
    try:
        replicas = replica_configs(cfg, placement(cfg))
    except PlacementError as exc:
        lines.append(f"# warning: {exc}; showing the placement from the config alone")
        n = cfg.replicas.count if cfg.replicas else 0
        replicas = replica_configs(cfg, [str(i) for i in range(n)])
    for i, rep in enumerate(replicas):
        lines.append(f"# replica {i}")
        lines.append(
            render_shell(server_command(rep, model_path), local_server_env(rep, os.environ))
        )
    lines.append("# router")
    argv = router_argv(cfg, [replica_url(r) for r in replicas])
    lines.append(render_shell(router_command(argv), {}))
    return "\n".join(lines)


class Router:
    """vllm-router as a child process in its own process group, logging to a file."""

    def __init__(self, cfg: DeploymentConfig, urls: list[str], log_path: Path) -> None:
        self.cfg, self.urls, self.log_path = cfg, urls, log_path
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def root_url(self) -> str:
        return f"http://{client_host(self.cfg.host)}:{self.cfg.port}"

    def start(self, api_key: str | None) -> None:
        """Start the router; wait until it answers /health and /v1/models (the latter
        forwarded to a replica, with the key). Raises LaunchError."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                router_command(router_argv(self.cfg, self.urls)),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            wait_until_ready(
                self.proc,
                [f"{self.root_url}/health", f"{self.root_url}/v1/models"],
                timeout_s=90,
                log_path=self.log_path,
                name="vllm-router",
                headers={"Authorization": f"Bearer {api_key}"} if api_key else {},
                interval_s=0.5,
            )
        except BaseException:
            self.stop()
            raise

    def stop(self, timeout_s: float = 10) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def remove_worker(self, url: str) -> None:
        """Take a replica out (POST /remove_worker): no new request goes to it; the ones it
        has keep running. Raises LaunchError."""
        self._admin("remove_worker", url, timeout_s=10)

    def add_worker(self, url: str) -> None:
        """Put a replica back (POST /add_worker; vllm-router first waits up to
        WORKER_STARTUP_TIMEOUT_S for its /health). Raises LaunchError."""
        self._admin("add_worker", url, timeout_s=WORKER_STARTUP_TIMEOUT_S + 10)

    def worker_urls(self) -> list[str]:
        """The replicas the router sends requests to (GET /list_workers)."""
        r = httpx.get(f"{self.root_url}/list_workers", timeout=10)
        r.raise_for_status()
        return list(r.json()["urls"])

    def _admin(self, route: str, url: str, timeout_s: float) -> None:
        try:
            r = httpx.post(f"{self.root_url}/{route}", params={"url": url}, timeout=timeout_s)
        except httpx.HTTPError as exc:
            raise LaunchError(f"vllm-router did not answer POST /{route}: {exc}") from None
        if r.status_code != 200 and "already exists" not in r.text:  # added twice is added
            raise LaunchError(
                f"vllm-router answered POST /{route}?url={url} with {r.status_code}: {r.text[:200]}"
            )


def start_all(servers: list[ServerProcess]) -> list[tuple[int, LaunchError]]:
    """Start every replica side by side; the failures, by replica index."""

    def start(i: int) -> tuple[int, LaunchError] | None:
        try:
            servers[i].start()
        except LaunchError as exc:
            return i, exc
        return None

    with ThreadPoolExecutor(max_workers=len(servers)) as pool:
        results = list(pool.map(start, range(len(servers))))
    return [r for r in results if r is not None]


def stop_all(servers: list[ServerProcess]) -> None:
    """Stop the replicas side by side (each drains for up to drain_timeout_s)."""
    with ThreadPoolExecutor(max_workers=max(1, len(servers))) as pool:
        list(pool.map(lambda s: s.stop(), servers))


def one_line(message: str) -> str:
    """A message of several lines (a ConfigError's: the file, then a line per field) as
    one line: `first: second; third`."""
    first, *rest = [ln.strip() for ln in message.splitlines() if ln.strip()] or [""]
    return f"{first}: {'; '.join(rest)}" if rest else first


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Fleet:
    """The running replicas and router: supervision, rolling restarts, shutdown.

    Replica i's `locks[i]` is held by whoever restarts it: its supervisor (a crash) or the
    rolling restart (a planned one); see serve.launch.supervise."""

    def __init__(
        self,
        cfg: DeploymentConfig,
        devices: list[str],
        servers: list[ServerProcess],
        router: Router,
        stopping: threading.Event,
    ) -> None:
        self.cfg, self.devices, self.servers, self.router = cfg, devices, servers, router
        self.stopping = stopping
        self.locks = [threading.Lock() for _ in servers]
        self.watchers: list[threading.Thread | None] = [None] * len(servers)
        self.exits: dict[int, int] = {}  # replica -> status, once its supervisor gave up
        self.rollout: threading.Thread | None = None
        self.router_restarts = 0

    def watch(self, i: int) -> None:
        """Supervise replica i in a thread of its own (again, if its supervisor gave up)."""
        if (w := self.watchers[i]) is not None and w.is_alive():
            return
        self.exits.pop(i, None)

        def run() -> None:
            code, _ = supervise(
                self.servers[i],
                self.stopping.is_set,
                lambda line: say(f"replica {i}: {line}"),
                restart_lock=self.locks[i],
            )
            self.exits[i] = code

        thread = threading.Thread(target=run, name=f"supervise-{i}", daemon=True)
        self.watchers[i] = thread
        thread.start()

    def rolling(self) -> bool:
        return self.rollout is not None and self.rollout.is_alive()

    def keep_router(self, api_key: str | None) -> int | None:
        """If vllm-router has exited, start it again (over every replica, under the config's
        `restart` policy, as a replica would be) and return None; return its exit status
        when it may not be restarted or does not come back. The replicas keep running."""
        proc = self.router.proc
        if proc is None or proc.poll() is None or self.stopping.is_set():
            return None
        code, policy = proc.returncode, self.cfg.restart
        where = f"see {self.router.log_path}"
        if not policy.enabled or self.router_restarts >= policy.max_restarts:
            why = "restart.enabled is off" if not policy.enabled else "restart.max_restarts"
            say(f"error: vllm-router exited with status {code} ({why}); {where}")
            return code or 1
        self.router_restarts += 1
        say(
            f"vllm-router exited with status {code}; restart {self.router_restarts}/"
            f"{policy.max_restarts}"
        )
        t0 = time.perf_counter()
        self.router.stop()  # reap what is left of its process group
        try:
            self.router.start(api_key)
        except LaunchError as exc:
            if not self.stopping.is_set():
                say(f"error: vllm-router did not come back: {str(exc).splitlines()[0]}; {where}")
            return 1
        say(f"vllm-router restarted: answering again after {time.perf_counter() - t0:.1f} s")
        return None

    def start_rollout(self, load: Callable[[], DeploymentConfig]) -> None:
        """Re-read the config and, if it can be rolled out, restart the replicas one at a
        time in a thread; else one `error:` line and nothing changes."""

        def refuse(why: str) -> None:
            say(f"error: SIGHUP: {why}; still serving with the running config")

        try:
            new = load()
            blockers = rollout_blockers(self.cfg, new)
            if not blockers:
                model_to_load(new)  # a new stand-in is built before anything stops
        except (ConfigError, OSError) as exc:  # a bad file; a stand-in that cannot be built
            return refuse(one_line(str(exc)))
        if blockers:
            return refuse(
                f"a rolling restart cannot change {', '.join(blockers)}; these stay as the "
                "launcher started them (replica count, ports, router, device): stop and "
                "start the launcher to change them"
            )
        plan = replica_configs(new, self.devices)
        say(
            f"SIGHUP: rolling restart of {len(plan)} replicas with the re-read config, "
            "one at a time"
        )
        self.rollout = threading.Thread(target=self.roll, args=(new, plan), name="rollout")
        self.rollout.start()

    def roll(self, new: DeploymentConfig, plan: list[DeploymentConfig]) -> None:
        t0 = time.perf_counter()
        for i, replica in enumerate(plan):
            if self.stopping.is_set():
                return
            if not self.restart_replica(i, replica):
                if not self.stopping.is_set():
                    say(
                        f"rolling restart stopped at replica {i} after "
                        f"{time.perf_counter() - t0:.0f} s: replicas before it run the new "
                        "config, the others the previous one"
                    )
                return
        self.cfg = new
        say(
            f"rolling restart done: {len(plan)} replicas restarted one at a time in "
            f"{time.perf_counter() - t0:.0f} s"
        )

    def restart_replica(self, i: int, replica: DeploymentConfig) -> bool:
        """Out of the router, drain, start with `replica`, ready, back in. On a failed
        start, back to the previous config. True if it runs the new config."""
        server, url = self.servers[i], replica_url(self.servers[i].cfg)
        with self.locks[i]:
            if self.stopping.is_set():
                return False
            old_pid = server.proc.pid if server.proc else None
            t0 = time.perf_counter()
            try:
                self.router.remove_worker(url)
            except LaunchError as exc:
                say(f"error: replica {i}: {exc}; left running as it was")
                return False
            self.wait_idle(server)
            server.stop()
            drained = time.perf_counter() - t0
            if self.stopping.is_set():
                return False
            previous, server.cfg = server.cfg, replica
            try:
                server.start()
            except LaunchError as exc:
                if self.stopping.is_set():
                    return False
                say(
                    f"error: replica {i} did not become healthy with the new config: "
                    f"{str(exc).splitlines()[0]}; see its log {server.log_path}; starting it "
                    "again with the running config"
                )
                server.cfg = previous
                if self.start_again(i):
                    self.put_back(i, url)
                return False
            ready = time.perf_counter() - t0 - drained
            if not self.put_back(i, url):
                return False
        new_pid = server.proc.pid if server.proc else None
        say(
            f"replica {i}: restarted (pid {old_pid} -> {new_pid}): drained in {drained:.1f} s, "
            f"ready after {ready:.1f} s, back in the router"
        )
        self.watch(i)
        return True

    def wait_idle(self, server: ServerProcess, poll_s: float = 0.2) -> None:
        """Wait, up to the replica's drain_timeout_s, until its API server handles no
        request (GET /load, see replica_configs) or no longer answers."""
        deadline = time.monotonic() + server.cfg.drain_timeout_s
        with httpx.Client(timeout=5, verify=server.verify) as http:
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    if int(http.get(f"{server.root_url}/load").json()["server_load"]) <= 0:
                        return
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    return  # no count to wait on: vLLM's own drain is what is left
                time.sleep(poll_s)

    def start_again(self, i: int) -> bool:
        try:
            self.servers[i].start()
        except LaunchError as exc:
            if not self.stopping.is_set():
                say(
                    f"error: replica {i} did not come back with the running config either: "
                    f"{str(exc).splitlines()[0]}; it is out of the router (SIGHUP tries again)"
                )
            return False
        return True

    def put_back(self, i: int, url: str) -> bool:
        try:
            self.router.add_worker(url)
        except LaunchError as exc:
            if not self.stopping.is_set():
                say(f"error: replica {i} is running but not back in the router: {exc}")
            return False
        return True

    def stop(self, timeout_s: float = 300) -> None:
        """Router first, then every replica (draining); then again for any replica that a
        restart (supervisor or rollout) started meanwhile, until those threads are done."""
        self.stopping.set()
        self.router.stop()
        stop_all(self.servers)
        threads = [t for t in [*self.watchers, self.rollout] if t is not None]
        deadline = time.monotonic() + timeout_s
        while any(t.is_alive() for t in threads) and time.monotonic() < deadline:
            for t in threads:
                t.join(timeout=1)
            stop_all(self.servers)


def run(cfg: DeploymentConfig, log_dir: Path, reload: Callable[[], DeploymentConfig]) -> int:
    """Start replicas and router, print the ready lines, supervise; SIGHUP rolls out the
    config `reload` returns; SIGTERM/SIGINT stop everything."""
    try:
        devices = placement(cfg)
    except PlacementError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    busy = busy_ports(cfg)
    if busy:
        print(f"error: {busy[0]}", file=sys.stderr)
        return 1
    replicas = replica_configs(cfg, devices)
    p = ports(cfg)
    servers = [
        ServerProcess(rep, log_dir / f"serve-{cfg.port}-replica{i}.log")
        for i, rep in enumerate(replicas)
    ]
    router = Router(cfg, [replica_url(r) for r in replicas], log_dir / f"router-{cfg.port}.log")
    stopping, ready, hup = threading.Event(), threading.Event(), threading.Event()
    fleet = Fleet(cfg, devices, servers, router, stopping)

    def on_signal(signum: int, _frame: object) -> None:
        if stopping.is_set():
            return
        stopping.set()
        print(f"\nstopping ({signal.Signals(signum).name})...", file=sys.stderr, flush=True)
        if not ready.is_set():  # still starting: end the start-up waits now
            for proc in [s.proc for s in servers] + [router.proc]:
                if proc is not None and proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    def on_hup(_signum: int, _frame: object) -> None:
        if ready.is_set():
            hup.set()  # the main loop acts on it
        elif not stopping.is_set():
            os.write(2, b"SIGHUP during start-up: ignored\n")  # unbuffered: safe in a handler

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_hup)
    for i, s in enumerate(servers):
        print(
            f"starting replica {i} of {cfg.model_name} on port {s.cfg.port} "
            f"({'cores' if cfg.device == 'cpu' else 'GPUs'} {devices[i]}; log: {s.log_path})",
            file=sys.stderr,
        )
    t0 = time.perf_counter()
    model_to_load(cfg)  # build the stand-in once, not in each replica's thread
    failed = start_all(servers)
    if failed or stopping.is_set():
        stop_all(servers)
        if stopping.is_set():
            return 130
        i, why = failed[0]
        first = str(why).splitlines()[0]
        print(
            f"error: replica {i} (port {servers[i].cfg.port}) did not become healthy: "
            f"{first}; see its log {servers[i].log_path}",
            file=sys.stderr,
        )
        return 1
    print(f"starting vllm-router ({cfg.router.policy}; log: {router.log_path})", file=sys.stderr)
    try:
        router.start(servers[0].api_key)
    except LaunchError as exc:
        stop_all(servers)
        if stopping.is_set():
            return 130
        first = str(exc).splitlines()[0]
        print(f"error: {first}; see its log {router.log_path}", file=sys.stderr)
        return 1
    ready.set()
    print(f"ready in {time.perf_counter() - t0:.0f} s")
    print(f"base URL: {router.root_url}/v1")
    print(f"model:    {cfg.model_name}")
    print(f"replicas: {len(servers)} on ports {', '.join(str(n) for n in p.replicas)}")
    print(f"router:   vllm-router, policy {cfg.router.policy}, metrics on port {p.metrics}")
    if cfg.stand_in is not None:
        from serve.standin.tiny_model import RANDOM_WEIGHTS_NOTICE

        print(f"note:     {RANDOM_WEIGHTS_NOTICE}")
    from serve.host import image_attention_notice

    if notice := image_attention_notice(cfg.device, cfg.limit_mm_per_prompt):
        print(f"note:     {notice}")
    if servers[0].api_key:
        print(f"auth:     API key required (from ${cfg.api_key_env})")
    print("rollout:  SIGHUP restarts the replicas one at a time with the re-read config")
    sys.stdout.flush()

    for i in range(len(servers)):
        fleet.watch(i)
    code = 0
    while not stopping.is_set():
        if hup.is_set():
            hup.clear()
            if fleet.rolling():
                say("SIGHUP: a rolling restart is in progress; ignored (send it again when done)")
            else:
                fleet.start_rollout(reload)
        router_code = fleet.keep_router(servers[0].api_key)
        if router_code is not None:
            code = router_code
            break
        if len(fleet.exits) == len(servers) and not fleet.rolling():
            print("error: every replica is down; stopping the router", file=sys.stderr)
            code = max(fleet.exits.values()) or 1
            break
        time.sleep(0.5)
    fleet.stop()
    return code
