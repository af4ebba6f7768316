"""clients.image_input (and through it clients.dicom and clients.images) on pydicom's bundled
test files and generated images."""

from __future__ import annotations

import base64
import copy
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.uid import UID

from clients.errors import ImageError
from clients.image_input import load_image, to_data_url, to_image_part
from tests.images import chest_like_png


def dicom_path(name: str) -> str:
    path = get_testdata_file(name, download=False)  # bundled with pydicom; never downloaded
    assert isinstance(path, str), f"{name} is not bundled with this pydicom"
    return path


def read(name: str) -> pydicom.Dataset:
    return pydicom.dcmread(dicom_path(name))


def decode(url: str) -> Image.Image:
    header, b64 = url.split(",", 1)
    assert header.startswith("data:image/") and header.endswith(";base64"), header
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def pixels(source, **kw) -> np.ndarray:
    return np.asarray(decode(to_data_url(source, **kw)))


def png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


# --- DICOM -----------------------------------------------------------------------------


def test_ct_small_becomes_a_grey_png_with_full_range():
    img = decode(to_data_url(dicom_path("CT_small.dcm")))
    a = np.asarray(img)
    assert (img.format, img.mode, img.size) == ("PNG", "L", (128, 128))
    assert (a.min(), a.max()) == (0, 255), "no window in the file: the frame's range is used"


def test_ct_rescale_is_applied_before_a_window_in_hounsfield_units():
    ds = read("CT_small.dcm")
    ds.WindowCenter, ds.WindowWidth = 40, 400  # soft-tissue window, in HU
    hu = ds.pixel_array.astype(float) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    a = pixels(ds)
    assert np.all(a[hu > 240 + 1] == 255), "HU above the window must be white"
    assert np.all(a[hu < -160 - 1] == 0), "HU below the window must be black"
    inside = (hu > -150) & (hu < 230)
    assert inside.any() and np.all((a[inside] > 0) & (a[inside] < 255))


def test_mr_window_centre_width_from_the_file():
    ds = read("MR_small.dcm")
    assert (float(ds.WindowCenter), float(ds.WindowWidth)) == (600.0, 1600.0)
    raw = ds.pixel_array.astype(float)
    a = pixels(ds)
    assert np.all(a[raw >= 1400] == 255), f"max raw {raw.max()}"
    mid = np.abs(raw - 600) < 5
    assert mid.any() and np.all(np.abs(a[mid].astype(int) - 128) <= 2), a[mid]


def test_monochrome1_is_inverted():
    mono2 = read("MR_small.dcm")
    mono1 = copy.deepcopy(mono2)
    mono1.PhotometricInterpretation = "MONOCHROME1"
    assert np.array_equal(pixels(mono1), 255 - pixels(mono2))


@pytest.mark.parametrize(
    "name", ["MR_small_RLE.dcm", "MR_small_jp2klossless.dcm", "MR_small_jpeg_ls_lossless.dcm"]
)
def test_lossless_compressed_transfer_syntaxes_decode_to_the_same_pixels(name):
    assert np.array_equal(pixels(dicom_path(name)), pixels(dicom_path("MR_small.dcm")))


