"""The edge's nginx configuration (serve.edge.nginx, serve.edge.plan): what it forwards,
what it never does, and that Debian's nginx accepts it (`nginx -t`)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from serve.edge.nginx import PROBES, Site, nginx_config
from serve.edge.process import SEARCH_PATH, write_private

KEY = "internal-key-0123456789abcdef"
NGINX = shutil.which("nginx", path=f"/usr/bin:/bin:{SEARCH_PATH}")
needs_nginx = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (make install)")


def site(tmp: Path, checks: bool = True, **changes: object) -> Site:
    base = Site(
        host="0.0.0.0",
        port=9000,
        router_port=9004,
        authz_port=9005,
        internal_key=KEY,
        audit_path=tmp / "audit.jsonl",
        run_dir=tmp / "run",
        max_body_bytes=64 * 2**20,
        timeout_s=1800,
        checks_keys=checks,
    )
    return Site(**{**base.__dict__, **changes})  # type: ignore[arg-type]


def test_only_the_api_and_the_probes_are_forwarded(tmp_path: Path) -> None:
    text = nginx_config(site(tmp_path))
    assert re.findall(r"^\s*listen (.*);", text, re.M) == ["0.0.0.0:9000"]
    assert text.count("proxy_pass http://medgemma_router") == 1 + len(PROBES)
    forwarded = re.findall(
        r"location (?:~ \"([^\"]+)\"|= (/\w+)) \{\n\s+(?:auth|error|proxy)", text
    )
    assert {a or b for a, b in forwarded} >= {"^/v1/[A-Za-z0-9_./-]*$", *PROBES}
    for route in ("add_worker", "remove_worker", "list_workers", "workers", "flush_cache"):
        assert route not in text, route
    assert re.search(r"location / \{\s+default_type application/json;\s+return 404", text)


def test_the_internal_key_goes_to_the_router_only_and_the_check_sees_the_callers(
    tmp_path: Path,
) -> None:
    text = nginx_config(site(tmp_path))
    assert text.count(KEY) == 1
    server_level = text.split("location", 1)[0]
    assert f'proxy_set_header Authorization "Bearer {KEY}";' in server_level
    assert "proxy_hide_header X-Request-Id;" in server_level  # one X-Request-Id goes out
    check = text.split("location = /_medgemma_authz {", 1)[1].split("}", 1)[0]
    assert "internal;" in check and "proxy_set_header Authorization $http_authorization;" in check
    assert "proxy_pass_request_body off;" in check
    api = text.split('location ~ "^/v1/', 1)[1].split("}", 1)[0]
    assert (
        "auth_request /_medgemma_authz;" in api and "error_page 401 403 = @medgemma_denied" in api
    )


def test_no_key_source_no_check(tmp_path: Path) -> None:
    text = nginx_config(site(tmp_path, checks=False))
    assert "auth_request" not in text and "_medgemma_authz" not in text
    assert f'"Bearer {KEY}"' in text  # the replicas still take only the internal key


def test_the_audit_line_names_no_query_header_or_body(tmp_path: Path) -> None:
    text = nginx_config(site(tmp_path))
    fmt = re.search(r"log_format medgemma_audit escape=json '(.*)';", text)
    assert fmt is not None
    for leak in ("$request_uri", "$args", "$http_", "$request_body", "$query_string", "$request "):
        assert leak not in fmt[1], leak
    assert "$medgemma_route" in fmt[1] and "$medgemma_service" in fmt[1]
    assert "$request_time" in fmt[1] and "$msec" in fmt[1]
    assert "access_log " + f'"{tmp_path / "audit.jsonl"}" medgemma_audit;' in text


def test_the_audit_lines_go_to_the_key_check_with_the_launch_tag(tmp_path: Path) -> None:
    tag = "0123456789abcdef0123456789abcdef"
    text = nginx_config(site(tmp_path, checks=False, audit_tag=tag))
    target = f"syslog:server=127.0.0.1:9005,tag={tag},nohostname"
    assert f"access_log {target} medgemma_audit;" in text
    assert "audit.jsonl" not in text
    # The service name the check gave goes to the replica (for its usage report).
    assert "proxy_set_header X-Medgemma-Service $medgemma_service;" in text.split("location")[0]


def test_refused_values() -> None:
    with pytest.raises(ValueError, match="internal key"):
        nginx_config(site(Path("/tmp"), internal_key="short"))
    with pytest.raises(ValueError, match="audit tag"):
        nginx_config(site(Path("/tmp"), audit_tag="not a tag"))
    with pytest.raises(ValueError, match="key check's port"):
        nginx_config(site(Path("/tmp"), authz_port=None))
    with pytest.raises(ValueError, match="cannot be written"):
        nginx_config(site(Path('/tmp/a"; b')))


@needs_nginx
@pytest.mark.parametrize("checks", [True, False])
def test_nginx_accepts_the_configuration(tmp_path: Path, checks: bool) -> None:
    assert NGINX is not None
    tag = "0123456789abcdef0123456789abcdef" if checks else None
    s = site(tmp_path, checks, host="127.0.0.1", audit_tag=tag)
    conf = tmp_path / "run" / "nginx.conf"
    write_private(conf, nginx_config(s))
    assert conf.stat().st_mode & 0o777 == 0o600
    done = subprocess.run(
        [NGINX, "-t", "-c", str(conf), "-p", str(s.run_dir), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr
    broken = tmp_path / "run" / "broken.conf"
    write_private(broken, nginx_config(s).replace("proxy_buffering off;", "proxy_buffering;"))
    done = subprocess.run(
        [NGINX, "-t", "-c", str(broken), "-p", str(s.run_dir), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode != 0, "nginx -t accepted a broken configuration"
