"""Two stand-in replicas behind the real vllm-router, supervised by a real Fleet: what the
rollout tests (test_rollout.py) run against. A stand-in replica starts in a second
(standin_replica.py: the files the launcher and the router poll, /health, /v1/models,
/load, and an answer to every POST) and runs through ServerProcess like a vLLM server;
its config says how it misbehaves (the *_MAX_NUM_SEQS values below)."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from serve.command.replicas import replica_configs, replica_url
from serve.config.deployment import DeploymentConfig, load_config
from serve.launch.fleet import Fleet, start_all
from serve.launch.router import Router
from serve.launch.server import ServerProcess
from tests.conftest import REPO
from tests.e2e.launcher import free_ports

CONFIG = REPO / "configs" / "deployments" / "cpu-tiny-2replicas.yaml"
REFUSED_MAX_NUM_SEQS = 13  # a config the stand-in replica refuses to start with
SLOW_MAX_NUM_SEQS = 14  # a config it starts with, but never becomes ready
FAILING_MAX_NUM_SEQS = 15  # a config it starts with and is healthy, but answers POST with 500
STANDIN = Path(__file__).with_name("standin_replica.py")


@dataclass
class StaticServer(ServerProcess):
    """A ServerProcess whose server is standin_replica.py over `root` (exits at once,
    status 3, when max_num_seqs is REFUSED_MAX_NUM_SEQS: a config vLLM would refuse; never
    answers when it is SLOW_MAX_NUM_SEQS; answers every POST with 500 when it is
    FAILING_MAX_NUM_SEQS)."""

    root: Path = Path()
    ready_probe: bool = False  # the launcher's probe sends an image: not for a stand-in

    def command(self, model_path: str) -> tuple[list[str], dict[str, str]]:
        if self.cfg.max_num_seqs == REFUSED_MAX_NUM_SEQS:
            return [sys.executable, "-c", "raise SystemExit(3)"], {}
        if self.cfg.max_num_seqs == SLOW_MAX_NUM_SEQS:
            return [sys.executable, "-c", "import time; time.sleep(600)"], {}
        status = ["500"] if self.cfg.max_num_seqs == FAILING_MAX_NUM_SEQS else []
        return [sys.executable, str(STANDIN), str(self.cfg.port), str(self.root), *status], {}


@dataclass
class Setup:
    """The running fleet, and what its next re-read of the config returns: the file with
    the test's port and model folder, plus `load` (overrides a test sets)."""

    fleet: Fleet
    port: int
    model: Path
    www: Path  # what the stand-ins serve: health, v1/models, load
    load: tuple[str, ...] = ()

    def reload(self) -> DeploymentConfig:
        return config(self.port, self.model, *self.load)

    def pids(self) -> list[int]:
        return [s.proc.pid for s in self.fleet.servers if s.proc is not None]

    def roll(self) -> None:
        self.fleet.start_rollout(self.reload)
        if self.fleet.rollout is not None:
            self.fleet.rollout.join(timeout=120)
            assert not self.fleet.rollout.is_alive()


def config(port: int, model: Path, *overrides: str) -> DeploymentConfig:
    return load_config(
        CONFIG, [f"model={model}", f"port={port}", "restart.backoff_s=0", *overrides]
    )


@contextmanager
def stand_in_fleet(tmp_path: Path) -> Iterator[Setup]:
    """Two stand-in replicas behind vllm-router, supervised; all stopped on exit."""
    www, model = tmp_path / "www", tmp_path / "model"
    (www / "v1").mkdir(parents=True)
    (www / "health").write_text("ok")
    (www / "v1" / "models").write_text('{"data": []}')
    (www / "load").write_text('{"server_load": 0}')  # vLLM's count of requests in flight
    model.mkdir()
    (model / "config.json").write_text("{}")
    port, devices = free_ports(4), ["0", "1"]
    cfg = config(port, model)
    servers: list[ServerProcess] = [
        StaticServer(rep, tmp_path / f"replica{i}.log", root=www)
        for i, rep in enumerate(replica_configs(cfg, devices))
    ]
    router = Router(cfg, [replica_url(x.cfg) for x in servers], tmp_path / "router.log")
    fleet = Fleet(cfg, devices, servers, router, threading.Event())
    fleet.rejoin_quiet_s = 1.0  # no traffic: a replica put back is taken as serving sooner
    try:
        assert start_all(servers) == []
        router.start()
        for i in range(len(servers)):
            fleet.watch(i)
        yield Setup(fleet, port, model, www)
    finally:
        fleet.stop(timeout_s=30)
    assert not any(server.alive() for server in servers)
    assert router.proc is not None and router.proc.poll() is not None


@contextmanager
def traffic(fleet: Fleet) -> Iterator[Counter[int]]:
    """A client sending chat requests through the router one after another (no retries)
    in the block; the statuses it got, counted."""
    statuses: Counter[int] = Counter()
    done = threading.Event()
    url = f"{fleet.router.root_url}/v1/chat/completions"
    body = {"model": "stand-in", "messages": [{"role": "user", "content": "hi"}]}

    def send() -> None:
        with httpx.Client(timeout=30) as http:
            while not done.is_set():
                try:
                    statuses[http.post(url, json=body).status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1
                done.wait(0.02)

    t = threading.Thread(target=send, daemon=True)
    t.start()
    try:
        yield statuses
    finally:
        done.set()
        t.join(timeout=60)


def in_router_while(fleet: Fleet, work: threading.Thread) -> list[list[str]]:
    """The router's replica list, sampled every 50 ms while `work` runs."""
    seen = []
    while work.is_alive():
        seen.append(sorted(fleet.router.worker_urls()))
        time.sleep(0.05)
    return seen
