"""The local PACS: the CT phantom (pure), Orthanc's configuration (pure), and a real Orthanc
with DICOMweb (the `pacs` fixture) searched by QIDO-RS and read back by WADO-RS; bad
input (no binary, busy port, unreachable PACS) as one line each."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

from clients.dicomweb import connect, search_studies, study_ref
from clients.errors import PacsError
from serve.pacs.orthanc import (
    DICOMWEB_PLUGIN,
    DICOMWEB_ROOT,
    Orthanc,
    install_hint,
    orthanc_config,
)
from serve.pacs.phantom import (
    PATIENT_ID,
    PATIENT_NAME,
    PhantomSpec,
    hu_volume,
    phantom_series,
)
from serve.pacs.samples import SAMPLE_FILES, load, synthetic_labels
from serve.pacs.series import write_series
from serve.process import free_port
from tests.conftest import REPO
from tests.pacs_fixture import LivePacs, needs_orthanc

SPEC = PhantomSpec()
SYNTHETIC_STUDIES = 6  # CT phantom, CT volume, MR head, chest X-ray pair, whole slide
# WADO-RS in the stored transfer syntax: Orthanc 1.10 cannot transcode JPEG 2000 to the
# default (explicit VR little endian) and answers 500; pydicom decodes it here instead
AS_STORED = (("application/dicom", "*"),)
REPO = REPO


@pytest.fixture(scope="module")
def series() -> list[pydicom.Dataset]:
    return phantom_series(SPEC)


def normal_positions(series: list[pydicom.Dataset]) -> np.ndarray:
    iop = np.array(series[0].ImageOrientationPatient, float)
    normal = np.cross(iop[:3], iop[3:])
    return np.array([np.dot(normal, np.array(ds.ImagePositionPatient, float)) for ds in series])


def hu(ds: pydicom.Dataset) -> np.ndarray:
    return np.asarray(apply_modality_lut(ds.pixel_array, ds))


def disc(spec: PhantomSpec, centre: tuple[float, float], radius_mm: float) -> np.ndarray:
    """A boolean mask of the pixels within `radius_mm` of `centre` (x, y in mm)."""
    x0, y0 = spec.origin_xy_mm()
    coords = np.arange(spec.size) * spec.pixel_mm
    x, y = (x0 + coords)[None, :], (y0 + coords)[:, None]
    return np.asarray((x - centre[0]) ** 2 + (y - centre[1]) ** 2 <= radius_mm**2)


# --- the phantom (pure) ---------------------------------------------------------------


def test_phantom_geometry_is_a_regular_axial_stack(series: list[pydicom.Dataset]) -> None:
    assert len(series) == 60
    assert [ds.InstanceNumber for ds in series] == list(range(1, 61))
    steps = np.diff(normal_positions(series))
    assert np.allclose(steps, SPEC.slice_mm), steps
    for ds in series:
        assert list(ds.ImageOrientationPatient) == [1, 0, 0, 0, 1, 0]
        assert float(ds.SliceThickness) == float(ds.SpacingBetweenSlices) == SPEC.slice_mm
        assert [float(v) for v in ds.PixelSpacing] == pytest.approx([SPEC.pixel_mm] * 2)
        assert list(ds.ImagePositionPatient)[:2] == list(series[0].ImagePositionPatient)[:2]
        assert float(ds.SliceLocation) == pytest.approx(float(ds.ImagePositionPatient[2]))
        assert (ds.Rows, ds.Columns) == (SPEC.size, SPEC.size)
    # the first pixel's centre and the last's are symmetric about the isocentre
    x0, y0 = (float(v) for v in series[0].ImagePositionPatient[:2])
    assert x0 + (SPEC.size - 1) * SPEC.pixel_mm == pytest.approx(-x0)
    assert y0 + (SPEC.size - 1) * SPEC.pixel_mm == pytest.approx(-y0)


def test_phantom_identifiers_are_consistent_and_reproducible(
    series: list[pydicom.Dataset],
) -> None:
    assert len({ds.StudyInstanceUID for ds in series}) == 1
    assert len({ds.SeriesInstanceUID for ds in series}) == 1
    assert len({ds.FrameOfReferenceUID for ds in series}) == 1
    assert len({ds.SOPInstanceUID for ds in series}) == 60
    for ds in series:
        assert ds.SOPClassUID == CTImageStorage and ds.Modality == "CT"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        assert ds.file_meta.MediaStorageSOPClassUID == CTImageStorage
        assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert (str(ds.PatientName), ds.PatientID) == (PATIENT_NAME, PATIENT_ID)
    again = phantom_series(SPEC)
    assert [ds.SOPInstanceUID for ds in again] == [ds.SOPInstanceUID for ds in series]
    other = phantom_series(PhantomSpec(slices=2, seed=1))
    assert other[0].StudyInstanceUID != series[0].StudyInstanceUID


def test_phantom_hounsfield_units_after_rescale(series: list[pydicom.Dataset]) -> None:
    ds = series[SPEC.lesion_index]
    assert (float(ds.RescaleSlope), float(ds.RescaleIntercept)) == (1.0, -1024.0)
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (40.0, 400.0)
    assert ds.pixel_array.dtype == np.int16
    lesion = disc(SPEC, SPEC.lesion_centre_xy_mm, SPEC.lesion_radius_mm - 3)
    ring = disc(SPEC, SPEC.lesion_centre_xy_mm, SPEC.lesion_radius_mm + 12) & ~disc(
        SPEC, SPEC.lesion_centre_xy_mm, SPEC.lesion_radius_mm + 4
    )
    image = hu(ds)
    assert image[lesion].mean() == pytest.approx(60, abs=3), image[lesion].mean()
    assert image[ring].mean() == pytest.approx(0, abs=3), image[ring].mean()
    lung = disc(SPEC, (75, -5), 20)
    assert image[lung].mean() == pytest.approx(-850, abs=3)
    assert image[0:4, 0:4].mean() == pytest.approx(-1000, abs=5)  # air in the corner
    far = hu(series[0])  # the lesion is a sphere: slices far from it are water there
    assert far[lesion].mean() == pytest.approx(0, abs=3), far[lesion].mean()
    # the noiseless volume: the lesion spans a few slices around its centre, no more
    with_lesion = [k for k, sl in enumerate(hu_volume(SPEC)) if (sl == SPEC.lesion_hu).any()]
    assert with_lesion == list(range(SPEC.lesion_index - 4, SPEC.lesion_index + 5))


def test_write_series_round_trips_as_part10_files(
    series: list[pydicom.Dataset], tmp_path: Path
) -> None:
    paths = write_series(series[:3], tmp_path)
    assert [p.name for p in paths] == ["0001.dcm", "0002.dcm", "0003.dcm"]
    for path, ds in zip(paths, series, strict=False):
        assert path.read_bytes()[128:132] == b"DICM"
        back = pydicom.dcmread(path)
        assert back.SOPInstanceUID == ds.SOPInstanceUID
        assert np.array_equal(back.pixel_array, ds.pixel_array)


# --- configuration and messages (pure) ------------------------------------------------


def test_orthanc_config_is_local_throwaway_dicomweb(tmp_path: Path) -> None:
    cfg = orthanc_config(18042, 14242, tmp_path)
    assert cfg["Plugins"] == [str(DICOMWEB_PLUGIN)]
    assert cfg["DicomWeb"]["Enable"] is True and cfg["DicomWeb"]["Root"] == DICOMWEB_ROOT
    assert (cfg["HttpPort"], cfg["DicomPort"]) == (18042, 14242)
    assert cfg["RemoteAccessAllowed"] is False and cfg["AuthenticationEnabled"] is False
    assert cfg["DicomAlwaysAllowStore"] is False
    for key in ("StorageDirectory", "IndexDirectory"):
        assert Path(cfg[key]).parent == tmp_path


def test_install_hint_names_both_packages() -> None:
    assert install_hint(0) == "apt-get install orthanc orthanc-dicomweb (or make install)"
    assert install_hint(1000).startswith("sudo apt-get install orthanc orthanc-dicomweb")


def test_study_ref_reads_the_samples_qido_json() -> None:
    qido = {
        "0020000D": {"vr": "UI", "Value": ["1.2.3"]},
        "00080061": {"vr": "CS", "Value": ["CT", "SR"]},
        "00201208": {"vr": "IS", "Value": [61]},
    }
    summary = study_ref(qido)
    assert (summary.study_uid, summary.modalities, summary.instances) == ("1.2.3", ("CT", "SR"), 61)
    assert study_ref({"0020000D": {"vr": "UI", "Value": ["1.2"]}}).instances is None


# --- a real Orthanc -------------------------------------------------------------------


@needs_orthanc
def test_qido_finds_every_loaded_study(pacs: LivePacs) -> None:
    assert len(pacs.study_uids) == len(SAMPLE_FILES) + SYNTHETIC_STUDIES, pacs.study_uids
    found = {s.study_uid: s for s in search_studies(pacs.url)}
    assert set(pacs.study_uids) <= set(found), (pacs.study_uids, list(found))
    phantom = found[pacs.phantom_study]
    assert "CT" in phantom.modalities and (phantom.instances or 0) >= 60, phantom
    mr_only = connect(pacs.url).search_for_studies(search_filters={"ModalitiesInStudy": "MR"})
    mr_studies = {study_ref(s).study_uid: study_ref(s).modalities for s in mr_only}
    assert {uid: mr_studies.get(uid) for uid in pacs.study_uids if uid in mr_studies} == {
        pacs.mr_volume_study: ("MR",),
        next(u for u in pacs.study_uids if u.startswith("1.3.6.1.4.1.5962.1.2.4.")): ("MR",),
    }, mr_only  # MR_small and the MR head, and no CT study


@needs_orthanc
def test_wado_returns_the_phantom_series_as_stored(
    pacs: LivePacs, series: list[pydicom.Dataset]
) -> None:
    got = connect(pacs.url).retrieve_series(pacs.phantom_study, pacs.phantom_series)
    assert len(got) == 60, len(got)
    stored = {ds.SOPInstanceUID: ds for ds in series}
    for ds in got:
        want = stored[ds.SOPInstanceUID]
        assert np.array_equal(ds.pixel_array, want.pixel_array), ds.InstanceNumber
        assert list(ds.ImagePositionPatient) == list(want.ImagePositionPatient)
        assert (ds.RescaleIntercept, ds.WindowCenter) == (want.RescaleIntercept, 40)


@needs_orthanc
def test_wado_returns_the_multiframe_and_compressed_samples(pacs: LivePacs) -> None:
    web = connect(pacs.url)
    by_modality = {}
    for s in search_studies(pacs.url):
        if s.study_uid in pacs.study_uids and s.study_uid not in synthetic_labels():
            by_modality[s.modalities] = web.retrieve_study(s.study_uid, media_types=AS_STORED)
    cine = by_modality[("US",)][0]
    assert int(cine.NumberOfFrames) == 30 and cine.pixel_array.shape[0] == 30
    nm = by_modality[("NM",)][0]
    assert nm.pixel_array.shape == (int(nm.Rows), int(nm.Columns)), nm.pixel_array.shape


# --- bad input: one line each ---------------------------------------------------------


def one_line(exc: BaseException) -> str:
    text = str(exc)
    assert "\n" not in text, text
    return text


def test_missing_binary_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(PacsError) as err:
        Orthanc(free_port(), free_port(), environ={"PATH": str(tmp_path)}).start()
    line = one_line(err.value)
    assert "Orthanc is not installed" in line and "apt-get install orthanc orthanc-dicomweb" in line


@needs_orthanc
def test_missing_plugin_names_the_install_command(tmp_path: Path) -> None:
    with pytest.raises(PacsError) as err:
        Orthanc(free_port(), free_port(), plugin=tmp_path / "libOrthancDicomWeb.so").start()
    line = one_line(err.value)
    assert "DICOMweb plugin is not installed" in line and "orthanc-dicomweb" in line


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s.getsockname()[1]


@needs_orthanc
@pytest.mark.parametrize("which", ["http", "dicom"])
def test_port_in_use_is_one_line(busy_port: int, which: str) -> None:
    ports = (busy_port, free_port()) if which == "http" else (free_port(), busy_port)
    with pytest.raises(PacsError) as err:
        Orthanc(*ports).start()
    line = one_line(err.value)
    assert f"port {busy_port} on 127.0.0.1 is already in use" in line
    assert f"--{which}-port N" in line


def test_unreachable_pacs_is_one_line(series: list[pydicom.Dataset]) -> None:
    url = f"http://127.0.0.1:{free_port()}/dicom-web"
    for call in (lambda: load(url, series[:1]), lambda: search_studies(url)):
        with pytest.raises(PacsError) as err:
            call()
        assert one_line(err.value).startswith(f"cannot reach the PACS at {url}")


# --- the command line -----------------------------------------------------------------


def pacs_cli(*args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "serve", "pacs", *args],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )


@needs_orthanc
def test_cli_busy_port_is_one_error_line(busy_port: int) -> None:
    proc = pacs_cli("--http-port", str(busy_port), "--dicom-port", str(free_port()))
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 1, (out, err)
    assert err.strip().splitlines() == [
        f"error: PACS HTTP port {busy_port} on 127.0.0.1 is already in use: stop what listens "
        "there or choose another (--http-port N)"
    ], err


@needs_orthanc
def test_cli_serves_samples_until_sigterm_without_patient_data() -> None:
    http_port = free_port()
    proc = pacs_cli("--http-port", str(http_port), "--dicom-port", str(free_port()))
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + 90
    while len(lines) < 1 + len(SAMPLE_FILES) + SYNTHETIC_STUDIES and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
    try:
        assert lines[0] == f"DICOMweb: http://127.0.0.1:{http_port}/dicom-web", lines
        studies = [line for line in lines if line.startswith("  study ")]
        assert len(studies) == len(SAMPLE_FILES) + SYNTHETIC_STUDIES, lines
        for uid, label in synthetic_labels().items():
            slices = label.split(", ")[1].split()[0]
            modality = label.split()[0]
            want = f"  study {uid}  {modality}  {slices} instances  ({label})"
            assert want in studies, (want, lines)
        assert search_studies(lines[0].split(" ", 1)[1])  # it answers while the command runs
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    text = "\n".join(lines) + out + err
    assert proc.returncode == 0, (text, proc.returncode)
    assert "PACS stopped" in err
    for identifier in (PATIENT_NAME, PATIENT_ID, "PHANTOM", "CompressedSamples"):
        assert identifier not in text, text
