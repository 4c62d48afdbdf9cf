"""The embedded knowledge base: one directory with SQLite, a FAISS index file, a BM25 folder and
``manifest.json``. The default backend; nothing to run beside the product.

Layout::

    kb/
      kb.sqlite            documents, pages, chunks, ingestion runs and per-file outcomes,
                           and the manifest of record (table ``meta``)
      index-00000042.faiss the FAISS index of generation 42 (chunk ids -> vectors)
      bm25-00000042/       the BM25 index of the same chunks
      manifest.json        a readable copy of the manifest, rewritten after every commit
      .lock                held by the one writer

Crash safety rests on one ordering. A commit (1) writes the index for generation ``g+1`` to
a new file, fsynced, beside the old one; (2) commits the SQLite transaction that holds the
new rows and sets the generation to ``g+1``; (3) deletes the old index file. A crash before
(2) leaves SQLite at ``g`` with its file intact (the orphan ``g+1`` file is removed by the
next writer); a crash after (2) leaves ``g+1`` complete. So at every instant the generation
in SQLite names an index file whose ids are exactly the chunk ids in SQLite.

Readers read the generation and the rows in one SQLite read transaction (WAL mode: the
writer never blocks them), and load that generation's file, so they see the old state or
the new one, never a mix.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rag.config import AppConfig
from rag.errors import KnowledgeBaseDamagedError, KnowledgeBaseError, KnowledgeBaseNotFoundError
from rag.faults import crash_point
from rag.files import write_text_atomic
from rag.index import FaissIndex, Vectors
from rag.kb import runs
from rag.kb import sqlite_rows as rows
from rag.kb.base import Closing, KnowledgeBaseStats, StoredDocument, scored_chunks, utc_now
from rag.kb.generations import (
    MANIFEST_NAME,
    acquire_lock,
    current_keyword_generation,
    index_file_name,
    index_missing,
    keyword_dir_name,
    read_index,
    remove_stale_files,
    write_keyword_index,
)
from rag.keyword import Bm25Index
from rag.manifest import FORMAT_VERSION, Manifest
from rag.types import Chunk, Document, Page, ScoredChunk

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """What ``EmbeddedWriter.open(repair=...)`` rebuilds besides BM25 and manifest.json.

    ``manifest`` replaces a stored manifest that does not read (or is absent while rows exist);
    ``vectors`` starts an empty FAISS index, to be refilled by ``restore_vectors``.
    """

    manifest: Manifest | None = None
    vectors: bool = False


class EmbeddedSearcher:
    """FAISS and BM25 of one committed generation, over the reader that loaded them."""

    def __init__(self, kb: EmbeddedKnowledgeBase, dense: FaissIndex, keyword: Bm25Index, generation: int) -> None:
        self._kb, self.dense_index, self.keyword_index, self.generation = kb, dense, keyword, generation

    def dense(self, query_vectors: Vectors, k: int) -> list[list[ScoredChunk]]:
        scores, ids = self.dense_index.search(query_vectors, k)
        rankings = [
            [(int(i), float(s)) for s, i in zip(row_scores, row_ids, strict=True) if i >= 0]
            for row_scores, row_ids in zip(scores, ids, strict=True)
        ]
        return scored_chunks(self._kb.chunks, rankings, "dense")

    def keyword(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        # BM25 scores one query at a time (a few milliseconds each); nothing to gain from a batch.
        return scored_chunks(self._kb.chunks, [self.keyword_index.search(query, k) for query in queries], "bm25")


class EmbeddedKnowledgeBase(Closing):
    """Read access to a knowledge base directory; safe while another process ingests into it, and
    safe to share between threads (their reads take turns on one connection)."""

    def __init__(self, directory: Path, connection: sqlite3.Connection, manifest: Manifest) -> None:
        self.directory = directory
        self._db = connection
        self.manifest = manifest
        self._lock = threading.RLock()

    @classmethod
    def open(cls, directory: Path, config: AppConfig | None = None) -> EmbeddedKnowledgeBase:
        """Open for reading. With ``config``, refuse a knowledge base built with another model."""
        if not (directory / rows.DB_NAME).is_file():
            raise KnowledgeBaseNotFoundError(
                f"no knowledge base at {directory}; create one with `rag ingest PATH --kb {directory}`"
            )
        connection = rows.connect(directory, read_only=True)
        manifest = rows.read_manifest(connection, directory)
        if manifest is None:
            connection.close()
            raise KnowledgeBaseNotFoundError(
                f"knowledge base {directory} is empty; add documents with `rag ingest PATH --kb {directory}`"
            )
        if config is not None:
            manifest.check_embedding(config.embedding, directory)
        return cls(directory, connection, manifest)

    @property
    def location(self) -> str:
        return str(self.directory)

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _snapshot(self) -> Iterator[sqlite3.Connection]:
        """One read transaction: every query inside sees the same committed state."""
        with self._lock:
            if self._db.in_transaction:  # nested in a snapshot this thread already holds
                yield self._db
                return
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def generation(self) -> int:
        """The committed generation now (it moves on with every commit of a writer)."""
        with self._snapshot() as db:
            manifest = rows.read_manifest(db, self.directory)
        return manifest.generation if manifest is not None else 0

    def document(self, document_id: str) -> Document | None:
        with self._snapshot() as db:
            return rows.select_document(db, document_id)

    def page(self, document_id: str, number: int | None) -> Page | None:
        with self._snapshot() as db:
            return rows.select_page(db, document_id, number)

    def searcher(self, config: AppConfig) -> EmbeddedSearcher:
        dense, keyword = self.load_indexes(config)
        return EmbeddedSearcher(self, dense, keyword, self.manifest.generation)

    def load_index(self, config: AppConfig) -> FaissIndex:
        """The FAISS index of the committed generation, consistent with the SQLite rows."""
        with self._indexed_snapshot(config) as (_, index):
            return index

    def load_indexes(self, config: AppConfig) -> tuple[FaissIndex, Bm25Index]:
        """The dense and keyword indexes of one committed generation.

        When the keyword index on disk is older than the generation (an ingest is running, or
        was killed, and has not reached its last commit), it is built in memory from the same
        snapshot's chunks, so both indexes always describe the same chunks.
        """
        with self._indexed_snapshot(config) as (db, index):
            manifest = self.manifest
            keyword: Bm25Index | None = None
            if manifest.keyword_generation == manifest.generation:
                folder = self.directory / keyword_dir_name(manifest.generation)
                try:
                    keyword = Bm25Index.read(folder)
                except (OSError, ValueError) as exc:
                    # Absent: a writer moved on and removed it after our snapshot began (or it was
                    # deleted: `rag check` says so). Present but unreadable: damaged.
                    keyword = None
                    if folder.is_dir():
                        logger.warning(
                            "%s does not read (%s); BM25 is built in memory until `rag check --repair --kb %s`",
                            folder,
                            exc,
                            self.directory,
                        )
            if keyword is None:
                keyword = Bm25Index.build(*rows.indexed_chunks(db, manifest))
            return index, keyword

    @contextmanager
    def _indexed_snapshot(self, config: AppConfig) -> Iterator[tuple[sqlite3.Connection, FaissIndex]]:
        """A read transaction plus the index file of the generation it sees."""
        missing = self.manifest.generation
        for _ in range(10):
            with self._snapshot() as db:
                manifest = rows.read_manifest(db, self.directory)
                assert manifest is not None
                try:
                    index = read_index(self.directory, manifest, config)
                except FileNotFoundError:
                    # A writer committed the next generation and deleted this file after our
                    # snapshot began: start a new snapshot, which will see the new generation.
                    missing = manifest.generation
                    continue
                self.manifest = manifest
                yield db, index
                return
        raise index_missing(self.directory, missing)

    def chunks(self, ids: Iterable[int]) -> dict[int, tuple[Chunk, str]]:
        wanted = [int(i) for i in ids]
        with self._snapshot() as db:
            return rows.select_chunks(db, wanted)

    def all_chunks(self) -> list[tuple[Chunk, str]]:
        with self._snapshot() as db:
            return rows.select_all_chunks(db)

    def documents(self) -> list[Document]:
        with self._snapshot() as db:
            return rows.select_documents(db)

    def stats(self) -> KnowledgeBaseStats:
        with self._snapshot() as db:
            manifest = rows.read_manifest(db, self.directory)
            assert manifest is not None
            pages, ocr_pages = rows.count_pages(db)
            last_run = runs.last_run(db)
        size = sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
        return KnowledgeBaseStats.of(
            manifest,
            pages=pages,
            ocr_pages=ocr_pages,
            size=size,
            last_run=last_run,
            index=manifest.index_structure
            if manifest.index_structure == manifest.index_kind
            else f"{manifest.index_structure} (becomes {manifest.index_kind} when large enough)",
        )

    def consistency_problems(self, config: AppConfig) -> list[str]:
        with self._indexed_snapshot(config) as (db, index):
            stored = {row[0] for row in db.execute("SELECT id FROM chunks")}
            documents, _ = rows.count_rows(db)
        indexed = {int(i) for i in index.ids()}
        problems = []
        if len(indexed) != len(index):
            problems.append("duplicate ids in the FAISS index")
        if stored - indexed:
            problems.append(f"{len(stored - indexed)} chunks have no vector")
        if indexed - stored:
            problems.append(f"{len(indexed - stored)} vectors have no chunk")
        if (self.manifest.chunks, self.manifest.documents) != (len(stored), documents):
            problems.append("manifest counts disagree with the tables")
        return problems


class EmbeddedWriter(Closing):
    """The one writer of a knowledge base directory (see the module doc for its commit)."""

    def __init__(
        self,
        directory: Path,
        connection: sqlite3.Connection,
        lock: Any,
        manifest: Manifest,
        index: FaissIndex,
    ) -> None:
        self.directory = directory
        self._db = connection
        self._lock = lock
        self.manifest = manifest
        self.built_with: Manifest | None = None
        self.index = index
        self._dirty = False
        self._index_changed = False

    @classmethod
    def open(
        cls,
        directory: Path,
        config: AppConfig,
        *,
        dimension: int,
        reindex: bool = False,
        repair: RepairPlan | None = None,
    ) -> EmbeddedWriter:
        """Open (creating if needed) for writing, holding the directory's lock.

        ``reindex`` empties chunks and vectors inside the (not yet committed) transaction, to
        be refilled with the configured model and chunking; until the caller commits, readers
        keep the old knowledge base, and a crash keeps it too.

        ``repair`` (``rag check --repair``) keeps every row and rebuilds what derives from them
        at the next commit: the manifest (from ``repair.manifest`` when the stored one does not
        read), the BM25 index, ``manifest.json``, and with ``repair.vectors`` an empty FAISS index
        for :meth:`restore_vectors` to refill. ``config`` must then describe the knowledge base
        as built (``rag.check.config_as_built``).
        """
        directory.mkdir(parents=True, exist_ok=True)
        lock = acquire_lock(directory)
        try:
            connection = rows.connect(directory, read_only=False)
            connection.executescript(rows.SCHEMA)
            rows.add_missing_columns(connection)
            try:
                stored = rows.read_manifest(connection, directory)
            except KnowledgeBaseDamagedError:
                if repair is None or repair.manifest is None:
                    raise
                stored = None
            if stored is None and repair is not None:
                # Only for a manifest that does not read: one that reads now (another repair
                # fixed it meanwhile) is the truth, and its files must not be removed.
                stored = repair.manifest
            if stored is not None and not reindex:
                stored.check_embedding(config.embedding, directory)
                stored.check_indexing(config, directory)
            if stored is not None and stored.format_version != FORMAT_VERSION:
                raise KnowledgeBaseError(
                    f"knowledge base {directory} has format {stored.format_version}; this version "
                    f"reads format {FORMAT_VERSION}. Ingest into a new directory."
                )
            generation = stored.generation if stored is not None else 0
            remove_stale_files(directory, stored)
            runs.mark_interrupted(connection)
            if stored is None or reindex or (repair is not None and repair.vectors):
                index = FaissIndex.create(dimension, config.index)
            else:
                try:
                    # A repair recounts the manifest: its counts are not the file's measure then.
                    index = read_index(directory, stored, config, counted=repair is None)
                except FileNotFoundError:
                    raise index_missing(directory, generation) from None
            manifest = Manifest.describing(
                config,
                dimension=dimension,
                index_structure=index.structure,
                generation=generation,
                keyword_generation=current_keyword_generation(directory, stored, reindex or repair is not None),
            )
            connection.execute("BEGIN IMMEDIATE")
            writer = cls(directory, connection, lock, manifest, index)
            writer.built_with = stored
            if reindex:
                connection.execute("DELETE FROM chunks")
                writer._dirty = writer._index_changed = True
            if repair is not None:
                # A new generation even when the vectors are kept: the rebuilt BM25 folder and
                # index file then go beside the ones readers use, and a killed repair leaves them.
                writer._dirty = writer._index_changed = True
            return writer
        except BaseException:
            lock.close()
            raise

    def close(self) -> None:
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.close()
        self._lock.close()

    def stored_documents(self) -> dict[str, StoredDocument]:
        return rows.select_stored_documents(self._db)

    def stored_pages(self, document_id: str) -> list[Page]:
        return rows.select_pages(self._db, document_id)

    def sources_with_empty_pages(self) -> set[str]:
        return rows.select_sources_with_empty_pages(self._db)

    def start_run(self) -> int:
        run_id = runs.start_run(self._db)
        self._dirty = True
        self.commit()
        return run_id

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        runs.finish_run(self._db, run_id, status, summary)
        self._dirty = True
        self.commit()

    def record_file(self, run_id: int, path: str, outcome: str, reason: str | None = None, chunks: int = 0) -> None:
        runs.record_file(self._db, run_id, path, outcome, reason, chunks)
        self._dirty = True

    def put_document(
        self, document: Document, pages: Sequence[Page], chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        self._delete_document(document.id)
        rows.insert_document(self._db, document, pages)
        self.put_chunks(chunks, vectors)

    def put_chunks(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        rows.insert_chunks(self._db, chunks)
        self.index.add(np.array([c.id for c in chunks], dtype=np.int64), vectors)
        self._dirty = self._index_changed = True

    def restore_vectors(
        self, embed: Callable[[list[str]], Vectors], batch: int, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Give every stored chunk its vector again, embedding the text it was indexed with (the
        same list BM25 is built from). For a writer opened with ``RepairPlan(vectors=True)``;
        returns the chunks done."""
        ids, texts = rows.indexed_chunks(self._db, self.manifest)
        for start in range(0, len(ids), batch):
            part = slice(start, start + batch)
            self.index.add(np.array(ids[part], dtype=np.int64), embed(texts[part]))
            if progress is not None:
                progress(min(start + batch, len(ids)), len(ids))
        self._dirty = self._index_changed = True
        return len(ids)

    def remove_document(self, document_id: str) -> None:
        self._delete_document(document_id)
        self._dirty = True

    def update_file_stat(self, document_id: str, size_bytes: int, mtime_ns: int) -> None:
        rows.update_file_stat(self._db, document_id, size_bytes, mtime_ns)
        self._dirty = True

    def _delete_document(self, document_id: str) -> None:
        old_ids = rows.delete_document(self._db, document_id)
        if old_ids:
            self.index.remove(np.array(old_ids, dtype=np.int64))
            self._index_changed = True

    def commit(self, *, keyword: bool = False) -> None:
        """Make everything since the last commit visible, atomically (see the module doc).

        ``keyword`` also rebuilds the BM25 index for the committed chunks: the ingestion job
        asks for it on a run's last commit only, since it costs a pass over every chunk.
        """
        generation = self.manifest.generation
        if self._index_changed or generation == 0:
            generation += 1
        rebuild_keyword = keyword and self.manifest.keyword_generation != generation
        if not (self._dirty or rebuild_keyword):
            return
        if generation != self.manifest.generation:
            self.index.write(self.directory / index_file_name(generation))
            crash_point("index-written")
        keyword_generation = self.manifest.keyword_generation
        if rebuild_keyword:
            write_keyword_index(
                self.directory, generation, Bm25Index.build(*rows.indexed_chunks(self._db, self.manifest))
            )
            keyword_generation = generation
        documents, chunks = rows.count_rows(self._db)
        manifest = self.manifest.model_copy(
            update={
                "generation": generation,
                "keyword_generation": keyword_generation,
                "documents": documents,
                "chunks": chunks,
                "index_structure": self.index.structure,
                "updated_at": utc_now(),
            }
        )
        rows.write_manifest(self._db, manifest)
        self._db.execute("COMMIT")
        crash_point("sqlite-committed")
        self.manifest = manifest
        self._dirty = self._index_changed = False
        write_text_atomic(self.directory / MANIFEST_NAME, manifest.model_dump_json(indent=2))
        crash_point("manifest-written")
        remove_stale_files(self.directory, manifest)
        self._db.execute("BEGIN IMMEDIATE")
