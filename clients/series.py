"""The series of a DICOM study (pydicom Datasets, however fetched): grouped, chosen and put
in display order (pure).

Instances are grouped into series by SeriesInstanceUID; a multi-frame object is a series of
its own frames (its per-frame functional groups flattened per frame). A radiograph (CR, DX,
MG) or a one-image series is ordered by InstanceNumber. A CT or MR series is ordered by
position along the slice normal (row x column of ImageOrientationPatient, dotted with
ImagePositionPatient; ascending, so an axial series runs foot to head), after checking its
geometry: one orientation, one size, one pixel spacing, no duplicate positions, even gaps.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from clients import dicom
from clients.errors import StudyError

PROJECTION_MODALITIES = ("CR", "DX", "MG")
FRAME_GROUPS = (
    "PlanePositionSequence",
    "PlaneOrientationSequence",
    "PixelMeasuresSequence",
    "PixelValueTransformationSequence",
    "FrameVOILUTSequence",
)
NOT_IN_VIEW = (*dicom.PIXEL_KEYWORDS, "PerFrameFunctionalGroupsSequence")
ORIENTATION_TOLERANCE = 1e-3  # direction cosines
SAME_POSITION_MM = 0.01
SPACING_TOLERANCE = 0.1  # a gap may differ from the median gap by 10 %


@dataclass(frozen=True)
class Slice:
    """One image of a series: an instance, the frame in it (None: single-frame), and the
    attributes that describe that frame (the instance itself, or its functional groups
    flattened over a copy of its top level)."""

    source: Dataset
    frame: int | None
    attrs: Dataset

    def label(self) -> str:
        number = self.attrs.get("InstanceNumber")
        where = f"instance {number}" if number is not None else "an instance"
        return where if self.frame is None else f"{where} frame {self.frame}"


@dataclass
class Series:
    """The slices of one series (or of one multi-frame object), in arrival order."""

    uid: str
    modality: str
    instance_uid: str | None = None  # the multi-frame object's SOPInstanceUID
    slices: list[Slice] = field(default_factory=list)

    def without_pixels(self) -> list[Slice]:
        return [s for s in self.slices if not any(k in s.source for k in dicom.PIXEL_KEYWORDS)]

    def has_pixels(self) -> bool:
        return len(self.without_pixels()) < len(self.slices)

    def is_projection(self) -> bool:
        return self.modality in PROJECTION_MODALITIES or len(self.slices) == 1

    def name(self) -> str:
        return self.uid if self.instance_uid is None else f"{self.uid} (object {self.instance_uid})"


# --- grouping and choosing ---------------------------------------------------------------


def frame_attrs(ds: Dataset, frame: int) -> Dataset:
    """The attributes of one frame of an enhanced multi-frame object: its top level, then the
    shared functional groups, then the frame's own (each group's first item flattened)."""
    view = Dataset()
    for elem in ds:
        if elem.keyword not in NOT_IN_VIEW and elem.keyword != "SharedFunctionalGroupsSequence":
            view.add(elem)
    groups = []
    if ds.get("SharedFunctionalGroupsSequence"):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    per_frame = ds.get("PerFrameFunctionalGroupsSequence")
    if per_frame and frame < len(per_frame):
        groups.append(per_frame[frame])
    for group in groups:
        for keyword in FRAME_GROUPS:
            if group.get(keyword):
                for elem in group[keyword][0]:
                    view.add(elem)
    return view


def group_series(datasets: Iterable[Dataset]) -> list[Series]:
    """Instances grouped by SeriesInstanceUID in order of arrival; each multi-frame object is
    a series of its frames."""
    series: dict[tuple[str, str | None], Series] = {}
    for ds in datasets:
        uid = str(ds.get("SeriesInstanceUID", "") or "unknown")
        modality = str(ds.get("Modality", "") or "unknown").upper()
        n = dicom.frame_count(ds)
        if n > 1:
            obj = str(ds.get("SOPInstanceUID", "") or f"#{len(series)}")
            group = series.setdefault((uid, obj), Series(uid, modality, obj))
            group.slices += [Slice(ds, f, frame_attrs(ds, f)) for f in range(n)]
        else:
            group = series.setdefault((uid, None), Series(uid, modality))
            group.slices.append(Slice(ds, None, ds))
    return list(series.values())


def describe(series: Series) -> str:
    return f"{series.name()} ({series.modality}, {len(series.slices)} image(s))"


def choose_series(all_series: Sequence[Series], uid: str | None = None) -> Series:
    """The series to send: the one with this SeriesInstanceUID (or multi-frame object's
    SOPInstanceUID), else the study's only image series. StudyError otherwise."""
    if uid is not None:
        found = [s for s in all_series if uid in (s.uid, s.instance_uid)]
        if not found:
            known = "; ".join(describe(s) for s in all_series) or "none"
            raise StudyError(f"no series {uid} in the study; its series: {known}")
        if len(found) > 1:
            objects = "; ".join(describe(s) for s in found)
            raise StudyError(
                f"series {uid} holds {len(found)} multi-frame objects; choose one by its "
                f"SOP Instance UID: {objects}"
            )
        return check_pixels(found[0])
    images = [s for s in all_series if s.has_pixels()]
    if len(images) == 1:
        return check_pixels(images[0])
    if not images:
        raise StudyError("the study has no series with pixel data: nothing to show the model")
    listed = "; ".join(describe(s) for s in images)
    raise StudyError(
        f"the study has {len(images)} image series; choose one with --series UID: {listed}"
    )


