"""What a chunk is indexed with besides its own words: its document's name, and its page's heading.

A passage cut from page 38 of a 10-K says "Total net sales increased 31%" and nowhere says
whose sales or which year; the question says "Amazon's FY2017 net sales". Anthropic's
"contextual retrieval" and LlamaIndex's document metadata in the embedded text both answer this
by indexing each chunk together with what identifies its document. Here that is the file name's
words ("AMAZON 2017 10K") and the document's title when it says something else, put before the
chunk's text in what is embedded and what BM25 counts.

A page of a statement is the same: its second and third passages are rows of numbers, and only
the first carries "Consolidated Statements of Cash Flows". With ``chunking.context = "page"`` the
header also holds the page's heading: its first lines that are not running headers or footers
(lines printed on many pages of the document, such as "Table of Contents"), as dsRAG's
"contextual chunk headers" put a section title before each chunk. A file without pages (text,
HTML, DOCX) has the document's header only.

Only the indexed text changes: ``Chunk.text`` stays the exact words of the page, which is what
the prompt quotes and a citation highlights; ``Chunk.context`` keeps the header it was indexed
with, so BM25 is rebuilt from what was embedded. The knowledge base's manifest records the
setting, so a knowledge base is never searched with vectors made one way and BM25 built the other.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from pathlib import PurePath

from rag.config import ChunkContext
from rag.types import Page

_SEPARATORS = re.compile(r"[\s_\-.]+")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
# A title can be a whole sentence; the header is there to name the document, and every token it
# takes is one fewer for the chunk's own words under the embedding model's limit.
MAX_CONTEXT_CHARS = 160
# A heading is the page's first lines up to about this many characters ("3M Company and
# Subsidiaries Consolidated Statement of Cash Flows" is 66), and never more than the cap.
_HEADING_CHARS = 40
MAX_HEADING_CHARS = 100
_WORD = re.compile(r"[^\W\d_]{3}", re.UNICODE)
# A line printed on at least this share of a document's pages (and on three pages or more) is
# a running header or footer, not a heading.
_RUNNING_SHARE = 0.2


def _words(text: str) -> str:
    return " ".join(part for part in _SEPARATORS.split(unicodedata.normalize("NFKC", text)) if part)


def document_context(title: str, source: str) -> str:
    """The header that names a document: its file name's words, then its title if it differs.

    A part with no letter at all (a BEIR corpus id such as ``4983``, or a PDF whose metadata
    title is an SEC accession number) is an identifier, not words a question would use, and is
    left out; a document with neither part gets an empty header. At most ``MAX_CONTEXT_CHARS``.
    """
    parts: list[str] = []
    name = _words(PurePath(source).stem)
    if _LETTER.search(name):
        parts.append(name)
    title_words = " ".join(unicodedata.normalize("NFKC", title).split())
    if _LETTER.search(title_words) and _words(title_words).casefold() != name.casefold():
        parts.append(title_words)
    return " - ".join(parts)[:MAX_CONTEXT_CHARS].strip()


def context_for(mode: ChunkContext, title: str, source: str) -> str:
    """The document's part of the header a knowledge base built with ``mode`` indexes its chunks with."""
    return document_context(title, source) if mode in ("document", "page") else ""


def running_lines(pages: Sequence[Page]) -> set[str]:
    """Lines printed on many of the pages (headers, footers, "Table of Contents"), spaces collapsed."""
    counts: Counter[str] = Counter()
    for page in pages:
        counts.update({" ".join(line.split()) for line in page.text.splitlines()})
    least = max(3, _RUNNING_SHARE * len(pages))
    return {line for line, count in counts.items() if line and count >= least}


def page_heading(text: str, running: set[str]) -> str:
    """The first lines of a page that hold a word and are not in ``running``, about 40 characters
    of them (at most ``MAX_HEADING_CHARS``); empty when the page has none."""
    lines: list[str] = []
    for raw in text.splitlines():
        line = " ".join(raw.split())
        if not line or line in running or not _WORD.search(line):
            continue
        lines.append(line)
        if sum(map(len, lines)) >= _HEADING_CHARS:
            break
    return " ".join(lines)[:MAX_HEADING_CHARS].strip()


def page_contexts(mode: ChunkContext, title: str, source: str, pages: Sequence[Page]) -> list[str]:
    """The header each of ``pages`` is indexed with: the document's, then with ``mode = "page"``
    the page's heading (pages of a file that has pages only)."""
    document = context_for(mode, title, source)
    if mode != "page" or not any(page.number is not None for page in pages):
        return [document] * len(pages)
    running = running_lines(pages)
    headers = []
    for page in pages:
        heading = page_heading(page.text, running)
        headers.append(" - ".join(part for part in (document, heading) if part))
    return headers


def indexed_text(context: str, text: str) -> str:
    """What is embedded and keyword-indexed for a chunk: the header, a blank line, the chunk."""
    return f"{context}\n\n{text}" if context else text
