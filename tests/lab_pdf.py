"""A sample lab report as PDF bytes, written here byte by byte (no PDF library needed):
deterministic (no dates, no ids: the same call gives the same bytes), small (about 2 KB),
synthetic (an obviously fake patient), and real enough that pypdfium2 renders it.

Each page is lines of text in Courier (a standard PDF font, nothing embedded), one line
per 14 points from the top of a US Letter page; a page of no lines is blank.
"""

from __future__ import annotations

PAGE_WIDTH, PAGE_HEIGHT = 612, 792  # US Letter, in points
MARGIN, LEADING, FONT_SIZE = 54, 14, 10

SAMPLE_LINES = [
    "MEDGEMMA-SERVE SAMPLE LABORATORY - synthetic test data",
    "Patient: PHANTOM^LAB   ID: LAB-0001   (not a real person)",
    "Specimen: Serum (venous blood)",
    "Collected: 2026-11-30 08:15   Reported: 2026-11-30 14:02",
    "",
    "Test                  Result   Unit      Reference range",
    "Sodium                139      mmol/L    135-145",
    "Potassium             5.9 H    mmol/L    3.5-5.1",
    "Creatinine            88       umol/L    59-104",
    "Haemoglobin           128 L    g/L       130-170",
    "C-reactive protein    <5       mg/L      <5",
]
SECOND_PAGE_LINES = [
    "MEDGEMMA-SERVE SAMPLE LABORATORY - page 2 of 2",
    "Specimen: Urine (midstream)   Collected: 2026-11-30 08:20",
    "",
    "Test                  Result   Unit      Reference range",
    "Urine protein         Negative           Negative",
]


def escape(text: str) -> str:
    """A PDF literal string's body: backslash and parentheses escaped, ASCII only."""
    return (
        text.replace("\\", "\\\\")
        .replace("(", "\\(")
        .replace(")", "\\)")
        .encode("ascii", "replace")
        .decode("ascii")
    )


def content_stream(lines: list[str]) -> bytes:
    """The page's drawing operators: one Tj per non-empty line, top to bottom."""
    ops = []
    for n, line in enumerate(lines):
        if line:
            y = PAGE_HEIGHT - MARGIN - n * LEADING
            ops.append(f"BT /F1 {FONT_SIZE} Tf {MARGIN} {y} Td ({escape(line)}) Tj ET")
    return "\n".join(ops).encode("ascii")


def pdf_bytes(pages: list[list[str]]) -> bytes:
    """A PDF of these pages (each a list of text lines)."""
    n = len(pages)
    page_ids = [4 + 2 * i for i in range(n)]
    kids = " ".join(f"{i} 0 R" for i in page_ids)
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode(),
        3: b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier >>",
    }
    for page_id, lines in zip(page_ids, pages, strict=True):
        stream = content_stream(lines)
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_WIDTH} {PAGE_HEIGHT}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {page_id + 1} 0 R >>"
        ).encode()
        objects[page_id + 1] = (
            f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number in sorted(objects):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + objects[number] + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{offset:010d} 00000 n \n".encode() for offset in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def sample_lab_report_pdf(*, second_page: bool = False, blank_page: bool = False) -> bytes:
    """The sample report: one page; with `second_page` a urine result on page 2; with
    `blank_page` an empty page after them."""
    pages = [SAMPLE_LINES] + ([SECOND_PAGE_LINES] if second_page else [])
    return pdf_bytes(pages + ([[]] if blank_page else []))
