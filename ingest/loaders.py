"""Loaders: turn one file's bytes into a :class:`~rag.types.LoadedDocument`.

Each loader is a small stateless object (cheap to build, picklable, safe to use in worker
processes) with a ``mime_type``, the lower-case ``extensions`` it handles, and
``load(path, data)``. ``load`` raises :class:`~rag.errors.DocumentLoadError` with a short,
one-line reason for any bad input and never lets a parser library's exception escape, with
one exception: a :class:`MemoryError` always escapes (never "damaged PDF: MemoryError"), so
that the job can report the file against ``ingest.file_memory_mb``.

Page text is normalised minimally (line ends become ``\\n``, NUL characters are dropped)
and otherwise left as extracted: chunk spans index into it for citations.
"""

from __future__ import annotations

import codecs
import io
import logging
import re
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import charset_normalizer
import docx
import pypdf
from bs4 import BeautifulSoup, Comment, NavigableString, XMLParsedAsHTMLWarning
from docx.document import Document as DocxDocument
from docx.table import Table
from docx.text.paragraph import Paragraph
from pypdf import PasswordType

from ingest.ocr import OCR_OFF, OcrSettings, OcrUnavailable, pages_to_read, read_pages, with_ocr_text
from rag.config import PdfTextEngine
from rag.errors import DocumentLoadError
from rag.pdfium import PDFIUM_LOCK
from rag.types import LoadedDocument, Page

logger = logging.getLogger(__name__)

NO_PDF_TEXT = "no extractable text (scanned images? ingest.ocr is off)"
NO_PDF_TEXT_AFTER_OCR = "no text: its pages have no text layer, and OCR found none on them"
_BINARY = "binary data, not text"
_SNIFF_BYTES = 8192
_MAX_MESSAGE = 120
_WESTERN_CHAOS_MARGIN = 0.1


class Loader(Protocol):
    """Turns the bytes of one file of a supported type into pages."""

    mime_type: str
    extensions: tuple[str, ...]

    def load(self, path: Path, data: bytes) -> LoadedDocument:
        """Load ``data`` (the content of ``path``); raise DocumentLoadError if bad."""
        ...


# --- shared helpers -------------------------------------------------------------------


def normalise_text(text: str) -> str:
    """Make line ends ``\\n`` and drop NUL characters; change nothing else."""
    return text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")


def _short(exc: BaseException) -> str:
    """A library's message cut to one short line (its class name if it has none)."""
    lines = str(exc).strip().splitlines()
    message = lines[0].strip() if lines else ""
    if not message:
        return type(exc).__name__
    if len(message) > _MAX_MESSAGE:
        return message[: _MAX_MESSAGE - 3] + "..."
    return message


def _require_bytes(path: Path, data: bytes) -> None:
    if not data:
        raise DocumentLoadError(path, "empty file")


def _single_page(path: Path, title: str, mime_type: str, text: str) -> LoadedDocument:
    """A one-page document (number None); rejects text that is only whitespace."""
    text = normalise_text(text)
    if not text.strip():
        raise DocumentLoadError(path, "no text")
    return LoadedDocument(title=title, mime_type=mime_type, pages=(Page(None, text),))


_UNICODE_BOMS = (
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF16_LE, "utf-16"),
    (codecs.BOM_UTF16_BE, "utf-16"),
)


def decode_text(path: Path, data: bytes, declared: str | None = None) -> str:
    """Decode a text file's bytes.

    Order: a UTF-16/32 byte order mark; UTF-8 (a UTF-8 BOM is dropped); the ``declared``
    encoding (e.g. an HTML meta charset) if the bytes decode with it strictly; otherwise
    charset_normalizer's best guess. Raises DocumentLoadError "empty file" for no bytes and
    "binary data, not text" when the start holds NUL bytes or no encoding fits.
    """
    _require_bytes(path, data)
    for bom, encoding in _UNICODE_BOMS:
        if data.startswith(bom):
            try:
                return data.decode(encoding)
            except UnicodeDecodeError:
                raise DocumentLoadError(path, _BINARY) from None
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8) :]
    if b"\x00" in data[:_SNIFF_BYTES]:
        raise DocumentLoadError(path, _BINARY)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if declared:
        try:
            return data.decode(declared)
        except (LookupError, UnicodeDecodeError):
            pass  # a wrong or unknown declaration: guess instead
    results = charset_normalizer.from_bytes(data)
    best = results.best()
    if best is None:
        raise DocumentLoadError(path, _BINARY)
    # On short Western European text charset_normalizer often ranks a Baltic or Central
    # European code page (or even UTF-16) first, though Windows-1252 fits about as well;
    # it is by far the most common legacy encoding, so it wins a near tie.
    western = next((m for m in results if "cp1252" in m.could_be_from_charset), None)
    if western is not None and western.chaos <= best.chaos + _WESTERN_CHAOS_MARGIN:
        try:
            return data.decode("cp1252")
        except UnicodeDecodeError:
            pass
    return str(best)


