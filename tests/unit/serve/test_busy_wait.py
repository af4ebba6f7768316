"""The busy-wait plugin (serve.busy_wait) in this process: the environment's value becomes
the spin of vLLM's shared-memory readers, which then nap until vLLM's own spin is over;
vLLM's own stays without one; the config sets it (0 on the CPU unless the config says
otherwise; vLLM's own on a GPU)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator

import pytest
import zmq

from serve import busy_wait
from serve.busy_wait import BUSY_WAIT_ENV, busy_wait_s, naps, register
from serve.command.argv import to_server_env
from serve.config.deployment import ConfigError, load_config
from tests.conftest import CONFIGS

shm_broadcast = pytest.importorskip("vllm.distributed.device_communicators.shm_broadcast")


@pytest.mark.parametrize(
    ("value", "expected"),
    [("0", 0.0), ("0.25", 0.25), (" 1 ", 1.0), ("", None), ("-1", None), ("soon", None)],
)
def test_the_environment_value_or_none(value: str, expected: float | None) -> None:
    assert busy_wait_s({BUSY_WAIT_ENV: value}) == expected
    assert busy_wait_s({}) is None


@pytest.mark.parametrize(
    ("since", "spin", "naps_then"),
    [(0.0, 0.0, False), (0.001, 0.0, True), (0.5, 0.0, True), (1.0, 0.0, True), (1.5, 0.0, False),
     (0.05, 0.1, False), (0.2, 0.1, True), (0.5, 1.0, False)],
)  # fmt: skip
def test_a_reader_naps_past_its_spin_and_within_vllms(
    since: float, spin: float, naps_then: bool
) -> None:
    assert naps(since, spin, vllm_spin_s=1.0) is naps_then


@pytest.fixture
def spin_condition() -> Iterator[type]:
    """vLLM's SpinCondition, its wait put back after the test."""
    condition = shm_broadcast.SpinCondition
    wait = condition.wait
    yield condition
    condition.wait = wait


def looks(condition: type, after_read_s: float, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What a real reader SpinCondition does `after_read_s` after its last read: vLLM's
    yield, a nap, or vLLM's parking on its socket (each recorded, not done)."""
    done: list[str] = []
    monkeypatch.setattr(shm_broadcast, "sched_yield", lambda: done.append("spin"))
    monkeypatch.setattr(busy_wait, "nap", lambda: done.append("nap"))
    context = zmq.Context()
    address = f"inproc://busy-wait-{uuid.uuid4().hex}"
    # the writer first, as vLLM does: it binds the address its readers connect to
    writer = condition(is_reader=False, context=context, notify_address=address)
    reader = condition(is_reader=True, context=context, notify_address=address)
    try:
        reader.last_read = time.monotonic() - after_read_s
        if after_read_s > reader.busy_loop_s:
            reader.poller.poll = lambda timeout: done.append(f"park {timeout}") or []
        reader.wait(timeout_ms=7)
    finally:
        for name in ("local_notify_socket", "read_cancel_socket", "write_cancel_socket"):
            getattr(reader, name).close(linger=0)
        writer.local_notify_socket.close(linger=0)
        context.term()
    return done


def test_the_plugin_makes_readers_nap_where_vllms_spin(
    spin_condition: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert looks(spin_condition, 0.3, monkeypatch) == ["spin"]  # vLLM 0.32's own
    monkeypatch.setenv(BUSY_WAIT_ENV, "0")
    register()
    register()  # vLLM may load the plugins twice in one process: wrapped once
    assert spin_condition.wait.medgemma_spin_s == 0.0
    assert looks(spin_condition, 0.3, monkeypatch) == ["nap"]
    assert looks(spin_condition, 5.0, monkeypatch) == ["park 7"]  # idle: vLLM's own


def test_without_the_variable_vllms_own_spin_stays(
    spin_condition: type, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BUSY_WAIT_ENV, raising=False)
    register()
    assert looks(spin_condition, 0.3, monkeypatch) == ["spin"]


def test_cpu_configs_busy_wait_none_gpu_configs_keep_vllms() -> None:
    cpu = load_config(CONFIGS / "cpu-tiny.yaml")
    assert to_server_env(cpu, {})[BUSY_WAIT_ENV] == "0"
    spin = load_config(CONFIGS / "cpu-tiny.yaml", {"busy_wait_s": 0.5})
    assert to_server_env(spin, {})[BUSY_WAIT_ENV] == "0.5"
    gpu = load_config(CONFIGS / "medgemma-4b-it.yaml")
    assert BUSY_WAIT_ENV not in to_server_env(gpu, {})
    with pytest.raises(ConfigError, match="busy_wait_s"):
        load_config(CONFIGS / "cpu-tiny.yaml", {"busy_wait_s": -1})
