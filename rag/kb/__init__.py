"""The knowledge base: where documents, chunks, their vectors and the run log are kept.

Open one with :func:`open_knowledge_base` (read) or :func:`open_writer` (the one writer); the
``--kb`` location chooses the backend: a directory is the embedded knowledge base
(:mod:`rag.kb.embedded`), ``milvus://HOST:PORT/COLLECTION`` or ``milvus-lite:PATH.db`` is Milvus
(:mod:`rag.kb.milvus`). The roles they play are the Protocols of :mod:`rag.kb.base`.
"""

from __future__ import annotations

from rag.config import AppConfig, KbLocation, MilvusLocation
from rag.kb.base import (
    KnowledgeBase,
    KnowledgeBaseStats,
    KnowledgeBaseWriter,
    RunInfo,
    Searcher,
    StoredDocument,
    document_id_for,
    utc_now,
)

__all__ = [
    "KnowledgeBase",
    "KnowledgeBaseStats",
    "KnowledgeBaseWriter",
    "RunInfo",
    "Searcher",
    "StoredDocument",
    "document_id_for",
    "open_knowledge_base",
    "open_writer",
    "utc_now",
]


def open_knowledge_base(location: KbLocation, config: AppConfig | None = None) -> KnowledgeBase:
    """Open the knowledge base at ``location`` for reading. With ``config``, refuse one built with
    another embedding model or kind of vectors (:class:`rag.errors.ManifestMismatchError`).
    Raises :class:`rag.errors.KnowledgeBaseNotFoundError` when there is none yet, or it is empty."""
    if isinstance(location, MilvusLocation):
        from rag.kb.milvus import MilvusKnowledgeBase

        return MilvusKnowledgeBase.open(location, config)
    from rag.kb.embedded import EmbeddedKnowledgeBase

    return EmbeddedKnowledgeBase.open(location, config)


def open_writer(
    location: KbLocation, config: AppConfig, *, dimension: int, reindex: bool = False
) -> KnowledgeBaseWriter:
    """Open (creating if needed) the one writer of the knowledge base at ``location``.

    ``reindex`` lets a knowledge base built with another model or chunking be refilled; until
    the writer's first commit, readers keep the old one. Raises
    :class:`rag.errors.KnowledgeBaseLockedError` while another writer has it, and
    :class:`rag.errors.ManifestMismatchError` when ``config`` disagrees with how it was built.
    """
    if isinstance(location, MilvusLocation):
        from rag.kb.milvus import MilvusWriter

        return MilvusWriter.open(location, config, dimension=dimension, reindex=reindex)
    from rag.kb.embedded import EmbeddedWriter

    return EmbeddedWriter.open(location, config, dimension=dimension, reindex=reindex)
