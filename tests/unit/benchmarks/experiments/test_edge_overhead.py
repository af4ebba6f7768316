"""The edge A/B's requests (benchmarks/experiments/edge_overhead.py): text only, or one
distinct image each, as vLLM's chat API takes them."""

from __future__ import annotations

import base64
import io

from PIL import Image

from benchmarks.experiments.edge_overhead import chat_bodies, image_urls


def test_text_only_is_one_request_of_one_token() -> None:
    (body,) = chat_bodies("m", [])
    assert body["max_tokens"] == 1 and body["messages"] == [{"role": "user", "content": "Hi"}]


def test_each_image_request_carries_its_own_png() -> None:
    urls = image_urls(3, side=32)
    assert len(set(urls)) == 3 and urls == image_urls(3, side=32)  # distinct, and repeatable
    bodies = chat_bodies("m", urls)
    sent = [b["messages"][0]["content"][0]["image_url"]["url"] for b in bodies]  # type: ignore[index]
    assert sent == urls
    png = base64.b64decode(urls[0].split(",", 1)[1])
    assert Image.open(io.BytesIO(png)).size == (32, 32)