# --- PDF ------------------------------------------------------------------------------

_LEADING_JUNK = b" \t\r\n\f\x00" + codecs.BOM_UTF8


class PdfLoader:
    """PDF, one Page per physical page (numbers from 1).

    pypdf opens and checks the file (damage, encryption, page labels, title); the page text comes
    from ``text_engine``:

    - ``"pdfium"`` (the default): PDFium's text, in which a table's row keeps its label and its
      numbers on one line ("Purchases of property, plant and equipment (1,577) (1,373)") and
      words keep their letters. pypdf's text puts each cell of a financial statement on a line
      of its own between blank lines, so a passage of a statement is numbers without their
      labels; PDFium's is also about 19 times faster on SEC filings (bench/RESULTS.md, Ingestion).
    - ``"pypdf"``: pypdf's text, as knowledge bases built before the setting had it.

    ``Page.label`` is set only when the PDF defines page labels. PDFs encrypted with an
    empty user password (common for SEC filings) load like any other.

    ``ocr`` (``ingest.ocr*``, off by default here) has scanned pages read by OCR
    (:mod:`ingest.ocr`); the ingestion job does the same in two steps, :meth:`load_text_layer` and
    then :func:`ingest.ocr.read_pages` under a time limit of its own, then :meth:`finish`.
    """

    mime_type: str = "application/pdf"
    extensions: tuple[str, ...] = (".pdf",)

    def __init__(self, text_engine: PdfTextEngine = "pdfium", ocr: OcrSettings = OCR_OFF) -> None:
        self.text_engine: PdfTextEngine = text_engine
        self.ocr = ocr

    def load(self, path: Path, data: bytes) -> LoadedDocument:
        """Load every page's text (scanned pages by OCR when ``ocr`` says so); raise
        DocumentLoadError for a bad PDF, or one in which no page has text."""
        document = self.load_text_layer(path, data)
        wanted = pages_to_read(data, document.pages, self.ocr)
        if wanted:
            try:
                found = read_pages(path, data, wanted, self.ocr)
            except OcrUnavailable as exc:
                raise DocumentLoadError(path, f"OCR cannot run: {exc}") from None
            document = with_ocr_text(document, found, self.ocr.mode)
        return self.finish(path, document)

    def load_text_layer(self, path: Path, data: bytes) -> LoadedDocument:
        """Every page's text as the file holds it, with no OCR and no check that there is any."""
        _require_bytes(path, data)
        if not data[:1024].lstrip(_LEADING_JUNK).startswith(b"%PDF"):
            raise DocumentLoadError(path, "not a PDF file")
        reader = _open_pdf(path, data)
        try:
            page_count = len(reader.pages)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - pypdf raises many types for broken structures
            raise DocumentLoadError(path, f"damaged PDF: {_short(exc)}") from None
        if page_count == 0:
            raise DocumentLoadError(path, "damaged PDF: it has no pages")
        labels = _page_labels(path, reader, page_count)
        texts = _pdfium_texts(path, data, page_count) if self.text_engine == "pdfium" else None
        if texts is None:
            texts = [_page_text(path, reader, i) for i in range(page_count)]
        pages = tuple(Page(i + 1, texts[i], labels[i]) for i in range(page_count))
        return LoadedDocument(_pdf_title(reader, path), self.mime_type, pages)

    def finish(self, path: Path, document: LoadedDocument) -> LoadedDocument:
        """``document`` as loaded; raise DocumentLoadError when none of its pages has text."""
        if not any(page.text.strip() for page in document.pages):
            raise DocumentLoadError(path, NO_PDF_TEXT_AFTER_OCR if self.ocr.on else NO_PDF_TEXT)
        return document