@pytest.mark.parametrize("name", ["JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "JPGExtended.dcm"])
def test_lossy_compressed_transfer_syntaxes_decode(name):
    ds = read(name)
    img = decode(to_data_url(ds))
    assert img.size == (
        min(ds.Columns, 896 * ds.Columns // max(ds.Rows, ds.Columns)),
        min(ds.Rows, 896),
    )


def test_colour_dicom_stays_rgb():
    img = load_image(dicom_path("SC_rgb_jpeg_dcmtk.dcm"))
    assert img.mode == "RGB" and img.size == (100, 100)


def test_palette_colour_dicom_is_expanded_to_rgb():
    img = load_image(dicom_path("examples_palette.dcm"))
    assert img.mode == "RGB" and img.size == (800, 350)


def test_multi_frame_needs_a_frame_and_each_frame_differs():
    path = dicom_path("rtdose.dcm")
    with pytest.raises(ImageError, match=r"15 frames.*frame=N"):
        to_data_url(path)
    first, last = pixels(path, frame=0), pixels(path, frame=14)
    assert first.shape == last.shape == (10, 10)
    assert not np.array_equal(first, last)
    with pytest.raises(ImageError, match="frame 15 out of range"):
        to_data_url(path, frame=15)


def test_dicom_without_pixel_data_is_a_clear_error():
    with pytest.raises(ImageError, match="no pixel data.*RT Plan"):
        to_data_url(dicom_path("rtplan.dcm"))


def test_transfer_syntax_without_decoder_is_named():
    ds = read("JPEG2000.dcm")
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.100")  # MPEG2: no decoder here
    with pytest.raises(ImageError, match=r"MPEG2.*1\.2\.840\.10008\.1\.2\.4\.100.*decoder"):
        to_data_url(ds)


def test_dicom_bytes_and_extensionless_files_are_detected(tmp_path):
    data = Path(dicom_path("MR_small.dcm")).read_bytes()
    target = tmp_path / "IM0001"
    target.write_bytes(data)
    assert np.array_equal(pixels(data), pixels(target))


# --- generic images --------------------------------------------------------------------


def test_large_image_is_downscaled_keeping_aspect_ratio():
    img = decode(to_data_url(png(Image.new("L", (2048, 1024), 90))))
    assert img.size == (896, 448)
    tall = decode(to_data_url(png(Image.new("L", (1000, 4000), 90)), max_size=512))
    assert tall.size == (128, 512)


def test_full_resolution_when_max_size_is_none():
    assert decode(to_data_url(png(Image.new("L", (2048, 1024), 90)), max_size=None)).size == (
        2048,
        1024,
    )


def test_small_png_and_jpeg_are_sent_as_their_original_bytes(tmp_path):
    data = chest_like_png(256)
    assert to_data_url(data) == "data:image/png;base64," + base64.b64encode(data).decode()
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(
        photo
    )
    assert (
        to_data_url(photo)
        == "data:image/jpeg;base64," + base64.b64encode(photo.read_bytes()).decode()
    )


def test_format_by_content_png_for_grey_jpeg_for_photos():
    noise = np.random.default_rng(0).integers(0, 255, (1200, 1200, 3), dtype=np.uint8)
    assert to_data_url(noise).startswith("data:image/jpeg;")
    grey_rgb = np.repeat(
        np.random.default_rng(1).integers(0, 255, (1200, 1200, 1), dtype=np.uint8), 3, axis=2
    )
    img = decode(to_data_url(Image.fromarray(grey_rgb)))
    assert (img.format, img.mode) == ("PNG", "L"), (
        "a grey scan saved as RGB is sent as lossless grey"
    )


def test_numpy_arrays_of_any_dtype():
    a16 = np.arange(64 * 64, dtype=np.uint16).reshape(64, 64) * 10
    out = pixels(a16)
    assert out.dtype == np.uint8 and (out.min(), out.max()) == (0, 255)
    f = np.linspace(-1, 1, 100, dtype=np.float32).reshape(10, 10)
    f[0, 0] = np.nan
    assert pixels(f).shape == (10, 10)
    with pytest.raises(ImageError, match=r"shape \(2, 3, 5\)"):
        to_data_url(np.zeros((2, 3, 5)))


def test_sixteen_bit_png_becomes_eight_bit():
    a = (np.arange(100 * 100).reshape(100, 100) * 6).astype(np.uint16)
    img = decode(to_data_url(png(Image.fromarray(a))))
    assert img.mode == "L" and np.asarray(img).max() == 255


def test_urls_pass_through_and_parts_have_the_openai_shape():
    assert to_data_url("https://example.org/cxr.png") == "https://example.org/cxr.png"
    part = to_image_part(np.zeros((4, 4), np.uint8))
    assert part["type"] == "image_url" and part["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )


def test_missing_file_directory_and_non_image(tmp_path):
    with pytest.raises(ImageError, match="no such file"):
        to_data_url(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="is a directory"):
        to_data_url(tmp_path)
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    with pytest.raises(ImageError, match="notes.png: not an image"):
        to_data_url(text)


def test_decompression_bomb_limit_is_a_clear_error(monkeypatch):
    data = png(Image.new("L", (200, 200)))
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # 40,000 px: 4x over, Pillow raises
    with pytest.raises(ImageError, match="too large to decode safely"):
        to_data_url(data)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 30_000)  # 1.3x over: Pillow only warns
    with pytest.raises(ImageError, match=r"200x200 = 40000 pixels exceeds Pillow's limit of 30000"):
        to_data_url(data)


def test_bad_max_size():
    with pytest.raises(ImageError, match="max_size"):
        to_data_url(np.zeros((4, 4)), max_size=0)


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_exif_orientation_is_applied(fmt):
    img = Image.new("RGB", (64, 32), (200, 10, 10))
    exif = img.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    buf = io.BytesIO()
    img.save(buf, fmt, exif=exif.tobytes())
    assert decode(to_data_url(buf.getvalue())).size == (32, 64)


def test_dicom_is_recognised_by_its_magic_bytes_or_its_name(tmp_path: Path) -> None:
    from clients.dicom import is_dicom, is_dicom_file

    data = Path(dicom_path("CT_small.dcm")).read_bytes()
    assert data[128:132] == b"DICM"
    assert is_dicom(data[:132]) and is_dicom(data)
    assert not is_dicom(data[:131]), "too short to hold the magic bytes"
    png = chest_like_png()
    assert not is_dicom(png)
    assert is_dicom(png[:200], "study.DCM"), "a .dcm name is DICOM even without a preamble"
    no_suffix = tmp_path / "IM0001"
    no_suffix.write_bytes(data)
    assert is_dicom_file(no_suffix)
    no_suffix.write_bytes(png)
    assert not is_dicom_file(no_suffix)
    assert not is_dicom_file(tmp_path / "missing")
