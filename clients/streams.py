"""Streamed answers: the text deltas of a chat completion as they come, and the whole answer
(a ChatResult) once the stream is exhausted; sync and async."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from clients.messages import Message
from clients.results import ChatResult, reachable, usage_dict

if TYPE_CHECKING:
    from clients.chat import MedGemmaClient


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
