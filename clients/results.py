"""One answer of the model (ChatResult) and how an SDK response becomes one; a server that
cannot be reached becomes one line naming its URL and how to start it (reachable)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import openai
from pydantic import BaseModel

from clients.errors import ServerUnreachableError
from clients.tasks import parse_answer

if TYPE_CHECKING:
    from clients.slide import SlideSent
    from clients.study import Sent  # pydicom and numpy: loaded only for studies

START_HINT = (
    "start it with `make serve` (or `python -m serve --config configs/deployments/cpu-tiny.yaml`)"
)


@dataclass
class ChatResult:
    """One answer: its text, the server's token usage, why it stopped, how long it took."""

    text: str
    finish_reason: str | None
    usage: dict[str, int] = field(default_factory=dict)
    latency_s: float = 0.0
    model: str = ""
    parsed: BaseModel | None = None  # the validated answer of a task with a schema
    # what a study's prompt carried (MedGemmaClient.ask_study, ask_slide)
    sent: Sent | SlideSent | None = None


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
