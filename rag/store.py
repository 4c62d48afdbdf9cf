"""A knowledge base is one directory: SQLite, a FAISS index file and ``manifest.json``.

Layout::

    kb/
      kb.sqlite            documents, pages, chunks, ingestion runs and per-file outcomes,
                           and the manifest of record (table ``meta``)
      index-00000042.faiss the FAISS index of generation 42 (chunk ids -> vectors)
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

import fcntl
import hashlib
import json
import logging
import shutil
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError

from rag.config import AppConfig
from rag.context import context_for, indexed_text
from rag.errors import (
    KnowledgeBaseDamagedError,
    KnowledgeBaseError,
    KnowledgeBaseLockedError,
    KnowledgeBaseNotFoundError,
)
from rag.faults import crash_point
from rag.files import write_text_atomic
from rag.index import FaissIndex, Vectors
from rag.keyword import Bm25Index
from rag.manifest import FORMAT_VERSION, Manifest
from rag.records import FailedFile
from rag.types import Chunk, Document, Page, ScoredChunk, TextBox

logger = logging.getLogger(__name__)

DB_NAME = "kb.sqlite"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
INDEX_GLOB = "index-*.faiss"
KEYWORD_GLOB = "bm25-*"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    content_hash TEXT NOT NULL,
    mime_type TEXT NOT NULL,
    title TEXT NOT NULL,
    page_count INTEGER NOT NULL,
    size_bytes INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS pages (
    document_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    number INTEGER,
    label TEXT,
    text TEXT NOT NULL,
    ocr_engine TEXT,
    ocr_boxes TEXT,
    PRIMARY KEY (document_id, ordinal)
);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    document_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    page INTEGER,
    page_label TEXT,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    token_count INTEGER NOT NULL,
    text TEXT NOT NULL,
    context TEXT
);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks (document_id);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    status TEXT NOT NULL,
    summary TEXT
);
CREATE TABLE IF NOT EXISTS run_files (
    run_id INTEGER NOT NULL,
    path TEXT NOT NULL,
    outcome TEXT NOT NULL,
    reason TEXT,
    chunks INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, path)
);
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def index_file_name(generation: int) -> str:
    return f"index-{generation:08d}.faiss"


def keyword_dir_name(generation: int) -> str:
    return f"bm25-{generation:08d}"


def document_id_for(source: str) -> str:
    """A document's id: stable for its path, so an edited file keeps its id."""
    return hashlib.sha256(source.encode()).hexdigest()[:20]


@dataclass(frozen=True, slots=True)
class RepairPlan:
    """What ``KnowledgeBaseWriter.open(repair=...)`` rebuilds besides BM25 and manifest.json.

    ``manifest`` replaces a stored manifest that does not read (or is absent while rows exist);
    ``vectors`` starts an empty FAISS index, to be refilled by ``restore_vectors``.
    """

    manifest: Manifest | None = None
    vectors: bool = False


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


def _connect(directory: Path, *, read_only: bool) -> sqlite3.Connection:
    path = directory / DB_NAME
    if read_only:
        # One reader may serve several threads (the web page's sessions); KnowledgeBase
        # serialises its use with a lock, so SQLite's same-thread check is not needed.
        connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None, check_same_thread=False)
    else:
        connection = sqlite3.connect(path, isolation_level=None)
        connection.execute("PRAGMA journal_mode=WAL")
        # NORMAL is durable against a killed process in WAL mode; only a power cut can lose
        # the last commit, which leaves the previous generation intact.
        connection.execute("PRAGMA synchronous=NORMAL")
    connection.execute("PRAGMA busy_timeout=10000")
    return connection


def read_manifest(connection: sqlite3.Connection, directory: Path) -> Manifest | None:
    """The manifest of record (None: nothing committed yet). Raises KnowledgeBaseDamagedError
    naming the bad fields when the row does not validate."""
    try:
        row = connection.execute("SELECT value FROM meta WHERE key = 'manifest'").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" not in str(exc):
            raise
        return None  # a first ingest has made the file but not yet its tables: nothing committed
    if row is None:
        return None
    try:
        return Manifest.model_validate_json(row[0])
    except ValidationError as exc:
        fields = sorted({".".join(str(part) for part in error["loc"]) or "the whole row" for error in exc.errors()})
        raise KnowledgeBaseDamagedError(
            directory, f"its manifest in {DB_NAME} does not read ({', '.join(fields)})"
        ) from None


