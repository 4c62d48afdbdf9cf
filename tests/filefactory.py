"""Make test input files on the fly: no network, no binary files shipped with the tests.

Good files: :func:`make_pdf` (text pages, optional title, page labels, encryption),
:func:`make_scanned_pdf` (pages that are pictures of text, as a scanner makes them, beside text
pages) and :func:`make_docx`. Bad files: :func:`make_truncated_pdf`, :func:`make_corrupt_pdf`,
:func:`make_fake_pdf`, :func:`make_binary_txt`. Hostile files (small on disk, costly to load):
:func:`make_many_pages_pdf`, :func:`make_content_bomb_pdf`, :func:`make_docx_bomb`,
:func:`make_billion_laughs_docx`, :func:`make_billion_laughs_html`. Every maker writes ``path``
(creating its parent directory) and returns it.
"""

from __future__ import annotations

import io
import random
import zipfile
import zlib
from collections.abc import Iterable, Sequence
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


def scan_pdf(data: bytes, pages: Iterable[int] | None = None, dpi: int = 300) -> bytes:
    """The PDF ``data`` with pages ``pages`` (1-based; all by default) replaced by pictures of
    themselves drawn at ``dpi``, as a scanner makes them: grey JPEG images and no text layer."""
    import pypdfium2 as pdfium

    source = pdfium.PdfDocument(data)
    try:
        wanted = set(range(1, len(source) + 1) if pages is None else pages)
        scans: dict[int, bytes] = {}
        for number in sorted(wanted):
            picture = source[number - 1].render(scale=dpi / 72, grayscale=True).to_pil()
            out = io.BytesIO()
            picture.save(out, format="PDF", resolution=float(dpi))
            scans[number] = out.getvalue()
        count = len(source)
    finally:
        source.close()
    text = PdfReader(io.BytesIO(data))
    writer = PdfWriter()
    for number in range(1, count + 1):
        writer.add_page(PdfReader(io.BytesIO(scans[number])).pages[0] if number in scans else text.pages[number - 1])
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def make_scanned_pdf(
    path: Path | str, pages: list[str], *, scanned: Iterable[int] | None = None, dpi: int = 300
) -> Path:
    """Write a PDF with one page per string of ``pages`` (as :func:`make_pdf`), of which pages
    ``scanned`` (1-based; all by default) are pictures of their text with no text layer."""
    path = _prepare(path)
    path.write_bytes(scan_pdf(_fpdf_bytes(pages, None), scanned, dpi))
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


# --- hostile files: each is small on disk and costly (or endless) to load ---------------------


def _raw_pdf(objects: Sequence[bytes]) -> bytes:
    """A PDF of ``objects`` (object n is ``objects[n - 1]``, the catalog first), with a correct
    cross-reference table: for structures fpdf2 cannot draw."""
    out = bytearray(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    offsets = []
    for number, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n%s\nendobj\n" % (number, body)
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % offset for offset in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)
    return bytes(out)


_FONT = b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"


def _page(contents: int) -> bytes:
    return b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> " + (
        b"/Contents %d 0 R >>" % contents
    )


def _stream(data: bytes, *, deflated: bool = False) -> bytes:
    return b"<< /Length %d%s >>\nstream\n%s\nendstream" % (
        len(data),
        b" /Filter /FlateDecode" if deflated else b"",
        data,
    )


def make_many_pages_pdf(path: Path | str, pages: int) -> Path:
    """A PDF of ``pages`` pages, each with one line of its own text ("Page 7 of the appendix ...")."""
    path = _prepare(path)
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", _FONT]
    kids = []
    for number in range(1, pages + 1):
        text = b"BT /F1 12 Tf 72 720 Td (Page %d of the appendix lists item %d) Tj ET" % (number, number * 7)
        objects.append(_stream(text))
        objects.append(_page(len(objects)))
        kids.append(b"%d 0 R" % len(objects))
    objects[1] = b"<< /Type /Pages /Kids [%s] /Count %d >>" % (b" ".join(kids), pages)
    path.write_bytes(_raw_pdf(objects))
    return path


