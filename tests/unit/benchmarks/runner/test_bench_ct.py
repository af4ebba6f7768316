"""The CT-study benchmark: bench-ct.yaml's requests are studies of K slices laid out by
clients.study, and its rates are reported as studies/s and slices/s."""

from __future__ import annotations

import base64
import io
import json

import numpy as np
import pytest
from PIL import Image

from benchmarks.runner.metrics import summarise
from benchmarks.runner.records import RequestRecord
from benchmarks.runner.report import print_table
from benchmarks.runner.scenario import ScenarioError, load_scenario, rate_units
from benchmarks.runner.workload import kinds, prepare
from clients.recipes import CT_VOLUME
from serve.config.deployment import load_config
from serve.pacs.phantom import PATIENT_ID, PATIENT_NAME
from tests.conftest import REPO

REPO = REPO
BENCH_CT = REPO / "configs" / "scenarios" / "bench-ct.yaml"


def test_bench_ct_builds_studies_of_k_slices_with_their_labels() -> None:
    s = load_scenario(BENCH_CT, ["images.distinct=2", "images.sizes=[[64, 64]]"])
    k = s.images.per_request
    assert s.images.kind == "ct" and k == 8 and kinds(s) == ["study", "study"]
    requests = prepare(s, "m")
    assert requests[0].body != requests[1].body, "each study has its own images (caches)"
    for r in requests:
        assert (r.kind, r.n_images) == ("study", k)
        body = json.loads(r.body)
        assert PATIENT_NAME not in r.body.decode() and PATIENT_ID not in r.body.decode()
        [user] = body["messages"]  # a literal prompt: no system message
        parts = user["content"]
        texts = [p["text"] for p in parts if p["type"] == "text"]
        labels = [f"SLICE {n}" for n in range(1, k + 1)]
        assert texts == [CT_VOLUME.instruction, *labels, s.prompts.text], texts  # the recipe's
        kinds_in_order = [p["type"] for p in parts[1 : 1 + 2 * k]]
        assert kinds_in_order == ["image_url", "text"] * k, "each slice, then its label"
        url = parts[1]["image_url"]["url"]
        assert url.startswith("data:image/jpeg;base64,"), url[:40]  # the notebook's JPEG
        jpeg = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
        assert jpeg.size == (64, 64) and jpeg.mode == "RGB", (jpeg.size, jpeg.mode)
        assert np.asarray(jpeg).std() > 0, "a slice with something in it"


def test_bench_ct_fits_its_deployment() -> None:
    s = load_scenario(BENCH_CT)
    cfg = load_config(REPO / s.deployment)
    assert cfg.limit_mm_per_prompt["image"] >= s.images.per_request
    assert cfg.max_model_len is not None
    assert s.images.per_request * 260 + 200 + s.max_tokens <= cfg.max_model_len


def test_a_task_prompt_keeps_its_system_text_before_the_study() -> None:
    s = load_scenario(
        BENCH_CT, ["images.distinct=1", "images.per_request=2", "prompts={tasks: [findings]}"]
    )
    body = json.loads(prepare(s, "m")[0].body)
    system, user = body["messages"]
    assert system == {"role": "system", "content": "You are an expert radiologist."}
    texts = [p["text"] for p in user["content"] if p["type"] == "text"]
    assert texts[0] == CT_VOLUME.instruction, texts
    assert texts[1:3] == ["SLICE 1", "SLICE 2"] and texts[3].startswith("Describe"), texts


@pytest.mark.parametrize(
    ("override", "needle"),
    [
        ("images.dicom_share=0.5", "a CT study is DICOM"),
        ("images.sizes=[[512, 256]]", "CT slices are square"),
        ("images.per_request=257", "images.per_request"),
    ],
)
def test_bad_ct_scenarios_say_why(override: str, needle: str) -> None:
    with pytest.raises(ScenarioError, match=needle):
        load_scenario(BENCH_CT, [override])


def record(n_images: int, latency: float) -> RequestRecord:
    return RequestRecord(
        start_s=100.0, success=True, status=200, ttft_s=1.0, latency_s=latency,
        prompt_tokens=2000, output_tokens=32, n_images=n_images, kind="study",
    )  # fmt: skip


def test_studies_and_slices_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    s = load_scenario(BENCH_CT)
    summary = summarise([record(8, 2.0), record(8, 3.0)], window_s=4.0)
    assert summary["request_throughput"] == 0.5 and summary["image_throughput"] == 4.0
    assert rate_units(s) == {"request": "studies", "image": "slices"}
    run = {"scenario": s.name, "model": "m", "note": "n", "mode": "closed",
           "units": rate_units(s), "levels": [{"level": 1, **summary}]}  # fmt: skip
    print_table(run)
    out = capsys.readouterr().out
    assert "studies/s" in out and "slices/s" in out and "req/s" not in out, out
    assert "4.00" in out and "0.50" in out, out


def test_other_scenarios_keep_req_per_second(capsys: pytest.CaptureFixture[str]) -> None:
    s = load_scenario(REPO / "configs" / "scenarios" / "bench-smoke.yaml")
    summary = summarise([record(1, 2.0)], window_s=4.0)
    run = {"scenario": s.name, "model": "m", "note": "n", "mode": "closed",
           "units": rate_units(s), "levels": [{"level": 1, **summary}]}  # fmt: skip
    print_table(run)
    out = capsys.readouterr().out
    assert "req/s" in out and "studies/s" not in out and "images/s" not in out, out
