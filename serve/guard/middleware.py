"""The request guard: a thin ASGI middleware vLLM loads into its own API server.

vLLM 0.32 leaves a few holes that none of its settings closes; this middleware
(`--middleware serve.guard.middleware.RequestGuard`, added by `serve.command.argv`) covers
exactly those:

- vLLM's API key guards only paths under /v1, /v2, /inference and /cohere; /invocations
  (SageMaker's route: full chat and completions), /tokenize, /detokenize,
  /generative_scoring and /scale_elastic_ep answer anyone. With a key set
  (VLLM_API_KEY), the guard requires it on every route but the probes in OPEN_PATHS;
- vLLM's bound on requests in flight (`--max-num-queued-reqs`) is checked only once a
  streamed response has started: a streaming client gets HTTP 200 and then an error
  event (sometimes just "Internal server error"), and the log a traceback per refusal.
  With `max_num_queued_reqs` set, the guard counts the POSTs it lets through and answers
  503 with a reason and Retry-After before vLLM sees one more (vLLM's check stays behind
  it as a backstop);
- request bodies of any size are read into memory: above `max_request_bytes` the guard
  answers 413 before the body is read (Content-Length) or as soon as it grows past it;
- a `file://` image URL without `--allowed-local-media-path` is refused with a 500
  (vLLM raises RuntimeError): the guard answers 400 naming the URL scheme;
- an http(s) image URL outside the domain list: vLLM refuses it too (its domain list
  holds a never-resolving name by default, see `serve.command.argv.NO_REMOTE_MEDIA`), the guard
  answers first with a message that says remote fetching is off and what to send instead;
- an image whose header declares more than 2 x PIL's `MAX_IMAGE_PIXELS` makes PIL raise
  DecompressionBombError, a 500: the guard lifts PIL's own limit in the API server
  process, so vLLM's pixel check (`VLLM_MAX_IMAGE_PIXELS`, from `max_image_pixels`),
  which runs on the header before any pixel is decoded, answers 400 instead;
- vLLM's `/v1/models` says nothing of how many images a prompt may hold: the guard adds
  the deployment's limits to each model entry (serve.guard.model_limits), so a client can
  fit a CT volume to them instead of meeting a 400.

With a keys file (`auth.keys_file`), each calling service has its own key, limits and
audit trail: serve.guard.access, over serve.auth. Behind the edge of a replicas deployment,
each POST's numbers (tokens, images) go to the edge's key check: serve.guard.usage.

Everything else (JSON, field types, token and image-count limits, model names, the key
on /v1) is vLLM's own validation. The guard logs no request: request bodies are patient
data (the audit trail holds numbers). It is configured by environment variables that
`serve.command.argv.to_server_env` sets from the deployment config.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import urlsplit

from serve.guard.access import Gate, Meter, header, request_id
from serve.guard.model_limits import MODELS_PATH, PublishedLimits, publishing
from serve.guard.usage import SERVICE_HEADER, UsageReporter, report_doc

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

URL_KEYS = frozenset({"url", "image_url", "video_url", "audio_url"})
MAYBE_URL = re.compile(rb"://|[Ff][Ii][Ll][Ee]:")
DEFAULT_MAX_REQUEST_BYTES = 64 * 2**20
ERROR_TYPES = {
    400: "BadRequestError",
    401: "AuthenticationError",
    403: "PermissionDeniedError",
    413: "RequestTooLargeError",
    429: "RateLimitError",
    431: "RequestHeaderFieldsTooLargeError",
    503: "ServiceUnavailableError",
}
# Load balancer and monitoring probes: no patient data in, none out.
OPEN_PATHS = frozenset({"/health", "/ping", "/metrics", "/version", "/load"})


def key_hash(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def authorized(headers: list[tuple[bytes, bytes]], expected: bytes) -> bool:
    """True if the request carries `Authorization: Bearer KEY` whose sha256 is `expected`
    (compared in constant time, as vLLM's own middleware does)."""
    for name, value in headers:
        if name.lower() == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return scheme.lower() == "bearer" and hmac.compare_digest(key_hash(token), expected)
    return False


def needs_key(path: str, method: str) -> bool:
    return method != "OPTIONS" and path not in OPEN_PATHS


def content_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The declared body size, or None if absent or unparsable (vLLM then decides)."""
    for name, value in headers:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


def too_large(size: int, limit: int, declared: bool) -> str:
    what = "declares" if declared else "has more than"
    return (
        f"request body {what} {size} bytes; this server accepts at most {limit} bytes "
        "(max_request_bytes): send fewer or smaller images"
    )


def media_urls(node: Any) -> Iterator[str]:
    """Every string under a URL-holding key (`url`, `image_url`, ...) in a JSON document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in URL_KEYS and isinstance(value, str):
                yield value
            else:
                yield from media_urls(value)
    elif isinstance(node, list):
        for item in node:
            yield from media_urls(item)


def url_problem(url: str, domains: frozenset[str], local_media: bool) -> str | None:
    """Why this server will not load a media URL, or None if the URL is left to vLLM."""
    scheme = url.partition(":")[0].lower()
    if scheme == "file" and not local_media:
        return (
            "file:// image URLs are refused by this server: send the image inline as a "
            "data URL (data:image/png;base64,...), or set allowed_local_media_path"
        )
    if scheme in ("http", "https"):
        host = (urlsplit(url).hostname or "").lower()
        if not domains:
            return (
                f"remote image URLs are disabled on this server (got a {scheme}:// URL for "
                f"host {host!r}): send the image inline as a data URL "
                "(data:image/png;base64,...), or list the host in allowed_media_domains"
            )
        if host not in domains:
            return (
                f"image URL host {host!r} is not in this server's allowed_media_domains "
                f"({', '.join(sorted(domains))})"
            )
    return None


def body_problem(body: bytes, domains: frozenset[str], local_media: bool) -> str | None:
    """The first media URL in a JSON body that this server refuses, with the reason."""
    if not MAYBE_URL.search(body):
        return None  # data URLs and plain text: nothing to check, no parse
    try:
        doc = json.loads(body)
    except ValueError:
        return None  # vLLM answers malformed JSON with its own 400
    for url in media_urls(doc):
        problem = url_problem(url, domains, local_media)
        if problem:
            return problem
    return None


def error_doc(status: int, message: str, param: str | None) -> dict[str, Any]:
    """An error in the OpenAI format vLLM uses, so SDK clients read it the same way."""
    kind = ERROR_TYPES.get(status, "Error")
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}


