"""Two CPU replicas behind vllm-router, started the way an operator starts them:
`python -m serve --config configs/deployments/cpu-tiny-2replicas.yaml` as a subprocess.

One scenario, in order (each step needs the one before): image+text chat through the
router, requests spread over both replicas (each replica's own request counter), the API
key refused without a key at the router and at a replica, and SIGTERM stopping the router
and both replicas with no process left. Plus the one-line error of a replica that never
becomes healthy.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest
from PIL import Image

from clients.messages import user_turn
from serve.launch.process import free_port, port_in_use
from tests.conftest import REPO
from tests.e2e.launcher import API_KEY, stop, wait_until

pytestmark = pytest.mark.slow
CONFIG = "configs/deployments/cpu-tiny-2replicas.yaml"
MODEL = "tiny-medgemma-random-weights"


def free_block(n: int) -> int:
    """A port p with p .. p+n-1 all free (the router, each replica, the router's metrics)."""
    while True:
        p = free_port()
        if p + n < 65536 and not any(port_in_use("127.0.0.1", p + k) for k in range(n)):
            return p


def launch(workdir: Path, port: int, *sets: str) -> tuple[subprocess.Popen[bytes], Path, Path]:
    workdir.mkdir(parents=True, exist_ok=True)
    out, err = workdir / "launcher.out", workdir / "launcher.err"
    cmd = [sys.executable, "-m", "serve", "--config", CONFIG, "--port", str(port)]
    cmd += ["--log-file", str(workdir / "serve.log"), *[a for s in sets for a in ("--set", s)]]
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "MEDGEMMA_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"},
        )
    return proc, out, err


def request_count(metrics: str) -> float:
    """Finished requests a vLLM server reports on /metrics (vllm:request_success_total)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics.splitlines()
        if line.startswith("vllm:request_success_total")
    )


def chat_body(i: int) -> dict[str, object]:
    grey = Image.new("L", (512, 512), 40 * i)
    return {
        "model": MODEL,
        "messages": [user_turn(f"Describe this X-ray ({i}).", [grey])],
        "max_tokens": 8,
        "temperature": 0,
    }


def test_two_replicas_behind_the_router(tmp_path: Path) -> None:
    port = free_block(4)
    proc, out, err = launch(tmp_path, port)
    router, replicas = f"http://127.0.0.1:{port}", [port + 1, port + 2]

    def logs() -> str:
        files = [out, err, *sorted(tmp_path.glob("*.log"))]
        return "\n".join(f"== {p.name}\n{p.read_text(errors='replace')[-2000:]}" for p in files)

    try:
        t0 = time.perf_counter()

        def printed_url() -> str | None:
            if proc.poll() is not None:
                pytest.fail(f"python -m serve exited with {proc.returncode}:\n{logs()}")
            found = re.search(r"^base URL: (\S+)$", out.read_text(), re.M)
            return found and found[1]

        base = wait_until(printed_url, 900, lambda: f"not ready:\n{logs()}", interval_s=1)
        print(f"two replicas + router ready in {time.perf_counter() - t0:.0f} s")
        assert base == f"{router}/v1", out.read_text()
        assert "model:    tiny-medgemma-random-weights" in out.read_text()
        auth = {"Authorization": f"Bearer {API_KEY}"}
        with httpx.Client(timeout=300) as http:
            # Image + text through the router, spread over both replicas.
            for i in range(4):
                r = http.post(f"{base}/chat/completions", json=chat_body(i), headers=auth)
                assert r.status_code == 200, (r.status_code, r.text[:500])
                choice = r.json()["choices"][0]
                assert choice["finish_reason"] in ("stop", "length"), choice
                assert r.json()["usage"]["prompt_tokens"] > 256, r.json()["usage"]
            counts = [
                request_count(http.get(f"http://127.0.0.1:{p}/metrics").text) for p in replicas
            ]
            assert all(c >= 1 for c in counts), f"requests per replica: {counts}"
            assert sum(counts) >= 4, counts

            # The key: refused without it at the router (the replica's 401, relayed) and at
            # each replica; the router's probe needs none.
            for url in (f"{base}/models", f"http://127.0.0.1:{replicas[1]}/v1/models"):
                r = http.get(url)
                assert r.status_code == 401, (url, r.status_code, r.text[:200])
            r = http.post(f"{base}/chat/completions", json=chat_body(0))
            assert r.status_code == 401, (r.status_code, r.text[:200])
            r = http.get(f"{base}/models", headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401, (r.status_code, r.text[:200])
            assert http.get(f"{base}/models", headers=auth).status_code == 200
            assert http.get(f"{router}/health").status_code == 200

        # SIGTERM: the router and both replicas (with their engine processes) go away.
        tree = psutil.Process(proc.pid).children(recursive=True)
        names = [" ".join(p.cmdline()[:3]) for p in tree]
        # vllm-router renames its process (setproctitle) to vllm::router.
        assert sum("vllm_router" in n or "vllm::router" in n for n in names) == 1, names
        assert sum("vllm.entrypoints.openai.api_server" in n for n in names) == 2, names
        t1 = time.perf_counter()
        code = stop(proc)
        print(f"stopped in {time.perf_counter() - t1:.1f} s")
        assert code == 0, (code, logs())
        left = [p for p in tree if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
        assert not left, [p.cmdline() for p in left]
        assert not any(port_in_use("127.0.0.1", port + k) for k in range(4)), "a port is held"
    finally:
        if proc.poll() is None:
            stop(proc)


def test_a_replica_that_never_becomes_healthy_is_named_with_its_log(tmp_path: Path) -> None:
    port = free_block(4)
    proc, out, err = launch(tmp_path, port, "startup_timeout_s=3")
    code = proc.wait(timeout=300)
    text = err.read_text()
    assert code == 1, (code, text[-2000:])
    error = [ln for ln in text.splitlines() if ln.startswith("error:")]
    assert len(error) == 1, text[-2000:]
    assert re.search(r"replica \d \(port \d+\) did not become healthy", error[0]), error
    assert "was not ready after 3 s" in error[0], error
    assert re.search(r"see its log \S+serve-\d+-replica\d\.log$", error[0]), error
    assert not any(port_in_use("127.0.0.1", port + k) for k in range(4)), "a port is held"
