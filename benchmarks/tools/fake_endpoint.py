"""A zero-latency OpenAI-compatible streaming endpoint, to measure the load generator itself.

Not a model: it answers every chat completion at once with `max_tokens` one-word chunks
in vLLM's streaming format (a role chunk, token chunks, a finish chunk, the usage chunk,
`[DONE]`), so whatever rate a benchmark reaches against it is the harness's limit, not a
server's. A bare asyncio HTTP/1.1 server (keep-alive, Content-Length bodies, chunked
replies) keeps its own cost per request far below the client's.

    python -m benchmarks fake-endpoint --port 8900 --model fake-model
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from functools import lru_cache

MAX_TOKENS = re.compile(rb'"max_(?:completion_)?tokens"\s*:\s*(\d+)')
IMAGE_PART = re.compile(rb'"type"\s*:\s*"image_url"')
IMAGE_TOKENS = 256  # as MedGemma: 256 soft tokens per image


def chunked(payload: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(payload), payload)


def event(obj: dict) -> bytes:
    return chunked(b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n")


@lru_cache(maxsize=256)
def stream_reply(model: str, n_tokens: int, n_images: int) -> bytes:
    """The whole HTTP response of a streamed chat completion (pure, cached)."""
    base = {"id": "chatcmpl-fake", "object": "chat.completion.chunk", "created": 0, "model": model}

    def choice(delta: dict, finish: str | None = None) -> bytes:
        return event({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

    body = [choice({"role": "assistant", "content": ""})]
    body += [choice({"content": " tok"}) for _ in range(n_tokens)]
    body.append(choice({}, "length"))
    prompt = 20 + IMAGE_TOKENS * n_images
    usage = {"prompt_tokens": prompt, "completion_tokens": n_tokens,
             "total_tokens": prompt + n_tokens}  # fmt: skip
    body.append(event({**base, "choices": [], "usage": usage}))
    body.append(chunked(b"data: [DONE]\n\n"))
    body.append(b"0\r\n\r\n")
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n")  # fmt: skip
    return head + b"".join(body)


def plain(status: str, body: bytes, content_type: str = "application/json") -> bytes:
    return (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n\r\n"
    ).encode() + body


def respond(model: str, method: str, path: str, body: bytes) -> bytes:
    """The reply to one request (pure)."""
    if method == "GET" and path.rstrip("/") == "/v1/models":
        models = {"object": "list", "data": [{"id": model, "object": "model", "created": 0,
                                              "owned_by": "fake"}]}  # fmt: skip
        return plain("200 OK", json.dumps(models).encode())
    if method == "GET" and path == "/health":
        return plain("200 OK", b"")
    if method == "POST" and path == "/v1/chat/completions":
        m = MAX_TOKENS.search(body)
        n = int(m.group(1)) if m else 16
        images = len(IMAGE_PART.findall(body))
        if b'"stream":true' in body.replace(b" ", b""):
            return stream_reply(model, n, images)
        msg = {"id": "chatcmpl-fake", "object": "chat.completion", "created": 0, "model": model,
               "choices": [{"index": 0, "finish_reason": "length",
                            "message": {"role": "assistant", "content": " tok" * n}}],
               "usage": {"prompt_tokens": 20 + IMAGE_TOKENS * images, "completion_tokens": n,
                         "total_tokens": 20 + IMAGE_TOKENS * images + n}}  # fmt: skip
        return plain("200 OK", json.dumps(msg).encode())
    return plain("404 Not Found", b'{"error": {"message": "not found"}}')


class Connection(asyncio.Protocol):
    """HTTP/1.1 with keep-alive and pipelining; bodies by Content-Length."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            lines = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            length = 0
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "content-length":
                    length = int(value)
            if len(self.buf) < end + 4 + length:
                return
            body = bytes(self.buf[end + 4 : end + 4 + length])
            del self.buf[: end + 4 + length]
            method, path = (lines[0].split(" ") + ["", ""])[:2]
            assert self.transport is not None
            self.transport.write(respond(self.model, method, path, body))


async def serve(host: str, port: int, model: str) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(model), host, port, backlog=1024)
    print(f"fake endpoint at http://{host}:{port}/v1 (model {model})", flush=True)
    async with server:
        await server.serve_forever()


DESCRIPTION = __doc__


def add_cli_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8900)
    p.add_argument("--model", default="fake-model")


def main(args: argparse.Namespace) -> int:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    started = time.time()
    try:
        asyncio.run(serve(args.host, args.port, args.model))
    except KeyboardInterrupt:
        print(f"fake endpoint stopped after {time.time() - started:.0f} s")
    return 0