def _pdfium_texts(path: Path, data: bytes, page_count: int) -> list[str] | None:
    """Every page's text by PDFium, or None when PDFium cannot open a file pypdf could (the
    caller then uses pypdf's text). A page that fails to extract is empty rather than fatal."""
    import pypdfium2 as pdfium

    with PDFIUM_LOCK:
        try:
            pdf = pdfium.PdfDocument(data)
        except pdfium.PdfiumError as exc:
            logger.warning("%s: PDFium cannot open it (%s); using pypdf's text", path, exc)
            return None
        try:
            if len(pdf) != page_count:
                logger.warning("%s: PDFium sees %d pages, pypdf %d; using pypdf's text", path, len(pdf), page_count)
                return None
            return [_pdfium_page_text(path, pdf, i) for i in range(page_count)]
        finally:
            pdf.close()


def _pdfium_page_text(path: Path, pdf: Any, index: int) -> str:
    try:
        page = pdf[index]
        try:
            text_page = page.get_textpage()
            try:
                text: str = text_page.get_text_range()
            finally:
                text_page.close()
        finally:
            page.close()
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad page must not lose the whole document
        logger.warning("%s: page %d: text extraction failed: %s", path, index + 1, exc)
        return ""
    # PDFium writes U+FFFE for a hyphen it takes for a line-end hyphenation ("forward\ufffelooking"
    # in SEC filings, where the hyphen is the word's own) and keeps no-break spaces, which
    # statements use to align columns; both become what a reader sees, one character for one.
    return normalise_text(text).translate(_PDFIUM_CHARACTERS)


_PDFIUM_CHARACTERS = str.maketrans({"\ufffe": "-", "\xa0": " "})


def _open_pdf(path: Path, data: bytes) -> pypdf.PdfReader:
    """A reader that is ready to read pages (decrypted with the empty password if needed)."""
    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - PdfReadError, but also ValueError/KeyError/... on garbage
        # pypdf's own message for a cut-off file is a bare "Stream has ended unexpectedly"
        detail = "truncated (no %%EOF marker)" if b"%%EOF" not in data else _short(exc)
        raise DocumentLoadError(path, f"damaged PDF: {detail}") from None
    try:
        encrypted = reader.is_encrypted
        if encrypted and reader.decrypt("") == PasswordType.NOT_DECRYPTED:
            raise DocumentLoadError(path, "encrypted: a password is required")
    except DocumentLoadError:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - e.g. an unsupported algorithm or a broken /Encrypt
        raise DocumentLoadError(path, f"encrypted: cannot decrypt ({_short(exc)})") from None
    return reader


def _page_text(path: Path, reader: pypdf.PdfReader, index: int) -> str:
    """One page's text; a page that fails to extract is empty rather than fatal."""
    try:
        return normalise_text(reader.pages[index].extract_text())
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - one bad page must not lose the whole document
        logger.warning("%s: page %d: text extraction failed: %s", path, index + 1, exc)
        return ""


def _page_labels(path: Path, reader: pypdf.PdfReader, page_count: int) -> list[str | None]:
    """The labels the PDF defines, or all None (pypdf invents "1", "2", ... otherwise)."""
    none: list[str | None] = [None] * page_count
    try:
        if "/PageLabels" not in reader.root_object:
            return none
        labels: list[str | None] = list(reader.page_labels)
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - a broken label tree is not worth losing the text for
        logger.warning("%s: ignoring unreadable page labels: %s", path, exc)
        return none
    return labels if len(labels) == page_count else none


def _pdf_title(reader: pypdf.PdfReader, path: Path) -> str:
    try:
        metadata = reader.metadata
        title = metadata.title if metadata is not None else None
    except MemoryError:
        raise
    except Exception:  # noqa: BLE001 - broken metadata: the file name will do
        title = None
    if isinstance(title, str) and title.strip():
        return " ".join(title.split())
    return path.stem


# --- plain text and Markdown ----------------------------------------------------------


