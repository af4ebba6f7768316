"""The MedGemma client: its settings, the openai SDK clients, and chat calls (sync and async).

`MedGemmaClient()` takes its settings from arguments, else MEDGEMMA_BASE_URL,
MEDGEMMA_API_KEY, MEDGEMMA_MODEL, MEDGEMMA_TIMEOUT, MEDGEMMA_MAX_RETRIES,
MEDGEMMA_IMAGE_LIMIT (ClientSettings),
else the defaults; the model defaults to the server's only model, and the limits of a
prompt to what the server publishes on /v1/models (clients.limits), each asked once. The
SDK does the HTTP; this module adds the result object (clients.results), the text streams
(clients.streams), the task presets' typed answers and one error message of its own: a
server that cannot be reached is reported with its URL and how to start it
(ServerUnreachableError, an APIConnectionError). Everything else (AuthenticationError,
BadRequestError, ...) surfaces as the SDK raises it.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any

import openai
from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from clients.image_input import ImageSource
from clients.limits import Limits, limits_from_models
from clients.messages import Message
from clients.results import START_HINT, ChatResult, reachable, to_result, with_parsed
from clients.streams import AsyncTextStream, TextStream
from clients.tasks import Task, TaskRequest, get_task

__all__ = ["START_HINT", "ChatResult", "ClientSettings", "MedGemmaClient", "reachable"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
LAB_BUILD_OPTIONS = ("max_size", "constrained", "max_tokens")  # read_lab_report: not sampling
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
        description="Images per prompt to fit studies to when the server publishes no limit "
        "on /v1/models (a plain vLLM); a published limit wins. None: unknown.",
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
        self.known_limits: Limits | None = None  # None until asked of the server

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

    def limits(self) -> Limits:
        """What one prompt may hold (images, context), from the served model's entry on
        /v1/models, else the image_limit setting; asked once."""
        if self.known_limits is None:
            with reachable(self.base_url):
                entries = [m.model_dump() for m in self.sdk.models.list().data]
            self.known_limits = self.fit_limits(entries)
        return self.known_limits

    async def alimits(self) -> Limits:
        if self.known_limits is None:
            with reachable(self.base_url):
                entries = [m.model_dump() async for m in self.async_sdk.models.list()]
            self.known_limits = self.fit_limits(entries)
        return self.known_limits

    def fit_limits(self, entries: list[dict[str, Any]]) -> Limits:
        """The limits in the /v1/models entries, for the model in use (resolved from the
        same entries when not set)."""
        if self.model_name is None:
            parents = {str(e.get("id")): e.get("parent") for e in entries}
            self.model_name = only_model(list(parents), self.base_url, parents)
        return limits_from_models(entries, self.model_name, self.settings.image_limit)

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
        """Fetch a study from a PACS (WADO-RS), show the model its series by its recipe
        (clients.recipes: CT volume, MR volume, radiograph; a whole slide by its tissue
        patches, as ask_slide), fitted to the server's limits (self.limits()) and to
        max_slices, and ask `question` (or run a task preset).
        params: max_tokens, temperature, ... The result's `.sent` says what was sent
        (`.sent.line()`: "sent 2 of 60 slices (CT, 3 windows): ..."). Raises PacsError,
        StudyError (an ImageError; LimitError when not one image fits: nothing is sent)
        or the SDK's errors."""
        from clients.study_request import StudyOptions, fetch_request

        options = StudyOptions(series_uid, max_slices, window, tuple(tags))
        request, sent = fetch_request(
            dicomweb_url, study_uid, question, options, params=params, limits=self.limits()
        )
        result = self.send(request)
        result.sent = sent
        return result

    def ask_slide(
        self,
        dicomweb_url: str,
        study_uid: str,
        question: str | Task,
        *,
        series_uid: str | None = None,
        max_patches: int | None = None,
        **params: Any,
    ) -> ChatResult:
        """Ask about a whole slide (modality SM) in a PACS, read as MedGemma 1.5's pathology
        notebook does (clients.slide): up to 125 non-overlapping 896 px tissue patches from
        the pyramid level nearest 10X, in spatial order, the text first; fitted to the
        server's limits (self.limits()) and to max_patches. `.sent.line()`: "sent 7 of 7
        patches (10X); ...". Raises StudyError (not a slide, no tissue; LimitError when
        not one patch fits: nothing sent), PacsError or the SDK's errors."""
        from clients.slide_client import slide_request

        slide = slide_request(
            dicomweb_url,
            study_uid,
            question,
            series_uid=series_uid,
            budget=max_patches,
            limits=self.limits,
            params=params,
        )
        result = self.send(slide.request)
        result.sent = slide.sent
        return result

    def compare_studies(
        self,
        dicomweb_url: str,
        study_uid: str,
        question: str,
        *,
        prior: str = "auto",
        **params: Any,
    ) -> ChatResult:
        """Compare a chest X-ray study with its prior, as Google's longitudinal notebook
        does (clients.cxr): one turn [prior image, current image, question]. prior: a
        StudyInstanceUID, or "auto" for the patient's most recent earlier study of the same
        modality (QIDO-RS). `.sent` is the current study's image. Raises StudyError
        (no earlier study, another modality), PacsError, LimitError or the SDK's errors."""
        from clients.cxr_client import compare_request

        max_tokens = params.pop("max_tokens", None)
        pair = compare_request(
            dicomweb_url, study_uid, question, prior, limits=self.limits, max_tokens=max_tokens
        )
        result = self.send(pair.request, **params)
        result.sent = pair.sent.current
        return result

    def localize(self, image: ImageSource, object_name: str, **params: Any) -> Any:
        """Where `object_name` is on a chest X-ray (Google's localization notebook: the image
        padded to a square, boxes normalized 0..1000): a clients.cxr_client.Localized with
        `.boxes` in the image's own pixels. Raises BoxError (`.raw`: the answer) when the
        answer has no usable boxes."""
        import numpy as np

        from clients.cxr_client import localize_pixels
        from clients.image_input import load_image

        return localize_pixels(self, np.asarray(load_image(image)), object_name, **params)

    def localize_study(
        self, dicomweb_url: str, study_uid: str, object_name: str, **params: Any
    ) -> Any:
        """localize() on a PACS study's chest radiograph (CR or DX, one image)."""
        from clients.cxr_client import localize_pixels, study_radiograph

        image, _ = study_radiograph(dicomweb_url, study_uid)
        found = localize_pixels(self, image.pixels, object_name, **params)
        found.result.sent = image.sent
        return found

    def read_lab_report(
        self, document: Any, *, pages: Sequence[int] | None = None, **options: Any
    ) -> ChatResult:
        """A lab report's results as JSON (clients.lab_report): `document` a PDF (path or
        bytes) or page images (one, or a list in page order); `pages` the page numbers to
        send (from 1; default all, which must fit the server's limits). options: max_size,
        constrained (False: no response_format), max_tokens, temperature, ...
        `.parsed` is the LabReport. Raises DocumentError (not a PDF, a blank page, too many
        pages), LabReportError (`.raw`: the answer) or the SDK's errors."""
        from clients.lab_report import lab_report_request, read_answer

        build = {k: options.pop(k) for k in LAB_BUILD_OPTIONS if k in options}
        lab = lab_report_request(document, pages=pages, limits=self.limits, **build)
        return read_answer(self.send(lab.request, **options))

    async def aread_lab_report(
        self, document: Any, *, pages: Sequence[int] | None = None, **options: Any
    ) -> ChatResult:
        import asyncio

        from clients.lab_report import lab_report_request, read_answer

        build = {k: options.pop(k) for k in LAB_BUILD_OPTIONS if k in options}
        limits = await self.alimits()
        lab = await asyncio.to_thread(
            lab_report_request, document, pages=pages, limits=limits, **build
        )
        return read_answer(await self.asend(lab.request, **options))

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
