"""A whole-slide image (DICOM VL Whole Slide Microscopy, modality SM) -> tissue patches
for the model (pure): the pyramid's levels, the level nearest 10X, the 896 px patch grid,
the tissue test, which patches are sent, and what was sent.

The recipe is MedGemma 1.5's for whole slides (Google-Health/medgemma,
notebooks/high_dimensional_pathology_hugging_face.ipynb, with its Model Garden twin; our
stored snapshot of that repository predates the notebooks, so the steps below follow the
issue's summary of them, the model garden notebook's EZ-WSI calls and the MedGemma 1.5
technical report, §2.3.2):
- the pyramid level nearest 10X, from its pixel spacing (10X = 0.001 mm a pixel, EZ-WSI's
  table; nearest by ratio, a tie to the finer level). A level without a spacing borrows
  one from a level with one (same slide width, so spacing x columns is the same), else
  ImagedVolumeWidth / TotalPixelMatrixColumns; with none at all the base level is used and
  the magnification is said to be unknown;
- non-overlapping 896 x 896 patches on a grid from the top left, stride 896; a partial
  patch at the right or bottom edge is not used (EZ-WSI's grid floors the same way);
- the tissue test is EZ-WSI's (ez_wsi_dicomweb/patch_generator.py): a patch is tissue when
  the mean luminance (ITU-R 601: 0.299 R + 0.587 G + 0.114 B) of its area, read from the
  pyramid's coarsest level, is above 0 and at most 0.8 x 255;
- up to 125 tissue patches, kept in spatial order (rows top to bottom, left to right in a
  row). The notebook takes `random.sample(patches, 125)`; the report says the training
  sampled at random and kept the original spatial order. We keep the spatial order and
  choose evenly spread patches instead of random ones, first and last included
  (clients.study.sample_indices): the same slide then gives the same prompt, byte for
  byte (vLLM's prefix cache serves a follow-up question) and a smaller cap still spans the
  whole tissue;
- one user turn: the text first, then the patches (JPEG, as the other study recipes send).

`Level` holds what a level's metadata says; `SlideSent` is what a prompt carries (no
patient attribute), `.line()` the stderr line `sent N of M patches (10X): ...`. The frames
and pixels of a level are clients.slide_tiles'.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from clients.errors import StudyError
from clients.study import sample_indices

SLIDE_MODALITY = "SM"
WSI_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.77.1.6"  # VL Whole Slide Microscopy Image Storage
TEN_X_MM = 0.001  # 10X: 1 um a pixel (EZ-WSI: magnification 10X = pixel spacing 0.001 mm)
PATCH = 896  # MedGemma's image side: one patch is one image
MAX_PATCHES = 125  # the notebook's cap
MAX_LUMINANCE = 0.8  # EZ-WSI's default: brighter is glass
LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R 601, as OpenCV's RGB2GRAY


@dataclass(frozen=True)
class Level:
    """One pyramid level (one instance), from its metadata."""

    study_uid: str
    series_uid: str
    sop_uid: str
    columns: int  # TotalPixelMatrixColumns
    rows: int  # TotalPixelMatrixRows
    tile_columns: int  # Columns: a frame's width
    tile_rows: int  # Rows
    frames: int  # NumberOfFrames
    spacing_mm: float | None  # the column spacing (PixelSpacing[1]); None: not said
    samples: int = 3  # SamplesPerPixel
    # TILED_SPARSE: each frame's top-left (row, column) in the total pixel matrix, 0-based;
    # None: TILED_FULL (frames row-major over the matrix)
    positions: tuple[tuple[int, int], ...] | None = None

    @property
    def tiles_across(self) -> int:
        return -(-self.columns // self.tile_columns)

    def frame_at(self, tile_row: int, tile_col: int) -> int | None:
        """The 1-based frame number of the tile at (tile_row, tile_col); None: no frame
        (a TILED_SPARSE gap, glass)."""
        if self.positions is None:
            return tile_row * self.tiles_across + tile_col + 1
        origin = (tile_row * self.tile_rows, tile_col * self.tile_columns)
        for n, at in enumerate(self.positions, 1):
            if at == origin:
                return n
        return None


@dataclass(frozen=True)
class Chosen:
    """The level patches are cut from and how to call its magnification."""

    level: Level
    index: int  # 0: the highest resolution
    label: str  # "10X", or "base level, magnification unknown"


@dataclass(frozen=True)
class SlideSent:
    """What a slide prompt carries, for the caller to print: no patient identifiers."""

    series_uid: str
    sop_uid: str  # the level's instance
    level: int
    size: tuple[int, int]  # the level's columns, rows
    magnification: str
    total: int  # tissue patches found
    cells: tuple[tuple[int, int], ...]  # (row, column) of each patch sent, in the grid
    reason: str = ""  # why fewer than the tissue patches (or the cap)
    unit: str = "patches"

    @property
    def sent(self) -> int:
        return len(self.cells)

    def line(self) -> str:
        """'sent 7 of 7 patches (10X); series UID, level 1 (3584 x 2688 px), patches ...'."""
        shown = " ".join(f"{r},{c}" for r, c in self.cells[:12])
        more = " ..." if self.sent > 12 else ""
        why = f": {self.reason}" if self.reason else ""
        w, h = self.size
        return (
            f"sent {self.sent} of {self.total} patches ({self.magnification}){why}; series "
            f"{self.series_uid}, level {self.level} ({w} x {h} px), patches (row,col) "
            f"{shown}{more}"
        )


# --- levels --------------------------------------------------------------------------------


def first_item(ds: Dataset, *keywords: str) -> Dataset | None:
    """ds.K1[0].K2[0]...: the first item down a chain of sequences, None where one is empty."""
    item: Dataset | None = ds
    for keyword in keywords:
        seq = item.get(keyword) if item is not None else None
        item = seq[0] if seq else None
    return item


def pixel_spacing_mm(ds: Dataset) -> float | None:
    """The column spacing of a level: its shared pixel measures, else the first frame's,
    else ImagedVolumeWidth / TotalPixelMatrixColumns; None when none is said."""
    for group in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
        measures = first_item(ds, group, "PixelMeasuresSequence")
        spacing = measures.get("PixelSpacing") if measures is not None else None
        if spacing and len(spacing) == 2 and float(spacing[1]) > 0:
            return float(spacing[1])
    width, columns = ds.get("ImagedVolumeWidth"), ds.get("TotalPixelMatrixColumns")
    if width and columns and float(width) > 0:
        return float(width) / int(columns)
    return None


def frame_positions(ds: Dataset) -> tuple[tuple[int, int], ...] | None:
    """TILED_SPARSE frames' top-left corners (0-based), None for TILED_FULL."""
    if str(ds.get("DimensionOrganizationType", "")) == "TILED_FULL":
        return None
    positions = []
    for n, item in enumerate(ds.get("PerFrameFunctionalGroupsSequence") or [], 1):
        at = first_item(item, "PlanePositionSlideSequence")
        if at is None or "RowPositionInTotalImagePixelMatrix" not in at:
            raise StudyError(
                f"the slide's level {ds.get('SOPInstanceUID')} is not TILED_FULL and its frame "
                f"{n} has no position: its tiles cannot be placed"
            )
        positions.append(
            (
                int(at.RowPositionInTotalImagePixelMatrix) - 1,
                int(at.ColumnPositionInTotalImagePixelMatrix) - 1,
            )
        )
    if not positions:
        raise StudyError(
            f"the slide's level {ds.get('SOPInstanceUID')} is neither TILED_FULL nor says where "
            "its frames are (no PerFrameFunctionalGroupsSequence)"
        )
    return tuple(positions)


