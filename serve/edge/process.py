"""The edge's two processes, as the project runs every child (serve.process.ManagedProcess):
the key check and audit writer (serve.edge.authz) and nginx (Debian's, with the
configuration of serve.edge.nginx written 0600: it holds the replicas' internal key and
the audit lines' tag). `Edge` starts the key check first and nginx last (nothing listens
on the deployment's port before the check behind it answers) and stops nginx first (its
last audit lines reach the writer before it stops).
"""

from __future__ import annotations

import os
import secrets
import shutil
import ssl
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from serve.config.deployment import DeploymentConfig
from serve.edge.authz import AUDIT_TAG_ENV, INTERNAL_KEY_ENV, KEY_ENV, READY_PATH
from serve.edge.nginx import Site, nginx_config
from serve.edge.plan import site_for
from serve.process import LaunchError, Listen, ManagedProcess, client_host, port_in_use

LOOPBACK = "127.0.0.1"
# Debian installs nginx in /usr/sbin, which a non-root PATH often lacks.
SEARCH_PATH = "/usr/sbin:/sbin"
INSTALL = "apt-get install nginx-light (or make install)"


def find_nginx(environ: Mapping[str, str] | None = None) -> str:
    """The nginx binary. Raises LaunchError with the install command."""
    path = (os.environ if environ is None else environ).get("PATH", "")
    found = shutil.which("nginx", path=f"{path}:{SEARCH_PATH}")
    if found is None:
        who = "" if os.geteuid() == 0 else "sudo "
        raise LaunchError(
            f"nginx is not installed: a config with `replicas:` puts it in front of the "
            f"router as the edge; install it with: {who}{INSTALL}"
        )
    return found


def write_private(path: Path, text: str) -> None:
    """Write `text` to `path` readable by its owner only (0600 from the first byte)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.chmod(path, 0o600)  # a file that existed keeps its mode through O_CREAT


class Authz(ManagedProcess):
    """The key check and audit writer on 127.0.0.1:`port`; the keys through its
    environment, never its command line."""

    name = "the edge's key check"
    poll_interval_s = 0.2

    def __init__(self, site: Site, cfg: DeploymentConfig, api_key: str | None, log_path: Path):
        assert site.authz_port is not None
        self.site, self.cfg, self.api_key, self.log_path = site, cfg, api_key, log_path
        self.port = site.authz_port

    def command_and_env(self) -> tuple[list[str], dict[str, str]]:
        cmd = [sys.executable, "-m", "serve.edge.authz", "--port", str(self.port)]
        keys_file = self.cfg.auth.keys_file
        if keys_file is not None:
            cmd += ["--keys-file", str(keys_file.expanduser().absolute())]
        cmd += ["--audit-file", str(self.site.audit_path)]
        cmd += ["--retention-days", str(self.cfg.auth.audit.retention_days)]
        env = {k: v for k, v in os.environ.items() if k != KEY_ENV}
        if self.api_key:
            env[KEY_ENV] = self.api_key
        env[INTERNAL_KEY_ENV] = self.site.internal_key
        env[AUDIT_TAG_ENV] = self.site.audit_tag or ""
        return cmd, env

    def listens(self) -> list[Listen]:
        return [Listen(LOOPBACK, self.port, "the edge's key check port", "router.metrics_port")]

    def ready_urls(self) -> list[str]:
        return [f"http://{LOOPBACK}:{self.port}{READY_PATH}"]


class Nginx(ManagedProcess):
    """nginx in the foreground (`daemon off`), its errors in `log_path`."""

    name = "nginx (the edge)"
    poll_interval_s = 0.2
    reap_group = True  # its worker outlives a master killed with SIGKILL, port and all

    def __init__(self, site: Site, log_path: Path) -> None:
        self.site, self.log_path = site, log_path

    @property
    def conf_path(self) -> Path:
        return self.site.run_dir / "nginx.conf"

    @property
    def root_url(self) -> str:
        scheme = "https" if self.site.tls else "http"
        return f"{scheme}://{client_host(self.site.host)}:{self.site.port}"

    @property
    def verify(self) -> ssl.SSLContext | bool:
        if self.site.tls is None:
            return True
        ctx = ssl.create_default_context()
        ctx.load_verify_locations(cafile=str(self.site.tls[0]))
        ctx.check_hostname = False
        return ctx

    def listens(self) -> list[Listen]:
        return [Listen(self.site.host, self.site.port, "port", "port (--port N)")]

    def check(self) -> None:
        find_nginx()
        super().check()

    def prepare(self) -> None:
        super().prepare()
        write_private(self.conf_path, nginx_config(self.site))
        self.site.audit_path.parent.mkdir(parents=True, exist_ok=True)

    def command_and_env(self) -> tuple[list[str], None]:
        run = str(self.site.run_dir)
        return [find_nginx(), "-c", str(self.conf_path), "-p", run, "-e", "stderr"], None

    def ready_urls(self) -> list[str]:
        return [f"{self.root_url}/health"]


class Edge:
    """The key check and audit writer, and nginx, of a replicas deployment."""

    def __init__(
        self, cfg: DeploymentConfig, log_dir: Path, internal_key: str, api_key: str | None
    ) -> None:
        self.cfg = cfg
        tag = secrets.token_hex(16)  # nginx's audit lines carry it; only they do
        self.site = site_for(cfg, log_dir, internal_key, api_key, tag)
        self.nginx = Nginx(self.site, log_dir / f"edge-{cfg.port}.log")
        self.authz = Authz(self.site, cfg, api_key, self.nginx.log_path)

    @property
    def root_url(self) -> str:
        return self.nginx.root_url

    @property
    def audit_path(self) -> Path:
        return self.site.audit_path

    @property
    def log_path(self) -> Path:
        return self.nginx.log_path

    def processes(self) -> list[ManagedProcess]:
        return [self.authz, self.nginx]

    def start(self) -> None:
        """The key check, then nginx. Raises LaunchError (what started is stopped)."""
        try:
            for p in self.processes():
                p.start()
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """nginx first (no new request comes in), then the key check."""
        for p in reversed(self.processes()):
            p.stop()

    def exited(self) -> list[ManagedProcess]:
        return [p for p in self.processes() if p.proc is not None and p.proc.poll() is not None]

    def dead(self) -> str | None:
        """What exited of the edge (`NAME exited with status N`), if anything has."""
        gone = self.exited()
        if not gone:
            return None
        return "; ".join(f"{p.name} exited with status {p.proc.returncode}" for p in gone if p.proc)

    def revive(self) -> None:
        """Start again each edge process that exited (what is left of its process group
        reaped first), in start order. Raises LaunchError. The key check's request counts
        start from zero again."""
        for p in self.exited():
            p.stop()
            deadline = time.monotonic() + 10  # a killed group lets go of its ports
            while any(port_in_use(a.host, a.port) for a in p.listens()):
                if time.monotonic() > deadline:
                    break  # start() says which port is busy
                time.sleep(0.1)
            p.start()
