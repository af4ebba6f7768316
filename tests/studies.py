"""DICOM studies for the series and study tests: the phantom's size, pydicom's bundled files,
an enhanced multi-frame object built from single-frame slices, and readers of the messages."""

from __future__ import annotations

import base64
import copy
import io

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence

from serve.pacs.phantom import PhantomSpec

SPEC = PhantomSpec(slices=25, size=128, slice_mm=5.0, noise_hu=0.0)  # lesion on slice 12


def bundled(name: str) -> Dataset:
    path = get_testdata_file(name, download=False)
    assert isinstance(path, str), f"{name} is not bundled with this pydicom"
    return pydicom.dcmread(path)


def decode(part: dict) -> np.ndarray:
    header, b64 = part["image_url"]["url"].split(",", 1)
    assert header.startswith("data:image/"), header
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def images(messages: list[dict]) -> list[np.ndarray]:
    return [decode(p) for p in messages[-1]["content"] if p["type"] == "image_url"]


def texts(messages: list[dict]) -> list[str]:
    return [p["text"] for p in messages[-1]["content"] if p["type"] == "text"]


def numbers(slices) -> list[int]:
    return [int(s.attrs.InstanceNumber) for s in slices]


def one_line(exc: pytest.ExceptionInfo) -> str:
    text = str(exc.value)
    assert "\n" not in text, text
    return text


def enhanced(datasets: list[Dataset], order: list[int], positions: bool = True) -> Dataset:
    """One multi-frame object of the given slices (frames in `order`), geometry and rescale in
    functional groups, as an Enhanced CT keeps them."""
    frames = [datasets[i] for i in order]
    mf = copy.deepcopy(frames[0])
    for kw in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing"):
        delattr(mf, kw)
    for kw in ("RescaleSlope", "RescaleIntercept", "RescaleType", "InstanceNumber"):
        delattr(mf, kw)
    mf.NumberOfFrames = len(frames)
    mf.PixelData = b"".join(ds.PixelData for ds in frames)
    shared = Dataset()
    orient, measures, rescale = Dataset(), Dataset(), Dataset()
    orient.ImageOrientationPatient = frames[0].ImageOrientationPatient
    measures.PixelSpacing = frames[0].PixelSpacing
    measures.SliceThickness = frames[0].SliceThickness
    rescale.RescaleSlope, rescale.RescaleIntercept = 1, frames[0].RescaleIntercept
    rescale.RescaleType = "HU"
    shared.PlaneOrientationSequence = Sequence([orient])
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PixelValueTransformationSequence = Sequence([rescale])
    mf.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for ds in frames:
        item = Dataset()
        if positions:
            pos = Dataset()
            pos.ImagePositionPatient = ds.ImagePositionPatient
            item.PlanePositionSequence = Sequence([pos])
        per_frame.append(item)
    mf.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    return mf