def is_pyramid_level(ds: Dataset) -> bool:
    """A VL WSI instance of the pyramid (ImageType VOLUME), not a label, overview or
    thumbnail image."""
    kind = [str(v) for v in (ds.get("ImageType") or [])]
    return (
        str(ds.get("SOPClassUID", "")) == WSI_SOP_CLASS
        and "TotalPixelMatrixColumns" in ds
        and (len(kind) < 3 or kind[2] == "VOLUME")
    )


def level_of(ds: Dataset) -> Level:
    if ds.get("ConcatenationUID"):
        raise StudyError(
            f"the slide's level {ds.get('SOPInstanceUID')} is split into concatenated "
            "instances, which this client does not read"
        )
    return Level(
        study_uid=str(ds.StudyInstanceUID),
        series_uid=str(ds.SeriesInstanceUID),
        sop_uid=str(ds.SOPInstanceUID),
        columns=int(ds.TotalPixelMatrixColumns),
        rows=int(ds.TotalPixelMatrixRows),
        tile_columns=int(ds.Columns),
        tile_rows=int(ds.Rows),
        frames=int(ds.get("NumberOfFrames", 1) or 1),
        spacing_mm=pixel_spacing_mm(ds),
        samples=int(ds.get("SamplesPerPixel", 3) or 3),
        positions=frame_positions(ds),
    )


