"""A document's pages as images: the sample PDF rendered by the real pypdfium2, page images
read as they are, and what is refused (not a PDF, no such page, a blank page)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clients.errors import ImageError
from clients.pages import (
    RENDER_DPI,
    DocumentError,
    choose_pages,
    is_blank,
    read_document,
    render_scale,
)
from tests.images import chest_like_png
from tests.lab_pdf import PAGE_HEIGHT, PAGE_WIDTH, pdf_bytes, sample_lab_report_pdf


def png(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def test_the_sample_pdf_is_small_and_the_same_bytes_every_time() -> None:
    data = sample_lab_report_pdf(second_page=True)
    assert data == sample_lab_report_pdf(second_page=True)
    assert data.startswith(b"%PDF-1.4\n") and data.endswith(b"%%EOF\n")
    assert len(data) < 4096, len(data)


def test_a_pdf_page_renders_in_grey_at_150_dpi_with_its_text() -> None:
    doc = read_document(sample_lab_report_pdf(second_page=True))
    assert (doc.total, doc.where) == (2, "<bytes>")
    (page,) = doc.render([2])
    scale = RENDER_DPI / 72
    assert page.number == 2 and page.image.mode == "L"
    width, height = page.image.size  # PDFium rounds up: 1275 x 1651 for Letter
    assert abs(width - PAGE_WIDTH * scale) <= 1 and abs(height - PAGE_HEIGHT * scale) <= 1
    grey = np.asarray(page.image)
    assert grey.max() == 255 and grey.min() < 64, "white paper with dark text"
    assert not is_blank(page.image)
    # the text sits at the top of the page (the lines start 54 pt down), the rest is paper
    top = grey[: grey.shape[0] // 4]
    assert (top < 128).sum() > 1000 and (grey[grey.shape[0] // 2 :] < 128).sum() == 0


def test_a_pdf_is_told_by_its_content_not_its_name(tmp_path: Path) -> None:
    named_png = tmp_path / "report.png"
    named_png.write_bytes(sample_lab_report_pdf())
    assert read_document(named_png).pdf is not None
    with pytest.raises(DocumentError, match="a PDF among page images"):
        read_document([named_png, named_png])


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (chest_like_png(64), "not a PDF (no %PDF- header in its first 1024 bytes)"),
        (b"", "not a PDF (no %PDF- header in its first 1024 bytes)"),
        (b"%PDF-1.4\nthis is no PDF\n", "a PDF that PDFium cannot open (Failed to load"),
        (sample_lab_report_pdf()[:300], "a PDF that PDFium cannot open"),
    ],
    ids=["png", "empty", "header-only", "truncated"],
)
def test_what_is_not_a_pdf_is_one_line_naming_the_file(
    tmp_path: Path, data: bytes, why: str
) -> None:
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    with pytest.raises(DocumentError) as caught:
        read_document(path, pdf=True)
    message = str(caught.value)
    assert message.startswith(f"{path}: {why}"), message
    assert "\n" not in message


def test_page_images_are_pages_in_the_order_given(tmp_path: Path) -> None:
    first, second = tmp_path / "p1.png", tmp_path / "p2.png"
    first.write_bytes(chest_like_png(200))
    second.write_bytes(chest_like_png(300))
    doc = read_document([first, second], pdf=False)
    assert (doc.total, doc.where) == (2, "2 page images")
    assert [p.image.size for p in doc.render([1, 2])] == [(200, 200), (300, 300)]
    assert read_document(Image.open(first)).where == "PIL image"
    with pytest.raises(ImageError, match="not an image"):
        read_document(b"plain text, neither an image nor a PDF")


def test_page_choice_counts_from_one_and_names_what_is_missing() -> None:
    assert choose_pages(3, None, "r.pdf") == [1, 2, 3]
    assert choose_pages(3, [3, 1, 3], "r.pdf") == [1, 3]
    with pytest.raises(DocumentError, match=r"r.pdf has 3 page\(s\): no page 0, 4 "):
        choose_pages(3, [0, 4], "r.pdf")
    with pytest.raises(DocumentError, match="the document has no pages"):
        choose_pages(0, None, "r.pdf")


def test_a_blank_page_is_refused_by_its_number() -> None:
    doc = read_document(sample_lab_report_pdf(blank_page=True))
    assert len(doc.render([1])) == 1
    with pytest.raises(DocumentError, match=r"^<bytes>: page 2 of 2 is blank: nothing to read$"):
        doc.render([1, 2])
    white = png(Image.new("L", (600, 800), 255))
    with pytest.raises(DocumentError, match=r"^<bytes>: its page is blank: nothing to read$"):
        read_document(white).render([1])


def test_blank_means_almost_no_ink_not_one_colour() -> None:
    paper = np.full((1000, 800), 240, np.uint8)
    assert is_blank(Image.fromarray(paper))
    noisy = paper + np.random.default_rng(0).integers(0, 12, paper.shape, dtype=np.uint8)
    assert is_blank(Image.fromarray(noisy)), "scanner noise is not ink"
    word = paper.copy()
    word[100:110, 100:140] = 20  # 400 dark pixels: a short word at 150 dpi
    assert not is_blank(Image.fromarray(word))


def test_a_huge_page_renders_under_pillows_pixel_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    # Pillow's default limit, whatever an earlier test in this process left
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024 * 1024 * 1024 // 4 // 3)
    letter = render_scale(PAGE_WIDTH, PAGE_HEIGHT)
    assert letter == RENDER_DPI / 72
    huge = render_scale(200 * 72, 200 * 72)  # a 200-inch square page
    limit = Image.MAX_IMAGE_PIXELS
    assert limit is not None and huge < letter
    assert (200 * 72 * huge) ** 2 <= limit
    tiny_pdf = pdf_bytes([["x"]])
    assert read_document(tiny_pdf).total == 1
