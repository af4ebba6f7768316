"""clients.study on the synthetic CT phantom, pydicom's bundled files and datasets built here."""

from __future__ import annotations

import base64
import copy
import io
import json
import random

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from clients.errors import ImageError
from clients.study import (
    ALLOWED_TAGS,
    DEFAULT_TAGS,
    HU_WINDOWS,
    RGB_WINDOWS,
    StudyError,
    build_study_messages,
    choose_series,
    group_series,
    order_slices,
    sample_indices,
    slice_budget,
)
from serve.pacs.phantom import PATIENT_ID, PATIENT_NAME, PhantomSpec, hu_volume, phantom_series

SPEC = PhantomSpec(slices=25, size=128, slice_mm=5.0, noise_hu=0.0)  # lesion on slice 12
IDENTIFYING = {
    "InstitutionName": "ST ELSEWHERE GENERAL HOSPITAL",
    "AccessionNumber": "ACC-778899",
    "PatientBirthDate": "19610523",
    "OperatorsName": "TECH^OPERATOR",
    "ReferringPhysicianName": "REFERRER^DOCTOR",
}


@pytest.fixture
def phantom() -> list[Dataset]:
    return phantom_series(SPEC)


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


# --- ordering -------------------------------------------------------------------------------


def test_shuffled_instances_are_ordered_along_the_normal(phantom):
    random.Random(3).shuffle(phantom)
    series = choose_series(group_series(phantom))
    assert numbers(order_slices(series)) == list(range(1, SPEC.slices + 1))


def test_positions_decreasing_along_z_are_ordered_by_position_not_instance_number(phantom):
    for ds in phantom:
        x, y, z = ds.ImagePositionPatient
        ds.ImagePositionPatient = [x, y, -z]  # instance 1 is now the highest slice
    random.Random(4).shuffle(phantom)
    ordered = order_slices(choose_series(group_series(phantom)))
    assert numbers(ordered) == list(range(SPEC.slices, 0, -1))


def test_a_flipped_orientation_reverses_the_normal(phantom):
    for ds in phantom:
        ds.ImageOrientationPatient = [1, 0, 0, 0, -1, 0]  # normal (0, 0, -1): feet first
    ordered = order_slices(choose_series(group_series(phantom)))
    z = [float(s.attrs.ImagePositionPatient[2]) for s in ordered]
    assert z == sorted(z, reverse=True), z


# --- sampling and budget --------------------------------------------------------------------


@pytest.mark.parametrize(("n", "budget"), [(60, 8), (60, 32), (85, 85 - 1), (7, 2), (100, 3)])
def test_sampling_is_even_and_keeps_first_and_last(n, budget):
    idx = sample_indices(n, budget)
    gaps = np.diff(idx)
    assert (len(idx), idx[0], idx[-1]) == (budget, 0, n - 1), idx
    assert gaps.min() >= 1 and gaps.max() - gaps.min() <= 1, idx


@pytest.mark.parametrize(("n", "budget"), [(5, 5), (5, 50), (1, 1), (0, 4)])
def test_a_budget_that_covers_the_series_keeps_every_slice(n, budget):
    assert sample_indices(n, budget) == list(range(n))


def test_a_budget_of_one_is_the_middle_slice_and_zero_is_refused():
    assert sample_indices(60, 1) == [29]
    with pytest.raises(ValueError, match="budget"):
        sample_indices(60, 0)


def test_budget_above_the_image_limit_needs_max_slices():
    with pytest.raises(StudyError, match=r"60 images.*limit of 16.*--max-slices N \(N <= 16\)"):
        slice_budget(60, image_limit=16)
    with pytest.raises(StudyError, match=r"--max-slices 20 is above the server's limit of 16"):
        slice_budget(60, image_limit=16, max_slices=20)
    assert slice_budget(60, image_limit=16, max_slices=8) == 8
    assert slice_budget(10, image_limit=16) == 10
    assert slice_budget(60) == 60
    assert slice_budget(5, max_slices=8) == 5


def test_slice_numbers_count_the_slices_sent_and_the_summary_keeps_the_positions(phantom):
    messages, sent = build_study_messages(phantom, "What do you see?", budget=5)
    parts = messages[-1]["content"]
    kinds = [p["type"] if p["type"] == "image_url" else p["text"] for p in parts]
    expected = [x for n in range(1, 6) for x in ("image_url", f"SLICE {n}")]
    assert kinds == [*expected, "What do you see?"], kinds
    assert sent.indices == (0, 6, 12, 18, 24) and (sent.total, sent.sent) == (25, 5), sent
    assert sent.window == "rgb" and sent.modality == "CT"
    assert "5 of 25 image(s)" in sent.line() and "window rgb" in sent.line()


def test_system_message_comes_first(phantom):
    messages, _ = build_study_messages(
        phantom, "q", budget=2, system="You are an expert radiologist."
    )
    assert [m["role"] for m in messages] == ["system", "user"]


# --- windows --------------------------------------------------------------------------------