def make_content_bomb_pdf(path: Path | str, text_objects: int) -> Path:
    """A two-page PDF of about 100 KB per million ``text_objects``: page 1 says "Hello readable
    page"; page 2's content stream inflates to ``text_objects`` tiny text objects (35 bytes each),
    each of which PDFium builds an object for: a million take several seconds and about 500 MB."""
    path = _prepare(path)
    operation = b"BT /F1 12 Tf 72 720 Td (lol) Tj ET\n"
    block = operation * 10_000
    compressor = zlib.compressobj(9)
    deflated = b"".join(compressor.compress(block) for _ in range(max(text_objects // 10_000, 1)))
    deflated += compressor.flush()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [5 0 R 7 0 R] /Count 2 >>",
        _FONT,
        _stream(b"BT /F1 12 Tf 72 720 Td (Hello readable page) Tj ET"),
        _page(4),
        _stream(deflated, deflated=True),
        _page(6),
    ]
    path.write_bytes(_raw_pdf(objects))
    return path


_W_NAMESPACE = b'xmlns:w="http://schemas.openxmlformats.org/wordprocessingml/2006/main"'
LAUGHS_PAYLOAD = "lol" * 10  # what one expansion of the innermost entity would give, ten times over


def billion_laughs_doctype(root: str) -> bytes:
    """A DOCTYPE whose entity ``&lol9;`` expands to 10**9 "lol"s (3 GB)."""
    entities = [b'<!ENTITY lol0 "lol">'] + [
        b'<!ENTITY lol%d "%s">' % (level, b"&lol%d;" % (level - 1) * 10) for level in range(1, 10)
    ]
    return b"<!DOCTYPE %s [%s]>" % (root.encode(), b"".join(entities))


def _docx_with_body(path: Path, parts: Iterable[bytes]) -> Path:
    """A real .docx (python-docx's default package) whose ``word/document.xml`` is ``parts``
    joined, written piece by piece (so hundreds of MB never sit in memory at once)."""
    template = io.BytesIO()
    docx.Document().save(template)
    with zipfile.ZipFile(template) as source, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as out:
        for info in source.infolist():
            if info.filename == "word/document.xml":
                with out.open("word/document.xml", "w", force_zip64=True) as part:
                    for piece in parts:
                        part.write(piece)
            else:
                out.writestr(info, source.read(info.filename))
    return path


def make_docx_bomb(path: Path | str, inflated_mb: int) -> Path:
    """A valid .docx of a few hundred KB whose document part inflates to ``inflated_mb`` MB
    (one paragraph of zeros)."""
    path = _prepare(path)
    zeros = b"0" * (1 << 20)
    head = b'<?xml version="1.0"?><w:document %s><w:body><w:p><w:r><w:t>' % _W_NAMESPACE
    tail = b"</w:t></w:r></w:p></w:body></w:document>"
    return _docx_with_body(path, [head, *(zeros for _ in range(inflated_mb)), tail])


def make_billion_laughs_docx(path: Path | str) -> Path:
    """A .docx whose document part declares "billion laughs" entities and uses ``&lol9;``."""
    path = _prepare(path)
    body = b"<w:document %s><w:body><w:p><w:r><w:t>Kept words &lol9; end</w:t></w:r></w:p></w:body></w:document>"
    return _docx_with_body(path, [b'<?xml version="1.0"?>', billion_laughs_doctype("w:document"), body % _W_NAMESPACE])


def make_billion_laughs_html(path: Path | str) -> Path:
    """An (X)HTML file that declares "billion laughs" entities and uses ``&lol9;`` in its text."""
    path = _prepare(path)
    body = b"<html><head><title>Laughs</title></head><body><p>Kept words &lol9; end</p></body></html>"
    path.write_bytes(b'<?xml version="1.0"?>' + billion_laughs_doctype("html") + body)
    return path
