"""Token-aware chunking with the embedding model's own tokenizer.

Why not LangChain's ``RecursiveCharacterTextSplitter``: it measures length by re-tokenizing
every candidate piece (word by word on long paragraphs) and finds each chunk's position
afterwards by string search, and it can still emit a chunk over the limit when a piece has
no separator. Here each page is tokenized once with offsets, chunks are cut at token
boundaries, so three things hold by construction: a chunk never exceeds the model's limit,
its character span in the page is exact (``page.text[start:end] == chunk.text``), and the
cost is one tokenizer call per page.

Cut points prefer, in order: a blank line (paragraph), a line break or a sentence end, then
a space between words; never the inside of a word. Chunks never cross pages, so every chunk
has exactly one page to cite.

A chunk is embedded with its page's header before it (``rag/context.py``); the header's tokens
come off the chunk's budget, so the two together still fit the model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from rag.config import ChunkingConfig
from rag.context import indexed_text
from rag.embedder import Tokenizer
from rag.types import Chunk, Page

_SENTENCE_ENDS = (".", "!", "?", ":", ";")
_MAX_CHUNK_ID = (1 << 63) - 1


def chunk_id(document_id: str, content_hash: str, ordinal: int) -> int:
    """A stable positive int64 for a chunk: the same content gives the same id every run."""
    digest = hashlib.blake2b(f"{document_id}\0{content_hash}\0{ordinal}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & _MAX_CHUNK_ID or 1


def chunk_pages(
    document_id: str,
    content_hash: str,
    pages: Sequence[Page],
    tokenizer: Tokenizer,
    config: ChunkingConfig,
    contexts: Sequence[str] | None = None,
) -> list[Chunk]:
    """Cut a document's pages into chunks of at most ``min(chunk_tokens, model limit)`` tokens.

    ``contexts`` holds the header each page's chunks will be indexed with (``rag.context.page_contexts``;
    none: no header), kept on each chunk as ``Chunk.context``. The model's limit left for a chunk
    is what its header does not take, though never less than half of it (headers are short by
    construction; this only guards a model with a tiny limit).
    """
    headers = list(contexts) if contexts is not None else [""] * len(pages)
    if len(headers) != len(pages):
        raise ValueError(f"{len(headers)} contexts for {len(pages)} pages")
    budgets: dict[str, tuple[int, int]] = {}
    chunks: list[Chunk] = []
    for page, context in zip(pages, headers, strict=True):
        if context not in budgets:
            budgets[context] = _budget(tokenizer, config, context)
        limit, overlap = budgets[context]
        spans = tokenizer.token_spans(page.text)
        for first, last in _token_windows(page.text, spans, limit, overlap):
            start, end = spans[first][0], spans[last - 1][1]
            ordinal = len(chunks)
            chunks.append(
                Chunk(
                    id=chunk_id(document_id, content_hash, ordinal),
                    document_id=document_id,
                    ordinal=ordinal,
                    text=page.text[start:end],
                    page=page.number,
                    page_label=page.label,
                    start=start,
                    end=end,
                    token_count=last - first,
                    context=context,
                )
            )
    return chunks


def _budget(tokenizer: Tokenizer, config: ChunkingConfig, context: str) -> tuple[int, int]:
    """``(limit, overlap)`` in tokens for the chunks indexed under ``context``."""
    room = tokenizer.max_tokens
    if context:
        header_tokens = len(tokenizer.token_spans(indexed_text(context, "")))
        room = max(room - header_tokens, room // 2)
    limit = min(config.chunk_tokens, room)
    return limit, min(config.overlap_tokens, limit // 2)


def _token_windows(text: str, spans: Sequence[tuple[int, int]], limit: int, overlap: int) -> list[tuple[int, int]]:
    """Half-open token ranges ``[first, last)`` covering every token, each at most ``limit``."""
    windows: list[tuple[int, int]] = []
    count = len(spans)
    first = 0
    while first < count:
        last = min(first + limit, count)
        if last < count:
            last = _best_cut(text, spans, first + max(1, limit // 2), last)
        windows.append((first, last))
        if last >= count:
            break
        first = _next_start(text, spans, max(last - overlap, first + 1), last)
    return windows


def _boundary_strength(text: str, spans: Sequence[tuple[int, int]], cut: int) -> int:
    """How good a place it is to end a chunk before token ``cut`` (0: inside a word)."""
    gap = text[spans[cut - 1][1] : spans[cut][0]]
    if "\n\n" in gap:
        return 4
    if "\n" in gap:
        return 3
    if gap and text[spans[cut - 1][1] - 1] in _SENTENCE_ENDS:
        return 2
    return 1 if gap else 0


def _best_cut(text: str, spans: Sequence[tuple[int, int]], lowest: int, highest: int) -> int:
    """The latest strongest boundary in ``[lowest, highest]``; ``highest`` if there is none."""
    best, best_strength = highest, -1
    for cut in range(highest, lowest - 1, -1):
        strength = _boundary_strength(text, spans, cut)
        if strength > best_strength:
            best, best_strength = cut, strength
            if strength == 4:
                break
    return best if best_strength > 0 else highest


def _next_start(text: str, spans: Sequence[tuple[int, int]], lowest: int, highest: int) -> int:
    """The first token in ``[lowest, highest]`` that begins a word, so overlaps start cleanly."""
    for start in range(lowest, highest):
        if _boundary_strength(text, spans, start) > 0:
            return start
    return highest
