"""The readiness probe: one image + text chat completion that proves the whole image path
(decode, Gemma 3's image processor, the vision tower, prefill, one output token), not only
that the API process answers /health.

The launcher (`ServerProcess.start`) reports ready only once this request returned 200,
and a rendered Kubernetes pod runs it as its readinessProbe:

    python -m serve probe --config configs/deployments/cpu-tiny.yaml
    python -m serve probe --base-url http://127.0.0.1:8000/v1 --model NAME [--text-only]

Exit status 0 (ready) or 1 (not), and one line. A model without a vision tower
(`limit_mm_per_prompt` without images, e.g. medgemma-27b-text-it) is probed with text
only. The request is built by pure functions; `probe` is the one HTTP call, and it never
raises. Nothing of the request (its text or image) is logged or printed.
"""

from __future__ import annotations

import argparse
import base64
import os
import ssl
import struct
import sys
import time
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

PROBE_TEXT = "Reply with one word."
PROBE_IMAGE_SIZE = 32  # pixels a side; Gemma 3's processor resizes it to 896 anyway
DEFAULT_TIMEOUT_S = 60.0


def probe_png(size: int = PROBE_IMAGE_SIZE) -> bytes:
    """A small grey-gradient PNG (8-bit greyscale), the same bytes every time."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes((x * 255 // max(1, size - 1)) for x in range(size)) for _ in range(size)
    )
    header = struct.pack(">IIBBBBB", size, size, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def probe_body(model: str, with_image: bool) -> dict[str, Any]:
    """The chat completion the probe sends: greedy, one output token."""
    content: list[dict[str, Any]] = [{"type": "text", "text": PROBE_TEXT}]
    if with_image:
        url = "data:image/png;base64," + base64.b64encode(probe_png()).decode("ascii")
        content.insert(0, {"type": "image_url", "image_url": {"url": url}})
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 1,
        "temperature": 0,
    }


@dataclass(frozen=True)
class ProbeResult:
    """What one probe request did: `ok` (HTTP 200 with a choice), the status (None when
    no answer came), and a short detail without the request's content."""

    ok: bool
    status: int | None
    detail: str
    seconds: float

    @property
    def retryable(self) -> bool:
        """Worth asking again during start-up: no answer yet, or a 5xx (busy, warming up)."""
        return self.status is None or self.status >= 500


def judge(status: int, body: Any) -> tuple[bool, str]:
    """Whether an answer proves the path (pure): 200 with a choice; else the server's error."""
    if status == 200:
        choices = body.get("choices") if isinstance(body, dict) else None
        if choices:
            usage = body.get("usage") or {}
            return True, f"200, {usage.get('prompt_tokens', '?')} prompt tokens"
        return False, "200 without choices"
    message = ""
    if isinstance(body, dict):
        err = body.get("error", body)
        message = err.get("message", "") if isinstance(err, dict) else str(err)
    return False, f"HTTP {status}: {str(message)[:200]}".rstrip(": ")


def probe(
    base_url: str,
    model: str,
    *,
    with_image: bool = True,
    api_key: str | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    verify: ssl.SSLContext | bool = True,
) -> ProbeResult:
    """POST the probe to `base_url`/chat/completions. Never raises."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    t0 = time.perf_counter()
    try:
        r = httpx.post(
            f"{base_url.rstrip('/')}/chat/completions",
            json=probe_body(model, with_image),
            headers=headers,
            timeout=timeout_s,
            verify=verify,
        )
    except httpx.HTTPError as exc:
        return ProbeResult(
            False, None, f"no answer: {type(exc).__name__}", time.perf_counter() - t0
        )
    try:
        body: Any = r.json()
    except ValueError:
        body = None
    ok, detail = judge(r.status_code, body)
    return ProbeResult(ok, r.status_code, detail, time.perf_counter() - t0)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serve probe",
        description="Readiness: send one image + text chat completion (max_tokens 1); "
        "exit 0 if it returned 200, else 1.",
    )
    p.add_argument("--config", type=Path, help="deployment YAML: its URL, model name, key")
    p.add_argument("--base-url", help="the API's base URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--model", help="the served model name (default: the config's)")
    p.add_argument(
        "--api-key-env",
        help="variable holding the API key (default: the config's api_key_env, else none)",
    )
    p.add_argument(
        "--text-only", action="store_true", help="no image (a model without a vision tower)"
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        help="HTTPS without checking the certificate (a pod probing its own server)",
    )
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, help="seconds (default 60)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    base_url, model, key_env, with_image = args.base_url, args.model, args.api_key_env, True
    verify: ssl.SSLContext | bool = True
    if args.config is not None:
        from serve.command.argv import probes_images
        from serve.config.deployment import ConfigError, load_config
        from serve.launch.server import ServerProcess

        try:
            cfg = load_config(args.config)
        except ConfigError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        server = ServerProcess(cfg, Path(os.devnull))
        base_url = base_url or server.base_url
        model = model or cfg.model_name
        key_env = key_env or cfg.api_key_env
        with_image = probes_images(cfg.limit_mm_per_prompt)
        verify = server.verify
    if not base_url or not model:
        print("error: give --config X, or --base-url URL and --model NAME", file=sys.stderr)
        return 1
    if args.timeout <= 0:
        print(
            f"error: --timeout: {args.timeout} is not a positive number of seconds", file=sys.stderr
        )
        return 1
    api_key = os.environ.get(key_env) if key_env else None
    result = probe(
        base_url,
        model,
        with_image=with_image and not args.text_only,
        api_key=api_key or None,
        timeout_s=args.timeout,
        verify=False if args.insecure else verify,
    )
    what = "image + text" if with_image and not args.text_only else "text"
    line = f"{what} probe of {base_url}: {result.detail} in {result.seconds:.2f} s"
    if result.ok:
        print(f"ready: {line}")
        return 0
    print(f"error: not ready: {line}", file=sys.stderr)
    return 1
