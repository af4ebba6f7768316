"""Chat calls through the openai SDK: one answer, a stream of text deltas, sync and async.

Settings come from arguments or the environment (MEDGEMMA_BASE_URL, MEDGEMMA_API_KEY,
MEDGEMMA_MODEL, MEDGEMMA_TIMEOUT, MEDGEMMA_MAX_RETRIES); the model defaults to the
server's only model. The SDK does the HTTP; this module adds the result object, the
stream wrapper and one error message of its own: a server that cannot be reached is
reported with its URL and how to start it (ServerUnreachableError, an APIConnectionError).
Everything else (AuthenticationError, BadRequestError, ...) surfaces as the SDK raises it.
"""

from __future__ import annotations

import contextlib
import os
import time
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from pydantic import BaseModel, ConfigDict, Field

from clients.errors import ServerUnreachableError
from clients.messages import Message

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
START_HINT = (
    "start it with `make serve` (or `python -m serve --config configs/deployments/cpu-tiny.yaml`)"
)


class ClientSettings(BaseModel):
    """Where the server is and how to call it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    base_url: str = Field(DEFAULT_BASE_URL, description="OpenAI-compatible base URL (…/v1).")
    api_key: str = Field("EMPTY", description="Bearer key; the server's MEDGEMMA_API_KEY.")
    model: str | None = Field(None, description="Served model name; None: the server's only one.")
    timeout_s: float = Field(600.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(2, ge=0, description="SDK retries on connection errors, 429, 5xx.")


def load_settings(
    *,
    base_url: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
    timeout_s: float | None = None,
    max_retries: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> ClientSettings:
    """Arguments win over MEDGEMMA_* environment variables, which win over defaults."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {
        "base_url": base_url or env.get("MEDGEMMA_BASE_URL"),
        "api_key": api_key or env.get("MEDGEMMA_API_KEY"),
        "model": model or env.get("MEDGEMMA_MODEL"),
        "timeout_s": timeout_s if timeout_s is not None else env.get("MEDGEMMA_TIMEOUT"),
        "max_retries": max_retries if max_retries is not None else env.get("MEDGEMMA_MAX_RETRIES"),
    }
    return ClientSettings.model_validate({k: v for k, v in values.items() if v not in (None, "")})


# The model named in the settings a client was made from (weak: dies with the client).
_settings_model: weakref.WeakKeyDictionary[object, str] = weakref.WeakKeyDictionary()


def make_client(settings: ClientSettings | None = None) -> openai.OpenAI:
    """An openai.OpenAI client from the settings (default: from the environment)."""
    s = settings or load_settings()
    client = openai.OpenAI(
        base_url=s.base_url, api_key=s.api_key, timeout=s.timeout_s, max_retries=s.max_retries
    )
    if s.model:
        _settings_model[client] = s.model
    return client


def make_async_client(settings: ClientSettings | None = None) -> openai.AsyncOpenAI:
    """An openai.AsyncOpenAI client from the settings (default: from the environment)."""
    s = settings or load_settings()
    client = openai.AsyncOpenAI(
        base_url=s.base_url, api_key=s.api_key, timeout=s.timeout_s, max_retries=s.max_retries
    )
    if s.model:
        _settings_model[client] = s.model
    return client


@dataclass
class ChatResult:
    """One answer: its text, the server's token usage, why it stopped, how long it took."""

    text: str
    finish_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    model: str = ""
    parsed: BaseModel | None = None  # the validated answer of a task with a schema


@contextlib.contextmanager
def reachable(client: openai.OpenAI | openai.AsyncOpenAI) -> Iterator[None]:
    """Turn a failed connection into ServerUnreachableError naming the URL (timeouts pass)."""
    try:
        yield
    except openai.APITimeoutError:
        raise
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ServerUnreachableError(
            message=f"cannot reach the MedGemma server at {client.base_url} "
            f"({type(cause).__name__}: {cause}); {START_HINT}, or point MEDGEMMA_BASE_URL / "
            f"--base-url at a running one",
            request=exc.request,
        ) from exc


def only_model(ids: Sequence[str], base_url: object) -> str:
    if len(ids) != 1:
        raise ValueError(
            f"the server at {base_url} serves {len(ids)} models ({', '.join(ids) or 'none'}): "
            f"choose one with model= / MEDGEMMA_MODEL / --model"
        )
    return ids[0]


def served_models(client: openai.OpenAI) -> list[str]:
    with reachable(client):
        return [m.id for m in client.models.list().data]


async def aserved_models(client: openai.AsyncOpenAI) -> list[str]:
    with reachable(client):
        return [m.id async for m in client.models.list()]


_model_cache: dict[str, str] = {}


def resolve_model(client: openai.OpenAI, model: str | None = None) -> str:
    """The given model, else the client's settings' model, else MEDGEMMA_MODEL, else the
    server's only model (asked once per base URL)."""
    model = model or _settings_model.get(client) or os.environ.get("MEDGEMMA_MODEL")
    if model:
        return model
    key = str(client.base_url)
    if key not in _model_cache:
        _model_cache[key] = only_model(served_models(client), client.base_url)
    return _model_cache[key]


