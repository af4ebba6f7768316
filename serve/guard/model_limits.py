"""The server's limits on `GET /v1/models`, for clients to fit their prompts to (ASGI).

vLLM's model card carries `max_model_len` for the base model (null for a LoRA adapter) and
nothing about how many images one prompt may hold: a client learns that only from a 400
("At most N image(s) may be provided in one prompt"). The guard adds to each entry of the
model list:

- `max_images_per_prompt`: the deployment's `limit_mm_per_prompt` image count;
- `max_model_len` where vLLM left it null (adapters share their base model's context).

Values come from MEDGEMMA_GUARD_IMAGES_PER_PROMPT and MEDGEMMA_GUARD_MAX_MODEL_LEN, which
`serve.command.argv.to_server_env` sets from the deployment config. The response body is
rewritten whole, with its Content-Length recomputed; a body that is not a JSON model list
(an error, say) or is content-encoded passes unchanged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Awaitable, Callable, Mapping, MutableMapping
from dataclasses import dataclass
from typing import Any

Message = MutableMapping[str, Any]
Send = Callable[[Message], Awaitable[None]]

MODELS_PATH = "/v1/models"
IMAGES_FIELD = "max_images_per_prompt"
CONTEXT_FIELD = "max_model_len"  # vLLM's own field of the model card


def env_int(environ: Mapping[str, str], name: str) -> int | None:
    value = environ.get(name, "").strip()
    return int(value) if value else None


@dataclass(frozen=True)
class PublishedLimits:
    """What the guard adds to each model entry; None: not published."""

    images_per_prompt: int | None = None
    max_model_len: int | None = None

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> PublishedLimits:
        return cls(
            env_int(environ, "MEDGEMMA_GUARD_IMAGES_PER_PROMPT"),
            env_int(environ, "MEDGEMMA_GUARD_MAX_MODEL_LEN"),
        )

    def __bool__(self) -> bool:
        return self.images_per_prompt is not None or self.max_model_len is not None


def with_limits(body: bytes, limits: PublishedLimits) -> bytes | None:
    """The model list `body` with the limits added to each entry (pure); None when the body
    is not a JSON object with a `data` list (left as it is)."""
    try:
        doc = json.loads(body)
    except ValueError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("data"), list):
        return None
    for entry in doc["data"]:
        if not isinstance(entry, dict):
            continue
        if limits.images_per_prompt is not None:
            entry[IMAGES_FIELD] = limits.images_per_prompt
        if limits.max_model_len is not None and entry.get(CONTEXT_FIELD) is None:
            entry[CONTEXT_FIELD] = limits.max_model_len
    # vLLM's own compact separators: the body stays as a client (or a `grep '"id":"'` in a
    # shell script, clients/examples/curl_chat.sh) saw it before the limits were added.
    return json.dumps(doc, separators=(",", ":")).encode()


def publishing(send: Send, limits: PublishedLimits) -> Send:
    """A `send` that holds the response of GET /v1/models until its last body chunk, then
    sends it with the limits added and its Content-Length set to the new size."""
    start: Message | None = None
    chunks: list[bytes] = []

    async def inner(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        chunks.append(bytes(message.get("body", b"")))
        if message.get("more_body", False):
            return
        body = b"".join(chunks)
        headers = list(start.get("headers", []))
        encoded = any(k.lower() == b"content-encoding" for k, _ in headers)
        new = None if start.get("status") != 200 or encoded else with_limits(body, limits)
        if new is not None:
            body = new
            headers = [(k, v) for k, v in headers if k.lower() != b"content-length"]
            headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return inner
