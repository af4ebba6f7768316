"""Fill a PACS with known studies over STOW-RS.

The samples are pydicom's bundled test files (one study each: a CT slice, an MR slice, a
JPEG 2000 compressed NM image, a 30-frame JPEG ultrasound cine) and three synthetic series,
one study each: the CT phantom of serve.pacs.phantom (PHANTOM, 60 slices, which the tests
use), a CT volume (CT_VOLUME, 120 slices with fat, lungs, soft tissue, a lesion and bone,
for the client's CT recipe: 85 of 120 slices in three windows) and an MR head
(MR_VOLUME, serve.pacs.head, 40 sagittal slices, for the MR recipe), and a chest
radiograph pair of one patient (serve.pacs.radiograph: a prior without and a current with
a left pleural effusion, DX, months apart, for the comparison and localization recipes),
and a whole slide (serve.pacs.slide: a VL Whole Slide Microscopy pyramid, SM, 20X / 10X / 5X
of JPEG tiles, three tissue islands on glass, for the slide recipe).
`load(url, datasets)` stores them with dicomweb-client and returns the StudyInstanceUIDs
(clients.dicomweb.search_studies lists what a PACS holds). An unreachable or refusing PACS
raises PacsError with one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from clients.dicomweb import connect, talking_to
from clients.errors import PacsError
from serve.pacs import head, phantom, radiograph, slide
from serve.pacs.head import HeadSpec, head_series
from serve.pacs.phantom import PhantomSpec, phantom_series

SAMPLE_FILES = (
    "CT_small.dcm",  # CT, explicit VR little endian
    "MR_small.dcm",  # MR, explicit VR little endian
    "JPEG2000.dcm",  # NM, JPEG 2000 compressed
    "examples_ybr_color.dcm",  # US multi-frame (30 frames), JPEG baseline, YBR colour
)
PHANTOM = PhantomSpec()  # the default phantom: 60 slices, seed 0
# 256 x 256 (1.5 mm pixels) rather than a scanner's 512 x 512: a quarter of the bytes to
# store and fetch, and the client scales every slice to the model's 896 px anyway
CT_VOLUME = PhantomSpec(
    slices=120,
    size=256,
    fat_mm=15.0,
    description="Axial CT volume phantom: fat, lungs, spine, one round lesion",
    seed=1001,  # its own UIDs and noise: no other sample uses this seed
)
MR_VOLUME = HeadSpec()  # 40 sagittal slices of 256 x 256, 4 mm apart, seed 0


def sample_datasets(names: Sequence[str] = SAMPLE_FILES) -> list[Dataset]:
    """pydicom's bundled test files, read from the installed package (never downloaded)."""
    datasets: list[Dataset] = []
    for name in names:
        path = get_testdata_file(name, download=False)
        if path is None:
            raise PacsError(f"pydicom's test file {name} is not installed with pydicom")
        datasets.append(pydicom.dcmread(path))
    return datasets


def volume_datasets() -> list[Dataset]:
    """The CT volume's slices, then the MR head's, then the chest radiograph pair's images
    (prior, current)."""
    return phantom_series(CT_VOLUME) + head_series(MR_VOLUME) + radiograph.chest_pair()


def all_samples(
    phantom: PhantomSpec | None = PHANTOM, volumes: bool = True, slides: bool = True
) -> list[Dataset]:
    """The bundled files, then the phantom series (none when `phantom` is None), then the
    CT and MR volumes and the radiographs (unless `volumes` is False), then the whole
    slide's levels (unless `slides` is False)."""
    return (
        sample_datasets()
        + (phantom_series(phantom) if phantom is not None else [])
        + (volume_datasets() if volumes else [])
        + (slide.slide_pyramid(slide.SLIDE) if slides else [])
    )


def synthetic_labels() -> dict[str, str]:
    """What each synthetic sample study is, by StudyInstanceUID (no patient attribute)."""
    return {
        str(phantom.uid(PHANTOM, "study")): f"CT phantom, {PHANTOM.slices} axial slices",
        str(phantom.uid(CT_VOLUME, "study")): f"CT volume, {CT_VOLUME.slices} axial slices",
        str(head.uid(MR_VOLUME, "study")): f"MR head, {MR_VOLUME.slices} sagittal slices",
        str(
            radiograph.uid(radiograph.PRIOR, "study")
        ): "DX chest X-ray prior, 1 image, no effusion",
        str(
            radiograph.uid(radiograph.CURRENT, "study")
        ): "DX chest X-ray current, 1 image, left effusion",
        str(slide.uid(slide.SLIDE, "study")): (
            f"SM whole slide, {slide.SLIDE.levels} levels (20X base), tissue on glass"
        ),
    }


def load(url: str, datasets: Sequence[Dataset]) -> list[str]:
    """STOW-RS `datasets` into the PACS at `url` (the DICOMweb base URL); returns the
    StudyInstanceUIDs stored, in first-seen order. Raises PacsError."""
    with talking_to(url, "the upload of the samples"):
        response = connect(url).store_instances(list(datasets))
    failed = response.get("FailedSOPSequence", [])
    if failed:
        raise PacsError(f"the PACS at {url} refused {len(failed)} of {len(datasets)} instances")
    return list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in datasets))
