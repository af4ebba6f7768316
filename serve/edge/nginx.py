"""nginx's configuration for the edge of a replicas deployment (pure).

`nginx_config(site)` is the whole configuration file nginx runs with (`nginx -c`): one
server on the deployment's host and port, its only listener, which

- forwards the API (`/v1/...`) to vllm-router on loopback once the key check (nginx's
  `auth_request` to serve.edge.authz) admitted the request, replacing the caller's
  `Authorization` with the replicas' internal key (so no caller's key goes further, and a
  request that bypasses the edge has no key a replica accepts);
- forwards the probes (/health, /ping, /liveness, /readiness) with no key;
- answers 404 to everything else: the router's management routes (/add_worker,
  /remove_worker, /list_workers, /workers..., /flush_cache, /get_loads) are reachable on
  loopback only, by the launcher's rolling restarts;
- writes one JSON line per request (`log_format ... escape=json`): time, request id,
  service, method, route, status, latency, bytes in and out; never a query string, a
  header, a body or a key. On one machine the line goes to the key check (syslog over
  loopback UDP), which adds the replica's token and image counts and writes the audit
  file (serve.edge.audit_writer); in Kubernetes, to the container's stdout.

A refusal of the key check reaches the client with its own status (401, 403, 429 with
Retry-After, 431) and the OpenAI-format error body the check put in a header (nginx's
auth_request passes only 401 and 403 through; see serve.edge.authz). The file holds the
internal key: it is written 0600 (serve.edge.process).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

PROBES = ("/health", "/ping", "/liveness", "/readiness")
# The API routes forwarded, on nginx's normalized URI (no "..", no "//", no %-escapes
# left): the path is then passed on exactly as matched.
API_ROUTE = r"^/v1/[A-Za-z0-9_./-]*$"
SAFE_TOKEN = re.compile(r"[A-Za-z0-9_-]{16,}")
SYSLOG_TAG = re.compile(r"[A-Za-z0-9_]{1,32}")
AUDIT_FORMAT = (
    '{"time":"$time_iso8601","msec":$msec,"request_id":"$medgemma_rid",'
    '"service":"$medgemma_service","method":"$request_method","route":"$medgemma_route",'
    '"status":$status,'
    '"latency_s":$request_time,"upstream_status":"$upstream_status",'
    '"request_bytes":$request_length,"response_bytes":$bytes_sent}'
)


@dataclass(frozen=True)
class Site:
    """What the edge's configuration depends on."""

    host: str  # the deployment's host: the only address the edge listens on
    port: int
    router_port: int  # vllm-router on 127.0.0.1
    authz_port: int | None  # the key check on 127.0.0.1 (serve.edge.authz); None: not run
    internal_key: str  # the replicas' key, sent by the edge only
    audit_path: Path
    run_dir: Path  # nginx's pid and temporary files
    max_body_bytes: int
    timeout_s: int  # longest request (the router's request_timeout_s)
    tls: tuple[Path, Path] | None = None  # certificate, key
    checks_keys: bool = True  # nginx asks the key check about each API request
    # nginx's audit lines go to the key check (syslog over UDP with this tag), which joins
    # them with the replicas' token counts; None: nginx writes them to audit_path itself
    audit_tag: str | None = None


def error_body(status: int, kind: str, message: str) -> str:
    """An OpenAI-format error as a literal in nginx's single quotes (pure)."""
    doc = {"error": {"message": message, "type": kind, "param": None, "code": status}}
    return json.dumps(doc, separators=(",", ":")).replace("'", "\\'")


def listen_address(host: str, port: int) -> str:
    if ":" in host:
        return f"[{host}]:{port}"
    return f"{host or '0.0.0.0'}:{port}"


def quoted(value: str) -> str:
    """A value nginx reads as one string (pure)."""
    if any(c in value for c in "\"'\\\n;{}$"):
        raise ValueError(f"{value!r} cannot be written into nginx's configuration")
    return f'"{value}"'


def api_location(site: Site) -> str:
    if not site.checks_keys:
        check = ""
    else:
        check = """
            auth_request /_medgemma_authz;
            auth_request_set $medgemma_service $upstream_http_x_medgemma_service;
            auth_request_set $medgemma_denial $upstream_http_x_medgemma_denial;
            auth_request_set $medgemma_error $upstream_http_x_medgemma_error;
            auth_request_set $medgemma_retry_after $upstream_http_retry_after;
            error_page 401 403 = @medgemma_denied;"""
    # A location's own error_page replaces the server's: the 413 page is named again.
    return f"""
        location ~ "{API_ROUTE}" {{{check}
            error_page 413 = @medgemma_too_large;
            proxy_pass http://medgemma_router$uri$is_args$args;
        }}"""


def authz_upstream(site: Site) -> str:
    """The key check, over kept-alive connections (one per request would cost a connect)."""
    if not site.checks_keys:
        return ""
    return f"""
    upstream medgemma_authz {{
        server 127.0.0.1:{site.authz_port};
        keepalive 8;
    }}
"""