def read_index(directory: Path, manifest: Manifest, config: AppConfig, *, counted: bool = True) -> FaissIndex:
    """The FAISS index of ``manifest``'s generation, checked against it: the file must read and
    hold one vector per chunk of the given dimension (``counted=False``: any number, for a repair
    that recounts the manifest). Raises FileNotFoundError when the file is absent (a writer may
    have moved on), KnowledgeBaseDamagedError when it is wrong."""
    path = directory / index_file_name(manifest.generation)
    if not path.is_file():
        raise FileNotFoundError(path)
    try:
        index = FaissIndex.read(path, config.index)
    except RuntimeError:
        if not path.is_file():  # a writer moved on and removed it while it was being read
            raise FileNotFoundError(path) from None
        raise KnowledgeBaseDamagedError(directory, f"{path.name} does not read as a FAISS index") from None
    if (len(index) if counted else manifest.chunks, index.dimension) != (manifest.chunks, manifest.dimension):
        raise KnowledgeBaseDamagedError(
            directory,
            f"{path.name} holds {len(index)} vectors of {index.dimension} dimensions, "
            f"but the knowledge base has {manifest.chunks} chunks of {manifest.dimension}",
        )
    return index


def _index_missing(directory: Path, generation: int) -> KnowledgeBaseDamagedError:
    return KnowledgeBaseDamagedError(directory, f"{index_file_name(generation)}, its current index, is missing")


def database_damaged(directory: Path | str, exc: sqlite3.DatabaseError) -> KnowledgeBaseDamagedError:
    """The error for damage inside ``kb.sqlite`` that a query met (a torn or overwritten page)."""
    return KnowledgeBaseDamagedError(directory, f"{DB_NAME}: {exc}")


def _row_to_chunk(row: Sequence[Any]) -> Chunk:
    return Chunk(
        id=row[0],
        document_id=row[1],
        ordinal=row[2],
        page=row[3],
        page_label=row[4],
        start=row[5],
        end=row[6],
        token_count=row[7],
        text=row[8],
    )


def _has_ocr_columns(db: sqlite3.Connection) -> bool:
    """Whether the pages table has its OCR columns: a knowledge base written before OCR has them
    only once its next writer adds them (a reader cannot), and its pages read as not OCR's."""
    return "ocr_boxes" in {row[1] for row in db.execute("PRAGMA table_info(pages)")}


def _page_columns(db: sqlite3.Connection) -> str:
    """The columns of a page row, as :func:`_row_to_page` reads them."""
    return "number, text, label, " + ("ocr_engine, ocr_boxes" if _has_ocr_columns(db) else "NULL, NULL")


def _row_to_page(row: Sequence[Any]) -> Page:
    return Page(number=row[0], text=row[1], label=row[2], ocr_engine=row[3], boxes=_boxes_from_json(row[4]))


def _boxes_to_json(boxes: Sequence[TextBox]) -> str | None:
    """``[[start, end, left, top, right, bottom], ...]``, or None for a page with no boxes."""
    if not boxes:
        return None
    return json.dumps([[b.start, b.end, b.left, b.top, b.right, b.bottom] for b in boxes], separators=(",", ":"))


def _boxes_from_json(value: str | None) -> tuple[TextBox, ...]:
    if not value:
        return ()
    try:
        return tuple(
            TextBox(int(a), int(b), float(c), float(d), float(e), float(f)) for a, b, c, d, e, f in json.loads(value)
        )
    except (ValueError, TypeError):
        logger.warning("a page's OCR boxes do not read; its picture is shown without marks")
        return ()


_DOCUMENT_COLUMNS = "id, source, content_hash, mime_type, title, page_count, size_bytes, mtime_ns, ingested_at"
_CHUNK_COLUMNS = "c.id, c.document_id, c.ordinal, c.page, c.page_label, c.start, c.end, c.token_count, c.text"


