"""Supervision (serve.launch.supervise) of a server whose process stays alive but stops
answering /health: the stand-in is `python -m http.server`
(tests/unit/serve/launch/standin_fleet.py's StaticServer), which answers /health while the
file is there and 404 once it is gone."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from serve.launch.supervise import supervise
from tests.e2e.launcher import free_ports, wait_until
from tests.unit.serve.launch.standin_fleet import StaticServer, config


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """(www, model): what the http.server stand-in serves (/health, /v1/models), and a
    model folder the config accepts."""
    www, model = tmp_path / "www", tmp_path / "model"
    (www / "v1").mkdir(parents=True)
    (www / "health").write_text("ok")
    (www / "v1" / "models").write_text('{"data": []}')
    model.mkdir()
    (model / "config.json").write_text("{}")
    return www, model


def test_a_server_alive_but_not_answering_health_is_killed_and_restarted(
    tmp_path: Path, folders: tuple[Path, Path]
) -> None:
    www, model = folders
    cfg = config(free_ports(1), model, "restart.unhealthy_after_s=2")
    server = StaticServer(cfg, tmp_path / "server.log", root=www).start()
    assert server.proc is not None
    first = server.proc
    lines: list[str] = []
    stopping = threading.Event()
    result: list[object] = []
    watcher = threading.Thread(
        target=lambda: result.append(supervise(server, stopping.is_set, lines.append, 0.1))
    )
    watcher.start()
    try:
        (www / "health").unlink()  # alive, listening, but /health now answers 404
        wait_until(lambda: server.proc is not first, 60, lambda: f"not restarted: {lines}")
        (www / "health").write_text("ok")
        assert first.returncode == -9, first.returncode  # killed, not asked
        wait_until(server.healthy, 60, lambda: f"restarted server not healthy: {lines}")
        assert any("/health has not answered" in line for line in lines), lines
        assert server.alive()
    finally:
        stopping.set()
        watcher.join(timeout=60)
        server.stop(timeout_s=10)
    code, records = result[0]  # type: ignore[misc]
    assert code == 0
    assert [(r.number, r.exit_code, r.ok) for r in records] == [(1, -9, True)]


def test_a_healthy_server_is_left_alone(tmp_path: Path, folders: tuple[Path, Path]) -> None:
    www, model = folders
    cfg = config(free_ports(1), model, "restart.unhealthy_after_s=1")
    server = StaticServer(cfg, tmp_path / "server.log", root=www).start()
    first = server.proc
    lines: list[str] = []
    probes = 0
    healthy = server.healthy

    def counted(timeout_s: float = 10) -> bool:
        nonlocal probes
        probes += 1
        return healthy(timeout_s)

    server.healthy = counted  # type: ignore[method-assign]
    stopping = threading.Event()
    watcher = threading.Thread(target=lambda: supervise(server, stopping.is_set, lines.append, 0.1))
    watcher.start()
    try:
        wait_until(lambda: probes >= 3, 60, "fewer than 3 health probes")  # > 2x the limit
        assert server.proc is first and server.alive(), lines
        assert lines == []
    finally:
        stopping.set()
        watcher.join(timeout=60)
        server.stop(timeout_s=10)
