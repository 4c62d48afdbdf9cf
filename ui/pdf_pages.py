"""A PDF page as a picture, with the cited words marked on it (pypdfium2).

PDFium renders the page, and its own text search finds the quote on it, line by line; whatever
is found is marked. With ``ingest.pdf_text = "pdfium"`` (the default) the stored text is PDFium's
too, so a quote's lines are found as they are; a knowledge base extracted by pypdf differs in
spacing and hyphenation, and a quote that cannot be found still leaves the page image and the
highlighted text beside it. Every call into PDFium holds :data:`rag.pdfium.PDFIUM_LOCK`.

A scanned page has no text for PDFium to search: its text was read by OCR, which kept where each
recognised line stands (:class:`rag.types.TextBox`). :func:`span_marks` turns the cited span into
rectangles on those lines, and :func:`render_pdf_page` draws them instead of searching.
"""

from __future__ import annotations

import io
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.pdfium import PDFIUM_LOCK
from rag.types import TextBox

Mark = tuple[float, float, float, float]  # left, top, right, bottom: fractions of the page's width and height

_MIN_SEGMENT_CHARS = 12  # shorter pieces match in too many places to mark the right one
_HIGHLIGHT = (253, 224, 71, 110)  # translucent yellow, RGBA


class PageRenderError(RagError):
    """A page could not be drawn (the file moved, changed, or is not a readable PDF)."""


def span_marks(boxes: Sequence[TextBox], start: int, end: int) -> tuple[Mark, ...]:
    """Rectangles over characters ``start:end`` of a page whose text OCR read, one per recognised
    line the span touches. A line the span enters or leaves part-way is cut at the same share of
    its width as of its characters (OCR keeps no box per character; printed characters are close
    enough to even widths for a mark)."""
    marks: list[Mark] = []
    for box in boxes:
        first, last = max(start, box.start), min(end, box.end)
        if first >= last:
            continue
        length = max(box.end - box.start, 1)
        width = box.right - box.left
        left = box.left + width * (first - box.start) / length
        right = box.left + width * (last - box.start) / length
        marks.append((left, box.top, right, box.bottom))
    return tuple(marks)


def render_pdf_page(
    path: Path, page_number: int, quote: str = "", width_px: int = 900, marks: Sequence[Mark] = ()
) -> bytes:
    """PNG bytes of 1-based page ``page_number`` of the PDF at ``path``, ``width_px`` wide,
    with ``marks`` (from :func:`span_marks`, for a page read by OCR) marked, or else the lines
    of ``quote`` that PDFium finds on it.

    Raises :class:`PageRenderError` naming the file and page when it cannot be drawn.
    """
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(str(path))
        except (OSError, pdfium.PdfiumError) as exc:
            raise PageRenderError(f"{path}: cannot open the PDF to show page {page_number} ({exc})") from None
        try:
            return _render(pdf, path, page_number, quote, width_px, marks)
        finally:
            pdf.close()


def _render(pdf: Any, path: Path, page_number: int, quote: str, width_px: int, marks: Sequence[Mark]) -> bytes:
    from PIL import Image, ImageDraw

    if not 1 <= page_number <= len(pdf):
        raise PageRenderError(f"{path}: has {len(pdf)} pages, no page {page_number} (the file changed?)")
    page = pdf[page_number - 1]
    try:
        scale = width_px / page.get_width()
        image = page.render(scale=scale).to_pil().convert("RGBA")
        boxes = [] if marks else _quote_boxes(page, quote)
        height = page.get_height()
    finally:
        page.close()
    rectangles = [
        # PDF space has its origin at the bottom left; the image's is at the top left.
        (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale)
        for left, bottom, right, top in boxes
    ]
    rectangles += [
        (left * image.width, top * image.height, right * image.width, bottom * image.height)
        for left, top, right, bottom in marks
    ]
    if rectangles:
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        for rectangle in rectangles:
            draw.rectangle(rectangle, fill=_HIGHLIGHT)
        image = Image.alpha_composite(image, overlay)
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _quote_boxes(page: object, quote: str) -> list[tuple[float, float, float, float]]:
    """Rectangles (PDF units) of the quote's lines that PDFium's search finds on ``page``."""
    segments = [" ".join(line.split()) for line in re.split(r"[\n\r]+", quote)]
    segments = [segment for segment in segments if len(segment) >= _MIN_SEGMENT_CHARS]
    if not segments:
        return []
    textpage = page.get_textpage()  # type: ignore[attr-defined]
    boxes: list[tuple[float, float, float, float]] = []
    try:
        for segment in segments:
            searcher = textpage.search(segment, match_case=False)
            try:
                found = searcher.get_next()
            finally:
                searcher.close()
            if found is None:
                continue
            index, count = found
            for rect in range(textpage.count_rects(index, count)):
                boxes.append(tuple(textpage.get_rect(rect)))
    finally:
        textpage.close()
    return boxes
