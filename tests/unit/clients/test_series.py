"""clients.series on the synthetic CT phantom, pydicom's bundled files and datasets built here:
grouping, the choice of a series, display order and the geometry checks."""

from __future__ import annotations

import random

import numpy as np
import pytest
from pydicom.dataset import Dataset

from clients.errors import StudyError
from clients.series import choose_series, group_series, order_slices
from clients.study import build_study_messages
from serve.pacs.phantom import PhantomSpec, phantom_series
from tests.studies import SPEC, bundled, enhanced, images, numbers, one_line


@pytest.fixture
def phantom() -> list[Dataset]:
    return phantom_series(SPEC)


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


# --- multi-frame ----------------------------------------------------------------------------


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