def lesion_image(phantom: list[Dataset], window: str) -> tuple[np.ndarray, np.ndarray]:
    """The slice through the lesion's centre in this window, and the noiseless HU slice."""
    middle = SPEC.lesion_index
    messages, sent = build_study_messages(phantom, "q", budget=1, window=window, max_size=None)
    assert sent.indices == (middle,), sent.indices
    return images(messages)[0], hu_volume(SPEC)[sent.indices[0]]


def test_each_window_gives_a_different_image(phantom):
    shown = {w: lesion_image(phantom, w)[0] for w in ("rgb", *HU_WINDOWS)}
    names = list(shown)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            assert not np.array_equal(shown[a], shown[b]), f"{a} and {b} look the same"


def test_rgb_is_three_different_windows_as_the_ct_notebook(phantom):
    rgb, hu = lesion_image(phantom, "rgb")
    assert rgb.ndim == 3 and rgb.shape[-1] == 3, rgb.shape
    r, g, b = (rgb[..., c].astype(int) for c in range(3))
    assert not np.array_equal(r, g) and not np.array_equal(g, b) and not np.array_equal(r, b)
    # PNG is lossless here (few colours): each channel is its window of the HU exactly.
    for c, (low, high) in enumerate(RGB_WINDOWS):
        want = np.clip(np.rint((hu - low) / (high - low) * 255), 0, 255)
        assert np.abs(rgb[..., c].astype(int) - want).max() <= 1, f"channel {c}"


def test_the_lesion_stands_out_in_the_soft_tissue_window(phantom):
    soft, hu = lesion_image(phantom, "soft-tissue")
    lung, _ = lesion_image(phantom, "lung")
    lesion, water = hu == SPEC.lesion_hu, hu == 0
    assert lesion.sum() > 10, "the slice misses the lesion"

    def contrast(img: np.ndarray) -> float:
        return float(img[lesion].mean() - img[water].mean())

    # +60 HU over water in W400/L40: 38 grey levels; in W1500/L-600 only 10.
    assert contrast(soft) > 30 and contrast(soft) > 3 * contrast(lung), (
        contrast(soft),
        contrast(lung),
    )


def test_mr_uses_the_files_window_and_refuses_hounsfield_windows():
    mr = bundled("MR_small.dcm")
    messages, sent = build_study_messages([mr], "q")
    assert sent.window == "voi" and images(messages)[0].ndim == 2
    for window in ("lung", "rgb"):
        with pytest.raises(StudyError, match=r"Hounsfield units.*MR: use --window voi") as exc:
            build_study_messages([mr], "q", window=window)
        one_line(exc)
    with pytest.raises(StudyError, match="unknown window 'liver'"):
        build_study_messages([bundled("CT_small.dcm")], "q", window="liver")


def test_a_radiograph_is_one_image_without_a_slice_label():
    dx = bundled("CT_small.dcm")
    dx.Modality = "DX"
    messages, sent = build_study_messages([dx], "Describe this X-ray")
    assert [p["type"] for p in messages[-1]["content"]] == ["image_url", "text"]
    assert texts(messages) == ["Describe this X-ray"] and sent.window == "voi"
    ct = bundled("CT_small.dcm")  # a one-image CT series: one image, HU windows allowed
    messages, sent = build_study_messages([ct], "q", window="bone")
    assert (sent.total, sent.window, len(images(messages))) == (1, "bone", 1)


# --- multi-frame ----------------------------------------------------------------------------


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


def test_a_multi_frame_object_is_a_series_of_its_frames_ordered_by_plane_position(phantom):
    order = list(range(SPEC.slices))
    random.Random(5).shuffle(order)
    mf = enhanced(phantom, order)
    from_frames, sent = build_study_messages([mf], "q", window="soft-tissue", max_size=None)
    from_slices, _ = build_study_messages(phantom, "q", window="soft-tissue", max_size=None)
    assert sent.total == SPEC.slices
    a, b = images(from_frames), images(from_slices)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True)), "frames out of order"


def test_a_multi_frame_object_without_positions_keeps_frame_order(phantom):
    mf = enhanced(phantom, [3, 1, 2], positions=False)
    ordered = order_slices(choose_series(group_series([mf])))
    assert [s.frame for s in ordered] == [0, 1, 2]


# --- series choice --------------------------------------------------------------------------


def test_several_series_need_a_choice(phantom):
    other = phantom_series(PhantomSpec(slices=4, size=32, seed=1))
    study = phantom + other
    with pytest.raises(StudyError, match=r"2 image series; choose one with --series UID") as exc:
        build_study_messages(study, "q")
    one_line(exc)
    _, sent = build_study_messages(study, "q", series_uid=str(other[0].SeriesInstanceUID))
    assert (sent.series_uid, sent.total) == (other[0].SeriesInstanceUID, 4)
    with pytest.raises(StudyError, match=r"no series 1\.2\.3 in the study"):
        build_study_messages(study, "q", series_uid="1.2.3")


# --- bad input: one line each ---------------------------------------------------------------


