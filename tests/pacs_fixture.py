"""The `pacs` fixture: one real Orthanc (with DICOMweb) for the session, on free local
ports with throwaway storage, loaded by STOW-RS with pydicom's sample files, the CT
phantom (60 slices), the CT volume (120 slices), the MR head (40 slices), the chest
X-ray pair (prior and current, DX) and the whole slide (SM, three levels). Registered
for every test by tests/conftest.py (pytest_plugins).

Tests may store more into it (an SR, say) but must not delete what was loaded, and must
not count on the exact set of studies: other tests add theirs, in any order.
Skipped, with the install command, where Orthanc or its plugin is not installed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from clients.errors import PacsError
from serve.pacs import head, radiograph, slide
from serve.pacs.orthanc import DICOMWEB_PLUGIN, Orthanc, install_hint, search_path
from serve.pacs.phantom import PhantomSpec, uid
from serve.pacs.samples import CT_VOLUME, MR_VOLUME, PHANTOM, all_samples, load
from serve.process import free_port

ORTHANC_INSTALLED = (
    shutil.which("Orthanc", path=search_path({"PATH": ""})) is not None
    or shutil.which("Orthanc") is not None
) and DICOMWEB_PLUGIN.exists()
needs_orthanc = pytest.mark.skipif(
    not ORTHANC_INSTALLED, reason="orthanc / orthanc-dicomweb not installed (make install)"
)


@dataclass(frozen=True)
class LivePacs:
    """A running PACS: its DICOMweb base URL and what was loaded into it."""

    url: str
    study_uids: tuple[str, ...]
    phantom: PhantomSpec
    orthanc: Orthanc

    @property
    def phantom_study(self) -> str:
        return str(uid(self.phantom, "study"))

    @property
    def phantom_series(self) -> str:
        return str(uid(self.phantom, "series"))

    @property
    def ct_volume_study(self) -> str:
        """The 120-slice CT volume (serve.pacs.samples.CT_VOLUME)."""
        return str(uid(CT_VOLUME, "study"))

    @property
    def cxr_prior_study(self) -> str:
        """The chest X-ray pair's prior (serve.pacs.radiograph.PRIOR)."""
        return str(radiograph.uid(radiograph.PRIOR, "study"))

    @property
    def cxr_current_study(self) -> str:
        """The chest X-ray pair's current study, with the effusion (radiograph.CURRENT)."""
        return str(radiograph.uid(radiograph.CURRENT, "study"))

    @property
    def slide_study(self) -> str:
        """The whole slide (serve.pacs.slide.SLIDE): 20X, 10X and 5X levels of JPEG tiles."""
        return str(slide.uid(slide.SLIDE, "study"))

    @property
    def mr_volume_study(self) -> str:
        """The 40-slice sagittal MR head (serve.pacs.samples.MR_VOLUME)."""
        return str(head.uid(MR_VOLUME, "study"))


@pytest.fixture(scope="session")
def pacs() -> Iterator[LivePacs]:
    if not ORTHANC_INSTALLED:
        pytest.skip(f"orthanc is not installed: {install_hint(0)}")
    orthanc = Orthanc(free_port(), free_port())
    try:
        orthanc.start()
    except PacsError as exc:
        pytest.fail(f"Orthanc did not start: {exc}", pytrace=False)
    try:
        uids = load(orthanc.dicomweb_url, all_samples(PHANTOM))
        yield LivePacs(orthanc.dicomweb_url, tuple(uids), PHANTOM, orthanc)
    finally:
        orthanc.stop()
