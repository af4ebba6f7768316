"""Boxes into the report (pure): each box is a TEXT label inferred from a SCOORD outline
(closed POLYLINE, in the image's pixels) selected from the image the model saw; the SR
encodes, reads back with highdicom, and DCMTK's dsrdump reads it where installed."""

from __future__ import annotations

import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from clients.boxes import padding_of, parse_boxes
from clients.report_regions import region_items
from clients.report_sr import build_report_sr, encode
from serve.pacs.radiograph import COLUMNS, ROWS, chest_pair

ANSWER = (
    "<unused94>thought\nThe clavicles run from the sternum outwards.<unused95>"
    'Final Answer: ```json[{"box_2d": [140, 110, 340, 470], "label": "right clavicle"}, '
    '{"box_2d": [150, 530, 345, 890], "label": "left clavicle"}]```'
)
MODEL = "google/medgemma-1.5-4b-it"


def scoords(sr: pydicom.Dataset) -> list[tuple[str, list[float], str]]:
    """(label, graphic data, referenced SOP instance) of every box in the report."""
    found = []
    for item in sr.ContentSequence:
        if item.ValueType != "TEXT" or item.ConceptNameCodeSequence[0].CodeValue != "91723000":
            continue
        (outline,) = item.ContentSequence
        (image,) = outline.ContentSequence
        assert outline.RelationshipType == "INFERRED FROM" and outline.GraphicType == "POLYLINE"
        assert image.RelationshipType == "SELECTED FROM"
        sop = image.ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        found.append((str(item.TextValue), [float(v) for v in outline.GraphicData], str(sop)))
    return found


@pytest.fixture(scope="module")
def report() -> tuple[pydicom.Dataset, list]:
    image = chest_pair()[1]
    boxes = parse_boxes(ANSWER, padding_of(COLUMNS, ROWS))
    sr = build_report_sr(
        [image], "the answer", model_name=MODEL, regions=region_items(boxes, image)
    )
    return sr, boxes


def test_each_box_is_a_closed_outline_on_the_image(report: tuple) -> None:
    sr, boxes = report
    back = pydicom.dcmread(BytesIO(encode(sr)))
    found = scoords(back)
    assert [f[0] for f in found] == ["right clavicle", "left clavicle"]
    image = chest_pair()[1]
    for (_, data, sop), box in zip(found, boxes, strict=True):
        assert sop == image.SOPInstanceUID
        points = list(zip(data[::2], data[1::2], strict=True))
        assert len(points) == 5 and points[0] == points[-1]
        assert points[0] == pytest.approx((box.x0, box.y0), abs=1e-3)
        assert points[2] == pytest.approx((box.x1, box.y1), abs=1e-3)
        assert all(0 <= x <= COLUMNS and 0 <= y <= ROWS for x, y in points)
    assert hd.sr.EnhancedSR.from_dataset(back).StudyInstanceUID == image.StudyInstanceUID


@pytest.mark.skipif(shutil.which("dsrdump") is None, reason="DCMTK's dsrdump is not installed")
def test_dcmtk_reads_the_boxes(report: tuple, tmp_path: Path) -> None:
    path = tmp_path / "boxes.dcm"
    path.write_bytes(encode(report[0]))
    proc = subprocess.run(["dsrdump", str(path)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "SCOORD" in proc.stdout and "POLYLINE" in proc.stdout, proc.stdout
    assert '"right clavicle"' in proc.stdout and "SELECTED FROM" not in proc.stderr, proc.stdout
