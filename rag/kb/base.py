"""What every knowledge base answers, whichever engine stores it: the roles as Protocols, the
records they exchange, and the one id-to-chunk look-up that turns ranked ids into passages.

Two backends implement them: the embedded directory (:mod:`rag.kb.embedded`: FAISS, SQLite,
bm25s; the default) and Milvus (:mod:`rag.kb.milvus`: a server, a cluster or Milvus Lite).
Everything above the store (the ingestion jobs, the retrievers, the page, evaluation) uses
only these and :func:`rag.kb.open_knowledge_base` / :func:`rag.kb.open_writer`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, Self

from rag.config import AppConfig
from rag.index import Vectors
from rag.manifest import Manifest
from rag.records import FailedFile
from rag.types import Chunk, Document, Page, ScoredChunk, TextBox

logger = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def document_id_for(source: str) -> str:
    """A document's id: stable for its path, so an edited file keeps its id."""
    return hashlib.sha256(source.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """What the ingestion diff needs to know about a stored file."""

    id: str
    source: str
    content_hash: str
    size_bytes: int
    mtime_ns: int
    title: str


@dataclass(frozen=True, slots=True)
class RunInfo:
    id: int
    started_at: str
    finished_at: str | None
    status: str
    summary: dict[str, Any]
    failed: list[FailedFile]


@dataclass(frozen=True, slots=True)
class KnowledgeBaseStats:
    documents: int
    pages: int
    ocr_pages: int  # pages whose text OCR read
    chunks: int
    embedding_model: str
    dimension: int
    index: str
    generation: int
    bytes: int
    last_run: RunInfo | None

    @classmethod
    def of(
        cls, manifest: Manifest, *, pages: int, ocr_pages: int, size: int, last_run: RunInfo | None, index: str
    ) -> KnowledgeBaseStats:
        """The stats a manifest's counts and settings give, with what a backend counted itself."""
        return cls(
            documents=manifest.documents,
            pages=pages,
            ocr_pages=ocr_pages,
            chunks=manifest.chunks,
            embedding_model=manifest.embedding_model,
            dimension=manifest.dimension,
            index=index,
            generation=manifest.generation,
            bytes=size,
            last_run=last_run,
        )


class Closing:
    """``with`` for a knowledge base's reader or writer: leaving the block calls ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def boxes_to_json(boxes: Sequence[TextBox]) -> str | None:
    """``[[start, end, left, top, right, bottom], ...]``, or None for a page with no boxes."""
    if not boxes:
        return None
    return json.dumps([[b.start, b.end, b.left, b.top, b.right, b.bottom] for b in boxes], separators=(",", ":"))


def boxes_from_json(value: str | None) -> tuple[TextBox, ...]:
    """The boxes :func:`boxes_to_json` wrote; none (with a warning) for a value that does not read."""
    if not value:
        return ()
    try:
        return tuple(
            TextBox(int(a), int(b), float(c), float(d), float(e), float(f)) for a, b, c, d, e, f in json.loads(value)
        )
    except (ValueError, TypeError):
        logger.warning("a page's OCR boxes do not read; its picture is shown without marks")
        return ()


ChunkLookup = Callable[[Iterable[int]], Mapping[int, tuple[Chunk, str]]]


def scored_chunks(
    lookup: ChunkLookup, rankings: Sequence[Sequence[tuple[int, float]]], retriever: str
) -> list[list[ScoredChunk]]:
    """Rankings of ``(chunk id, score)`` as passages, one look-up for all of them. An id the
    look-up no longer knows (deleted since the index was read) is left out."""
    found = lookup({chunk_id for ranking in rankings for chunk_id, _ in ranking})
    return [
        [
            ScoredChunk(chunk=found[i][0], source=found[i][1], score=score, retrievers=(retriever,))
            for i, score in ranking
            if i in found
        ]
        for ranking in rankings
    ]


class Searcher(Protocol):
    """Search over one consistent state of a knowledge base (the embedded one: one generation)."""

    generation: int

    def dense(self, query_vectors: Vectors, k: int) -> list[list[ScoredChunk]]:
        """The ``k`` nearest chunks of each (normalised) query vector, best first."""
        ...

    def keyword(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        """The ``k`` best BM25 matches of each query, best first."""
        ...


class KnowledgeBase(Protocol):
    """Read access; safe while a writer ingests, and safe to share between threads."""

    manifest: Manifest

    @property
    def location(self) -> str:
        """Where it is, as ``--kb`` takes it (for messages)."""
        ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *_: object) -> None: ...

    def generation(self) -> int:
        """A number that changes whenever a writer commits (a page reloads its searcher then)."""
        ...

    def document(self, document_id: str) -> Document | None: ...

    def page(self, document_id: str, number: int | None) -> Page | None:
        """The stored text of one page (``None`` is the single page of a file without pages)."""
        ...

    def chunks(self, ids: Iterable[int]) -> dict[int, tuple[Chunk, str]]:
        """Chunks by id with their source path; ids deleted meanwhile are absent."""
        ...

    def all_chunks(self) -> list[tuple[Chunk, str]]:
        """Every chunk with its source path, in source and position order."""
        ...

    def documents(self) -> list[Document]:
        """Every document, by source path."""
        ...

    def searcher(self, config: AppConfig) -> Searcher:
        """Dense and keyword search over the state committed now. Raises
        :class:`rag.errors.KnowledgeBaseDamagedError` when an index cannot be read."""
        ...

    def stats(self) -> KnowledgeBaseStats: ...

    def consistency_problems(self, config: AppConfig) -> list[str]:
        """What disagrees between the stored chunks and their vectors (empty: one to one)."""
        ...


class KnowledgeBaseWriter(Protocol):
    """The one writer. Changes become visible at :meth:`commit`; leaving without it (or a crash)
    keeps the last committed state. ``manifest`` is what the next commit records;
    ``built_with`` the stored one before this writer opened (None: a new knowledge base)."""

    manifest: Manifest
    built_with: Manifest | None

    def close(self) -> None:
        """Discard uncommitted work and let another writer in."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(self, *_: object) -> None: ...

    def stored_documents(self) -> dict[str, StoredDocument]:
        """Every stored document by source path."""
        ...

    def stored_pages(self, document_id: str) -> list[Page]: ...

    def sources_with_empty_pages(self) -> set[str]:
        """The source paths of stored documents with a numbered page stored without text."""
        ...

    def start_run(self) -> int:
        """Record a new run (committed at once); it shows as ``running`` until :meth:`finish_run`."""
        ...

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None: ...

    def record_file(self, run_id: int, path: str, outcome: str, reason: str | None = None, chunks: int = 0) -> None:
        """Note one file's outcome in this run; it lands with the next commit."""
        ...

    def put_document(
        self, document: Document, pages: Sequence[Page], chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        """Insert a document, or replace every page, chunk and vector of a stored one."""
        ...

    def put_chunks(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        """Add chunks of stored documents with their vectors (re-indexing)."""
        ...

    def remove_document(self, document_id: str) -> None: ...

    def update_file_stat(self, document_id: str, size_bytes: int, mtime_ns: int) -> None:
        """Remember a new size and mtime for a file whose content is unchanged."""
        ...

    def commit(self, *, keyword: bool = False) -> None:
        """Make everything since the last commit visible; ``keyword`` also brings keyword search
        up to date where it is built separately (a run's last commit)."""
        ...
