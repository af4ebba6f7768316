"""The edge A/B's requests (benchmarks/experiments/edge_overhead.py): text only, or one
distinct image each, as vLLM's chat API takes them."""

from __future__ import annotations

import base64
import io

from PIL import Image

from benchmarks.experiments.edge_overhead import chat_body, image_urls


def test_text_only_is_one_request_of_one_token() -> None:
    body = chat_body("m", None, 7)
    assert body["max_tokens"] == 1 and body["messages"] == [{"role": "user", "content": "Hi"}]


def test_image_requests_share_no_prefix_and_carry_their_png() -> None:
    urls = image_urls(3, side=32)
    assert len(set(urls)) == 3 and urls == image_urls(3, side=32)  # distinct, and repeatable
    first, again = chat_body("m", urls[0], 0), chat_body("m", urls[0], 3)
    parts = first["messages"][0]["content"]  # type: ignore[index]
    assert [p["type"] for p in parts] == ["text", "image_url", "text"], parts
    assert parts[1]["image_url"]["url"] == urls[0]
    assert parts[0] != again["messages"][0]["content"][0]  # type: ignore[index]
    png = base64.b64decode(urls[0].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (32, 32)
