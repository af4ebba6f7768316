"""vLLM's processed-image cache ON, as every config with `mm_processor_cache_gb` above 0
runs it (in shared memory: serve.command.argv.MM_CACHE_TYPE): a request vLLM rejects after
processing its image, then the corrected request with the same image, gets 200, and that
image comes from the cache (the metric `vllm:mm_cache_hits` grows), so the test exercises
the path that used to answer 500 (with vLLM's default cache type `lru`: "Multi-modal cache
miss ... P0/P1 cache drift"). A rejected request leaves its image pinned in the shared
memory (the engine never reads it); once the buffer is full, new images are sent without
the cache, and must still be served.

One server for the module (started ahead in a serial run: tests/ahead.py), cpu-tiny.yaml
with a cache of ~10 images (float32) to ~20 (bf16), so these are `slow`: the cache-hit
tests write 8 images at most (the readiness probe's, and one per test), so every one stays
cached; the full-cache test then pins one and sends 24 new ones, more than the ring holds,
and checks that it is full. That fills it for good (the pinned image is never freed), so
it runs after the others (`destructive("fills")`, tests/grouping.py).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest

from serve.config.deployment import load_config
from serve.process import free_port
from serve.standin import tiny_model
from tests.ahead import AHEAD, Start, bring_up
from tests.conftest import CONFIGS, LOG_DIR
from tests.e2e.launcher import API_KEY, LiveServer, serving, wait_until
from tests.e2e.rejected_images import (
    REJECTED_WITH_IMAGE,
    fresh_image_body,
    reject_then_resend,
)
from tests.grouping import SESSION

pytestmark = pytest.mark.slow

# ~20 processed 896 px images in bf16 (~4.8 MB each: 0.12 GiB held 26), ~10 in float32
CACHE_GB = 0.09


def image_cache_start(factory: pytest.TempPathFactory) -> Start:
    """How to start this module's server: cpu-tiny.yaml with a cache of CACHE_GB."""

    def start(stack: ExitStack) -> LiveServer:
        model = str(tiny_model.ensure("tiny", 0))
        changes = {"model": model, "port": free_port(), "mm_processor_cache_gb": CACHE_GB}
        cfg = load_config(CONFIGS / "cpu-tiny.yaml", changes)
        environ = {**os.environ, cfg.api_key_env: API_KEY}
        log_path = LOG_DIR / f"pytest-image-cache-{cfg.port}.log"
        return stack.enter_context(serving(cfg, log_path, environ))

    return start


AHEAD.plan("image_cache_server", image_cache_start)


@pytest.fixture(scope="session")
def image_cache_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The server with the image cache, stopped after this module's last test."""
    with ExitStack() as stack:
        SESSION.stop_after_last_user("image_cache_server", stack)
        yield bring_up(
            stack,
            "image_cache_server",
            "the server with the image cache on",
            image_cache_start(tmp_path_factory),
        )


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
    name: str, changes: dict[str, Any], says: str, image_cache_server: LiveServer
) -> None:
    with image_cache_server.get_http_client() as http:
        hits = metric(http, "vllm:mm_cache_hits_total")
        reject_then_resend(http, image_cache_server.model, name, changes, says)
        # the resends' image came from the cache the rejected request filled (both resends),
        # or, if vLLM answered before processing it, from the first resend (the second)
        want = hits + (1 if name in ANSWERED_BEFORE_PROCESSING else 2)
        got = wait_until(
            lambda: (n := metric(http, "vllm:mm_cache_hits_total")) >= want and n,
            30,
            lambda: f"{name}: cache hits {metric(http, 'vllm:mm_cache_hits_total')}, want {want}",
        )
        assert got == want, (name, hits, got, want)
    no_drift(image_cache_server)


@pytest.mark.destructive("fills")
def test_a_full_cache_with_a_pinned_image_still_serves_every_request(
    image_cache_server: LiveServer,
) -> None:
    with image_cache_server.get_http_client() as http:
        bad = fresh_image_body(image_cache_server.model, max_tokens=-5)
        r = http.post("/v1/chat/completions", json=bad)
        assert r.status_code == 400, (r.status_code, r.text[:300])
        # 24 new images, more than the buffer holds in bf16 or float32, one per request: when
        # two-image requests filled it, a lone new image still found room and was a cache hit
        # the second time (CI 2026-12-07, and 2 of 2 reruns), so lone images fill it here
        for i in range(24):
            r = http.post("/v1/chat/completions", json=fresh_image_body(image_cache_server.model))
            assert r.status_code == 200, (i, r.status_code, r.text[:300])
        # the ring is full: a new image, sent twice, is processed twice (no cache hit)
        hits, queries = (metric(http, f"vllm:mm_cache_{m}_total") for m in ("hits", "queries"))
        again = fresh_image_body(image_cache_server.model)
        for attempt in range(2):
            r = http.post("/v1/chat/completions", json=again)
            assert r.status_code == 200, (attempt, r.status_code, r.text[:300])
        wait_until(
            lambda: metric(http, "vllm:mm_cache_queries_total") >= queries + 2,
            30,
            "the two requests' cache queries were not counted",
        )
        assert metric(http, "vllm:mm_cache_hits_total") == hits, "the cache was not full"
        bad["max_tokens"] = 2  # the rejected request's image, corrected
        for attempt in range(2):
            r = http.post("/v1/chat/completions", json=bad)
            assert r.status_code == 200, (attempt, r.status_code, r.text[:300])
        queries = metric(http, "vllm:mm_cache_queries_total")
        assert queries >= 19, queries
    no_drift(image_cache_server)
