"""A document's pages as images (the lab-report workload): a PDF rendered page by page with
pypdfium2 (PyPI: PDFium, the PDF engine of Chromium), or images that are pages already.

A PDF is recognised by its content (`%PDF-` in its first 1024 bytes, as PDF readers
accept), never by its name. Each page renders in grey at 150 dpi (a US Letter page:
about 1275 x 1650 px; clients.images then scales it to the 896 px MedGemma sees), lower where a
huge page would pass Pillow's decompression-bomb limit. A page with (almost) no ink is
blank: it is refused by name, not sent. PDFium is not thread-safe (pypdfium2's docs say
so), and a batch renders in worker threads: one lock serialises every call into it.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from clients.errors import ImageError
from clients.image_input import decode_bytes, load_image, read_file

PDF_MAGIC = b"%PDF-"
MAGIC_WINDOW = 1024  # PDF readers accept the header anywhere in the first 1024 bytes
RENDER_DPI = 150
POINTS_PER_INCH = 72
# Blank: fewer than 0.02 % of the pixels differ from the page's median grey by more than
# 48 levels (a rendered empty page has none; one short word at 150 dpi has a few hundred).
INK_LEVELS = 48
MIN_INK_FRACTION = 0.0002
PDFIUM = threading.Lock()

DocumentSource = str | os.PathLike[str] | bytes | Image.Image


class DocumentError(ImageError):
    """A document that cannot become page images: not a PDF, a PDF PDFium cannot open, no
    such page, a blank page. The message names the document (and the page)."""


@dataclass(frozen=True)
class Page:
    """One page to show the model: its number in the document (from 1) and its pixels."""

    number: int
    image: Image.Image  # 8-bit 'L' or 'RGB'


def is_pdf(data: bytes) -> bool:
    return PDF_MAGIC in data[:MAGIC_WINDOW]


def open_pdf(data: bytes, where: str):  # type: ignore[no-untyped-def]  # pypdfium2 is untyped
    """The PDF as a pypdfium2 document (call under PDFIUM). Raises DocumentError."""
    import pypdfium2

    if not is_pdf(data):
        raise DocumentError(f"{where}: not a PDF (no %PDF- header in its first 1024 bytes)")
    try:
        return pypdfium2.PdfDocument(data)
    except pypdfium2.PdfiumError as exc:
        raise DocumentError(f"{where}: a PDF that PDFium cannot open ({exc})") from None


def pdf_page_count(data: bytes, where: str) -> int:
    with PDFIUM:
        pdf = open_pdf(data, where)
        try:
            return len(pdf)
        finally:
            pdf.close()


def render_scale(width_pt: float, height_pt: float, dpi: int = RENDER_DPI) -> float:
    """Pixels per point: `dpi` / 72, lowered so the page stays under Pillow's pixel limit."""
    scale = dpi / POINTS_PER_INCH
    limit = Image.MAX_IMAGE_PIXELS
    area = max(width_pt * height_pt, 1.0)
    if limit is not None and area * scale * scale > limit:
        scale = math.sqrt(limit / area) * 0.99
    return scale


def render_pdf(data: bytes, where: str, numbers: Sequence[int]) -> list[Page]:
    """The pages `numbers` (from 1) of the PDF, rendered in grey. Raises DocumentError."""
    pages = []
    with PDFIUM:
        pdf = open_pdf(data, where)
        try:
            for number in numbers:
                page = pdf[number - 1]
                try:
                    scale = render_scale(*page.get_size())
                    image = page.render(scale=scale, grayscale=True).to_pil()
                finally:
                    page.close()
                pages.append(Page(number, image.convert("L")))
        finally:
            pdf.close()
    return pages


def is_blank(image: Image.Image) -> bool:
    """True for a page with (almost) no ink: see INK_LEVELS and MIN_INK_FRACTION."""
    grey = np.asarray(image.convert("L"), dtype=np.int16)
    if grey.size == 0:
        return True
    ink = np.abs(grey - int(np.median(grey))) > INK_LEVELS
    return float(ink.mean()) < MIN_INK_FRACTION


def choose_pages(total: int, wanted: Sequence[int] | None, where: str) -> list[int]:
    """The page numbers to send, in order: all of them, or `wanted` (from 1, each once)."""
    if total == 0:
        raise DocumentError(f"{where}: the document has no pages")
    if not wanted:
        return list(range(1, total + 1))
    bad = [n for n in wanted if not 1 <= n <= total]
    if bad:
        raise DocumentError(
            f"{where} has {total} page(s): no page {', '.join(map(str, bad))} (pages count from 1)"
        )
    return sorted(set(wanted))


@dataclass(frozen=True)
class Document:
    """A document's pages, read but not yet rendered: a PDF's bytes, or page images."""

    where: str  # its name in messages
    total: int
    pdf: bytes | None = None
    images: tuple[Image.Image, ...] = ()

    def render(self, numbers: Sequence[int]) -> list[Page]:
        """The pages `numbers`, as images; a blank one raises DocumentError."""
        if self.pdf is not None:
            pages = render_pdf(self.pdf, self.where, numbers)
        else:
            pages = [Page(n, self.images[n - 1]) for n in numbers]
        for page in pages:
            if is_blank(page.image):
                of = f"page {page.number} of {self.total}" if self.total > 1 else "its page"
                raise DocumentError(f"{self.where}: {of} is blank: nothing to read")
        return pages


def read_document(
    sources: DocumentSource | Sequence[DocumentSource], *, pdf: bool | None = None
) -> Document:
    """A PDF (a path or its bytes), or page images (one, or several in page order: paths,
    bytes, PIL images; DICOM too). `pdf`: True when the source must be a PDF, False when
    it must be images, None to tell by content. Raises DocumentError / ImageError."""
    items: list[DocumentSource] = (
        list(sources)
        if isinstance(sources, Sequence) and not isinstance(sources, (str, bytes))
        else [sources]
    )
    if not items:
        raise DocumentError("no document: give a PDF or page images")
    loaded = [content(item) for item in items]
    if len(items) == 1 and pdf is not False:
        where, data = loaded[0]
        if data is not None and (pdf or is_pdf(data)):
            return Document(where, pdf_page_count(data, where), pdf=data)
    if pdf:
        raise DocumentError("give one PDF (--pdf PATH), or page images with --image")
    images: list[Image.Image] = []
    for source, (where, data) in zip(items, loaded, strict=True):
        if data is None:
            images.append(load_image(source))  # type: ignore[arg-type]  # a PIL image
        elif is_pdf(data):
            raise DocumentError(f"{where}: a PDF among page images: give it alone (--pdf PATH)")
        else:
            images.append(decode_bytes(data, where, None))
    where = loaded[0][0] if len(loaded) == 1 else f"{len(loaded)} page images"
    return Document(where, len(images), images=tuple(images))


def content(source: DocumentSource) -> tuple[str, bytes | None]:
    """(name for messages, bytes) of a path or bytes; (name, None) for a PIL image."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source).expanduser()
        return str(path), read_file(path)
    if isinstance(source, (bytes, bytearray, memoryview)):
        return "<bytes>", bytes(source)
    if isinstance(source, Image.Image):
        return "PIL image", None
    raise DocumentError(f"unsupported document source type {type(source).__name__}")
