"""Fill a PACS with known studies over STOW-RS, and list what it holds over QIDO-RS.

The samples are pydicom's bundled test files (one study each: a CT slice, an MR slice, a
JPEG 2000 compressed NM image, a 30-frame JPEG ultrasound cine) and the synthetic CT
series of clients.pacs.phantom (60 slices, one study). `load(url, datasets)` stores them
with dicomweb-client and returns the StudyInstanceUIDs; `studies(url)` is what a QIDO-RS
search finds, as StudySummary rows (UID, modalities, instance count: no patient data).
An unreachable or refusing PACS raises PacsError with one line.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pydicom
import requests
from dicomweb_client import DICOMwebClient
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

from clients.pacs import PacsError
from clients.pacs.phantom import PhantomSpec, phantom_series

SAMPLE_FILES = (
    "CT_small.dcm",  # CT, explicit VR little endian
    "MR_small.dcm",  # MR, explicit VR little endian
    "JPEG2000.dcm",  # NM, JPEG 2000 compressed
    "examples_ybr_color.dcm",  # US multi-frame (30 frames), JPEG baseline, YBR colour
)
PHANTOM = PhantomSpec()  # the default phantom: 60 slices, seed 0
STUDY_UID, MODALITIES, INSTANCES = "0020000D", "00080061", "00201208"  # QIDO-RS tags


@dataclass(frozen=True)
class StudySummary:
    """One study as a QIDO-RS search reports it (no patient attributes)."""

    study_uid: str
    modalities: tuple[str, ...]
    instances: int


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


@contextmanager
def reaching(url: str) -> Iterator[None]:
    """Turn the HTTP errors of a DICOMweb call into PacsError (one line)."""
    try:
        yield
    except requests.ConnectionError:
        raise PacsError(
            f"cannot reach the PACS at {url}: is it running? (make pacs starts a local one)"
        ) from None
    except requests.Timeout:
        raise PacsError(f"the PACS at {url} did not answer in time") from None
    except requests.HTTPError as exc:
        status = exc.response.status_code if exc.response is not None else "?"
        method = exc.request.method if exc.request is not None else "a request"
        raise PacsError(f"the PACS at {url} answered {status} to {method}") from None


def client(url: str, timeout_s: float = 60) -> DICOMwebClient:
    """A DICOMweb client that fails at once (no retries) within `timeout_s`."""
    web = DICOMwebClient(url, timeout=timeout_s)
    web.set_http_retry_params(retry=False)
    return web


def load(url: str, datasets: Sequence[Dataset]) -> list[str]:
    """STOW-RS `datasets` into the PACS at `url` (the DICOMweb base URL); returns the
    StudyInstanceUIDs stored, in first-seen order. Raises PacsError."""
    with reaching(url):
        response = client(url).store_instances(list(datasets))
    failed = response.get("FailedSOPSequence", [])
    if failed:
        raise PacsError(f"the PACS at {url} refused {len(failed)} of {len(datasets)} instances")
    return list(dict.fromkeys(str(ds.StudyInstanceUID) for ds in datasets))


def study_summary(qido: dict[str, Any]) -> StudySummary:
    """One QIDO-RS study result (DICOM JSON) as a StudySummary (pure)."""

    def values(tag: str) -> list[Any]:
        return list(qido.get(tag, {}).get("Value", []))

    count = values(INSTANCES)
    return StudySummary(
        study_uid=str(values(STUDY_UID)[0]),
        modalities=tuple(str(m) for m in values(MODALITIES)),
        instances=int(count[0]) if count else 0,
    )


def studies(url: str) -> list[StudySummary]:
    """Every study the PACS at `url` holds, by QIDO-RS. Raises PacsError."""
    with reaching(url):
        found = client(url).search_for_studies(fields=[MODALITIES, INSTANCES])
    return [study_summary(s) for s in found]
