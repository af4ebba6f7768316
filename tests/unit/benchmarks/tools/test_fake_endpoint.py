"""The zero-latency endpoint of the headroom benchmark speaks vLLM's streaming format."""

from __future__ import annotations

import json

from benchmarks.runner.records import StreamParser
from benchmarks.tools.fake_endpoint import respond


def sse_lines(reply: bytes) -> list[str]:
    """Undo the chunked transfer encoding of a reply; return its SSE lines."""
    head, _, body = reply.partition(b"\r\n\r\n")
    assert b"200 OK" in head and b"chunked" in head, head
    out = b""
    while True:
        size, _, rest = body.partition(b"\r\n")
        n = int(size, 16)
        if n == 0:
            break
        out, body = out + rest[:n], rest[n + 2 :]
    return out.decode().split("\n")


def test_stream_reply_parses_like_a_vllm_stream() -> None:
    body = json.dumps(
        {
            "model": "m",
            "max_tokens": 5,
            "stream": True,
            "messages": [
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}
            ],
        }
    )
    parser = StreamParser(start=0.0, wall_start=0.0)
    for i, line in enumerate(
        sse_lines(respond("m", "POST", "/v1/chat/completions", body.encode()))
    ):
        parser.feed(line, 0.1 + i * 0.01)
    r = parser.finish(1.0)
    assert r.success and parser.done, r.error
    assert (r.output_tokens, r.prompt_tokens, r.finish_reason) == (5, 276, "length"), r


def test_models_and_unknown_paths() -> None:
    models = respond("m", "GET", "/v1/models", b"")
    assert json.loads(models.partition(b"\r\n\r\n")[2])["data"][0]["id"] == "m"
    assert b"404" in respond("m", "GET", "/nope", b"").split(b"\r\n")[0]


def test_headroom_starts_the_endpoint_and_waits_until_it_answers(tmp_path) -> None:
    import httpx

    from benchmarks.experiments.headroom import start_fake

    proc, base_url = start_fake("m", tmp_path / "fake.log")
    try:
        models = httpx.get(f"{base_url}/models", timeout=5)
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "m", models.text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
