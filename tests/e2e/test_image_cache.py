"""vLLM's processed-image cache ON, as every config with `mm_processor_cache_gb` above 0
runs it (in shared memory: serve.command.argv.MM_CACHE_TYPE): a request vLLM rejects after
processing its image, then the corrected request with the same image, gets 200, and that
image comes from the cache (the metric `vllm:mm_cache_hits` grows), so the test exercises
the path that used to answer 500 (with vLLM's default cache type `lru`: "Multi-modal cache
miss ... P0/P1 cache drift"). A rejected request leaves its image pinned in the shared
memory (the engine never reads it); once the buffer is full, new images are sent without
the cache, and must still be served.

Each module-scoped server is cpu-tiny.yaml with the cache on, so these are `slow`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from serve.config.deployment import load_config
from serve.process import LaunchError, free_port
from tests.conftest import CONFIGS, LOG_DIR
from tests.e2e.launcher import API_KEY, LiveServer, serving, wait_until
from tests.e2e.rejected_images import (
    REJECTED_WITH_IMAGE,
    fresh_image_body,
    reject_then_resend,
)

pytestmark = pytest.mark.slow

ROOMY_GB = 1.0  # ~100 processed 896 px images: every image of these tests stays cached
FULL_GB = 0.03  # ~3: full after a few requests


def cache_on(model_dir: str, gib: float, name: str) -> Iterator[LiveServer]:
    cfg = load_config(
        CONFIGS / "cpu-tiny.yaml",
        {"model": model_dir, "port": free_port(), "mm_processor_cache_gb": gib},
    )
    environ = {**os.environ, cfg.api_key_env: API_KEY}
    try:
        with serving(cfg, LOG_DIR / f"pytest-{name}-{cfg.port}.log", environ) as live:
            yield live
    except LaunchError as exc:
        pytest.fail(f"the server with the image cache on did not start: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def cached(tiny_model_dir: Any) -> Iterator[LiveServer]:
    yield from cache_on(str(tiny_model_dir), ROOMY_GB, "image-cache")


@pytest.fixture(scope="module")
def cached_full(tiny_model_dir: Any) -> Iterator[LiveServer]:
    yield from cache_on(str(tiny_model_dir), FULL_GB, "image-cache-full")


def metric(http: httpx.Client, name: str) -> float:
    """The sum of a Prometheus counter's samples on /metrics."""
    text = http.get("/metrics").text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


# vLLM answers these two before it processes the image (measured: only the second resend
# hits the cache), so they could not drift; the other five are answered after.
ANSWERED_BEFORE_PROCESSING = {"huge max_tokens", "prompt too long once the image is expanded"}


def no_drift(server: LiveServer) -> None:
    log = server.text()
    assert "cache drift" not in log and "Traceback" not in log, log[-3000:]


@pytest.mark.parametrize(
    "name,changes,says", REJECTED_WITH_IMAGE, ids=[c[0] for c in REJECTED_WITH_IMAGE]
)
def test_rejected_image_request_then_the_same_image_from_the_cache(
    name: str, changes: dict[str, Any], says: str, cached: LiveServer
) -> None:
    with cached.get_http_client() as http:
        hits = metric(http, "vllm:mm_cache_hits_total")
        reject_then_resend(http, cached.model, name, changes, says)
        # the resends' image came from the cache the rejected request filled (both resends),
        # or, if vLLM answered before processing it, from the first resend (the second)
        want = hits + (1 if name in ANSWERED_BEFORE_PROCESSING else 2)
        got = wait_until(
            lambda: (n := metric(http, "vllm:mm_cache_hits_total")) >= want and n,
            30,
            lambda: f"{name}: cache hits {metric(http, 'vllm:mm_cache_hits_total')}, want {want}",
        )
        assert got == want, (name, hits, got, want)
    no_drift(cached)


def test_a_full_cache_with_a_pinned_image_still_serves_every_request(
    cached_full: LiveServer,
) -> None:
    with cached_full.get_http_client() as http:
        bad = fresh_image_body(cached_full.model, max_tokens=-5)
        r = http.post("/v1/chat/completions", json=bad)
        assert r.status_code == 400, (r.status_code, r.text[:300])
        for i in range(8):  # 16 new images: far more than the buffer holds
            body = fresh_image_body(cached_full.model)
            body["messages"][0]["content"].append(fresh_image_body("")["messages"][0]["content"][1])
            r = http.post("/v1/chat/completions", json=body)
            assert r.status_code == 200, (i, r.status_code, r.text[:300])
        bad["max_tokens"] = 2  # the rejected request's image, corrected
        for attempt in range(2):
            r = http.post("/v1/chat/completions", json=bad)
            assert r.status_code == 200, (attempt, r.status_code, r.text[:300])
        queries = metric(http, "vllm:mm_cache_queries_total")
        assert queries >= 19, queries
    no_drift(cached_full)
