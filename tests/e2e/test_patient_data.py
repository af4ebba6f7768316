"""No patient data in logs: with default settings a canary string sent in prompts and a
canary image never appear in any log file a run produces, the launcher's included.

The canaries go through the paths that could log a request: successful and streamed
chats, /v1/completions, /tokenize, /invocations, and errors (a too-long output request,
a broken image, a wrong field type whose validation error echoes the input). The logs are
read once the server's stats logger has reported those requests (vLLM logs throughput
every 10 s), so whatever the server writes about them is in.
"""

from __future__ import annotations

import base64
import io
import secrets
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.e2e.launcher import LiveServer, text_after, wait_until

STATS_LINE = "Avg prompt throughput:"  # vLLM's periodic stats line


def canary_png(seed: int) -> bytes:
    """Random pixels: bytes no other image in the run shares."""
    pixels = np.random.default_rng(seed).integers(0, 256, (96, 96), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels, "L").save(buf, "PNG")
    return buf.getvalue()


def send_canaries(http: httpx.Client, model: str, text: str, png: bytes) -> list[int]:
    """Every request path that carries a prompt or an image; returns the statuses."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    parts = [{"type": "text", "text": text}, {"type": "image_url", "image_url": {"url": url}}]
    chat = {"model": model, "messages": [{"role": "user", "content": parts}], "max_tokens": 4}
    broken = url[: len(url) // 2]
    requests = [
        ("/v1/chat/completions", chat),
        ("/v1/chat/completions", {**chat, "stream": True}),
        ("/v1/chat/completions", {**chat, "max_tokens": 10**6}),
        (
            "/v1/chat/completions",
            {
                **chat,
                "messages": [
                    {
                        "role": "user",
                        "content": [parts[0], {"type": "image_url", "image_url": {"url": broken}}],
                    }
                ],
            },
        ),
        ("/v1/chat/completions", {**chat, "messages": text}),
        ("/v1/completions", {"model": model, "prompt": text, "max_tokens": 4}),
        ("/tokenize", {"model": model, "prompt": text}),
        ("/invocations", chat),
    ]
    return [http.post(path, json=body).status_code for path, body in requests]


def leaks(files: list[Path], needles: dict[str, str]) -> list[str]:
    found = []
    for path in files:
        text = path.read_text(errors="replace") if path.exists() else ""
        for name, needle in needles.items():
            if needle in text:
                line = next(ln for ln in text.splitlines() if needle in ln)
                found.append(f"{name} in {path}: {line[:200]}")
    return found


@pytest.fixture()
def canaries() -> Iterator[tuple[str, bytes, dict[str, str]]]:
    token = secrets.token_hex(8)
    text = f"Patient CANARY{token} MRN {token}: describe this chest X-ray"
    png = canary_png(int(token, 16))
    b64 = base64.b64encode(png).decode()
    # A stretch of the pixel data's base64, past the PNG header every PNG shares.
    yield text, png, {"canary string": f"CANARY{token}", "canary image": b64[200:260]}


def run_canaries(server: LiveServer, canaries: tuple[str, bytes, dict[str, str]]) -> None:
    """Send the canaries, then wait for the server's next stats line: the stats logger
    has then seen every request finish."""
    assert server.log_path is not None
    text, png, _ = canaries
    with server.get_http_client() as http:
        statuses = send_canaries(http, server.model, text, png)
    # Successes and errors both went through (each path was exercised).
    assert statuses == [200, 200, 400, 400, 400, 200, 200, 200], statuses
    log, done = server.log_path, server.log_path.stat().st_size
    wait_until(
        lambda: STATS_LINE in text_after(log, done),
        60,
        f"no {STATS_LINE!r} line in {log} after the canary requests",
    )


def test_session_server_logs_no_prompt_or_image(
    server: LiveServer, canaries: tuple[str, bytes, dict[str, str]]
) -> None:
    if server.log_path is None:
        pytest.skip("the server was started outside this session: its log is not known")
    run_canaries(server, canaries)
    log = server.log_path.read_text(errors="replace")
    assert "POST /v1/chat/completions" in log, "the log holds no access lines: wrong file?"
    assert not leaks([server.log_path], canaries[2]), leaks([server.log_path], canaries[2])


@pytest.mark.slow
def test_launcher_and_server_logs_hold_no_prompt_or_image(
    launcher: LiveServer, canaries: tuple[str, bytes, dict[str, str]]
) -> None:
    run = launcher
    run_canaries(run, canaries)
    files = run.files()  # stdout, stderr, server log: stderr may well be empty
    assert all(p.stat().st_size > 0 for p in files[:1] + files[2:]), [str(p) for p in files]
    found = leaks(files, canaries[2])
    assert not found, found


@pytest.mark.slow
def test_launcher_runs_gemma3s_image_mask_and_prints_no_causal_note(launcher: LiveServer) -> None:
    """The image-mask plugin (serve/attention) runs in the launcher's vLLM, so the launcher
    prints no note that image attention differs (it does where the plugin is not active:
    tests/unit/serve/launch/test_cpu_notice.py)."""
    from serve.attention.support import ACTIVE_LINE
    from serve.host import IMAGE_ATTENTION_NOTICE

    stdout, logs = launcher.files()[0].read_text(), launcher.text()
    assert "base URL:" in stdout and IMAGE_ATTENTION_NOTICE not in stdout, stdout
    assert ACTIVE_LINE in logs, logs[-3000:]
