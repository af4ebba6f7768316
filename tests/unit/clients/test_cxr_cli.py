"""`chat --task localize ... --overlay --store-sr` on the PACS's current chest X-ray, with
the model's answer fixed to the notebook's printed one (the server is what this test is
not about; tests/e2e/test_cxr_live.py asks the real one): the boxes print as JSON in the
original image's pixels, the overlay is drawn on the original image, and the SR with the
box as SCOORD lands in the study (read back from Orthanc)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from clients.__main__ import build_parser
from clients.cxr_cli import cmd_localize
from clients.dicomweb import fetch_study
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