async def aresolve_model(client: openai.AsyncOpenAI, model: str | None = None) -> str:
    model = model or _settings_model.get(client) or os.environ.get("MEDGEMMA_MODEL")
    if model:
        return model
    key = str(client.base_url)
    if key not in _model_cache:
        _model_cache[key] = only_model(await aserved_models(client), client.base_url)
    return _model_cache[key]


def usage_dict(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    return {
        k: int(getattr(usage, k))
        for k in ("prompt_tokens", "completion_tokens", "total_tokens")
        if getattr(usage, k, None) is not None
    }


def to_result(resp: Any, latency_s: float) -> ChatResult:
    choice = resp.choices[0]
    return ChatResult(
        text=choice.message.content or "",
        finish_reason=choice.finish_reason,
        usage=usage_dict(resp.usage),
        latency_s=latency_s,
        model=resp.model,
    )


def complete(
    client: openai.OpenAI, messages: Sequence[Message], *, model: str | None = None, **params: Any
) -> ChatResult:
    """One chat completion. params: max_tokens, temperature, response_format, ..."""
    name = resolve_model(client, model)
    t0 = time.perf_counter()
    with reachable(client):
        resp = client.chat.completions.create(model=name, messages=list(messages), **params)  # type: ignore[call-overload,arg-type]
    return to_result(resp, time.perf_counter() - t0)


async def acomplete(
    client: openai.AsyncOpenAI,
    messages: Sequence[Message],
    *,
    model: str | None = None,
    **params: Any,
) -> ChatResult:
    """One chat completion, async."""
    name = await aresolve_model(client, model)
    t0 = time.perf_counter()
    with reachable(client):
        resp = await client.chat.completions.create(model=name, messages=list(messages), **params)  # type: ignore[call-overload,arg-type]
    return to_result(resp, time.perf_counter() - t0)


class StreamState:
    """Accumulates a streamed answer into a ChatResult (shared by sync and async)."""

    def __init__(self, t0: float) -> None:
        self.t0 = t0
        self.parts: list[str] = []
        self.finish_reason: str | None = None
        self.usage: dict[str, int] = {}
        self.model = ""

    def add(self, chunk: Any) -> str:
        self.model = chunk.model or self.model
        if chunk.usage is not None:
            self.usage = usage_dict(chunk.usage)
        if not chunk.choices:
            return ""
        choice = chunk.choices[0]
        self.finish_reason = choice.finish_reason or self.finish_reason
        delta = choice.delta.content or ""
        self.parts.append(delta)
        return delta

    def result(self) -> ChatResult:
        return ChatResult(
            "".join(self.parts),
            self.finish_reason,
            self.usage,
            time.perf_counter() - self.t0,
            self.model,
        )


STREAM_USAGE = {"stream_options": {"include_usage": True}}


class TextStream:
    """Iterate for the text deltas; `result` holds the whole answer once exhausted."""

    def __init__(self, client: openai.OpenAI, messages: Sequence[Message], params: dict) -> None:
        self.client, self.messages, self.params = client, list(messages), params
        self.result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        model = resolve_model(self.client, self.params.pop("model", None))
        state = StreamState(time.perf_counter())
        with reachable(self.client):
            chunks = self.client.chat.completions.create(  # type: ignore[call-overload]
                model=model, messages=self.messages, stream=True, **STREAM_USAGE, **self.params
            )
            with chunks:
                for chunk in chunks:
                    delta = state.add(chunk)
                    if delta:
                        yield delta
        self.result = state.result()


class AsyncTextStream:
    """`async for` the text deltas; `result` holds the whole answer once exhausted."""

    def __init__(
        self, client: openai.AsyncOpenAI, messages: Sequence[Message], params: dict
    ) -> None:
        self.client, self.messages, self.params = client, list(messages), params
        self.result: ChatResult | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        model = await aresolve_model(self.client, self.params.pop("model", None))
        state = StreamState(time.perf_counter())
        with reachable(self.client):
            chunks = await self.client.chat.completions.create(  # type: ignore[call-overload]
                model=model, messages=self.messages, stream=True, **STREAM_USAGE, **self.params
            )
            async with chunks:
                async for chunk in chunks:
                    delta = state.add(chunk)
                    if delta:
                        yield delta
        self.result = state.result()


def stream(client: openai.OpenAI, messages: Sequence[Message], **params: Any) -> TextStream:
    """The answer as text deltas: `for delta in stream(...)`; then `.result`."""
    return TextStream(client, messages, params)


def astream(
    client: openai.AsyncOpenAI, messages: Sequence[Message], **params: Any
) -> AsyncTextStream:
    """The answer as text deltas: `async for delta in astream(...)`; then `.result`."""
    return AsyncTextStream(client, messages, params)