def spoil_orientation(ds: list[Dataset]) -> None:
    ds[7].ImageOrientationPatient = [0, 1, 0, 0, 0, -1]


def spoil_size(ds: list[Dataset]) -> None:
    ds[7].Rows = 32


def spoil_spacing(ds: list[Dataset]) -> None:
    ds[7].PixelSpacing = [0.5, 0.5]


def duplicate_position(ds: list[Dataset]) -> None:
    ds[8].ImagePositionPatient = ds[7].ImagePositionPatient


def missing_slice(ds: list[Dataset]) -> None:
    del ds[10]


def no_position(ds: list[Dataset]) -> None:
    del ds[3].ImagePositionPatient


def no_pixels(ds: list[Dataset]) -> None:
    del ds[5].PixelData


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (spoil_orientation, r"inconsistent geometry: instance 8 has orientation"),
        (spoil_size, r"inconsistent geometry: instance 8 is 32x128 pixels, instance \d+ 128x128"),
        (spoil_spacing, r"inconsistent geometry: instance 8 has pixel spacing"),
        (duplicate_position, r"duplicate slice positions: instance \d+ and instance \d+"),
        (missing_slice, r"uneven slice spacing: gaps from 5\.00 to 10\.00 mm"),
        (no_position, r"instance 4 has no valid ImagePositionPatient"),
        (no_pixels, r"1 of 25 instances have no pixel data \(instance 6\)"),
    ],
)
def test_bad_series_are_one_clear_line(phantom, spoil, message):
    spoil(phantom)
    random.Random(6).shuffle(phantom)
    with pytest.raises(StudyError, match=message) as exc:
        build_study_messages(phantom, "q", budget=4)
    assert one_line(exc).startswith(f"series {phantom[0].SeriesInstanceUID}: ")


def test_a_series_without_pixel_data_is_named():
    plan = bundled("rtplan.dcm")
    with pytest.raises(StudyError, match="no series with pixel data"):
        build_study_messages([plan], "q")
    with pytest.raises(StudyError, match=r"has no pixel data \(RT Plan Storage\)"):
        build_study_messages([plan], "q", series_uid=str(plan.SeriesInstanceUID))


def test_an_unsupported_transfer_syntax_is_named_as_for_single_files(phantom):
    for ds in phantom:
        ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder
    with pytest.raises(ImageError, match=r"MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.*decoder") as exc:
        build_study_messages(phantom, "q", budget=2)
    assert one_line(exc).startswith("series ")


# --- identifiers ----------------------------------------------------------------------------


def test_no_identifier_of_the_input_reaches_the_messages(phantom):
    for ds in phantom:
        for keyword, value in IDENTIFYING.items():
            setattr(ds, keyword, value)
    messages, sent = build_study_messages(
        phantom, "Any lesion?", budget=6, tags=DEFAULT_TAGS, system="You are a radiologist."
    )
    sent_json = json.dumps(messages)
    first = phantom[0]
    identifiers = [PATIENT_NAME, PATIENT_ID, *IDENTIFYING.values()]
    identifiers += [str(first.get(k)) for k in ("StudyInstanceUID", "SeriesInstanceUID")]
    identifiers += [str(ds.SOPInstanceUID) for ds in phantom]
    identifiers += [str(first.get(k)) for k in ("StudyDate", "StudyTime", "StudyDescription")]
    identifiers += [str(first.get(k)) for k in ("SeriesDescription", "FrameOfReferenceUID")]
    leaked = [v for v in identifiers if v and v in sent_json]
    assert not leaked, leaked
    summary = sent.line()
    assert not [v for v in [PATIENT_NAME, PATIENT_ID, *IDENTIFYING.values()] if v in summary]


def test_tags_add_only_the_allowed_tags_asked_for(phantom):
    messages, sent = build_study_messages(phantom, "q", budget=2, tags=DEFAULT_TAGS)
    line = texts(messages)[0]
    assert line == "Modality: CT; Body Part Examined: CHEST; Slice Thickness: 5.0", line
    assert sent.tags == ("Modality", "BodyPartExamined", "SliceThickness")  # no ViewPosition
    messages, _ = build_study_messages(phantom, "q", budget=2)
    assert texts(messages) == ["SLICE 1", "SLICE 2", "q"], "no tags by default"


@pytest.mark.parametrize(
    "tag",
    ["PatientName", "PatientID", "PatientBirthDate", "StudyDate", "AccessionNumber"]
    + ["InstitutionName", "StudyDescription", "SeriesInstanceUID", "PatientAge"],
)
def test_identifying_tags_are_refused(phantom, tag):
    assert tag not in ALLOWED_TAGS
    with pytest.raises(StudyError, match=rf"tag {tag} is not allowed in a prompt") as exc:
        build_study_messages(phantom, "q", budget=2, tags=("Modality", tag))
    one_line(exc)


def test_an_unknown_tag_is_refused(phantom):
    with pytest.raises(StudyError, match="'Colour' is not a DICOM keyword"):
        build_study_messages(phantom, "q", tags=("Colour",))
