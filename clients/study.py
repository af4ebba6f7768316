"""A DICOM study (pydicom Datasets, however fetched) -> the chat messages that show it (pure).

Instances are grouped into series by SeriesInstanceUID; a multi-frame object is a series of
its own frames (its per-frame functional groups flattened per frame). A radiograph (CR, DX,
MG) or a one-image series is sent as is. A CT or MR series is ordered by position along the
slice normal (row x column of ImageOrientationPatient, dotted with ImagePositionPatient;
ascending, so an axial series runs foot to head), its geometry checked, sampled evenly to a
slice budget, windowed, and laid out as Google's MedGemma 1.5 CT notebook prompts it: each
image followed by the text "SLICE n", n counted from 1 within the slices sent, then the
caller's question. Only pixels and the caller's text reach the prompt; `tags=` adds chosen
non-identifying attributes (ALLOWED_TAGS) as one line, and anything else is refused.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image
from pydicom.datadict import dictionary_description, keyword_dict
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_modality_lut

from clients import dicom
from clients.errors import ImageError
from clients.images import DEFAULT_MAX_SIZE
from clients.messages import Message, image_part

PROJECTION_MODALITIES = ("CR", "DX", "MG")
HU_WINDOWS: dict[str, tuple[float, float]] = {  # name -> (width, level) in Hounsfield units
    "lung": (1500.0, -600.0),
    "soft-tissue": (400.0, 40.0),
    "bone": (1800.0, 400.0),
    "brain": (80.0, 40.0),
}
# Google's MedGemma 1.5 CT notebook (high_dimensional_ct_hugging_face.ipynb), `window_clips`:
# red wide, green soft tissue ("mediastinum"), blue brain; (low, high) in HU.
RGB_WINDOWS: tuple[tuple[float, float], ...] = ((-1024.0, 1024.0), (-135.0, 215.0), (0.0, 80.0))
VOI = "voi"  # the file's own VOI LUT or window centre/width, else each slice's min..max
WINDOWS = ("rgb", *HU_WINDOWS, VOI)
ALLOWED_TAGS = (
    "Modality",
    "BodyPartExamined",
    "ViewPosition",
    "SliceThickness",
    "SpacingBetweenSlices",
    "PixelSpacing",
    "Laterality",
    "ImageLaterality",
    "PatientPosition",
    "KVP",
    "ConvolutionKernel",
)
DEFAULT_TAGS = ("Modality", "BodyPartExamined", "ViewPosition", "SliceThickness")
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


class StudyError(ImageError):
    """A study or series that cannot become slices: no image series, inconsistent geometry,
    duplicate positions, too many images for the server, a tag that may identify the patient."""


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


@dataclass(frozen=True)
class Sent:
    """What a prompt carries, for the caller to print: no patient identifiers."""

    series_uid: str
    modality: str
    total: int
    indices: tuple[int, ...]  # positions in the ordered series (0 = the lowest along the normal)
    window: str
    tags: tuple[str, ...] = ()

    @property
    def sent(self) -> int:
        return len(self.indices)

    def line(self) -> str:
        shown = ", ".join(str(i) for i in self.indices[:12]) + (", ..." if self.sent > 12 else "")
        tags = f", tags {', '.join(self.tags)}" if self.tags else ""
        return (
            f"series {self.series_uid} ({self.modality}): {self.sent} of {self.total} image(s) "
            f"sent (positions {shown}), window {self.window}{tags}"
        )


# --- grouping -----------------------------------------------------------------------------


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


# --- geometry -----------------------------------------------------------------------------


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


# --- sampling and budget ------------------------------------------------------------------


def sample_indices(n: int, budget: int) -> list[int]:
    """`budget` evenly spaced indices into n items, the first and the last included; all of
    them when the budget covers n; the middle one for a budget of 1."""
    if n < 0 or budget < 1:
        raise ValueError(f"sample_indices needs n >= 0 and budget >= 1, not n={n}, budget={budget}")
    if budget >= n:
        return list(range(n))
    if budget == 1:
        return [(n - 1) // 2]
    steps = budget - 1
    return [(i * (n - 1) + steps // 2) // steps for i in range(budget)]


def slice_budget(n: int, *, image_limit: int | None = None, max_slices: int | None = None) -> int:
    """How many of n images to send: max_slices when given (at most the server's image limit),
    else all of them. StudyError when n is above the limit and no max_slices was chosen."""
    if max_slices is not None:
        if max_slices < 1:
            raise StudyError(f"--max-slices must be at least 1, not {max_slices}")
        if image_limit is not None and max_slices > image_limit:
            raise StudyError(
                f"--max-slices {max_slices} is above the server's limit of {image_limit} "
                f"images per prompt; use --max-slices {image_limit} or fewer"
            )
        return min(max_slices, n)
    if image_limit is not None and n > image_limit:
        raise StudyError(
            f"the series has {n} images, above the server's limit of {image_limit} images per "
            f"prompt; send an even sample with --max-slices N (N <= {image_limit})"
        )
    return n


# --- windowing ----------------------------------------------------------------------------


def default_window(modality: str) -> str:
    return "rgb" if modality == "CT" else VOI


def check_window(window: str, modality: str) -> str:
    if window not in WINDOWS:
        raise StudyError(f"unknown window {window!r}; choose one of {', '.join(WINDOWS)}")
    if window != VOI and modality != "CT":
        raise StudyError(
            f"window {window!r} is in Hounsfield units, which only CT has; this series is "
            f"{modality}: use --window {VOI} (the default for {modality})"
        )
    return window


def hounsfield(stored: np.ndarray, attrs: Dataset) -> np.ndarray:
    """Stored values through the modality LUT (RescaleSlope/Intercept): HU for CT."""
    return np.asarray(apply_modality_lut(stored, attrs), dtype=np.float32)


def render(slice_: Slice, window: str, where: str = "DICOM") -> Image.Image:
    """One slice as an 8-bit image: 'RGB' for the three-window encoding, 'L' otherwise."""
    stored = dicom.decode_frame(slice_.source, slice_.frame, where)
    if window == VOI:
        if stored.ndim == 3 or slice_.frame is None:
            return dicom.dataset_to_image(slice_.source, slice_.frame, where)
        return Image.fromarray(dicom.grey_to_uint8(stored, slice_.attrs), "L")
    if stored.ndim != 2:
        raise StudyError(f"{where}: colour pixel data cannot be windowed in Hounsfield units")
    hu = hounsfield(stored, slice_.attrs)
    if window == "rgb":
        channels = [dicom.to_uint8(hu, low, high) for low, high in RGB_WINDOWS]
        return Image.fromarray(np.stack(channels, axis=-1), "RGB")
    width, level = HU_WINDOWS[window]
    return Image.fromarray(dicom.to_uint8(hu, level - width / 2, level + width / 2), "L")


# --- tags ---------------------------------------------------------------------------------


def check_tags(tags: Iterable[str]) -> tuple[str, ...]:
    """The tags as given, if each is an allowed non-identifying keyword (StudyError if not)."""
    tags = tuple(tags)
    for tag in tags:
        if tag not in keyword_dict:
            raise StudyError(
                f"{tag!r} is not a DICOM keyword; allowed tags: {', '.join(ALLOWED_TAGS)}"
            )
        if tag not in ALLOWED_TAGS:
            raise StudyError(
                f"tag {tag} is not allowed in a prompt (it may identify the patient or carry "
                f"free text); allowed tags: {', '.join(ALLOWED_TAGS)}"
            )
    return tags


def tag_line(attrs: Dataset, tags: Sequence[str]) -> tuple[str, tuple[str, ...]]:
    """'Modality: CT; Slice Thickness: 2.5' for the tags the slice has, and which those were."""
    parts, present = [], []
    for tag in tags:
        value = attrs.get(tag)
        if value is None or value == "":
            continue
        shown = "\\".join(map(str, value)) if isinstance(value, MultiValue) else str(value)
        parts.append(f"{dictionary_description(tag)}: {shown[:64]}")
        present.append(tag)
    return "; ".join(parts), tuple(present)


# --- messages -----------------------------------------------------------------------------


def build_study_messages(
    datasets: Iterable[Dataset],
    question: str,
    *,
    series_uid: str | None = None,
    budget: int | None = None,
    window: str | None = None,
    tags: Sequence[str] = (),
    system: str | None = None,
    max_size: int | None = DEFAULT_MAX_SIZE,
) -> tuple[list[Message], Sent]:
    """[system], user(images with "SLICE n" after each, then the question), and what was sent.

    budget: at most this many images, sampled evenly (None: all; see slice_budget).
    window: one of WINDOWS; None: "rgb" for CT, "voi" otherwise. tags: ALLOWED_TAGS only.
    Raises StudyError (an ImageError) for a study that cannot be shown, ImageError for pixel
    data that cannot be decoded.
    """
    tags = check_tags(tags)
    series = choose_series(group_series(datasets), series_uid)
    window = check_window(window or default_window(series.modality), series.modality)
    ordered = order_slices(series)
    indices = sample_indices(len(ordered), budget if budget is not None else len(ordered))
    parts: list[dict[str, Any]] = []
    line, present = tag_line(ordered[0].attrs, tags)
    if line:
        parts.append({"type": "text", "text": line})
    labelled = not series.is_projection()
    for n, index in enumerate(indices, 1):
        where = f"series {series.name()} {ordered[index].label()}"
        img = render(ordered[index], window, where)
        parts.append(image_part(img, max_size=max_size, frame=None))
        if labelled:
            parts.append({"type": "text", "text": f"SLICE {n}"})
    parts.append({"type": "text", "text": question})
    messages: list[Message] = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": parts})
    sent = Sent(series.uid, series.modality, len(ordered), tuple(indices), window, present)
    return messages, sent
