"""The MedGemma client: its settings, the openai SDK clients, and chat calls (sync and async).

`MedGemmaClient()` takes its settings from arguments, else MEDGEMMA_BASE_URL,
MEDGEMMA_API_KEY, MEDGEMMA_MODEL, MEDGEMMA_TIMEOUT, MEDGEMMA_MAX_RETRIES,
MEDGEMMA_IMAGE_LIMIT (ClientSettings),
else the defaults; the model defaults to the server's only model, asked once. The SDK does
the HTTP; this module adds the result object, the text streams, the task presets' typed
answers and one error message of its own: a server that cannot be reached is reported
with its URL and how to start it (ServerUnreachableError, an APIConnectionError).
Everything else (AuthenticationError, BadRequestError, ...) surfaces as the SDK raises it.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import openai
from pydantic import BaseModel, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from clients.errors import ServerUnreachableError
from clients.image_input import ImageSource
from clients.messages import Message
from clients.tasks import Task, TaskRequest, get_task, parse_answer

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
START_HINT = (
    "start it with `make serve` (or `python -m serve --config configs/deployments/cpu-tiny.yaml`)"
)
ENV_PREFIX = "MEDGEMMA_"


class ClientSettings(BaseSettings):
    """Where the server is and how to call it; each field also reads MEDGEMMA_<FIELD>."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, env_ignore_empty=True, extra="forbid", frozen=True
    )

    base_url: str = Field(DEFAULT_BASE_URL, description="OpenAI-compatible base URL (…/v1).")
    api_key: str = Field("EMPTY", description="Bearer key; the server's MEDGEMMA_API_KEY.")
    model: str | None = Field(None, description="Served model name; None: the server's only one.")
    timeout: float = Field(600.0, gt=0, description="Per-request timeout in seconds.")
    max_retries: int = Field(2, ge=0, description="SDK retries on connection errors, 429, 5xx.")
    image_limit: int | None = Field(
        None,
        ge=1,
        description="The server's images per prompt (its limit_mm_per_prompt image count), "
        "for studies; None: not known here, the server refuses a prompt above it.",
    )

    @classmethod
    def load(cls, **overrides: Any) -> ClientSettings:
        """Overrides that are given (not None or "") win over the MEDGEMMA_* variables, which
        win over the defaults. A bad value is one ValueError line naming where it came from."""
        given = {k: v for k, v in overrides.items() if v not in (None, "")}
        try:
            return cls(**given)
        except ValidationError as exc:
            raise ValueError(settings_error(exc, given)) from None


def env_name(setting: str) -> str:
    """The environment variable of a ClientSettings field: timeout -> MEDGEMMA_TIMEOUT."""
    return f"{ENV_PREFIX}{setting.upper()}"


def settings_error(exc: ValidationError, given: Mapping[str, Any]) -> str:
    """One line naming each bad setting by its argument, or else by its variable (values are
    left out: one of them is the API key)."""
    problems = []
    for err in exc.errors():
        name = str(err["loc"][0]) if err["loc"] else "settings"
        source = f"argument {name}" if name in given else env_name(name)
        problems.append(f"{source}: {err['msg']}")
    return f"bad client settings: {'; '.join(problems)}"


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
def reachable(base_url: object) -> Iterator[None]:
    """Turn a failed connection into ServerUnreachableError naming the URL (timeouts pass)."""
    try:
        yield
    except openai.APITimeoutError:
        raise
    except openai.APIConnectionError as exc:
        cause = exc.__cause__ or exc
        raise ServerUnreachableError(
            message=f"cannot reach the MedGemma server at {base_url} "
            f"({type(cause).__name__}: {cause}); {START_HINT}, or point MEDGEMMA_BASE_URL / "
            f"--base-url at a running one",
            request=exc.request,
        ) from exc


