"""The whole-slide benchmark: bench-slides.yaml's requests are slides laid out as the slide
recipe sends them (the question, then the tissue patches, JPEG, no system prompt), and its
deployment holds 125 patches."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
from PIL import Image

from benchmarks.runner.scenario import load_scenario
from benchmarks.runner.workload import kinds, prepare
from clients.limits import SERVER, Limits
from clients.slide import MAX_PATCHES
from clients.slide_client import fit_patches
from serve.config.deployment import load_config
from serve.pacs.slide import PATIENT_ID, PATIENT_NAME
from tests.conftest import REPO

BENCH_SLIDES = REPO / "configs" / "scenarios" / "bench-slides.yaml"


def test_bench_slides_sends_the_question_then_tissue_patches() -> None:
    s = load_scenario(BENCH_SLIDES, ["images.distinct=2", "images.per_request=3"])
    assert s.images.kind == "slide" and kinds(s) == ["image", "image"]
    requests = prepare(s, "m")
    assert requests[0].body != requests[1].body, "each slide has its own patches (caches)"
    for r in requests:
        assert r.n_images == 3 and PATIENT_NAME not in r.body.decode()
        assert PATIENT_ID not in r.body.decode()
        [user] = json.loads(r.body)["messages"]  # no system prompt
        kinds_in_order = [p["type"] for p in user["content"]]
        assert kinds_in_order == ["text", "image_url", "image_url", "image_url"], kinds_in_order
        assert user["content"][0]["text"] == s.prompts.text
        url = user["content"][1]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,"), url[:40]  # as the client's patches
        patch = np.asarray(Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1]))))
        assert patch.shape == (896, 896, 3)
        luma = (patch @ np.array([0.299, 0.587, 0.114])).mean()
        assert luma <= 0.8 * 255, "the client's tissue test would keep it"


def test_bench_slides_deployment_holds_the_recipes_125_patches() -> None:
    s = load_scenario(BENCH_SLIDES)
    assert s.images.per_request == MAX_PATCHES and s.prompts.text
    cfg = load_config(REPO / s.deployment, s.deployment_set)
    assert cfg.limit_mm_per_prompt["image"] >= MAX_PATCHES
    assert cfg.max_model_len is not None
    limits = Limits(cfg.limit_mm_per_prompt["image"], cfg.max_model_len, SERVER)
    fit = fit_patches(MAX_PATCHES, None, limits, texts=[s.prompts.text], max_tokens=s.max_tokens)
    assert (fit.count, fit.reason) == (MAX_PATCHES, ""), fit
