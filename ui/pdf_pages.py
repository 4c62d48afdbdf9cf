"""A PDF page as a picture, with the cited words marked on it (pypdfium2).

PDFium renders the page, and its own text search finds the quote on it, line by line; whatever
is found is marked. With ``ingest.pdf_text = "pdfium"`` (the default) the stored text is PDFium's
too, so a quote's lines are found as they are; a knowledge base extracted by pypdf differs in
spacing and hyphenation, and a quote that cannot be found still leaves the page image and the
highlighted text beside it. Every call into PDFium holds :data:`rag.pdfium.PDFIUM_LOCK`.
"""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

from rag.errors import RagError
from rag.pdfium import PDFIUM_LOCK

_MIN_SEGMENT_CHARS = 12  # shorter pieces match in too many places to mark the right one
_HIGHLIGHT = (253, 224, 71, 110)  # translucent yellow, RGBA


class PageRenderError(RagError):
    """A page could not be drawn (the file moved, changed, or is not a readable PDF)."""


def render_pdf_page(path: Path, page_number: int, quote: str = "", width_px: int = 900) -> bytes:
    """PNG bytes of 1-based page ``page_number`` of the PDF at ``path``, ``width_px`` wide,
    with the lines of ``quote`` that PDFium finds on it marked.

    Raises :class:`PageRenderError` naming the file and page when it cannot be drawn.
    """
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(str(path))
        except (OSError, pdfium.PdfiumError) as exc:
            raise PageRenderError(f"{path}: cannot open the PDF to show page {page_number} ({exc})") from None
        try:
            return _render(pdf, path, page_number, quote, width_px)
        finally:
            pdf.close()


def _render(pdf: Any, path: Path, page_number: int, quote: str, width_px: int) -> bytes:
    from PIL import Image, ImageDraw

    if not 1 <= page_number <= len(pdf):
        raise PageRenderError(f"{path}: has {len(pdf)} pages, no page {page_number} (the file changed?)")
    page = pdf[page_number - 1]
    try:
        scale = width_px / page.get_width()
        image = page.render(scale=scale).to_pil().convert("RGBA")
        boxes = _quote_boxes(page, quote)
        height = page.get_height()
    finally:
        page.close()
    if boxes:
        overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
        draw = ImageDraw.Draw(overlay)
        for left, bottom, right, top in boxes:
            # PDF space has its origin at the bottom left; the image's is at the top left.
            draw.rectangle(
                (left * scale, (height - top) * scale, right * scale, (height - bottom) * scale), fill=_HIGHLIGHT
            )
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
