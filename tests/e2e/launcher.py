"""`python -m serve` run as a subprocess, the way an operator runs it: for the tests that
need the launcher itself (TLS, restart supervision, drain on SIGTERM, its own output).

The launcher's stdout and stderr go to files (pipes would fill), the server log to a third;
`text()` reads all three, which is every log file such a run produces.
"""

from __future__ import annotations

import os
import re
import signal
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from serve.launch.process import free_port

REPO = Path(__file__).resolve().parents[2]
API_KEY = "launcher-test-key"


@dataclass
class Launched:
    """A running `python -m serve` and the files its run writes."""

    proc: subprocess.Popen[bytes]
    port: int
    stdout: Path
    stderr: Path
    server_log: Path
    api_key: str = API_KEY
    root_url: str = ""
    cert: Path | None = None  # the server's certificate, when it serves HTTPS

    @property
    def verify(self) -> ssl.SSLContext | bool:
        """How a client trusts this server: by its own (self-signed) certificate."""
        return ssl.create_default_context(cafile=str(self.cert)) if self.cert else True

    @property
    def base_url(self) -> str:
        return f"{self.root_url}/v1"

    def files(self) -> list[Path]:
        return [self.stdout, self.stderr, self.server_log]

    def text(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in self.files() if p.exists())

    def stop(self, timeout_s: float = 90) -> int:
        """SIGTERM, as a service manager would; the launcher drains and stops the server."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=30)


def launch(workdir: Path, *overrides: str, timeout_s: float = 900) -> Launched:
    """Start `python -m serve --config configs/deployments/cpu-tiny.yaml` on a free port with an API
    key, `--set` overrides, and its files under `workdir`; return once it prints its URL."""
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    sets = [arg for o in overrides for arg in ("--set", o)]
    cmd = [sys.executable, "-m", "serve", "--config", "configs/deployments/cpu-tiny.yaml"]
    cmd += ["--port", str(port), "--log-file", str(workdir / "server.log"), *sets]
    out, err = workdir / "launcher.out", workdir / "launcher.err"
    with open(out, "wb") as o, open(err, "wb") as e:
        proc = subprocess.Popen(
            cmd,
            cwd=REPO,
            stdout=o,
            stderr=e,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "MEDGEMMA_API_KEY": API_KEY, "PYTHONUNBUFFERED": "1"},
        )
    run = Launched(proc, port, out, err, workdir / "server.log")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = re.search(r"^base URL: (\S+)/v1$", out.read_text(), re.M)
        if found:
            run.root_url = found[1]
            return run
        if proc.poll() is not None:
            raise RuntimeError(
                f"python -m serve exited with {proc.returncode}:\n{run.text()[-3000:]}"
            )
        time.sleep(1)
    run.stop()
    raise RuntimeError(
        f"python -m serve was not ready after {timeout_s:.0f} s:\n{run.text()[-3000:]}"
    )