def authz_locations(site: Site) -> str:
    if not site.checks_keys:
        return ""
    return f"""
        location = /_medgemma_authz {{
            internal;
            proxy_pass http://medgemma_authz/check;
            proxy_pass_request_body off;
            proxy_set_header Content-Length "";
            proxy_set_header Authorization $http_authorization;
            proxy_set_header X-Request-Id $medgemma_rid;
            proxy_set_header Connection "";
        }}

        location @medgemma_denied {{
            default_type application/json;
            add_header X-Request-Id $medgemma_rid always;
            add_header Retry-After $medgemma_retry_after always;
            if ($medgemma_denial = 401) {{
                return 401 $medgemma_error;
            }}
            if ($medgemma_denial = 429) {{
                return 429 $medgemma_error;
            }}
            if ($medgemma_denial = 431) {{
                return 431 $medgemma_error;
            }}
            if ($medgemma_denial = 403) {{
                return 403 $medgemma_error;
            }}
            return 403 '{error_body(403, "PermissionDeniedError", "refused by the edge")}';
        }}"""


def probe_locations() -> str:
    return "".join(
        f"""
        location = {p} {{
            proxy_pass http://medgemma_router;
        }}"""
        for p in PROBES
    )


def audit_log(site: Site) -> str:
    """Where nginx writes its audit lines: the file, or the key check's audit writer."""
    if site.audit_tag is None:
        return f"access_log {quoted(str(site.audit_path))} medgemma_audit;"
    target = f"syslog:server=127.0.0.1:{site.authz_port},tag={site.audit_tag},nohostname"
    return f"access_log {target} medgemma_audit;"


def nginx_config(site: Site) -> str:
    """The whole nginx.conf of the edge (pure). Raises ValueError for a key, tag or path
    nginx could not read back as written, or a key check that is needed and not run."""
    if not SAFE_TOKEN.fullmatch(site.internal_key):
        raise ValueError("the internal key must be a URL-safe token of 16+ characters")
    if site.audit_tag is not None and not SYSLOG_TAG.fullmatch(site.audit_tag):
        raise ValueError("the audit tag must be 1-32 letters, digits or underscores")
    if (site.checks_keys or site.audit_tag is not None) and site.authz_port is None:
        raise ValueError("the key check's port is needed to check keys or join audit lines")
    run = site.run_dir
    listen = listen_address(site.host, site.port)
    tls = ""
    if site.tls is not None:
        listen += " ssl"
        tls = f"""
        ssl_certificate {quoted(str(site.tls[0]))};
        ssl_certificate_key {quoted(str(site.tls[1]))};"""
    too_large = (
        '{"error":{"message":"request body too large: this server accepts at most '
        f'{site.max_body_bytes} bytes (max_request_bytes): send fewer or smaller images",'
        '"type":"RequestTooLargeError","param":null,"code":413}}'
    )
    not_found = (
        '{"error":{"message":"no such route","type":"NotFoundError","param":null,"code":404}}'
    )
    return f"""# The edge of a medgemma-serve replicas deployment (serve.edge.nginx). Generated at
# each launch; holds the replicas' internal key: keep it 0600.
daemon off;
worker_processes 1;
pid {quoted(str(run / "nginx.pid"))};
error_log stderr warn;

events {{
    worker_connections 1024;
}}

http {{
    server_tokens off;
    access_log off;
    client_body_temp_path {quoted(str(run / "client_body"))};
    proxy_temp_path {quoted(str(run / "proxy"))};
    fastcgi_temp_path {quoted(str(run / "fastcgi"))};
    uwsgi_temp_path {quoted(str(run / "uwsgi"))};
    scgi_temp_path {quoted(str(run / "scgi"))};

    map $http_x_request_id $medgemma_rid {{
        "~^[A-Za-z0-9._:-]{{1,128}}$" $http_x_request_id;
        default $request_id;
    }}

    # The route in the audit line: at most its first 200 characters (a syslog datagram
    # holds about 2 KB).
    map $uri $medgemma_route {{
        "~^(?s)(?<head>.{{0,200}})" $head;
    }}

    log_format medgemma_audit escape=json '{AUDIT_FORMAT}';

    upstream medgemma_router {{
        server 127.0.0.1:{site.router_port};
        keepalive 32;
    }}
{authz_upstream(site)}
    server {{
        listen {listen};{tls}
        {audit_log(site)}
        set $medgemma_service "";
        set $medgemma_denial "";
        set $medgemma_error "";
        set $medgemma_retry_after "";

        client_max_body_size {site.max_body_bytes};
        client_body_buffer_size 1m;
        proxy_request_buffering off;
        proxy_buffering off;
        proxy_http_version 1.1;
        proxy_read_timeout {site.timeout_s}s;
        proxy_send_timeout {site.timeout_s}s;
        proxy_set_header Connection "";
        proxy_set_header Host $host;
        proxy_set_header X-Request-Id $medgemma_rid;
        # The key check's service name, for the replica's usage report (empty: not sent,
        # and a caller's own X-Medgemma-Service is never passed on).
        proxy_set_header X-Medgemma-Service $medgemma_service;
        proxy_set_header Authorization "Bearer {site.internal_key}";
        proxy_hide_header X-Request-Id;  # the router's and the replica's copy: one goes out
        add_header X-Request-Id $medgemma_rid always;

        error_page 413 = @medgemma_too_large;
        location @medgemma_too_large {{
            default_type application/json;
            return 413 '{too_large}';
        }}
{api_location(site)}{probe_locations()}{authz_locations(site)}

        location / {{
            default_type application/json;
            return 404 '{not_found}';
        }}
    }}
}}
"""
