"""A request vLLM rejects after processing its image, then the corrected request with the
same image: the sequence that broke vLLM's processed-image cache (docs/operations.md#a-
rejected-request-and-the-next-one). Shared by the bad-input suite (cache off, the default)
and tests/e2e/test_image_cache.py (cache on, in shared memory)."""

from __future__ import annotations

import io
import os
from typing import Any

import httpx
from PIL import Image

from tests.images import data_url

TEXT = {"type": "text", "text": "Describe this X-ray"}

# vLLM 0.32 answers five of these in the API server after it processed the image (with the
# cache on, after recording it there): the sampling checks and the logprobs limit, streamed
# or not; the huge max_tokens and the long prompt before (tests/e2e/test_image_cache.py).
# (name, body changes, words the error has)
REJECTED_WITH_IMAGE = [
    ("negative max_tokens", {"max_tokens": -5}, "max_tokens must be at least 1"),
    ("huge max_tokens", {"max_tokens": 10**9}, "cannot be greater than max_model_len"),
    ("negative temperature", {"temperature": -1}, "temperature must be non-negative"),
    ("top_p above 1", {"top_p": 2}, "top_p must be in (0, 1]"),
    ("too many top_logprobs", {"logprobs": True, "top_logprobs": 100}, "logprobs"),
    ("prompt too long once the image is expanded", {"long_text": True}, "maximum context"),
    ("streamed negative max_tokens", {"max_tokens": -5, "stream": True}, "max_tokens"),
]


def image(url: str) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": url}}


def never_seen_png(side: int = 384) -> bytes:
    """Random pixels: an image no earlier request (in any test, any order) carried."""
    buf = io.BytesIO()
    Image.frombytes("L", (side, side), os.urandom(side * side)).save(buf, "PNG")
    return buf.getvalue()


def fresh_image_body(model: str, **changes: Any) -> dict[str, Any]:
    """A good request (2 tokens, greedy) with an image no earlier request carried, with
    `changes` applied; `long_text=True` makes the prompt fit without the image's 256
    tokens (at max_model_len 4096) but not with them."""
    text = dict(TEXT)
    if changes.pop("long_text", False):
        text["text"] = "word " * 3900
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": [text, image(data_url(never_seen_png()))]}],
        "max_tokens": 2,
        "temperature": 0,
    }
    body.update(changes)
    return body


def reject_then_resend(
    http: httpx.Client, model: str, name: str, changes: dict[str, Any], says: str
) -> None:
    """Send the rejected request (asserting vLLM's own 4xx naming the problem), then the
    corrected one with the same image twice: each must get 200."""
    bad = fresh_image_body(model, **changes)
    r = http.post("/v1/chat/completions", json=bad)
    text = r.text
    if r.status_code == 200 and bad.get("stream"):  # an error event inside a 200 stream
        assert '"error"' in text, (name, text[:500])
    else:
        assert 400 <= r.status_code < 500, (name, r.status_code, text[:500])
    assert says.lower() in text.lower(), (name, r.status_code, text[:500])
    good = {k: v for k, v in bad.items() if k not in changes}
    good.update(max_tokens=2, temperature=0)
    good["messages"][0]["content"][0] = TEXT
    for attempt in range(2):  # the resend, and once more
        r = http.post("/v1/chat/completions", json=good)
        assert r.status_code == 200, (name, attempt, r.status_code, r.text[:300])
