"""Make test input files on the fly: no network, no binary files shipped with the tests.

Good files: :func:`make_pdf` (text pages, optional title, page labels, encryption) and
:func:`make_docx`. Bad files: :func:`make_truncated_pdf`, :func:`make_corrupt_pdf`,
:func:`make_fake_pdf`, :func:`make_binary_txt`. Every maker writes ``path`` (creating its
parent directory) and returns it.
"""

from __future__ import annotations

import io
import random
from collections.abc import Sequence
from pathlib import Path

import docx
from fpdf import FPDF
from pypdf import PdfReader, PdfWriter
from pypdf.constants import PageLabelStyle


def _prepare(path: Path | str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _fpdf_bytes(pages: Sequence[str], title: str | None) -> bytes:
    pdf = FPDF()
    pdf.set_auto_page_break(auto=True, margin=15)
    pdf.set_font("Helvetica", size=12)
    if title is not None:
        pdf.set_title(title)
    for text in pages:
        pdf.add_page()
        if text:
            # core fonts are latin-1 only; replace anything else rather than fail
            safe = text.encode("latin-1", "replace").decode("latin-1")
            pdf.multi_cell(0, 6, safe)
    return bytes(pdf.output())


def make_pdf(
    path: Path | str,
    pages: list[str],
    *,
    title: str | None = None,
    page_labels: list[tuple[int, str, str]] | None = None,
    user_password: str | None = None,
    owner_password: str | None = None,
) -> Path:
    """Write a PDF with one page per string of ``pages`` ("" gives a page with no text).

    ``page_labels`` is a list of ``(first_page_index, style, prefix)`` ranges, 0-based and
    in increasing order, each running to the next range's start (the last to the end);
    ``style`` is a PDF label style: "/D" decimal, "/r" or "/R" roman, "/a" or "/A" letters.
    Example: ``[(0, "/r", ""), (2, "/D", "")]`` labels pages i, ii, 1, 2, ...

    If ``user_password`` or ``owner_password`` is given the file is encrypted (AES-256);
    ``user_password=""`` with an owner password is the common "opens without a password"
    case.
    """
    path = _prepare(path)
    data = _fpdf_bytes(pages, title)
    if page_labels is None and user_password is None and owner_password is None:
        path.write_bytes(data)
        return path
    writer = PdfWriter(clone_from=PdfReader(io.BytesIO(data)))
    ranges = sorted(page_labels or [])
    for i, (first, style, prefix) in enumerate(ranges):
        last = ranges[i + 1][0] - 1 if i + 1 < len(ranges) else len(pages) - 1
        writer.set_page_label(first, last, style=PageLabelStyle(style), prefix=prefix or None)
    if user_password is not None or owner_password is not None:
        writer.encrypt(
            user_password=user_password or "",
            owner_password=owner_password,
            algorithm="AES-256",
        )
    with path.open("wb") as handle:
        writer.write(handle)
    return path


def make_docx(
    path: Path | str,
    paragraphs: Sequence[str],
    *,
    title: str | None = None,
    table: Sequence[Sequence[str]] | None = None,
) -> Path:
    """Write a .docx with ``paragraphs`` in order, then ``table`` (rows of cell texts).

    A paragraph starting with "# " becomes a "Heading 1" paragraph (without the "# ").
    ``title`` sets the core-properties title.
    """
    path = _prepare(path)
    document = docx.Document()
    if title is not None:
        document.core_properties.title = title
    for text in paragraphs:
        if text.startswith("# "):
            document.add_heading(text[2:], level=1)
        else:
            document.add_paragraph(text)
    if table:
        grid = document.add_table(rows=len(table), cols=max(len(row) for row in table))
        for cells, row in zip(grid.rows, table, strict=True):
            for cell, text in zip(cells.cells, row, strict=False):
                cell.text = text
    document.save(str(path))
    return path


def make_truncated_pdf(path: Path | str) -> Path:
    """A valid multi-page PDF cut to half its bytes (the cross-reference table is lost)."""
    path = _prepare(path)
    pages = [f"Page {n} of the truncated report. " * 20 for n in range(1, 5)]
    data = _fpdf_bytes(pages, "Truncated")
    path.write_bytes(data[: len(data) // 2])
    return path


def make_corrupt_pdf(path: Path | str) -> Path:
    """A file that starts with a PDF header and then holds only garbage bytes."""
    path = _prepare(path)
    garbage = random.Random(7).randbytes(4096)
    path.write_bytes(b"%PDF-1.7\n" + garbage)
    return path


def make_fake_pdf(path: Path | str) -> Path:
    """PNG-like bytes named ``.pdf``."""
    path = _prepare(path)
    header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    path.write_bytes(header + random.Random(11).randbytes(2048))
    return path


def make_binary_txt(path: Path | str) -> Path:
    """Random bytes, NULs included, named ``.txt``."""
    path = _prepare(path)
    data = bytearray(random.Random(13).randbytes(4096))
    data[10:20] = bytes(10)  # make sure NULs are there whatever the seed gives
    path.write_bytes(bytes(data))
    return path


def make_statement_pdf(
    path: Path | str, heading: Sequence[str], columns: Sequence[str], rows: Sequence[Sequence[str]]
) -> Path:
    """A one-page financial statement as filings draw it: ``heading`` lines, then a table whose
    header row is ``columns`` (the years, right of the label column) and whose ``rows`` are a
    label and one number per column, every cell placed on its own at its column's position."""
    path = _prepare(path)
    pdf = FPDF()
    pdf.set_font("Helvetica", size=10)
    pdf.add_page()
    for line in heading:
        pdf.cell(0, 6, line, new_x="LMARGIN", new_y="NEXT")
    y = pdf.get_y() + 4
    for row in [("", *columns), *rows]:
        for position, text in enumerate(row):
            pdf.set_xy(15 if position == 0 else 110 + 35 * (position - 1), y)
            pdf.cell(90 if position == 0 else 30, 6, text, align="L" if position == 0 else "R")
        y += 6
    path.write_bytes(bytes(pdf.output()))
    return path
