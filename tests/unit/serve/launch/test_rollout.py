"""Rolling restarts (serve.launch.fleet.Fleet) against the real vllm-router, with replicas
that start in a second (standin_fleet.py).

What a rollout must do: restart the replicas one at a time (never both out of the router),
each with the re-read config, without its supervisor taking the planned stop for a crash,
the next one only once the router shows the one put back serving (no request through the
router fails meanwhile), and stop there if it never does; refuse a config that does not
load or changes what it cannot apply, touching nothing; go back to the running config when
a replica does not start with the new one. The vLLM version of all this, under load, is
tests/e2e/test_replicas.py. What may be rolled out, and the lines said, are pure
(serve.launch.rollout, serve.launch.rejoin): tested without a process.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from serve.command.replicas import replica_configs, replica_url, rollout_blockers
from serve.config.deployment import load_config
from serve.launch.rollout import (
    done_line,
    one_line,
    refusal,
    refused_line,
    restart_refusal,
    rollout_plan,
    stopped_line,
)
from serve.launch.server import ServerProcess
from tests.unit.serve.launch.standin_fleet import (
    CONFIG,
    FAILING_MAX_NUM_SEQS,
    REFUSED_MAX_NUM_SEQS,
    SLOW_MAX_NUM_SEQS,
    Setup,
    in_router_while,
    stand_in_fleet,
    traffic,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Setup]:
    """The stand-in fleet shared by this module's tests (each leaves both replicas serving)."""
    with stand_in_fleet(tmp_path_factory.mktemp("rollout")) as s:
        yield s


