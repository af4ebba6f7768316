"""A synthetic whole-slide image as pydicom Datasets (pure): a DICOM VL Whole Slide
Microscopy pyramid (modality SM) of JPEG tiles, for the test PACS and the client's slide
recipe (clients.slide).

`slide_pyramid(spec)` -> one instance per level, all in one series: level 0 at
`spec.base_mm` per pixel (0.0005 mm: 20X), each next level half the resolution (10X, 5X).
Each instance is TILED_FULL (frames in row-major order over the total pixel matrix, one
focal plane, one optical path), `spec.tile` px square frames, JPEG baseline
(YBR_FULL_422), with the pixel spacing in its shared functional groups. The picture:
white glass (RGB 240) and pink tissue islands with wobbly edges over chosen cells of the
client's 896 px patch grid at 10X (`spec.tissue`: 7 of 12), a stroma texture and purple
nuclei, drawn at 10X and upsampled to 20X (so the 10X level is the drawing itself, and
the file stays small: 2.9 MB); the lower levels are 2 x 2 means. With `tissue=()` the
slide is blank glass (the client's "no tissue" case).

Identifiers: an obviously fake patient (PHANTOM^SLIDE), UIDs derived from the seed. The
same spec gives the same bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from io import BytesIO

import highdicom as hd
import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import encapsulate
from pydicom.uid import UID, JPEGBaseline8Bit, VLWholeSlideMicroscopyImageStorage

from serve.pacs.series import Series, instance_dataset, part10

PATIENT_NAME = "PHANTOM^SLIDE"
PATIENT_ID = "PHANTOM-0004"
GLASS = 240  # the background, every channel
EOSIN = np.array([214.0, 120.0, 170.0])  # stroma: pink (luma ~154)
HEMATOXYLIN = np.array([92.0, 56.0, 140.0])  # nuclei: purple
JPEG_QUALITY = 75
COARSE = 4  # the tissue outline and texture are drawn at 1 / COARSE of 10X
PATCH = 896  # the client's patch side at 10X: the tissue is laid out on its grid


@dataclass(frozen=True)
class SlideSpec:
    """One slide: its size at 10X (width, height, px), levels, tiles, tissue and seed."""

    width_10x: int = 3584  # 4 patches of 896 across at 10X
    height_10x: int = 2688  # 3 down
    levels: int = 3  # 20X, 10X, 5X
    base_mm: float = 0.0005  # level 0's pixel spacing: 0.5 um, 20X
    tile: int = 512
    # the 896 px patch cells (row, column) at 10X that hold tissue: three islands
    tissue: tuple[tuple[int, int], ...] = ((0, 0), (0, 1), (1, 0), (0, 3), (1, 2), (2, 1), (2, 2))
    seed: int = 4001
    description: str = "Synthetic H&E whole slide, 3 levels (not a patient)"


SLIDE = SlideSpec()  # the sample in `make pacs`: 20X base, 12 patch cells at 10X, 7 tissue
BLANK = SlideSpec(tissue=(), seed=4002, description="Synthetic blank slide: glass only")


def series(spec: SlideSpec) -> Series:
    return Series(
        sop_class=VLWholeSlideMicroscopyImageStorage,
        modality="SM",
        patient_name=PATIENT_NAME,
        patient_id=PATIENT_ID,
        study_description="Synthetic whole slide (not a patient)",
        series_description=spec.description,
        body_part="",
        date="20240520",
        time="143000",
        uid_source="medgemma-serve whole slide",
        seed=spec.seed,
    )


def uid(spec: SlideSpec, what: str) -> UID:
    """The slide's UIDs: study, series, frame, slice-<level> (each level's instance)."""
    return series(spec).uid(what)


def tissue_mask(spec: SlideSpec) -> np.ndarray:
    """Where the tissue is, at 10X: a wobbly disc (radius 0.56 of a patch, the wobble
    seeded) centred on each of `spec.tissue`'s patch cells; neighbouring discs merge into
    islands. A tissue cell is ~90 % covered, a glass cell at most ~8 % (2 % from each
    tissue neighbour), so the client's tissue test (mean luminance <= 204) has a wide
    margin either side. Drawn at 1 / COARSE of the resolution and upsampled."""
    h, w = spec.height_10x, spec.width_10x
    q = COARSE
    y, x = (np.mgrid[0 : -(-h // q), 0 : -(-w // q)].astype(np.float32) + 0.5) * q
    mask = np.zeros(y.shape, bool)
    rng = np.random.default_rng(spec.seed)
    for row, col in spec.tissue:
        dy, dx = (y - (row + 0.5) * PATCH) / PATCH, (x - (col + 0.5) * PATCH) / PATCH
        angle = np.arctan2(dy, dx)
        phase = rng.uniform(0, 2 * np.pi, 2)
        radius = 0.56 + 0.03 * np.sin(3 * angle + phase[0]) + 0.02 * np.sin(7 * angle + phase[1])
        mask |= dy**2 + dx**2 <= radius**2
    return upsample(mask, q)[:h, :w]


def upsample(a: np.ndarray, factor: int) -> np.ndarray:
    return np.kron(a, np.ones((factor, factor) + (1,) * (a.ndim - 2), a.dtype))


def nucleus_stamp() -> np.ndarray:
    y, x = np.mgrid[-5:6, -5:6]
    return y**2 + x**2 <= 20


def picture_10x(spec: SlideSpec) -> np.ndarray:
    """The slide at 10X, RGB uint8: glass, stroma with a smooth texture, nuclei."""
    h, w = spec.height_10x, spec.width_10x
    mask = tissue_mask(spec)
    if not mask.any():
        return np.full((h, w, 3), GLASS, np.uint8)
    q = COARSE
    y, x = np.mgrid[0 : -(-h // q), 0 : -(-w // q)].astype(np.float32) * q
    texture = 0.5 + 0.25 * np.sin(x / 23.0) * np.cos(y / 31.0) + 0.25 * np.sin((x + y) / 57.0)
    stroma = np.rint(EOSIN[None, None, :] * (0.9 + 0.1 * texture[..., None])).astype(np.uint8)
    image = np.where(mask[..., None], upsample(stroma, q)[:h, :w], np.uint8(GLASS))
    rng = np.random.default_rng(spec.seed + 1)
    ys, xs = np.nonzero(mask[::24, ::24])  # one nucleus candidate per 24 px cell
    keep = rng.random(len(ys)) < 0.6
    n = int(keep.sum())
    cys = np.clip(ys[keep] * 24 + rng.integers(0, 24, n), 5, h - 6)
    cxs = np.clip(xs[keep] * 24 + rng.integers(0, 24, n), 5, w - 6)
    disc = nucleus_stamp()
    purple = HEMATOXYLIN.astype(np.uint8)
    for cy, cx in zip(cys, cxs, strict=True):
        image[cy - 5 : cy + 6, cx - 5 : cx + 6][disc] = purple
    return image


def level_pictures(spec: SlideSpec) -> list[Image.Image]:
    """Each level's RGB picture, level 0 (base_mm) first."""
    ten = Image.fromarray(picture_10x(spec))
    w, h = ten.size
    pictures = [ten.resize((2 * w, 2 * h), Image.Resampling.NEAREST)]  # 20X: upsampled
    for _ in range(spec.levels - 1):
        w, h = pictures[-1].size
        pictures.append(pictures[-1].resize((w // 2, h // 2), Image.Resampling.BOX))  # 2 x 2 means
    return pictures


def jpeg_frames(picture: Image.Image, tile: int) -> list[bytes]:
    """TILED_FULL frames: row-major tiles, the right and bottom ones padded with glass."""
    w, h = picture.size
    rows, cols = -(-h // tile), -(-w // tile)
    padded = Image.new("RGB", (cols * tile, rows * tile), (GLASS, GLASS, GLASS))
    padded.paste(picture, (0, 0))
    frames = []
    for r in range(rows):
        for c in range(cols):
            out = BytesIO()
            block = padded.crop((c * tile, r * tile, (c + 1) * tile, (r + 1) * tile))
            # subsampling 1 = 4:2:2, as YBR_FULL_422 says
            block.save(out, "JPEG", quality=JPEG_QUALITY, subsampling=1)
            frames.append(out.getvalue())
    return frames


def level_dataset(spec: SlideSpec, level: int, picture: Image.Image) -> Dataset:
    """Level `level`'s instance: the WSI attributes, its frames and its pixel spacing."""
    s = series(spec)
    kind = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    if level:
        kind = ["DERIVED", "PRIMARY", "VOLUME", "RESAMPLED"]
    ds = instance_dataset(s, level, kind)
    spacing = spec.base_mm * 2**level
    w, h = picture.size
    ds.ContainerIdentifier = f"SYNTHETIC-{spec.seed}"
    ds.IssuerOfTheContainerIdentifierSequence = []
    ds.ContainerTypeCodeSequence = [code("433466003", "SCT", "Microscope slide")]
    ds.SpecimenDescriptionSequence = [
        hd.SpecimenDescription(
            specimen_id=f"SYNTHETIC-{spec.seed}-1", specimen_uid=s.uid("specimen")
        )
    ]
    ds.FrameOfReferenceUID = s.uid("frame")
    ds.PositionReferenceIndicator = "SLIDE_CORNER"
    ds.DimensionOrganizationType = "TILED_FULL"
    ds.VolumetricProperties = "VOLUME"
    ds.SpecimenLabelInImage = "NO"
    ds.BurnedInAnnotation = "NO"
    ds.FocusMethod = "AUTO"
    ds.ExtendedDepthOfField = "NO"
    ds.AcquisitionDateTime = f"{s.date}{s.time}"
    ds.ImageOrientationSlide = [0, -1, 0, -1, 0, 0]
    ds.ImagedVolumeWidth = round(w * spacing, 6)
    ds.ImagedVolumeHeight = round(h * spacing, 6)
    ds.ImagedVolumeDepth = 0.001
    origin = Dataset()
    origin.XOffsetInSlideCoordinateSystem = 20.0
    origin.YOffsetInSlideCoordinateSystem = 40.0
    ds.TotalPixelMatrixOriginSequence = [origin]
    ds.TotalPixelMatrixColumns, ds.TotalPixelMatrixRows = w, h
    ds.TotalPixelMatrixFocalPlanes = 1
    ds.NumberOfOpticalPaths = 1
    path = Dataset()
    path.OpticalPathIdentifier = "1"
    path.IlluminationTypeCodeSequence = [code("111744", "DCM", "Brightfield illumination")]
    path.IlluminationColorCodeSequence = [code("414298005", "SCT", "Full Spectrum")]
    ds.OpticalPathSequence = [path]
    shared = Dataset()
    shared.PixelMeasuresSequence = hd.PixelMeasuresSequence(
        pixel_spacing=(spacing, spacing), slice_thickness=0.001
    )
    frame_type = Dataset()
    frame_type.FrameType = kind
    shared.WholeSlideMicroscopyImageFrameTypeSequence = [frame_type]
    optical = Dataset()
    optical.OpticalPathIdentifier = "1"
    shared.OpticalPathIdentificationSequence = [optical]
    ds.SharedFunctionalGroupsSequence = [shared]
    frames = jpeg_frames(picture, spec.tile)
    ds.Rows = ds.Columns = spec.tile
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "YBR_FULL_422"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = 10.0
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.PixelData = encapsulate(frames)
    ds = part10(ds)
    ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
    ds["PixelData"].VR = "OB"
    return ds


def code(value: str, scheme: str, meaning: str) -> Dataset:
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = value, scheme, meaning
    return item


def tissue_patch(seed: int, width: int = PATCH, height: int = PATCH) -> np.ndarray:
    """One patch of tissue as the client cuts it at 10X (a wobbly island over ~90 % of it,
    stroma and nuclei; RGB uint8), each seed its own: the benchmark's slide patches
    (benchmarks.runner.workload), without building a pyramid."""
    spec = SlideSpec(width_10x=width, height_10x=height, tissue=((0, 0),), seed=seed)
    return picture_10x(spec)


def slide_pyramid(spec: SlideSpec = SLIDE) -> list[Dataset]:
    """The slide's instances, level 0 (the highest resolution) first."""
    return [level_dataset(spec, i, p) for i, p in enumerate(level_pictures(spec))]