def with_spacings(levels: Sequence[Level]) -> list[Level]:
    """Levels without a spacing given one from a level with one (the same slide width)."""
    known = next((lv for lv in levels if lv.spacing_mm is not None), None)
    if known is None or known.spacing_mm is None:
        return list(levels)
    width_mm = known.spacing_mm * known.columns
    return [
        lv
        if lv.spacing_mm is not None
        else Level(**{**vars(lv), "spacing_mm": width_mm / lv.columns})
        for lv in levels
    ]


def slide_levels(metadata: Iterable[Dataset], series_uid: str | None = None) -> list[Level]:
    """The pyramid's levels (one series), the highest resolution first. StudyError when the
    study has no whole-slide pyramid, or several slides and no `series_uid` to choose."""
    by_series: dict[str, list[Dataset]] = {}
    modalities: set[str] = set()
    for ds in metadata:
        modalities.add(str(ds.get("Modality", "?")))
        if is_pyramid_level(ds):
            by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    if not by_series:
        found = ", ".join(sorted(modalities)) or "nothing"
        raise StudyError(
            f"the study holds no whole-slide image (VL Whole Slide Microscopy pyramid, modality "
            f"SM); it holds {found}"
        )
    if series_uid is not None:
        if series_uid not in by_series:
            raise StudyError(f"the study has no whole-slide series {series_uid}")
        chosen = by_series[series_uid]
    elif len(by_series) > 1:
        raise StudyError(
            f"the study holds {len(by_series)} slides: choose one with --series "
            f"({', '.join(sorted(by_series))})"
        )
    else:
        (chosen,) = by_series.values()
    levels = sorted((level_of(ds) for ds in chosen), key=lambda lv: -lv.columns)
    return with_spacings(levels)


def magnification(spacing_mm: float) -> str:
    """'10X' for 0.001 mm a pixel, '20X' for 0.0005, '9.8X' for 0.00102."""
    return f"{round(TEN_X_MM * 10 / spacing_mm, 1):g}X"


def choose_level(levels: Sequence[Level], target_mm: float = TEN_X_MM) -> Chosen:
    """The level nearest `target_mm` a pixel (by ratio; a tie to the finer level); the base
    level when no level says its spacing."""
    if not levels:
        raise StudyError("the slide has no pyramid level")
    spaced = [(i, lv) for i, lv in enumerate(levels) if lv.spacing_mm is not None]
    if not spaced:
        return Chosen(levels[0], 0, "base level, magnification unknown")

    def distance(pair: tuple[int, Level]) -> tuple[float, float]:
        spacing = pair[1].spacing_mm or target_mm
        return abs(math.log(spacing / target_mm)), spacing

    index, level = min(spaced, key=distance)
    return Chosen(level, index, magnification(level.spacing_mm or target_mm))


# --- the grid and the tissue test -----------------------------------------------------------


def patch_cells(level: Level, patch: int = PATCH) -> list[tuple[int, int]]:
    """Every whole patch of the level, (row, column) in the grid, rows top to bottom."""
    return [(r, c) for r in range(level.rows // patch) for c in range(level.columns // patch)]


def cell_luminance(
    coarse: np.ndarray, coarse_level: Level, level: Level, cells: Sequence[tuple[int, int]]
) -> list[float]:
    """Each cell's mean luminance, read from `coarse` (the coarse level's RGB pixels, its
    whole matrix): the area a patch of `level` covers there."""
    luma = np.asarray(coarse[..., :3], np.float64) @ LUMA
    sy, sx = coarse_level.rows / level.rows, coarse_level.columns / level.columns
    out = []
    for r, c in cells:
        y0, y1 = math.floor(r * PATCH * sy), math.ceil((r + 1) * PATCH * sy)
        x0, x1 = math.floor(c * PATCH * sx), math.ceil((c + 1) * PATCH * sx)
        out.append(float(luma[y0:y1, x0:x1].mean()))
    return out


def is_tissue(mean_luminance: float, max_luminance: float = MAX_LUMINANCE) -> bool:
    """EZ-WSI's test: not black, not brighter than max_luminance x 255."""
    return 0 < mean_luminance <= 255 * max_luminance


def tissue_cells(
    coarse: np.ndarray, coarse_level: Level, level: Level
) -> tuple[list[tuple[int, int]], int]:
    """The tissue patches in spatial order, and how many whole patches the level has."""
    cells = patch_cells(level)
    lumas = cell_luminance(coarse, coarse_level, level, cells)
    return [cell for cell, lum in zip(cells, lumas, strict=True) if is_tissue(lum)], len(cells)


def spread(cells: Sequence[tuple[int, int]], count: int) -> list[tuple[int, int]]:
    """`count` of the cells, evenly spread, in their (spatial) order; all when count covers
    them."""
    return [cells[i] for i in sample_indices(len(cells), count)] if count >= 1 else []