def check_pixels(series: Series) -> Series:
    """The series, if every instance in it has pixel data (StudyError naming those without)."""
    missing = series.without_pixels()
    if len(missing) == len(series.slices):
        sop = series.slices[0].source.get("SOPClassUID")
        kind = f" ({sop.name})" if sop is not None else ""
        raise StudyError(f"series {series.name()} has no pixel data{kind}; it is not images")
    if missing:
        named = ", ".join(s.label() for s in missing[:5]) + (", ..." if len(missing) > 5 else "")
        raise StudyError(
            f"series {series.name()}: {len(missing)} of {len(series.slices)} instances have no "
            f"pixel data ({named})"
        )
    return series


# --- display order -----------------------------------------------------------------------


def floats(attrs: Dataset, keyword: str, n: int, slice_: Slice, series: Series) -> np.ndarray:
    value = attrs.get(keyword)
    try:
        arr = np.array([float(v) for v in value], dtype=np.float64) if value else np.array([])
    except (TypeError, ValueError):
        arr = np.array([])
    if arr.shape != (n,) or not np.all(np.isfinite(arr)):
        raise StudyError(
            f"series {series.name()}: {slice_.label()} has no valid {keyword} ({n} numbers): "
            f"cannot order the slices by position"
        )
    return arr


def slice_normal(orientation: np.ndarray) -> np.ndarray:
    """The unit normal of a slice: row direction x column direction (ImageOrientationPatient)."""
    normal = np.cross(orientation[:3], orientation[3:])
    length = float(np.linalg.norm(normal))
    return normal / length if length > 1e-6 else normal


def has_positions(series: Series) -> bool:
    return all("ImagePositionPatient" in s.attrs for s in series.slices)


def order_slices(series: Series) -> list[Slice]:
    """The series in display order. Projection images by InstanceNumber; a multi-frame object
    without plane positions in frame order; otherwise by position along the slice normal,
    after checking orientation, rows/columns, pixel spacing, duplicates and even spacing."""
    if series.is_projection():
        return sorted(series.slices, key=lambda s: int(s.attrs.get("InstanceNumber") or 0))
    if series.instance_uid is not None and not has_positions(series):
        return list(series.slices)
    name = series.name()
    first = series.slices[0]
    orientation = floats(first.attrs, "ImageOrientationPatient", 6, first, series)
    normal = slice_normal(orientation)
    if not np.isclose(np.linalg.norm(normal), 1.0, atol=1e-3):
        raise StudyError(f"series {name}: {first.label()} has an invalid ImageOrientationPatient")
    size = (first.attrs.get("Rows"), first.attrs.get("Columns"))
    spacing = first.attrs.get("PixelSpacing")
    positions = []
    for s in series.slices:
        o = floats(s.attrs, "ImageOrientationPatient", 6, s, series)
        if not np.allclose(o, orientation, atol=ORIENTATION_TOLERANCE):
            raise StudyError(
                f"series {name}: inconsistent geometry: {s.label()} has orientation "
                f"{np.round(o, 4).tolist()}, {first.label()} {np.round(orientation, 4).tolist()}"
            )
        if (s.attrs.get("Rows"), s.attrs.get("Columns")) != size:
            raise StudyError(
                f"series {name}: inconsistent geometry: {s.label()} is {s.attrs.get('Rows')}"
                f"x{s.attrs.get('Columns')} pixels, {first.label()} {size[0]}x{size[1]}"
            )
        ps = s.attrs.get("PixelSpacing")
        if (ps is None) != (spacing is None) or (
            ps is not None
            and not np.allclose([float(v) for v in ps], [float(v) for v in spacing], rtol=1e-3)
        ):
            raise StudyError(
                f"series {name}: inconsistent geometry: {s.label()} has pixel spacing {ps}, "
                f"{first.label()} {spacing}"
            )
        positions.append(float(normal @ floats(s.attrs, "ImagePositionPatient", 3, s, series)))
    order = np.argsort(positions, kind="stable")
    ordered = [series.slices[i] for i in order]
    along = np.array(positions)[order]
    gaps = np.diff(along)
    if gaps.size and gaps.min() < SAME_POSITION_MM:
        k = int(np.argmin(gaps))
        raise StudyError(
            f"series {name}: duplicate slice positions: {ordered[k].label()} and "
            f"{ordered[k + 1].label()} are both at {along[k]:.2f} mm along the normal"
        )
    if gaps.size > 1:
        median = float(np.median(gaps))
        worst = float(np.max(np.abs(gaps - median)))
        if worst > max(SPACING_TOLERANCE * median, SAME_POSITION_MM):
            raise StudyError(
                f"series {name}: uneven slice spacing: gaps from {gaps.min():.2f} to "
                f"{gaps.max():.2f} mm (median {median:.2f} mm); a slice may be missing"
            )
    return ordered


def extent_mm(ordered: Sequence[Slice]) -> float | None:
    """How far the first and last slices of an ordered series lie apart along the slice
    normal, in mm; None without positions (a projection, or frames without geometry)."""
    first, last = ordered[0].attrs, ordered[-1].attrs
    try:
        orientation = np.array([float(v) for v in first.ImageOrientationPatient])
        a = np.array([float(v) for v in first.ImagePositionPatient])
        b = np.array([float(v) for v in last.ImagePositionPatient])
    except (AttributeError, TypeError, ValueError):
        return None
    if orientation.shape != (6,) or a.shape != (3,) or b.shape != (3,):
        return None
    return abs(float(slice_normal(orientation) @ (b - a)))