def test_sighup_restarts_one_replica_at_a_time_with_the_new_config(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet, before = setup.fleet, setup.pids()
    urls = sorted(replica_url(s.cfg) for s in fleet.servers)
    setup.load = (f"max_num_seqs={(fleet.cfg.max_num_seqs or 64) + 1}",)
    with traffic(fleet) as statuses:
        fleet.start_rollout(setup.reload)
        assert fleet.rollout is not None
        seen = in_router_while(fleet, fleet.rollout)
    err = capsys.readouterr().err
    assert "rolling restart done: 2 replicas restarted one at a time" in err, err
    for i, old in enumerate(before):
        assert f"replica {i}: restarted (pid {old} -> " in err, err
        # Through the router's own view: healthy, and requests through it answered.
        assert re.search(
            rf"replica {i}: serving through the router after [\d.]+ s \(healthy, [1-9]\d* "
            r"requests answered through it",
            err,
        ), err
    assert set(statuses) == {200} and statuses[200] > 20, statuses
    assert "exited with status" not in err, "a supervisor took a planned stop for a crash"
    after = setup.pids()
    assert all(a != b for a, b in zip(before, after, strict=True)), (before, after)
    assert [s.cfg for s in fleet.servers] == replica_configs(setup.reload(), ["0", "1"])
    assert fleet.cfg == setup.reload()
    # Never both out of the router; each out at some point; both back at the end.
    assert all(len(u) >= 1 for u in seen), seen
    assert {tuple(u) for u in seen} >= {(urls[0],), (urls[1],)}, seen
    assert sorted(fleet.router.worker_urls()) == urls

    # The supervisors still restart a replica that dies on its own.
    crashed = fleet.servers[1]
    assert crashed.proc is not None
    crashed.proc.kill()
    out, deadline = "", time.monotonic() + 60
    while "restart 1: the server is ready again" not in (out := out + capsys.readouterr().err):
        assert time.monotonic() < deadline, f"replica 1 was not restarted: {out}"
        time.sleep(0.2)
    assert "replica 1: the vLLM server exited with status -9; restart 1/3" in out, out


@pytest.mark.parametrize(
    ("overrides", "said"),
    [
        (["max_num_seqs=0"], "max_num_seqs: Input should be greater than or equal to 1"),
        (["router.policy=cache_aware"], "router.policy ('round_robin' -> 'cache_aware')"),
        (["replicas.count=1", 'replicas.cpus=["0"]'], "replicas.count (2 -> 1)"),
    ],
)
def test_a_config_that_cannot_be_rolled_out_changes_nothing(
    setup: Setup, capsys: pytest.CaptureFixture[str], overrides: list[str], said: str
) -> None:
    before, last_rollout = setup.pids(), setup.fleet.rollout
    setup.load = tuple(overrides)
    setup.roll()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: SIGHUP: "), err
    assert said in err[0] and err[0].endswith("still serving with the running config"), err
    assert setup.fleet.rollout is last_rollout, "a rollout was started"
    assert setup.pids() == before
    assert len(setup.fleet.router.worker_urls()) == 2


def test_a_replica_that_does_not_start_with_the_new_config_goes_back_to_the_old(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet, before, running = setup.fleet, setup.pids(), setup.fleet.cfg.max_num_seqs
    setup.load = (f"max_num_seqs={REFUSED_MAX_NUM_SEQS}",)
    setup.roll()
    err = capsys.readouterr().err
    assert "error: replica 0 did not become healthy with the new config: " in err, err
    assert "starting it again with the running config" in err, err
    assert "rolling restart stopped at replica 0" in err, err
    assert fleet.servers[0].cfg.max_num_seqs == running == fleet.cfg.max_num_seqs
    assert setup.pids()[1] == before[1], "replica 1 was touched"
    assert fleet.servers[0].alive()
    assert len(fleet.router.worker_urls()) == 2


def test_rollout_blockers_name_only_what_a_rolling_restart_cannot_apply() -> None:
    base = load_config(CONFIG)

    def blockers(*overrides: str) -> list[str]:
        return rollout_blockers(base, load_config(CONFIG, list(overrides)))

    # What a rollout is for: model, limits, engine flags, drain and restart settings.
    assert blockers("max_num_seqs=8", "max_model_len=2048", "drain_timeout_s=5") == []
    assert blockers("stand_in.seed=1", "extra_args={enforce_eager: true}") == []
    assert blockers("restart.max_restarts=1", "mm_processor_cache_gb=1") == []
    # What shapes the router, the ports or the placement.
    assert blockers("port=9000") == ["port (8000 -> 9000)"]
    assert blockers("host=0.0.0.0") == ["host ('127.0.0.1' -> '0.0.0.0')"]
    assert blockers("router.retries.max_retries=2") == ["router.retries.max_retries (5 -> 2)"]
    assert blockers("replicas.first_port=9001") == ["replicas.first_port (None -> 9001)"]
    assert blockers('replicas.cpus=["1", "0"]') == ["replicas.cpus (['0', '1'] -> ['1', '0'])"]
    # What the edge was started with (the replicas' internal key rides on api_key_env).
    assert blockers("auth.keys_file=/k.json") == ["auth.keys_file (None -> '/k.json')"]
    assert blockers("api_key_env=OTHER_KEY") == ["api_key_env ('MEDGEMMA_API_KEY' -> 'OTHER_KEY')"]
    assert blockers("tensor_parallel_size=2", 'replicas.cpus=["0|1", "2|3"]') == [
        "replicas.cpus (['0', '1'] -> ['0|1', '2|3'])",
        "tensor_parallel_size (1 -> 2)",
    ]


# --- the pure decisions (serve.launch.rollout) -----------------------------------------


def test_a_config_is_refused_in_one_line_naming_what_it_changes() -> None:
    running = load_config(CONFIG)
    assert refusal(running, load_config(CONFIG, ["max_num_seqs=8"])) is None
    why = refusal(running, load_config(CONFIG, ["port=9000", "router.policy=random"]))
    assert why is not None and "\n" not in why, why
    assert why.startswith("a rolling restart cannot change port (8000 -> 9000), router.policy")
    assert why.endswith("stop and start the launcher to change them"), why
    assert refused_line("x") == "error: SIGHUP: x; still serving with the running config"


def test_a_rollout_restarts_each_replica_on_its_own_cores_in_order() -> None:
    new = load_config(CONFIG, ["max_num_seqs=8"])
    plan = rollout_plan(new, ["0", "1"])
    assert [(r.port, r.cpu_omp_threads_bind, r.max_num_seqs) for r in plan] == [
        (8001, "0", 8),
        (8002, "1", 8),
    ]


def test_a_config_error_becomes_one_line() -> None:
    message = "config.yaml is not a valid deployment\n  port: not a number\n\n  host: bad\n"
    assert (
        one_line(message) == "config.yaml is not a valid deployment: port: not a number; host: bad"
    )
    assert one_line("just this") == "just this" and one_line("") == ""


def test_the_router_is_restarted_as_the_restart_policy_allows() -> None:
    policy = load_config(CONFIG, ["restart.max_restarts=2"]).restart
    assert policy.enabled
    assert restart_refusal(policy, 0) is None
    assert restart_refusal(policy, 1) is None
    assert restart_refusal(policy, 2) == "restart.max_restarts"
    off = load_config(CONFIG, ["restart.enabled=false"]).restart
    assert restart_refusal(off, 0) == "restart.enabled is off"


def test_rollout_lines() -> None:
    assert stopped_line(1, 12.4) == (
        "rolling restart stopped at replica 1 after 12 s: replicas before it run the new "
        "config, the others the previous one"
    )
    assert done_line(2, 30.6) == "rolling restart done: 2 replicas restarted one at a time in 31 s"


def test_a_replica_that_does_not_serve_through_the_router_stops_the_rollout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Replica 0 starts with the new config and answers /health, but fails every request:
    the router never gets an answer from it, so replica 1 stays in the router, untouched,
    and the clients are served by it throughout."""
    with stand_in_fleet(tmp_path) as setup:
        fleet, before = setup.fleet, setup.pids()
        urls = sorted(replica_url(s.cfg) for s in fleet.servers)
        fleet.rejoin_timeout_s = 3
        setup.load = (f"max_num_seqs={FAILING_MAX_NUM_SEQS}",)
        with traffic(fleet) as statuses:
            setup.roll()
        err = capsys.readouterr().err
        assert re.search(
            r"^error: replica 0 is back in vllm-router but did not serve through it within \d+ s "
            r"\(router: \w+, 0 requests answered through it, [1-9]\d* through the others\); "
            r"no further replica leaves the router",
            err,
            re.MULTILINE,
        ), err
        assert "rolling restart stopped at replica 1 after" in err, err
        assert "rolling restart done" not in err, err
        assert fleet.servers[0].cfg.max_num_seqs == FAILING_MAX_NUM_SEQS
        assert setup.pids()[0] != before[0] and setup.pids()[1] == before[1], (
            "replica 1 was touched"
        )
        assert fleet.servers[1].cfg.max_num_seqs != FAILING_MAX_NUM_SEQS
        assert sorted(fleet.router.worker_urls()) == urls
        assert set(statuses) == {200}, statuses


def test_stopping_during_a_rollout_stops_everything(tmp_path: Path) -> None:
    """SIGTERM while a replica is starting with the new config: the rollout ends and no
    replica outlives the fleet (the one the rollout was starting included)."""
    with stand_in_fleet(tmp_path) as setup:
        fleet = setup.fleet
        setup.load = (f"max_num_seqs={SLOW_MAX_NUM_SEQS}",)
        fleet.start_rollout(setup.reload)
        starting = fleet.servers[0]
        deadline = time.monotonic() + 30
        while starting.cfg.max_num_seqs != SLOW_MAX_NUM_SEQS or not starting.alive():
            assert time.monotonic() < deadline, "the rollout did not start replica 0 again"
            time.sleep(0.05)
        t0 = time.monotonic()
        fleet.stop(timeout_s=60)
        assert time.monotonic() - t0 < 30, "stopping waited for the start-up to time out"
        assert fleet.rollout is not None and not fleet.rollout.is_alive()
        assert not any(s.alive() for s in fleet.servers)


def test_a_replica_is_stopped_once_it_handles_no_request(setup: Setup) -> None:
    """wait_idle returns when the replica's /load says 0, and gives up after drain_timeout_s
    while it says more."""
    running = setup.fleet.servers[0]
    # Bounds far from each other, so that a loaded machine cannot blur them: an idle replica
    # is let go long before its 30 s drain timeout; a busy one is waited on for its 1 s.
    idle = ServerProcess(running.cfg.model_copy(update={"drain_timeout_s": 30}), Path("unused"))
    t0 = time.monotonic()
    setup.fleet.wait_idle(idle)
    assert time.monotonic() - t0 < 15
    busy = ServerProcess(running.cfg.model_copy(update={"drain_timeout_s": 1}), Path("unused"))
    (setup.www / "load").write_text('{"server_load": 2}')
    try:
        t0 = time.monotonic()
        setup.fleet.wait_idle(busy)
        assert 1 <= time.monotonic() - t0 < 15
    finally:
        (setup.www / "load").write_text('{"server_load": 0}')


def test_a_router_that_dies_is_restarted_over_both_replicas(
    setup: Setup, capsys: pytest.CaptureFixture[str]
) -> None:
    fleet = setup.fleet
    urls = sorted(replica_url(s.cfg) for s in fleet.servers)
    assert fleet.keep_router() is None  # running: nothing to do
    old = fleet.router.proc
    assert old is not None
    old.kill()
    old.wait(timeout=10)
    before = fleet.router_restarts
    assert fleet.keep_router() is None, capsys.readouterr().err
    err = capsys.readouterr().err
    assert f"vllm-router exited with status -9; restart {before + 1}/3" in err, err
    assert "vllm-router restarted: answering again after" in err, err
    assert fleet.router.proc is not None and fleet.router.proc.pid != old.pid
    assert sorted(fleet.router.worker_urls()) == urls


def test_a_router_past_its_restarts_ends_the_fleet_with_its_status(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with stand_in_fleet(tmp_path) as s:
        s.fleet.router_restarts = s.fleet.cfg.restart.max_restarts
        proc = s.fleet.router.proc
        assert proc is not None
        proc.kill()
        proc.wait(timeout=10)
        assert s.fleet.keep_router() == -9
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("error: vllm-router exited with status -9 (restart.max_restarts)")
        assert all(server.alive() for server in s.fleet.servers)
