"""`chat --task localize ... --overlay --store-sr` on the PACS's current chest X-ray, with
the model's answer fixed to the notebook's printed one (the server is what this test is
not about; tests/e2e/test_cxr_live.py asks the real one): the boxes print as JSON in the
original image's pixels, the overlay is drawn on the original image, and the SR with the
box as SCOORD lands in the study (read back from Orthanc)."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clients.__main__ import build_parser
from clients.batch import DicomwebStudy, run_items
from clients.cxr import Localize
from clients.cxr_cli import cmd_localize
from clients.dicomweb import fetch_study
from clients.limits import Limits
from clients.results import ChatResult
from clients.tasks import TaskRequest
from serve.pacs.radiograph import COLUMNS, ROWS
from tests.pacs_fixture import LivePacs, needs_orthanc
from tests.unit.clients.test_boxes import NOTEBOOK_ANSWER
from tests.unit.clients.test_report_regions import scoords

pytestmark = needs_orthanc
MODEL = "google/medgemma-1.5-4b-it"


class FixedAnswer:
    """Answers every request with the notebook's answer; keeps what it was sent."""

    def __init__(self) -> None:
        self.requests: list[TaskRequest] = []

    def send(self, request: TaskRequest, **params: Any) -> ChatResult:
        self.requests.append(request)
        return ChatResult(NOTEBOOK_ANSWER, "stop", {"prompt_tokens": 600}, 0.1, MODEL)


def test_localize_prints_draws_and_stores_the_boxes(
    pacs: LivePacs, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "boxes.png"
    args = build_parser().parse_args(
        ["chat", "--task", "localize", "--object", "right clavicle", "--dicomweb", pacs.url,
         "--study", pacs.cxr_current_study, "--overlay", str(overlay), "--store-sr"]
    )  # fmt: skip
    model = FixedAnswer()
    assert cmd_localize(args, model) == 0  # type: ignore[arg-type]
    out, err = capsys.readouterr()
    (box,) = json.loads(out)
    scale, left = 384 / 1000, 32  # 320 x 384 padded by 32 columns each side
    assert box["label"] == "right clavicle" and box["box_2d"] == [140, 110, 340, 470]
    assert box["x0"] == round(110 * scale - left, 1) and box["y1"] == round(340 * scale, 1)
    drawn = np.asarray(Image.open(overlay))
    assert drawn.shape == (ROWS, COLUMNS, 3)
    assert tuple(drawn[round(box["y0"]) + 10, round(box["x0"])]) == (255, 0, 0)
    (request,) = model.requests
    assert request.params == {"max_tokens": 1000, "temperature": 0.0}
    stored = [line for line in err.splitlines() if line.startswith("report stored: study ")]
    assert stored and pacs.cxr_current_study in stored[0], err
    series_uid = stored[0].rsplit(" ", 1)[1]
    (back,) = fetch_study(pacs.url, pacs.cxr_current_study, series_uid)
    ((label, data, _),) = scoords(back)
    assert label == "right clavicle"
    assert data[:2] == pytest.approx([box["x0"], box["y0"]], abs=0.06)


class FixedAsync:
    """The batch side of FixedAnswer: answers `text` to every request."""

    def __init__(self, text: str) -> None:
        self.text = text

    async def alimits(self) -> Limits:
        return Limits(2, 4096)

    async def asend(self, request: TaskRequest, **params: Any) -> ChatResult:
        return ChatResult(self.text, "stop", {"prompt_tokens": 600}, 0.1, MODEL)


@pytest.mark.parametrize(("answer", "ok"), [(NOTEBOOK_ANSWER, True), ("no boxes here", False)])
def test_batch_localize_records_boxes_or_keeps_the_raw_answer(
    pacs: LivePacs, tmp_path: Path, answer: str, ok: bool
) -> None:
    out = tmp_path / "boxes.jsonl"
    items = [
        DicomwebStudy(pacs.cxr_current_study, pacs.url),
        DicomwebStudy(pacs.phantom_study, pacs.url),
    ]
    client = FixedAsync(answer)
    summary = asyncio.run(run_items(client, items, Localize("right clavicle"), out))  # type: ignore[arg-type]
    records = {r["id"]: r for r in map(json.loads, out.read_text().splitlines())}
    cxr, ct = records[pacs.cxr_current_study], records[pacs.phantom_study]
    assert ct["status"] == "error" and "the study is CT, not a chest radiograph" in ct["error"]
    assert cxr["task"] == "localize"
    if ok:
        assert cxr["status"] == "ok" and cxr["boxes"][0]["box_2d"] == [140, 110, 340, 470], cxr
        assert (summary.ok, summary.failed) == (1, 1)
    else:
        assert cxr["status"] == "error" and cxr["error_type"] == "BoxError", cxr
        assert cxr["text"] == answer and (summary.ok, summary.failed) == (0, 2)


def test_localize_an_image_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "cxr.png"
    Image.fromarray(np.full((200, 100), 90, np.uint8)).save(path)  # portrait: 50 px each side
    args = build_parser().parse_args(
        ["chat", "--task", "localize", "--object", "heart", "--image", str(path)]
    )
    assert cmd_localize(args, FixedAnswer()) == 0  # type: ignore[arg-type]
    (box,) = json.loads(capsys.readouterr().out)
    assert (box["x0"], box["y0"], box["x1"], box["y1"]) == (0.0, 28.0, 44.0, 68.0)
    assert box["clipped"] is True  # x0 = 110 / 1000 * 200 - 50 < 0: cut at the image's edge
