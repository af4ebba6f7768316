"""Run Debian's `prometheus` with a deployment's scrape configuration; wait; stop it.

`Prometheus(config_text, port).start()` writes the configuration (and the rules file, if
given) into its storage folder (the project's cache folder, `prometheus/<port>/`), starts
the binary listening on 127.0.0.1:<port>, logging to `prometheus.log` there, and waits
until `/-/ready` answers.
`stop()` sends SIGTERM (Prometheus flushes its head block and exits), then SIGKILL if it
has not exited in time (the life cycle is serve.process.ManagedProcess's). Bad input
raises MonitorError with one line: the binary missing (with the install command) or the
port in use.

`for_deployment(cfg, port)` is the Prometheus `python -m serve --monitor` runs: it scrapes
every server of the deployment (serve.monitor.scrape) and evaluates its alerting rules
(serve.render.alerts, default thresholds).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path

from serve.config.deployment import DeploymentConfig
from serve.paths import cache_dir
from serve.process import Listen, ManagedProcess

DEFAULT_PORT = 9090
HOST = "127.0.0.1"
BINARY = "prometheus"
INSTALL = "sudo apt-get install prometheus"
RULES_FILE = "rules.yml"  # beside the configuration, which names it relative to itself


class MonitorError(RuntimeError):
    """Prometheus cannot be started; the message is one line naming the problem."""


def install_hint(euid: int) -> str:
    """The command that installs Debian's prometheus, for this user (pure)."""
    if euid == 0:
        return "apt-get install prometheus (or make install)"
    return f"{INSTALL} (installing needs root; you are not root)"


def find_binary(environ: Mapping[str, str] | None = None) -> str:
    """The prometheus binary on PATH. Raises MonitorError with the install command."""
    path = (os.environ if environ is None else environ).get("PATH", "")
    found = shutil.which(BINARY, path=path)
    if found is None:
        raise MonitorError(
            f"prometheus is not installed (not on PATH); install it with: "
            f"{install_hint(os.geteuid())}"
        )
    return found


def storage_dir(port: int, root: Path | None = None) -> Path:
    """Where the Prometheus on `port` keeps its configuration, data and log."""
    return (root or cache_dir()) / "prometheus" / str(port)


class Prometheus(ManagedProcess):
    """A Prometheus child process (serve.process.ManagedProcess). Use as a context manager."""

    name = "prometheus"
    failure = MonitorError
    poll_interval_s = 0.2
    startup_timeout_s: float = 60.0
    stop_timeout_s = 30.0  # SIGTERM: Prometheus flushes its head block first

    def __init__(
        self,
        config_text: str,
        port: int = DEFAULT_PORT,
        *,
        root: Path | None = None,
        environ: Mapping[str, str] | None = None,
        startup_timeout_s: float = 60,
        rules_text: str | None = None,
    ) -> None:
        self.config_text, self.port, self.rules_text = config_text, port, rules_text
        self.folder = storage_dir(port, root)
        self.environ = dict(os.environ if environ is None else environ)
        self.startup_timeout_s = startup_timeout_s
        self.log_path = self.folder / "prometheus.log"
        self.binary = ""

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.folder / "prometheus.yml"

    @property
    def rules_path(self) -> Path:
        return self.folder / RULES_FILE

    def command(self, binary: str) -> list[str]:
        return [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.folder / 'data'}",
            f"--web.listen-address={HOST}:{self.port}",
        ]

    def listens(self) -> list[Listen]:
        return [Listen(HOST, self.port, "monitor port", "(--monitor-port N)")]

    def check(self) -> None:
        """The binary, then the port. Raises MonitorError."""
        self.binary = find_binary(self.environ)
        super().check()

    def prepare(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config_text)
        if self.rules_text is not None:
            self.rules_path.write_text(self.rules_text)

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        return self.command(self.binary), self.environ

    def ready_urls(self) -> list[str]:
        return [f"{self.url}/-/ready"]


def for_deployment(cfg: DeploymentConfig, port: int = DEFAULT_PORT) -> Prometheus:
    """The (unstarted) Prometheus that scrapes `cfg`'s servers and evaluates its alerts."""
    from serve.monitor.scrape import scrape_config, to_yaml
    from serve.render.alerts import render_alerts

    config = to_yaml(scrape_config(cfg, rule_files=[RULES_FILE]))
    return Prometheus(config, port, rules_text=to_yaml(render_alerts(cfg)))
