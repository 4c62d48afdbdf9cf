"""Records passed between the pipeline's stages.

They are frozen dataclasses: cheap to build in the ingestion hot path (thousands per second),
hashable, and impossible to change behind a stage's back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

CitationOrigin = Literal["model", "attributed"]


@dataclass(frozen=True, slots=True)
class TextBox:
    """Where characters ``start:end`` of a page's text stand on the page: one line (or table cell)
    that OCR recognised, as fractions of the page's width and height from its top left corner, so
    the box fits a picture of the page drawn at any size."""

    start: int
    end: int
    left: float
    top: float
    right: float
    bottom: float


@dataclass(frozen=True, slots=True)
class Page:
    """The text of one page of a source file.

    ``number`` is the 1-based physical page number in the file (the first page of a PDF is 1,
    whatever it prints on itself), or ``None`` for files that have no pages (text, Markdown,
    HTML, DOCX), which are loaded as a single page. ``label`` is the page label the document
    itself defines (for example ``"iv"`` or ``"A-3"``), only when it defines one.

    ``ocr_engine`` names the OCR engine that read the text off a picture of the page (a scanned
    page), or is ``None`` for text taken from the file itself; ``boxes`` then place the text's
    recognised lines on the page, in text order (empty for text that is not OCR's).
    """

    number: int | None
    text: str
    label: str | None = None
    ocr_engine: str | None = None
    boxes: tuple[TextBox, ...] = ()

    @property
    def read_by_ocr(self) -> bool:
        return self.ocr_engine is not None


@dataclass(frozen=True, slots=True)
class LoadedDocument:
    """What a loader returns for one file: its pages plus the facts found inside it."""

    title: str
    mime_type: str
    pages: tuple[Page, ...]


@dataclass(frozen=True, slots=True)
class Document:
    """A source file as stored in a knowledge base.

    ``id`` is derived from the file's absolute path, so a file keeps its id when its content
    changes; ``content_hash`` (SHA-256 of the bytes) is what tells whether it changed.
    """

    id: str
    source: str
    content_hash: str
    mime_type: str
    title: str
    page_count: int
    size_bytes: int
    mtime_ns: int
    ingested_at: str


@dataclass(frozen=True, slots=True)
class Chunk:
    """A passage of one page: the unit that is embedded, retrieved and cited.

    ``text`` is exactly ``page_text[start:end]`` of the page it came from, so a citation can
    highlight the very words. ``id`` is a positive int64 derived from the document id, its
    content hash and the chunk's position: the same content gives the same ids on every run,
    and it doubles as the chunk's FAISS id. ``context`` is the header it is embedded and
    keyword-indexed with (``rag/context.py``), never shown or cited; the store keeps it for
    rebuilding BM25 and does not read it back (chunks read from a knowledge base have "").
    """

    id: int
    document_id: str
    ordinal: int
    text: str
    page: int | None
    page_label: str | None
    start: int
    end: int
    token_count: int
    context: str = ""


@dataclass(frozen=True, slots=True)
class ScoredChunk:
    """A retrieved chunk, its score, and which retriever(s) found it ("dense", "bm25")."""

    chunk: Chunk
    source: str
    score: float
    retrievers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Citation:
    """One ``[n]`` of an answer, checked against passage ``n`` and located in its page.

    ``start``/``end`` are character offsets in the page's text (the same offsets as a
    chunk's span), ``quote`` the words there, ``support`` how well the quote supports the
    citing sentence (0 to 1, :mod:`rag.support`), ``sentence`` the citing sentence without
    markers. ``file`` is the cited document's stored source path and ``file_name`` its base
    name (not the document's title, :attr:`Document.title`). ``origin`` says who cited: the
    model wrote the marker, or the sentence was attributed after the fact; ``supported``
    whether ``support`` reaches ``citations.min_support``.
    """

    n: int
    chunk_id: int
    file: str
    file_name: str
    page: int | None
    page_label: str | None
    start: int
    end: int
    quote: str
    support: float
    sentence: str
    origin: CitationOrigin = "model"
    supported: bool = True


@dataclass(frozen=True, slots=True)
class Answer:
    """A question's answer with everything that produced it (for the page, the CLI and evaluation).

    ``sentences`` holds the ``(start, end)`` spans of ``text``'s sentences (the claims checked),
    ``unverified`` those of them that no supported citation backs: shown apart on the page,
    counted in evaluation.
    """

    question: str
    text: str
    abstained: bool
    citations: tuple[Citation, ...]
    retrieved: tuple[ScoredChunk, ...]
    model: str
    timings: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    prompt: str = ""
    raw_output: str = ""
    sentences: tuple[tuple[int, int], ...] = ()
    unverified: tuple[tuple[int, int], ...] = ()
