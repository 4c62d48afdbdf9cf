"""What a chunk is indexed with besides its own words: the name of the document it comes from.

A passage cut from page 38 of a 10-K says "Total net sales increased 31%" and nowhere says
whose sales or which year; the question says "Amazon's FY2017 net sales". Anthropic's
"contextual retrieval" and LlamaIndex's document metadata in the embedded text both answer this
by indexing each chunk together with what identifies its document. Here that is the file name's
words ("AMAZON 2017 10K") and the document's title when it says something else, put before the
chunk's text in what is embedded and what BM25 counts.

Only the indexed text changes: ``Chunk.text`` stays the exact words of the page, which is what
the prompt quotes and a citation highlights. The knowledge base's manifest records the setting,
so a knowledge base is never searched with vectors made one way and BM25 built the other.
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import PurePath

from rag.config import ChunkContext

_SEPARATORS = re.compile(r"[\s_\-.]+")
_LETTER = re.compile(r"[^\W\d_]", re.UNICODE)
# A title can be a whole sentence; the header is there to name the document, and every token it
# takes is one fewer for the chunk's own words under the embedding model's limit.
MAX_CONTEXT_CHARS = 160


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
    """The header a knowledge base built with ``mode`` indexes a document's chunks with."""
    return document_context(title, source) if mode == "document" else ""


def indexed_text(context: str, text: str) -> str:
    """What is embedded and keyword-indexed for a chunk: the header, a blank line, the chunk."""
    return f"{context}\n\n{text}" if context else text