class KnowledgeBase:
    """Read access to a knowledge base; safe while another process ingests into it, and safe to
    share between threads (their reads take turns on one connection)."""

    def __init__(self, directory: Path, connection: sqlite3.Connection, manifest: Manifest) -> None:
        self.directory = directory
        self._db = connection
        self.manifest = manifest
        self._lock = threading.RLock()

    @classmethod
    def open(cls, directory: Path, config: AppConfig | None = None) -> KnowledgeBase:
        """Open for reading. With ``config``, refuse a knowledge base built with another model."""
        if not (directory / DB_NAME).is_file():
            raise KnowledgeBaseNotFoundError(
                f"no knowledge base at {directory}; create one with `rag ingest PATH --kb {directory}`"
            )
        connection = _connect(directory, read_only=True)
        manifest = read_manifest(connection, directory)
        if manifest is None:
            connection.close()
            raise KnowledgeBaseNotFoundError(
                f"knowledge base {directory} is empty; add documents with `rag ingest PATH --kb {directory}`"
            )
        if config is not None:
            manifest.check_embedding(config.embedding, directory)
        return cls(directory, connection, manifest)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> KnowledgeBase:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

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
            manifest = read_manifest(db, self.directory)
        return manifest.generation if manifest is not None else 0

    def document(self, document_id: str) -> Document | None:
        with self._snapshot() as db:
            row = db.execute(f"SELECT {_DOCUMENT_COLUMNS} FROM documents WHERE id = ?", (document_id,)).fetchone()
        return Document(*row) if row is not None else None

    def page(self, document_id: str, number: int | None) -> Page | None:
        """The stored text of one page (``None`` is the single page of a file without pages)."""
        with self._snapshot() as db:
            row = db.execute(
                f"SELECT {_page_columns(db)} FROM pages WHERE document_id = ? AND number IS ?", (document_id, number)
            ).fetchone()
        return _row_to_page(row) if row is not None else None

    def load_index(self, config: AppConfig) -> FaissIndex:
        """The index of the committed generation, consistent with the SQLite rows."""
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
                keyword = _build_keyword_index(db, manifest)
            return index, keyword

    @contextmanager
    def _indexed_snapshot(self, config: AppConfig) -> Iterator[tuple[sqlite3.Connection, FaissIndex]]:
        """A read transaction plus the index file of the generation it sees."""
        missing = self.manifest.generation
        for _ in range(10):
            with self._snapshot() as db:
                manifest = read_manifest(db, self.directory)
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
        raise _index_missing(self.directory, missing)

    def chunks(self, ids: Iterable[int]) -> dict[int, tuple[Chunk, str]]:
        """Chunks by id with their source path; ids deleted since the index was read are absent."""
        wanted = [int(i) for i in ids]
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        with self._snapshot() as db:
            rows = db.execute(
                f"SELECT {_CHUNK_COLUMNS}, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
                f"WHERE c.id IN ({marks})",
                wanted,
            ).fetchall()
        return {row[0]: (_row_to_chunk(row), row[9]) for row in rows}

    def all_chunks(self) -> list[tuple[Chunk, str]]:
        """Every chunk with its source path, in document and position order."""
        with self._snapshot() as db:
            rows = db.execute(
                f"SELECT {_CHUNK_COLUMNS}, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
                "ORDER BY d.source, c.ordinal"
            ).fetchall()
        return [(_row_to_chunk(row), row[9]) for row in rows]

    def documents(self) -> list[Document]:
        with self._snapshot() as db:
            rows = db.execute(f"SELECT {_DOCUMENT_COLUMNS} FROM documents ORDER BY source").fetchall()
        return [Document(*row) for row in rows]

    def search(self, index: FaissIndex, query_vectors: Vectors, k: int) -> list[list[ScoredChunk]]:
        """Dense top-``k`` per query vector, best first, as chunks with their sources."""
        scores, ids = index.search(query_vectors, k)
        found = self.chunks(int(i) for i in np.unique(ids) if i >= 0)
        results: list[list[ScoredChunk]] = []
        for row_scores, row_ids in zip(scores, ids, strict=True):
            hits = [
                ScoredChunk(chunk=found[int(i)][0], source=found[int(i)][1], score=float(s), retrievers=("dense",))
                for s, i in zip(row_scores, row_ids, strict=True)
                if int(i) in found
            ]
            results.append(hits)
        return results

    def stats(self) -> KnowledgeBaseStats:
        with self._snapshot() as db:
            manifest = read_manifest(db, self.directory)
            assert manifest is not None
            pages = db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
            ocr_pages = 0
            if _has_ocr_columns(db):
                ocr_pages = db.execute("SELECT COUNT(*) FROM pages WHERE ocr_engine IS NOT NULL").fetchone()[0]
            last_run = _last_run(db)
        size = sum(p.stat().st_size for p in self.directory.iterdir() if p.is_file())
        return KnowledgeBaseStats(
            documents=manifest.documents,
            pages=pages,
            ocr_pages=ocr_pages,
            chunks=manifest.chunks,
            embedding_model=manifest.embedding_model,
            dimension=manifest.dimension,
            index=manifest.index_structure
            if manifest.index_structure == manifest.index_kind
            else f"{manifest.index_structure} (becomes {manifest.index_kind} when large enough)",
            generation=manifest.generation,
            bytes=size,
            last_run=last_run,
        )

    def consistency_problems(self, config: AppConfig) -> list[str]:
        """What disagrees between SQLite and FAISS (empty when the two agree one to one)."""
        with self._indexed_snapshot(config) as (db, index):
            stored = {row[0] for row in db.execute("SELECT id FROM chunks")}
            documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
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


