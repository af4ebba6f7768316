"""Studies asked several questions (`prompts.follow_ups`): the questions of a session, the
follow-up's messages, and the summary split by role (pure).

A study scenario sends each study as one session: its first question, then each follow-up
question on the same study, in order, by the same simulated user. A follow-up is the first
request's messages with only the question replaced: the same images (byte for byte) and the
same instruction text, so that vLLM's prefix cache holds everything before the question.
Records carry their role (benchmarks.runner.prepared.ROLES) and the summary reports each
role's TTFT and latency, the volumes' studies/s and slices/s (first questions completed),
and the follow-up / first ratio of the medians.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

from benchmarks.runner.metrics import distribution_ms
from benchmarks.runner.prepared import FIRST, FOLLOW_UP, RADIOGRAPH, ROLES
from benchmarks.runner.records import RequestRecord


def role_of(kind: str, question: int) -> str:
    """The role of question `question` (0 = the first) of a session of `kind`: RADIOGRAPH
    for a radiograph, "" for a text-only request, else FIRST or FOLLOW_UP."""
    if kind == "radiograph":
        return RADIOGRAPH
    if kind == "text":
        return ""
    return FIRST if question == 0 else FOLLOW_UP


def with_question(messages: list[dict[str, Any]], question: str, new: str) -> list[dict[str, Any]]:
    """A copy of `messages` whose question `question` (the last text part equal to it, in
    the last user turn) is `new`: everything else, images included, unchanged. ValueError
    if the last user turn has no such text part."""
    out = copy.deepcopy(messages)
    users = [m for m in out if m.get("role") == "user"]
    content = users[-1]["content"] if users else None
    if isinstance(content, str) and content == question:
        users[-1]["content"] = new
        return out
    parts = content if isinstance(content, list) else []
    for part in reversed(parts):
        if part.get("type") == "text" and part.get("text") == question:
            part["text"] = new
            return out
    raise ValueError(f"the last user turn has no text part {question[:60]!r} to replace")


def by_role(records: Sequence[RequestRecord], window_s: float) -> dict[str, Any]:
    """Per role present (first, follow_up, radiograph): requests, completed, failed, mean
    prompt tokens (the server's usage), TTFT and end-to-end latency (ms); and `studies`:
    volumes whose first question completed per second, their slices per second, and the
    follow-up / first ratios of the median TTFT and latency. {} when no record has a role."""
    if window_s <= 0:
        raise ValueError(f"window_s must be positive, got {window_s}")
    roles: dict[str, Any] = {}
    for role in ROLES:
        mine = [r for r in records if r.role == role]
        if not mine:
            continue
        ok = [r for r in mine if r.success]
        roles[role] = {
            "requests": len(mine),
            "completed": len(ok),
            "failed": len(mine) - len(ok),
            "mean_prompt_tokens": round(sum(r.prompt_tokens for r in ok) / len(ok), 1)
            if ok
            else None,
            "ttft_ms": distribution_ms([r.ttft_s for r in ok if r.ttft_s is not None]),
            "e2e_ms": distribution_ms([r.latency_s for r in ok]),
        }
    if not roles:
        return {}
    firsts = [r for r in records if r.role == FIRST and r.success]
    studies = {
        "studies_per_s": round(len(firsts) / window_s, 4),
        "slices_per_s": round(sum(r.n_images for r in firsts) / window_s, 4),
        "follow_up_over_first": {key: ratio(roles, key) for key in ("ttft_ms", "e2e_ms")},
    }
    return {"roles": roles, "studies": studies}


def ratio(roles: dict[str, Any], key: str) -> float | None:
    """Median follow-up over median first question of `key` (None without both)."""
    try:
        follow, first = roles[FOLLOW_UP][key]["p50"], roles[FIRST][key]["p50"]
    except KeyError:
        return None
    if follow is None or not first:
        return None
    return round(follow / first, 3)
