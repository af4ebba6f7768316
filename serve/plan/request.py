"""The typical request a plan is made for: the flags, over a scenario's, over the defaults.

A benchmark scenario's request (serve.workload.request) gives its images per request, its
max_tokens, and an estimate of its prompt text (serve.workload.messages.text_tokens);
`--images`, `--text-tokens` and `--output-tokens` override them. A scenario of CT studies
(`images.kind: ct`) also gives the studies of serve.plan.volumes: a volume of its slices and
a radiograph, each asked its first question and its `prompts.follow_ups`. Pure.
"""

from __future__ import annotations

from serve.config.deployment import DeploymentConfig
from serve.model.shapes import ModelShape
from serve.plan.planner import DEFAULT_OUTPUT_TOKENS, DEFAULT_TEXT_TOKENS, PlanError, RequestShape
from serve.plan.studies import SLICE_LABEL_TOKENS
from serve.plan.volumes import Study
from serve.workload.messages import CHARS_PER_TOKEN, CHAT_TEMPLATE_TOKENS, text_tokens
from serve.workload.request import ScenarioRequest

# After a follow-up's question: <end_of_turn> \n <start_of_turn> model \n (ESTIMATE).
FOLLOW_UP_TEMPLATE_TOKENS = 5


def typical_request(
    cfg: DeploymentConfig,
    shape: ModelShape,
    *,
    images: int | None,
    text: int | None,
    output: int | None,
    scenario: ScenarioRequest | None = None,
    scenario_path: str | None = None,
) -> tuple[RequestShape, str | None]:
    """The typical request from the flags (None: not given), over the scenario's (read
    from `scenario_path`), over the defaults; and a line saying where it came from when a
    scenario was given. Raises PlanError."""
    source = None
    if scenario is not None:
        estimate = text_tokens(scenario)
        per_request = scenario.images.per_request
        if images is None:
            images = per_request if shape.vision else 0
        text = estimate if text is None else text
        output = scenario.max_tokens if output is None else output
        source = (
            f"scenario {scenario_path}: images.per_request {per_request}, "
            f"max_tokens {scenario.max_tokens}, text ~{estimate} tokens (ESTIMATE: characters of "
            f"the system + task prompts / {CHARS_PER_TOKEN} + {CHAT_TEMPLATE_TOKENS} chat-"
            "template tokens; flags override)"
        )
        if shape.vision is None:
            source += f"; {shape.name} is text-only: planned without images"
        elif scenario.images.text_only_share:
            source += (
                f"; its {scenario.images.text_only_share:.0%} text-only requests are planned "
                "as image requests"
            )
    if images is None:
        images = 1 if shape.vision and cfg.limit_mm_per_prompt.get("image", 0) else 0
    if images and shape.vision is None:
        raise PlanError(f"--images: {shape.name} is text-only and takes no images")
    return (
        RequestShape(
            images,
            DEFAULT_TEXT_TOKENS if text is None else text,
            DEFAULT_OUTPUT_TOKENS if output is None else output,
        ),
        source,
    )


def follow_up_tokens(questions: list[str]) -> int:
    """The new tokens of a follow-up after the shared prefix, ESTIMATED: its question's
    characters / CHARS_PER_TOKEN plus the chat template's tail; the mean over them."""
    if not questions:
        return 0
    counts = [-(-len(q) // CHARS_PER_TOKEN) + FOLLOW_UP_TEMPLATE_TOKENS for q in questions]
    return round(sum(counts) / len(counts))


def scenario_studies(
    scenario: ScenarioRequest | None, shape: ModelShape, request: RequestShape, slices: int
) -> tuple[Study, Study] | None:
    """A radiograph and a volume of `slices` slices (each followed by its "SLICE n" label),
    each with the typical request's text and answer and the scenario's follow-up questions;
    None unless the scenario's images are CT studies and the model sees."""
    if scenario is None or scenario.images.kind != "ct" or shape.vision is None:
        return None
    follow = scenario.prompts.follow_ups
    new_tokens = follow_up_tokens(follow)

    def study(name: str, images: int, labels: int) -> Study:
        prompt = RequestShape(images, request.text_tokens + labels, 0).tokens(shape)
        return Study(name, images, prompt, len(follow), new_tokens, request.output_tokens)

    return study("radiograph", 1, 0), study(
        f"{slices}-slice volume", slices, slices * SLICE_LABEL_TOKENS
    )