async def respond(send: Send, status: int, message: str, param: str | None) -> None:
    await send_json(send, status, error_doc(status, message, param))


async def refuse(
    send: Send, status: int, message: str, extra: tuple[tuple[bytes, bytes], ...]
) -> None:
    await send_json(send, status, error_doc(status, message, None), extra)


async def send_json(
    send: Send, status: int, doc: dict[str, Any], extra: tuple[tuple[bytes, bytes], ...] = ()
) -> None:
    body = json.dumps(doc).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
                *extra,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware in front of all of vLLM's routes: API key on every non-probe route,
    body-size limit, media-URL policy, the limits on /v1/models. Configured from the
    environment (see serve.command.argv)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.max_bytes = int(
            os.environ.get("MEDGEMMA_GUARD_MAX_REQUEST_BYTES", DEFAULT_MAX_REQUEST_BYTES)
        )
        self.domains = frozenset(
            d.strip().lower()
            for d in os.environ.get("MEDGEMMA_GUARD_MEDIA_DOMAINS", "").split(",")
            if d.strip()
        )
        self.local_media = os.environ.get("MEDGEMMA_GUARD_LOCAL_MEDIA") == "1"
        self.max_in_flight = int(os.environ.get("MEDGEMMA_GUARD_MAX_IN_FLIGHT") or 0)
        self.in_flight = 0
        self.limits = PublishedLimits.from_env()
        key = os.environ.get("VLLM_API_KEY")
        self.key_hash = key_hash(key) if key else None
        self.gate = Gate.from_env()  # service keys, limits, audit (auth.keys_file)
        self.reporter = UsageReporter.from_env()  # behind the edge: numbers to its key check
        # vLLM checks width x height against VLLM_MAX_IMAGE_PIXELS on the image header,
        # before decoding; PIL's own (higher) limit would otherwise turn a decompression
        # bomb into a 500 first. This runs in vLLM's API server process only.
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            self.gate is not None
            and scope["type"] in ("http", "websocket")
            and needs_key(
                scope["path"].removeprefix(scope.get("root_path", "")),
                scope.get("method", "GET"),
            )
        ):
            await self.gated(self.gate, scope, receive, send)
            return
        if (
            self.key_hash is not None
            and scope["type"] in ("http", "websocket")
            and needs_key(
                scope["path"].removeprefix(scope.get("root_path", "")),
                scope.get("method", "GET"),
            )
            and not authorized(scope.get("headers", []), self.key_hash)
        ):
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await send_json(send, 401, {"error": "Unauthorized"})
            return
        if self.reporter is not None and scope["type"] == "http" and scope["method"] == "POST":
            await self.reported(self.reporter, scope, receive, send)
            return
        await self.checked(scope, receive, send, None)

    async def reported(
        self, reporter: UsageReporter, scope: Scope, receive: Receive, send: Send
    ) -> None:
        """A request from the edge: served, then its numbers reported (serve.guard.usage)."""
        meter = Meter()
        try:
            await self.checked(scope, receive, meter.watch(send), meter)
        finally:
            usage = meter.usage()
            service = header(scope, SERVICE_HEADER)
            body = report_doc(
                request_id(scope),
                service.decode("latin-1") if service else None,
                meter.status or 499,
                usage,
                meter.facts.images,
                meter.spent(usage),
            )
            reporter.report(body)

    async def gated(self, gate: Gate, scope: Scope, receive: Receive, send: Send) -> None:
        """A request that needs a service key: admitted (and audited) by the gate."""
        if scope["type"] == "websocket":
            if not gate.allows(scope):
                await send({"type": "websocket.close", "code": 1008})
                return
            await self.app(scope, receive, send)
            return
        ticket = await gate.admit(scope, send, refuse)
        if ticket is None:
            return
        try:
            await self.checked(scope, receive, ticket.watch(send), ticket.meter)
        finally:
            ticket.done()

    async def checked(
        self, scope: Scope, receive: Receive, send: Send, meter: Meter | None
    ) -> None:
        """Body size, media URLs, the in-flight bound, the limits on /v1/models."""
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            if (
                self.limits
                and scope["type"] == "http"
                and scope["method"] == "GET"
                and scope["path"].removeprefix(scope.get("root_path", "")) == MODELS_PATH
            ):
                send = publishing(send, self.limits)
            await self.app(scope, receive, send)
            return
        declared = content_length(scope.get("headers", []))
        if declared is not None and declared > self.max_bytes:
            await respond(send, 413, too_large(declared, self.max_bytes, True), None)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left before sending its body
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await respond(send, 413, too_large(self.max_bytes, self.max_bytes, False), None)
                return
            if not message.get("more_body", False):
                break
        if meter is not None:
            meter.saw_body(bytes(body))
        is_json = any(
            name.lower() == b"content-type" and b"json" in value.lower()
            for name, value in scope.get("headers", [])
        )
        problem = body_problem(bytes(body), self.domains, self.local_media) if is_json else None
        if problem:
            await respond(send, 400, problem, "image_url")
            return
        if self.max_in_flight and scope["path"] not in OPEN_PATHS:
            if self.in_flight >= self.max_in_flight:
                busy = (
                    f"the server is at capacity, {self.max_in_flight} requests in flight "
                    "(max_num_queued_reqs); retry later"
                )
                doc = error_doc(503, busy, None)
                await send_json(send, 503, doc, ((b"retry-after", b"1"),))
                return
            self.in_flight += 1
            try:
                await self.app(scope, replay(bytes(body), receive), send)
            finally:
                self.in_flight -= 1
            return
        await self.app(scope, replay(bytes(body), receive), send)


def replay(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the app the already-read body, then the client's events."""
    sent = False

    async def inner() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return inner