def only_model(
    ids: Sequence[str], base_url: object, parents: Mapping[str, str | None] | None = None
) -> str:
    """The one served base model id; ValueError if the server serves several or none.
    With `parents` (id -> the model it adapts, from /v1/models), LoRA adapters are not
    counted: a base with its adapters resolves to the base."""
    if parents is not None:
        bases = [i for i in ids if parents.get(i) is None]
        if len(bases) == 1:
            return bases[0]
    if len(ids) != 1:
        raise ValueError(
            f"the server at {base_url} serves {len(ids)} models ({', '.join(ids) or 'none'}): "
            f"choose one with model= / MEDGEMMA_MODEL / --model"
        )
    return ids[0]


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


def with_parsed(result: ChatResult, schema: type[BaseModel] | None) -> ChatResult:
    """Attach the validated answer when the request asked for a schema (SchemaError if the
    answer does not match it, e.g. cut off by max_tokens before the JSON closed)."""
    if schema is not None:
        result.parsed = parse_answer(result.text, schema)
    return result


class MedGemmaClient:
    """A client of one MedGemma deployment: settings, SDK clients, the served model's name.

    Sync and async methods mirror each other (complete / acomplete, stream / astream,
    send / asend, run_task / arun_task). `with` closes the sync connections, `async with`
    both.
    """

    def __init__(self, **settings: Any) -> None:
        """settings: base_url, api_key, model, timeout, max_retries (see ClientSettings);
        a setting not given comes from its MEDGEMMA_* variable, else its default."""
        self.settings = ClientSettings.load(**settings)
        s = self.settings
        sdk_args: dict[str, Any] = {
            "base_url": s.base_url,
            "api_key": s.api_key,
            "timeout": s.timeout,
            "max_retries": s.max_retries,
        }
        self.sdk = openai.OpenAI(**sdk_args)
        self.async_sdk = openai.AsyncOpenAI(**sdk_args)
        self.model_name = s.model  # None until asked of the server

    @property
    def base_url(self) -> str:
        return str(self.sdk.base_url)

    def served_models(self) -> list[str]:
        """The ids of the models the server serves (GET /v1/models)."""
        with reachable(self.base_url):
            return [m.id for m in self.sdk.models.list().data]

    async def aserved_models(self) -> list[str]:
        with reachable(self.base_url):
            return [m.id async for m in self.async_sdk.models.list()]

    def served_parents(self) -> dict[str, str | None]:
        """Served model id -> the model it is a LoRA adapter of (None for a base model)."""
        with reachable(self.base_url):
            return {m.id: getattr(m, "parent", None) for m in self.sdk.models.list().data}

    async def aserved_parents(self) -> dict[str, str | None]:
        with reachable(self.base_url):
            return {m.id: getattr(m, "parent", None) async for m in self.async_sdk.models.list()}

    def resolve_model(self) -> str:
        """The settings' model, else the server's only base model (asked once)."""
        if self.model_name is None:
            parents = self.served_parents()
            self.model_name = only_model(list(parents), self.base_url, parents)
        return self.model_name

    async def aresolve_model(self) -> str:
        if self.model_name is None:
            parents = await self.aserved_parents()
            self.model_name = only_model(list(parents), self.base_url, parents)
        return self.model_name

    def complete(self, messages: Sequence[Message], **params: Any) -> ChatResult:
        """One chat completion. params: max_tokens, temperature, response_format, ..."""
        model = self.resolve_model()
        t0 = time.perf_counter()
        with reachable(self.base_url):
            resp = self.sdk.chat.completions.create(model=model, messages=list(messages), **params)  # type: ignore[call-overload,arg-type]
        return to_result(resp, time.perf_counter() - t0)

    async def acomplete(self, messages: Sequence[Message], **params: Any) -> ChatResult:
        model = await self.aresolve_model()
        t0 = time.perf_counter()
        with reachable(self.base_url):
            resp = await self.async_sdk.chat.completions.create(  # type: ignore[call-overload]
                model=model,
                messages=list(messages),  # type: ignore[arg-type]
                **params,
            )
        return to_result(resp, time.perf_counter() - t0)

    def stream(self, messages: Sequence[Message], **params: Any) -> TextStream:
        """The answer as text deltas: `for delta in client.stream(...)`; then `.result`."""
        return TextStream(self, messages, params)

    def astream(self, messages: Sequence[Message], **params: Any) -> AsyncTextStream:
        """The answer as text deltas: `async for delta in client.astream(...)`; then `.result`."""
        return AsyncTextStream(self, messages, params)

    def send(self, request: TaskRequest, **params: Any) -> ChatResult:
        """A built request; params override its own. A schema's answer lands in `.parsed`."""
        result = self.complete(request.messages, **{**request.params, **params})
        return with_parsed(result, request.schema)

    async def asend(self, request: TaskRequest, **params: Any) -> ChatResult:
        result = await self.acomplete(request.messages, **{**request.params, **params})
        return with_parsed(result, request.schema)

    def run_task(
        self,
        task: str | Task,
        images: Sequence[ImageSource | dict[str, Any]] = (),
        **inputs: Any,
    ) -> ChatResult:
        """Build the task's request from images and inputs (report=, question=,
        patient_history=, turns=, max_size=, frame=, max_tokens=) and send it."""
        return self.send(get_task(task).build(images, **inputs))

    async def arun_task(
        self,
        task: str | Task,
        images: Sequence[ImageSource | dict[str, Any]] = (),
        **inputs: Any,
    ) -> ChatResult:
        return await self.asend(get_task(task).build(images, **inputs))

    def ask_study(
        self,
        dicomweb_url: str,
        study_uid: str,
        question: str | Task,
        *,
        series_uid: str | None = None,
        max_slices: int | None = None,
        window: str | None = None,
        tags: Sequence[str] = (),
        **params: Any,
    ) -> ChatResult:
        """Fetch a study from a PACS (WADO-RS), show the model its series (sampled to
        max_slices and the settings' image_limit, windowed, "SLICE n" after each image) and
        ask `question` (or run a task preset). params: max_tokens, temperature, ...
        Raises PacsError, StudyError (an ImageError) or the SDK's errors."""
        from clients.study_request import StudyOptions, fetch_request

        options = StudyOptions(
            series_uid, max_slices, self.settings.image_limit, window, tuple(tags)
        )
        request, _ = fetch_request(dicomweb_url, study_uid, question, options, params=params)
        return self.send(request)

    def close(self) -> None:
        self.sdk.close()

    async def aclose(self) -> None:
        await self.async_sdk.close()
        self.sdk.close()

    def __enter__(self) -> MedGemmaClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    async def __aenter__(self) -> MedGemmaClient:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()


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

    def __init__(
        self, client: MedGemmaClient, messages: Sequence[Message], params: dict[str, Any]
    ) -> None:
        self.client, self.messages, self.params = client, list(messages), params
        self.result: ChatResult | None = None

    def __iter__(self) -> Iterator[str]:
        model = self.client.resolve_model()
        state = StreamState(time.perf_counter())
        with reachable(self.client.base_url):
            chunks = self.client.sdk.chat.completions.create(  # type: ignore[call-overload]
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
        self, client: MedGemmaClient, messages: Sequence[Message], params: dict[str, Any]
    ) -> None:
        self.client, self.messages, self.params = client, list(messages), params
        self.result: ChatResult | None = None

    async def __aiter__(self) -> AsyncIterator[str]:
        model = await self.client.aresolve_model()
        state = StreamState(time.perf_counter())
        with reachable(self.client.base_url):
            chunks = await self.client.async_sdk.chat.completions.create(  # type: ignore[call-overload]
                model=model, messages=self.messages, stream=True, **STREAM_USAGE, **self.params
            )
            async with chunks:
                async for chunk in chunks:
                    delta = state.add(chunk)
                    if delta:
                        yield delta
        self.result = state.result()
