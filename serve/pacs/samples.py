"""Fill a PACS with known studies over STOW-RS.

The samples are pydicom's bundled test files (one study each: a CT slice, an MR slice, a
JPEG 2000 compressed NM image, a 30-frame JPEG ultrasound cine) and the synthetic CT
series of serve.pacs.phantom (60 slices, one study). `load(url, datasets)` stores them
with dicomweb-client and returns the StudyInstanceUIDs (clients.dicomweb.search_studies
lists what a PACS holds). An unreachable or refusing PACS raises PacsError with one line.
"""

from __future__ import annotations

from collections.abc import Sequence

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from clients.dicomweb import connect, talking_to
from clients.errors import PacsError
from serve.pacs.phantom import PhantomSpec, phantom_series

SAMPLE_FILES = (
    "CT_small.dcm",  # CT, explicit VR little endian
    "MR_small.dcm",  # MR, explicit VR little endian
    "JPEG2000.dcm",  # NM, JPEG 2000 compressed
    "examples_ybr_color.dcm",  # US multi-frame (30 frames), JPEG baseline, YBR colour
)
PHANTOM = PhantomSpec()  # the default phantom: 60 slices, seed 0


def sample_datasets(names: Sequence[str] = SAMPLE_FILES) -> list[Dataset]:
    """pydicom's bundled test files, read from the installed package (never downloaded)."""
    datasets: list[Dataset] = []
    for name in names:
        path = get_testdata_file(name, download=False)
        if path is None:
            raise PacsError(f"pydicom's test file {name} is not installed with pydicom")
        datasets.append(pydicom.dcmread(path))
    return datasets


def all_samples(phantom: PhantomSpec | None = PHANTOM) -> list[Dataset]:
    """The bundled files, then the phantom series (none when `phantom` is None)."""
    return sample_datasets() + (phantom_series(phantom) if phantom is not None else [])


def load(url: str, datasets: Sequence[Dataset]) -> list[str]:
    """STOW-RS `datasets` into the PACS at `url` (the DICOMweb base URL); returns the
    StudyInstanceUIDs stored, in first-seen order. Raises PacsError."""
    with talking_to(url, "the upload of the samples"):
        response = connect(url).store_instances(list(datasets))
    failed = response.get("FailedSOPSequence", [])
    if failed:
        raise PacsError(f"the PACS at {url} refused {len(failed)} of {len(datasets)} instances")
    return list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in datasets))