def _last_run(db: sqlite3.Connection) -> RunInfo | None:
    row = db.execute(
        "SELECT id, started_at, finished_at, status, summary FROM runs ORDER BY id DESC LIMIT 1"
    ).fetchone()
    if row is None:
        return None
    failed = [
        FailedFile(path=path, reason=reason)
        for path, reason in db.execute(
            "SELECT path, reason FROM run_files WHERE run_id = ? AND outcome = 'failed' ORDER BY path",
            (row[0],),
        )
    ]
    return RunInfo(
        id=row[0],
        started_at=row[1],
        finished_at=row[2],
        status=row[3],
        summary=json.loads(row[4]) if row[4] else {},
        failed=failed,
    )


class KnowledgeBaseWriter:
    """The one writer of a knowledge base. Changes become visible, all at once, at :meth:`commit`.

    Use as a context manager: leaving it without :meth:`commit` discards uncommitted work and
    keeps the last committed state, which is what a crash does too.
    """

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
        # The manifest as it was before this writer opened (None: a new knowledge base).
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
    ) -> KnowledgeBaseWriter:
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
        lock = _acquire_lock(directory)
        try:
            connection = _connect(directory, read_only=False)
            connection.executescript(_SCHEMA)
            _add_missing_columns(connection)
            try:
                stored = read_manifest(connection, directory)
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
            _remove_stale_files(directory, stored)
            connection.execute("UPDATE runs SET status = 'interrupted' WHERE status = 'running'")
            if stored is None or reindex or (repair is not None and repair.vectors):
                index = FaissIndex.create(dimension, config.index)
            else:
                try:
                    # A repair recounts the manifest: its counts are not the file's measure then.
                    index = read_index(directory, stored, config, counted=repair is None)
                except FileNotFoundError:
                    raise _index_missing(directory, generation) from None
            manifest = Manifest(
                format_version=FORMAT_VERSION,
                embedding_model=config.embedding.model,
                embedding_backend=config.embedding.backend,
                embedding_quantization=config.embedding.quantization,
                dimension=dimension,
                chunk_tokens=config.chunking.chunk_tokens,
                overlap_tokens=config.chunking.overlap_tokens,
                chunk_context=config.chunking.context,
                pdf_text=config.ingest.pdf_text,
                index_kind=config.index.kind,
                index_structure=index.structure,
                generation=generation,
                keyword_generation=_current_keyword_generation(directory, stored, reindex or repair is not None),
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

    def __enter__(self) -> KnowledgeBaseWriter:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Discard uncommitted work and release the lock."""
        if self._db.in_transaction:
            self._db.execute("ROLLBACK")
        self._db.close()
        self._lock.close()

    def stored_documents(self) -> dict[str, StoredDocument]:
        """Every stored document by source path."""
        columns = "id, source, content_hash, size_bytes, mtime_ns, title"
        rows = self._db.execute(f"SELECT {columns} FROM documents").fetchall()
        return {row[1]: StoredDocument(*row) for row in rows}

    def stored_pages(self, document_id: str) -> list[Page]:
        rows = self._db.execute(
            f"SELECT {_page_columns(self._db)} FROM pages WHERE document_id = ? ORDER BY ordinal", (document_id,)
        ).fetchall()
        return [_row_to_page(row) for row in rows]

    def sources_with_empty_pages(self) -> set[str]:
        """The source paths of stored documents with a numbered page stored without text."""
        rows = self._db.execute(
            "SELECT DISTINCT d.source FROM pages p JOIN documents d ON d.id = p.document_id "
            "WHERE p.number IS NOT NULL AND trim(p.text, ' ' || char(9, 10, 12, 13)) = ''"
        ).fetchall()
        return {row[0] for row in rows}

    def start_run(self) -> int:
        """Record a new run; it shows as ``running`` to readers until :meth:`finish_run`."""
        cursor = self._db.execute("INSERT INTO runs (started_at, status) VALUES (?, 'running')", (utc_now(),))
        run_id = int(cursor.lastrowid or 0)
        self._dirty = True
        self.commit()
        return run_id

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        self._db.execute(
            "UPDATE runs SET finished_at = ?, status = ?, summary = ? WHERE id = ?",
            (utc_now(), status, json.dumps(summary), run_id),
        )
        self._dirty = True
        self.commit()

    def record_file(self, run_id: int, path: str, outcome: str, reason: str | None = None, chunks: int = 0) -> None:
        """Note one file's outcome in this run; it lands with the next commit."""
        self._db.execute(
            "INSERT OR REPLACE INTO run_files (run_id, path, outcome, reason, chunks) VALUES (?, ?, ?, ?, ?)",
            (run_id, path, outcome, reason, chunks),
        )
        self._dirty = True

    def put_document(
        self, document: Document, pages: Sequence[Page], chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        """Insert a document, or replace every page, chunk and vector of a stored one."""
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        self._delete_document_rows(document.id)
        self._db.execute(
            "INSERT INTO documents (id, source, content_hash, mime_type, title, page_count, size_bytes, "
            "mtime_ns, ingested_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                document.id,
                document.source,
                document.content_hash,
                document.mime_type,
                document.title,
                document.page_count,
                document.size_bytes,
                document.mtime_ns,
                document.ingested_at,
            ),
        )
        self._db.executemany(
            "INSERT INTO pages (document_id, ordinal, number, label, text, ocr_engine, ocr_boxes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            [
                (document.id, i, p.number, p.label, p.text, p.ocr_engine, _boxes_to_json(p.boxes))
                for i, p in enumerate(pages)
            ],
        )
        self.put_chunks(chunks, vectors)

    def put_chunks(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        """Add chunks of stored documents with their vectors (used as is by re-indexing)."""
        self._db.executemany(
            "INSERT INTO chunks (id, document_id, ordinal, page, page_label, start, end, token_count, text, context) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (c.id, c.document_id, c.ordinal, c.page, c.page_label, c.start, c.end, c.token_count, c.text, c.context)
                for c in chunks
            ],
        )
        self.index.add(np.array([c.id for c in chunks], dtype=np.int64), vectors)
        self._dirty = self._index_changed = True

    def restore_vectors(
        self, embed: Callable[[list[str]], Vectors], batch: int, progress: Callable[[int, int], None] | None = None
    ) -> int:
        """Give every stored chunk its vector again, embedding the text it was indexed with (the
        same list BM25 is built from). For a writer opened with ``RepairPlan(vectors=True)``;
        returns the chunks done."""
        ids, texts = _indexed_chunks(self._db, self.manifest)
        for start in range(0, len(ids), batch):
            part = slice(start, start + batch)
            self.index.add(np.array(ids[part], dtype=np.int64), embed(texts[part]))
            if progress is not None:
                progress(min(start + batch, len(ids)), len(ids))
        self._dirty = self._index_changed = True
        return len(ids)

    def remove_document(self, document_id: str) -> None:
        self._delete_document_rows(document_id)
        self._db.execute("DELETE FROM documents WHERE id = ?", (document_id,))
        self._dirty = True

    def update_file_stat(self, document_id: str, size_bytes: int, mtime_ns: int) -> None:
        """Remember a new size/mtime for a file whose content is unchanged (skips re-hashing)."""
        self._db.execute(
            "UPDATE documents SET size_bytes = ?, mtime_ns = ? WHERE id = ?", (size_bytes, mtime_ns, document_id)
        )
        self._dirty = True

    def _delete_document_rows(self, document_id: str) -> None:
        old_ids = [row[0] for row in self._db.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
        if old_ids:
            self.index.remove(np.array(old_ids, dtype=np.int64))
            self._index_changed = True
        self._db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
        self._db.execute("DELETE FROM pages WHERE document_id = ?", (document_id,))
        self._db.execute("DELETE FROM documents WHERE id = ?", (document_id,))

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
            self._write_keyword_index(generation)
            keyword_generation = generation
        documents = self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
        chunks = self._db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
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
        self._db.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('manifest', ?)", (manifest.model_dump_json(),)
        )
        self._db.execute("COMMIT")
        crash_point("sqlite-committed")
        self.manifest = manifest
        self._dirty = self._index_changed = False
        write_text_atomic(self.directory / MANIFEST_NAME, manifest.model_dump_json(indent=2))
        crash_point("manifest-written")
        _remove_stale_files(self.directory, manifest)
        self._db.execute("BEGIN IMMEDIATE")

    def _write_keyword_index(self, generation: int) -> None:
        target = self.directory / keyword_dir_name(generation)
        temporary = target.with_name(target.name + ".tmp")
        for stale in (temporary, target):
            shutil.rmtree(stale, ignore_errors=True)
        _build_keyword_index(self._db, self.manifest).write(temporary)
        crash_point("keyword-written")
        temporary.rename(target)
        crash_point("keyword-renamed")


