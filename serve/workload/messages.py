"""The chat messages of a scenario's requests, and an estimate of their text tokens.

`task_messages` builds the i-th request's messages with the clients' task presets
(`clients.tasks.TASKS`, `clients.messages.build_messages`), as a client builds them: the
benchmark sends these, and the planner counts their text (`text_tokens`). Pure.
"""

from __future__ import annotations

from typing import Any

from clients.messages import build_messages
from serve.workload.request import ScenarioRequest

SAMPLE_REPORT = (
    "Findings: The lungs are clear. No pleural effusion or pneumothorax. The heart size is "
    "normal.\nImpression: No acute cardiopulmonary abnormality."
)  # synthetic, for the tasks that need a report
CHARS_PER_TOKEN = 4  # English prose in Gemma's SentencePiece vocabulary, roughly
# Gemma 3's chat template around one user turn: <bos> <start_of_turn> user \n, "\n\n" after
# the system text, <end_of_turn> \n <start_of_turn> model \n (the image wrapper is counted
# with the image, serve.plan.capacity.IMAGE_WRAPPER_TOKENS).
CHAT_TEMPLATE_TOKENS = 10


def task_messages(
    request: ScenarioRequest, i: int, parts: list[dict[str, Any]]
) -> tuple[str, list[dict[str, Any]], dict[str, Any]]:
    """(task name, messages, extra request fields) of the i-th request, built by the
    clients' task presets. A text-only request of an image task becomes an `interpret`
    question (the follow-up a clinician asks without a new image)."""
    if request.prompts.text is not None:
        return "text", build_messages(request.prompts.text, parts), {}
    from clients.tasks import TASKS

    name = request.prompts.tasks[i % len(request.prompts.tasks)]
    task = TASKS[name]
    if not parts and task.needs_images:
        task = TASKS["interpret"]
    req = task.build(parts, report=SAMPLE_REPORT, max_tokens=request.max_tokens)
    extra = {k: v for k, v in req.params.items() if k not in ("max_tokens", "temperature")}
    if request.fixed_output:
        extra.pop("response_format", None)  # a schema ends the answer early: not fixed length
    return task.name, req.messages, extra


def text_tokens(request: ScenarioRequest) -> int:
    """Prompt text tokens of a scenario's requests, ESTIMATED: the characters of the text
    the benchmark sends (built by `task_messages`, as a run builds it) / CHARS_PER_TOKEN,
    plus the chat template's markup; the mean over its tasks."""
    image = {"type": "image_url", "image_url": {"url": "data:,"}}  # placeholder, not sent
    kinds = 1 if request.prompts.text is not None else len(request.prompts.tasks)
    counts = []
    for i in range(kinds):
        _, messages, _ = task_messages(request, i, [image] * request.images.per_request)
        chars = 0
        for message in messages:
            content = message["content"]
            if isinstance(content, str):
                chars += len(content)
            else:
                chars += sum(len(part.get("text", "")) for part in content)
        counts.append(-(-chars // CHARS_PER_TOKEN) + CHAT_TEMPLATE_TOKENS)
    return round(sum(counts) / len(counts))