class TextLoader:
    """Plain text as one page (number None); title is the file name's stem."""

    mime_type: str = "text/plain"
    extensions: tuple[str, ...] = (".txt", ".text")

    def load(self, path: Path, data: bytes) -> LoadedDocument:
        """Decode (see :func:`decode_text`) and return the text unchanged."""
        return _single_page(path, path.stem, self.mime_type, decode_text(path, data))


_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(```|~~~)")


def markdown_title(text: str) -> str | None:
    """The text of the first ``# `` heading outside code fences, or None."""
    fence: str | None = None
    for line in text.splitlines():
        opening = _FENCE.match(line)
        if opening:
            marker = opening.group(1)
            fence = None if fence == marker else (fence or marker)
            continue
        if fence is None:
            heading = _ATX_H1.match(line)
            if heading and heading.group(1).strip():
                return heading.group(1).strip()
    return None


class MarkdownLoader:
    """Markdown as one page, kept as written; title is the first ``# `` heading."""

    mime_type: str = "text/markdown"
    extensions: tuple[str, ...] = (".md", ".markdown")

    def load(self, path: Path, data: bytes) -> LoadedDocument:
        """Decode (see :func:`decode_text`); the Markdown source itself is the text."""
        text = decode_text(path, data)
        title = markdown_title(text) or path.stem
        return _single_page(path, title, self.mime_type, text)


# --- HTML -----------------------------------------------------------------------------

_INVISIBLE_TAGS = ("script", "style", "noscript", "template", "head", "svg", "iframe")
_BLOCK_TAGS = (
    "address", "article", "aside", "blockquote", "caption", "dd", "details", "div",
    "dl", "dt", "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3",
    "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p", "pre", "section",
    "summary", "table", "tbody", "thead", "tfoot", "tr", "ul",
)  # fmt: skip
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([A-Za-z0-9_.:-]+)""", re.I)
_SPACES = re.compile(r"[^\S\n]+")
_BLANK_RUNS = re.compile(r"\n{3,}")
_PRE_MARK = re.compile("\ue000(\\d+)\ue001")
# A DOCTYPE's internal subset (entity declarations): the HTML parser neither expands nor hides it
_DOCTYPE_SUBSET = re.compile(r"<!DOCTYPE[^\[>]*\[.*?\]\s*>", re.I | re.S)


class HtmlLoader:
    """HTML as one page of its visible text, blocks separated by blank lines.

    Scripts, styles, the head and comments are dropped; whitespace inside the text is
    collapsed the way a browser shows it (``<pre>`` is kept as is). Title: ``<title>``,
    else the first ``<h1>``, else the file name's stem. Entities declared in a DOCTYPE are
    never expanded (lxml's HTML parser knows only HTML's own), so "billion laughs" stays small.
    """

    mime_type: str = "text/html"
    extensions: tuple[str, ...] = (".html", ".htm")

    def load(self, path: Path, data: bytes) -> LoadedDocument:
        """Decode (honouring a meta charset), parse with lxml and keep the visible text."""
        declared = _META_CHARSET.search(data[:4096])
        text = decode_text(path, data, declared.group(1).decode("ascii") if declared else None)
        text = _DOCTYPE_SUBSET.sub("", text[:_SNIFF_BYTES], count=1) + text[_SNIFF_BYTES:]
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", XMLParsedAsHTMLWarning)  # XHTML is HTML enough
                soup = BeautifulSoup(text, "lxml")
            title = _html_title(soup) or path.stem
            body = _visible_text(soup)
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - lxml copes with nearly anything, but be sure
            raise DocumentLoadError(path, f"cannot parse HTML: {_short(exc)}") from None
        return _single_page(path, title, self.mime_type, body)


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _html_title(soup: BeautifulSoup) -> str | None:
    for tag in (soup.title, soup.find("h1")):
        if tag is not None and _collapse(tag.get_text(" ")):
            return _collapse(tag.get_text(" "))
    return None


def _visible_text(soup: BeautifulSoup) -> str:
    """Visible text with a blank line around each block and a newline per ``<br>``."""
    for tag in soup.find_all(_INVISIBLE_TAGS):
        tag.decompose()
    for comment in soup.find_all(string=lambda s: isinstance(s, Comment)):
        comment.extract()
    for string in list(soup.find_all(string=True)):
        # exact type: a Doctype or CData turned into plain text would become visible
        if type(string) is NavigableString and string.find_parent("pre") is None:
            string.replace_with(re.sub(r"\s+", " ", str(string)))
    for br in soup.find_all("br"):
        br.replace_with("\n")
    # <pre> text is set aside so that the whitespace clean-up below cannot touch it
    preformatted: list[str] = []
    for pre in soup.find_all("pre"):
        if pre.find_parent("pre") is None:
            preformatted.append(pre.get_text().strip("\n"))
            pre.replace_with(f"\n\n\ue000{len(preformatted) - 1}\ue001\n\n")
    for cell in soup.find_all(["td", "th"]):
        if cell.find_previous_sibling(["td", "th"]) is not None:
            cell.insert_before(" | ")
    for block in soup.find_all(_BLOCK_TAGS):
        block.insert_before("\n\n")
        block.insert_after("\n\n")
    lines = (_SPACES.sub(" ", line).strip() for line in soup.get_text().split("\n"))
    text = _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip("\n")
    return _PRE_MARK.sub(lambda m: preformatted[int(m.group(1))], text)


# --- DOCX -----------------------------------------------------------------------------


class DocxLoader:
    """Word (.docx) as one page: paragraphs and tables in body order, blank-line apart.

    A table row becomes one line of its cells joined by " | ". Title: the core property
    title, else the first "Heading 1" paragraph, else the file name's stem.
    """

    mime_type: str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    extensions: tuple[str, ...] = (".docx",)

    def load(self, path: Path, data: bytes) -> LoadedDocument:
        """Read the body text; raise DocumentLoadError for a file that is not a DOCX."""
        _require_bytes(path, data)
        try:
            document = docx.Document(io.BytesIO(data))
        except MemoryError:
            raise
        except Exception:  # noqa: BLE001 - not a zip, no document part, broken XML, ...
            raise DocumentLoadError(path, "not a valid DOCX file") from None
        try:
            blocks = [_block_text(block) for block in _body_blocks(document)]
            title = _docx_title(document) or path.stem
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - malformed content inside a valid package
            raise DocumentLoadError(path, f"damaged DOCX: {_short(exc)}") from None
        body = "\n\n".join(block for block in blocks if block.strip())
        return _single_page(path, title, self.mime_type, body)


def _body_blocks(document: DocxDocument) -> Iterator[Paragraph | Table]:
    yield from document.iter_inner_content()


def _block_text(block: Paragraph | Table) -> str:
    if isinstance(block, Paragraph):
        return block.text
    rows: list[str] = []
    for row in block.rows:
        cells: list[str] = []
        previous = None
        for cell in row.cells:
            # a merged cell is returned once per grid column it spans: keep it once
            if cell._tc is not previous:
                cells.append(cell.text)
            previous = cell._tc
        rows.append(" | ".join(cells))
    return "\n".join(rows)


def _docx_title(document: DocxDocument) -> str | None:
    title = document.core_properties.title
    if title and title.strip():
        return title.strip()
    for paragraph in document.paragraphs:
        style = paragraph.style
        if style is not None and style.name == "Heading 1" and paragraph.text.strip():
            return paragraph.text.strip()
    return None


# --- registry -------------------------------------------------------------------------


def configured_loaders(pdf_text: PdfTextEngine, ocr: OcrSettings = OCR_OFF) -> tuple[Loader, ...]:
    """One loader per supported type, PDFs' text extracted by ``pdf_text`` (``ingest.pdf_text``) and
    their scanned pages read as ``ocr`` says (``ingest.ocr*``)."""
    return (PdfLoader(pdf_text, ocr), TextLoader(), MarkdownLoader(), HtmlLoader(), DocxLoader())


DEFAULT_LOADERS: tuple[Loader, ...] = configured_loaders("pdfium")

SUPPORTED_EXTENSIONS: frozenset[str] = frozenset(ext for loader in DEFAULT_LOADERS for ext in loader.extensions)


def loader_for(path: Path, loaders: Sequence[Loader] = DEFAULT_LOADERS) -> Loader | None:
    """The first loader that handles ``path``'s lower-case suffix, or None (unsupported)."""
    suffix = path.suffix.lower()
    for loader in loaders:
        if suffix in loader.extensions:
            return loader
    return None
