"""The affinity workload: conversations about one image, each turn sent with the whole
conversation so far, and the small asyncio driver that sends them (the project's client,
clients.chat.MedGemmaClient.astream: the openai SDK, no retries).

Why not the runner's Locust workload: it is a file of request bodies serialised before the
load starts, while a follow-up's body holds the answer to the turn before (known only during
the run) and its conversation's header. TTFT is the time from sending a request to its
first non-empty content delta.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from benchmarks.runner.records import RequestRecord
from benchmarks.runner.scenario import Scenario
from benchmarks.runner.workload import image_part, request_body
from clients.messages import Message, assistant_turn, user_turn
from clients.tasks import TASKS

SESSION_HEADER = "X-Session-ID"
# Synthetic questions of a clinician about one image (no patient data).
QUESTIONS = (
    "What do you see on this chest X-ray?",
    "Is there any sign of a pleural effusion?",
    "How does the heart size look?",
    "What would you recommend as the next step?",
)


def turn_messages(image: dict[str, Any], replies: Sequence[str]) -> list[Message]:
    """The messages of turn len(replies) + 1 of a conversation about one image: the system
    prompt, each earlier question with its answer (the image with the first question), then
    the next question (the `interpret` task, as clients/examples/multi_turn.py builds it)."""
    if len(replies) >= len(QUESTIONS):
        raise ValueError(f"a conversation has {len(QUESTIONS)} turns, not {len(replies) + 1}")
    turns: list[Message] = []
    for i, reply in enumerate(replies):
        turns += [user_turn(QUESTIONS[i], [image] if i == 0 else []), assistant_turn(reply)]
    images = [] if replies else [image]
    return TASKS["interpret"].build(images, question=QUESTIONS[len(replies)], turns=turns).messages


@dataclass
class TurnRecord:
    """One request of a conversation: which router policy, round, conversation and turn."""

    policy: str
    round: int
    conversation: int
    turn: int  # 1 = the image and the first question; 2.. = follow-ups
    record: RequestRecord

    def to_json(self) -> str:
        head = {k: v for k, v in asdict(self).items() if k != "record"}
        return json.dumps({**head, **asdict(self.record)}, separators=(",", ":"))


def send_params(scenario: Scenario, model: str) -> dict[str, Any]:
    """max_tokens and temperature, and the fixed-output fields of the runner's request body
    (ignore_eos, min_tokens) as the SDK's extra_body."""
    body = request_body(scenario, model, [], {})
    extra = {k: body[k] for k in ("ignore_eos", "min_tokens") if k in body}
    params: dict[str, Any] = {"max_tokens": body["max_tokens"], "temperature": body["temperature"]}
    return {**params, "extra_body": extra} if extra else params


def new_images(scenario: Scenario, n: int, key: Sequence[int]) -> list[dict[str, Any]]:
    """n encoded images whose pixels depend on the scenario's seed and `key` (round, policy)."""
    rng = np.random.default_rng([scenario.seed or 0, *key])
    sizes = scenario.images.sizes
    return [image_part(rng, "image", scenario, sizes[i % len(sizes)]) for i in range(n)]


async def timed_turn(
    client: Any, messages: list[Message], params: dict[str, Any], level: float
) -> tuple[RequestRecord, str]:
    """Stream one turn: its record (TTFT to the first content delta) and the answer's text.
    Never raises for a failed request: the error goes into the record."""
    import openai

    from clients.error_body import error_message

    stream = client.astream(messages, **params)
    wall, t0 = time.time(), time.perf_counter()
    first: float | None = None
    last = t0
    itl: list[float] = []
    status, error = 200, ""
    try:
        async for _delta in stream:
            now = time.perf_counter()
            if first is None:
                first = now
            else:
                itl.append(now - last)
            last = now
    except openai.APIStatusError as exc:
        status = exc.status_code
        error = f"HTTP {status}: {(error_message(exc.body) or str(exc))[:300]}"
    except openai.APIError as exc:  # connection refused or reset, timeout
        status, error = 0, f"{type(exc).__name__}: {exc}"[:300]
    end = time.perf_counter()
    result = stream.result
    if not error and first is None:
        error = "the stream ended without a content token"
    usage = result.usage if result is not None else {}
    record = RequestRecord(
        start_s=wall,
        success=not error,
        error=error,
        status=status,
        ttft_s=None if first is None else first - t0,
        itl_s=itl,
        latency_s=end - t0,
        prompt_tokens=usage.get("prompt_tokens", 0),
        output_tokens=usage.get("completion_tokens", 0),
        finish_reason=result.finish_reason if result is not None else None,
        n_images=1,
        level=level,
    )
    return record, result.text if result is not None else ""


async def conversations(
    base_url: str,
    api_key: str | None,
    model: str,
    images: Sequence[dict[str, Any]],
    params: dict[str, Any],
    *,
    in_flight: int,
    timeout_s: float,
    label: tuple[str, int],
    session_prefix: str,
) -> list[TurnRecord]:
    """One conversation per image, `in_flight` at a time, each turn after the one before;
    a conversation ends at its first failed turn. Each carries its own SESSION_HEADER."""
    from clients.chat import MedGemmaClient

    policy, rnd = label
    gate = asyncio.Semaphore(in_flight)
    async with MedGemmaClient(
        base_url=base_url, api_key=api_key or "EMPTY", model=model, max_retries=0,
        timeout=timeout_s,
    ) as client:  # fmt: skip

        async def converse(c: int, image: dict[str, Any]) -> list[TurnRecord]:
            headers = {SESSION_HEADER: f"{session_prefix}-{c}"}
            out: list[TurnRecord] = []
            replies: list[str] = []
            async with gate:
                for turn in range(1, len(QUESTIONS) + 1):
                    record, text = await timed_turn(
                        client,
                        turn_messages(image, replies),
                        {**params, "extra_headers": headers},
                        float(in_flight),
                    )
                    out.append(TurnRecord(policy, rnd, c, turn, record))
                    if not record.success:
                        break
                    replies.append(text)
            return out

        done = await asyncio.gather(*(converse(c, im) for c, im in enumerate(images)))
    return [t for conv in done for t in conv]
