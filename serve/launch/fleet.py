"""The running replicas and vllm-router: supervision, rolling restarts, shutdown.

Each replica is a ServerProcess supervised in a thread of its own with the config's
restart policy (a restart of one leaves the others and the router running; the router's
health checks take it out and back in); vllm-router is restarted under the same policy.

A rolling restart (SIGHUP, as gunicorn's) restarts the replicas with a re-read config,
one at a time: each is taken out of the router, drained, started with the new config and
put back once ready; the next leaves the router only once the router shows the one put
back healthy and serving (serve.launch.rejoin: its own view, GET /workers and its
per-replica answered-requests counter), so that the router always has a replica to send
to; a replica that does not start with the new config goes back to the running one, and
one that does not serve through the router in time stops the rollout. What may be rolled
out, and the lines said, are serve.launch.rollout's and serve.launch.rejoin's pure
decisions. serve.launch.serve_replicas starts the fleet.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import httpx

from serve.command.replicas import replica_url
from serve.config.deployment import ConfigError, DeploymentConfig
from serve.launch.rejoin import (
    REJOIN_QUIET_S,
    REJOIN_TIMEOUT_S,
    Rejoin,
    RouterView,
    not_serving_line,
    rejoin_state,
    seen,
    serving_line,
)
from serve.launch.rollout import (
    done_line,
    one_line,
    refusal,
    refused_line,
    restart_refusal,
    rollout_plan,
    stopped_line,
)
from serve.launch.router import Router
from serve.launch.server import ServerProcess, model_to_load
from serve.launch.supervise import supervise
from serve.process import LaunchError


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


def say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


class Fleet:
    """The running replicas and router: supervision, rolling restarts, shutdown.

    Replica i's `locks[i]` is held by whoever restarts it: its supervisor (a crash) or the
    rolling restart (a planned one); see serve.launch.supervise."""

    rejoin_timeout_s = REJOIN_TIMEOUT_S  # a replica put back must serve within this
    rejoin_quiet_s = REJOIN_QUIET_S  # no request through any replica for this long: idle
    poll_s = 0.2

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

    def keep_router(self) -> int | None:
        """If vllm-router has exited, start it again (over every replica, under the config's
        `restart` policy, as a replica would be) and return None; return its exit status
        when it may not be restarted or does not come back. The replicas keep running."""
        proc = self.router.proc
        if proc is None or proc.poll() is None or self.stopping.is_set():
            return None
        code, policy = proc.returncode, self.cfg.restart
        where = f"see {self.router.log_path}"
        if why := restart_refusal(policy, self.router_restarts):
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
            self.router.start()
        except LaunchError as exc:
            if not self.stopping.is_set():
                say(f"error: vllm-router did not come back: {str(exc).splitlines()[0]}; {where}")
            return 1
        say(f"vllm-router restarted: answering again after {time.perf_counter() - t0:.1f} s")
        return None

    def start_rollout(self, load: Callable[[], DeploymentConfig]) -> None:
        """Re-read the config and, if it can be rolled out, restart the replicas one at a
        time in a thread; else one `error:` line and nothing changes."""
        try:
            new = load()
            why = refusal(self.cfg, new)
            if why is None:
                model_to_load(new)  # a new stand-in is built before anything stops
        except (ConfigError, OSError) as exc:  # a bad file; a stand-in that cannot be built
            why = one_line(str(exc))
        if why is not None:
            return say(refused_line(why))
        plan = rollout_plan(new, self.devices)
        say(
            f"SIGHUP: rolling restart of {len(plan)} replicas with the re-read config, "
            "one at a time"
        )
        self.rollout = threading.Thread(target=self.roll, args=(new, plan), name="rollout")
        self.rollout.start()

    def roll(self, new: DeploymentConfig, plan: list[DeploymentConfig]) -> None:
        """The rollout thread: never ends without a line saying how it ended."""
        try:
            self.roll_each(new, plan)
        except Exception as exc:  # a thread's exception would otherwise end it silently
            say(f"error: the rolling restart stopped on an unexpected error: {exc!r}")
            raise

    def roll_each(self, new: DeploymentConfig, plan: list[DeploymentConfig]) -> None:
        t0 = time.perf_counter()
        for i, replica in enumerate(plan):
            if self.stopping.is_set():
                return
            added = self.restart_replica(i, replica)
            if added is None:
                if not self.stopping.is_set():
                    say(stopped_line(i, time.perf_counter() - t0))
                return
            serving = self.await_serving(i, replica_url(self.servers[i].cfg), added)
            if not serving and i + 1 < len(plan):
                if not self.stopping.is_set():
                    say(stopped_line(i + 1, time.perf_counter() - t0))
                return
        self.cfg = new
        say(done_line(len(plan), time.perf_counter() - t0))

    def restart_replica(self, i: int, replica: DeploymentConfig) -> RouterView | None:
        """Out of the router, drain, start with `replica`, ready, back in. On a failed
        start, back to the previous config. If it runs the new config, the router's view
        just before it went back in (what await_serving compares with), else None."""
        server, url = self.servers[i], replica_url(self.servers[i].cfg)
        with self.locks[i]:
            if self.stopping.is_set():
                return None
            old_pid = server.proc.pid if server.proc else None
            t0 = time.perf_counter()
            try:
                self.router.remove_worker(url)
            except LaunchError as exc:
                say(f"error: replica {i}: {exc}; left running as it was")
                return None
            self.wait_idle(server)
            server.stop()
            drained = time.perf_counter() - t0
            if self.stopping.is_set():
                return None
            previous, server.cfg = server.cfg, replica
            try:
                server.start()
            except LaunchError as exc:
                if self.stopping.is_set():
                    return None
                say(
                    f"error: replica {i} did not become healthy with the new config: "
                    f"{str(exc).splitlines()[0]}; see its log {server.log_path}; starting it "
                    "again with the running config"
                )
                server.cfg = previous
                if self.start_again(i):
                    self.put_back(i, url)
                return None
            ready = time.perf_counter() - t0 - drained
            added = self.router_view() or RouterView({}, {})
            if not self.put_back(i, url):
                return None
        new_pid = server.proc.pid if server.proc else None
        say(
            f"replica {i}: restarted (pid {old_pid} -> {new_pid}): drained in {drained:.1f} s, "
            f"ready after {ready:.1f} s, back in the router"
        )
        self.watch(i)
        return added

    def router_view(self) -> RouterView | None:
        """The router's view of the replicas, or None if it does not answer."""
        try:
            return self.router.view()
        except LaunchError:
            return None

    def await_serving(self, i: int, url: str, added: RouterView) -> bool:
        """Wait until the router shows replica i (at `url`, put back when it showed `added`)
        healthy and answering requests, or healthy with no traffic at all; say which. After
        rejoin_timeout_s, one `error:` line and False: the rollout stops, leaving the next
        replica in the router. If `added` lists no replica (the router did not answer, or
        had none), the first view after the put-back is what the counters must rise from."""
        t0 = time.monotonic()
        while not self.stopping.is_set():
            view, waited = self.router_view(), time.monotonic() - t0
            now = view or RouterView({}, {})
            if not added.health and view is not None:
                added = view
            state = rejoin_state(
                url,
                added,
                now,
                waited,
                quiet_s=self.rejoin_quiet_s,
                timeout_s=self.rejoin_timeout_s,
            )
            if state in (Rejoin.SERVING, Rejoin.IDLE):
                say(serving_line(i, state, waited, seen(url, added, now)))
                return True
            if state is Rejoin.TIMED_OUT:
                say(not_serving_line(i, url, waited, seen(url, added, now)))
                return False
            self.stopping.wait(self.poll_s)
        return False

    def wait_idle(self, server: ServerProcess, poll_s: float = 0.2) -> None:
        """Wait, up to the replica's drain_timeout_s, until its API server handles no
        request (GET /load, see replica_configs) on two reads `poll_s` apart, or no longer
        answers. Out of the router, the replica gets no new request, but one the router
        sent just before may still be on its way at the first read; a read that times out
        (a busy server) is no answer yet, not an idle server."""
        deadline = time.monotonic() + server.cfg.drain_timeout_s
        idle_reads = 0
        with httpx.Client(timeout=5, verify=server.verify) as http:
            while time.monotonic() < deadline and not self.stopping.is_set():
                try:
                    load = int(http.get(f"{server.root_url}/load").json()["server_load"])
                except httpx.TimeoutException:
                    load = 1
                except (httpx.HTTPError, ValueError, KeyError, TypeError):
                    return  # no count to wait on: vLLM's own drain is what is left
                idle_reads = idle_reads + 1 if load <= 0 else 0
                if idle_reads >= 2:
                    return
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