def _current_keyword_generation(directory: Path, stored: Manifest | None, reindex: bool) -> int:
    """The stored keyword generation, or -1 (rebuild it at the run's end) for a new or re-indexed
    knowledge base, or one whose BM25 index was written with an earlier tokenization."""
    if stored is None or reindex:
        return -1
    if not Bm25Index.is_current(directory / keyword_dir_name(stored.keyword_generation)):
        return -1
    return stored.keyword_generation


def _add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a knowledge base written by an earlier version up to this schema (columns only added)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
    if "context" not in columns:  # before page headers: the header was the document's, not stored
        db.execute("ALTER TABLE chunks ADD COLUMN context TEXT")
    columns = {row[1] for row in db.execute("PRAGMA table_info(pages)")}
    for column in ("ocr_engine", "ocr_boxes"):  # before OCR: every page's text was its file's own
        if column not in columns:
            db.execute(f"ALTER TABLE pages ADD COLUMN {column} TEXT")


def _indexed_chunks(db: sqlite3.Connection, manifest: Manifest) -> tuple[list[int], list[str]]:
    """Every chunk row's id and the text it was indexed with (embedded and BM25-indexed): its
    stored header before its text. Both indexes are built from this one list, so they always
    name the same chunks."""
    # Chunks stored before headers were kept per chunk (context NULL) were embedded with their
    # document's header, when the manifest says so: one per document, not per chunk. A chunk
    # whose document row is gone (damage) keeps its text with no header.
    headers = {
        document_id: context_for(manifest.chunk_context, title, source)
        for document_id, title, source in db.execute("SELECT id, title, source FROM documents")
    }
    rows = db.execute("SELECT id, document_id, text, context FROM chunks ORDER BY id").fetchall()
    texts = [
        indexed_text(headers.get(document_id, "") if context is None else context, text)
        for _, document_id, text, context in rows
    ]
    return [row[0] for row in rows], texts


def _build_keyword_index(db: sqlite3.Connection, manifest: Manifest) -> Bm25Index:
    """BM25 over every chunk as it was embedded: with the header it was embedded with."""
    return Bm25Index.build(*_indexed_chunks(db, manifest))


def _acquire_lock(directory: Path) -> Any:
    handle = open(directory / LOCK_NAME, "a+")  # noqa: SIM115 - held for the writer's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise KnowledgeBaseLockedError(
            f"knowledge base {directory} is in use by another process (an ingest, an upload or `rag check`); "
            "wait for it to finish"
        ) from None
    return handle


def _remove_stale_files(directory: Path, manifest: Manifest | None) -> None:
    """Delete index files and keyword folders that the committed manifest does not name."""
    keep = set()
    if manifest is not None:
        keep = {index_file_name(manifest.generation), keyword_dir_name(manifest.keyword_generation)}
    for path in [*directory.glob(INDEX_GLOB + "*"), *directory.glob(KEYWORD_GLOB)]:
        if path.name in keep:
            continue
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
