"""The embedded knowledge base's SQLite repository: its schema, its rows as records, and the
queries its reader and writer share. Nothing here knows about index files or generations
(:mod:`rag.kb.generations`) or the run log (:mod:`rag.kb.runs`)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from rag.context import context_for, indexed_text
from rag.errors import KnowledgeBaseDamagedError
from rag.kb.base import StoredDocument, boxes_from_json, boxes_to_json
from rag.manifest import Manifest
from rag.types import Chunk, Document, Page

logger = logging.getLogger(__name__)

DB_NAME = "kb.sqlite"


SCHEMA = """
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


DOCUMENT_COLUMNS = "id, source, content_hash, mime_type, title, page_count, size_bytes, mtime_ns, ingested_at"


CHUNK_COLUMNS = "c.id, c.document_id, c.ordinal, c.page, c.page_label, c.start, c.end, c.token_count, c.text"


def connect(directory: Path, *, read_only: bool) -> sqlite3.Connection:
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


def database_damaged(directory: Path | str, exc: sqlite3.DatabaseError) -> KnowledgeBaseDamagedError:
    """The error for damage inside ``kb.sqlite`` that a query met (a torn or overwritten page)."""
    return KnowledgeBaseDamagedError(directory, f"{DB_NAME}: {exc}")


def add_missing_columns(db: sqlite3.Connection) -> None:
    """Bring a knowledge base written by an earlier version up to this schema (columns only added)."""
    columns = {row[1] for row in db.execute("PRAGMA table_info(chunks)")}
    if "context" not in columns:  # before page headers: the header was the document's, not stored
        db.execute("ALTER TABLE chunks ADD COLUMN context TEXT")
    columns = {row[1] for row in db.execute("PRAGMA table_info(pages)")}
    for column in ("ocr_engine", "ocr_boxes"):  # before OCR: every page's text was its file's own
        if column not in columns:
            db.execute(f"ALTER TABLE pages ADD COLUMN {column} TEXT")


def row_to_chunk(row: Sequence[Any]) -> Chunk:
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


def has_ocr_columns(db: sqlite3.Connection) -> bool:
    """Whether the pages table has its OCR columns: a knowledge base written before OCR has them
    only once its next writer adds them (a reader cannot), and its pages read as not OCR's."""
    return "ocr_boxes" in {row[1] for row in db.execute("PRAGMA table_info(pages)")}


def page_columns(db: sqlite3.Connection) -> str:
    """The columns of a page row, as :func:`row_to_page` reads them."""
    return "number, text, label, " + ("ocr_engine, ocr_boxes" if has_ocr_columns(db) else "NULL, NULL")


def row_to_page(row: Sequence[Any]) -> Page:
    return Page(number=row[0], text=row[1], label=row[2], ocr_engine=row[3], boxes=boxes_from_json(row[4]))


def indexed_chunks(db: sqlite3.Connection, manifest: Manifest) -> tuple[list[int], list[str]]:
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


def select_document(db: sqlite3.Connection, document_id: str) -> Document | None:
    row = db.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE id = ?", (document_id,)).fetchone()
    return Document(*row) if row is not None else None


def select_documents(db: sqlite3.Connection) -> list[Document]:
    rows = db.execute(f"SELECT {DOCUMENT_COLUMNS} FROM documents ORDER BY source").fetchall()
    return [Document(*row) for row in rows]


def select_page(db: sqlite3.Connection, document_id: str, number: int | None) -> Page | None:
    row = db.execute(
        f"SELECT {page_columns(db)} FROM pages WHERE document_id = ? AND number IS ?", (document_id, number)
    ).fetchone()
    return row_to_page(row) if row is not None else None


def select_pages(db: sqlite3.Connection, document_id: str) -> list[Page]:
    rows = db.execute(
        f"SELECT {page_columns(db)} FROM pages WHERE document_id = ? ORDER BY ordinal", (document_id,)
    ).fetchall()
    return [row_to_page(row) for row in rows]


def select_chunks(db: sqlite3.Connection, ids: Sequence[int]) -> dict[int, tuple[Chunk, str]]:
    if not ids:
        return {}
    marks = ",".join("?" * len(ids))
    rows = db.execute(
        f"SELECT {CHUNK_COLUMNS}, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
        f"WHERE c.id IN ({marks})",
        list(ids),
    ).fetchall()
    return {row[0]: (row_to_chunk(row), row[9]) for row in rows}


def select_all_chunks(db: sqlite3.Connection) -> list[tuple[Chunk, str]]:
    rows = db.execute(
        f"SELECT {CHUNK_COLUMNS}, d.source FROM chunks c JOIN documents d ON d.id = c.document_id "
        "ORDER BY d.source, c.ordinal"
    ).fetchall()
    return [(row_to_chunk(row), row[9]) for row in rows]


def select_stored_documents(db: sqlite3.Connection) -> dict[str, StoredDocument]:
    columns = "id, source, content_hash, size_bytes, mtime_ns, title"
    rows = db.execute(f"SELECT {columns} FROM documents").fetchall()
    return {row[1]: StoredDocument(*row) for row in rows}


def select_sources_with_empty_pages(db: sqlite3.Connection) -> set[str]:
    rows = db.execute(
        "SELECT DISTINCT d.source FROM pages p JOIN documents d ON d.id = p.document_id "
        "WHERE p.number IS NOT NULL AND trim(p.text, ' ' || char(9, 10, 12, 13)) = ''"
    ).fetchall()
    return {row[0] for row in rows}


def count_pages(db: sqlite3.Connection) -> tuple[int, int]:
    """All pages, and those whose text OCR read."""
    pages = db.execute("SELECT COUNT(*) FROM pages").fetchone()[0]
    ocr_pages = 0
    if has_ocr_columns(db):
        ocr_pages = db.execute("SELECT COUNT(*) FROM pages WHERE ocr_engine IS NOT NULL").fetchone()[0]
    return pages, ocr_pages


def count_rows(db: sqlite3.Connection) -> tuple[int, int]:
    """Documents and chunks stored."""
    documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    chunks = db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
    return documents, chunks


def insert_document(db: sqlite3.Connection, document: Document, pages: Sequence[Page]) -> None:
    db.execute(
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
    db.executemany(
        "INSERT INTO pages (document_id, ordinal, number, label, text, ocr_engine, ocr_boxes) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (document.id, i, p.number, p.label, p.text, p.ocr_engine, boxes_to_json(p.boxes))
            for i, p in enumerate(pages)
        ],
    )


def insert_chunks(db: sqlite3.Connection, chunks: Sequence[Chunk]) -> None:
    db.executemany(
        "INSERT INTO chunks (id, document_id, ordinal, page, page_label, start, end, token_count, text, context) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        [
            (c.id, c.document_id, c.ordinal, c.page, c.page_label, c.start, c.end, c.token_count, c.text, c.context)
            for c in chunks
        ],
    )


def delete_document(db: sqlite3.Connection, document_id: str) -> list[int]:
    """Delete a document's rows; returns the ids of the chunks it had."""
    old_ids = [row[0] for row in db.execute("SELECT id FROM chunks WHERE document_id = ?", (document_id,))]
    db.execute("DELETE FROM chunks WHERE document_id = ?", (document_id,))
    db.execute("DELETE FROM pages WHERE document_id = ?", (document_id,))
    db.execute("DELETE FROM documents WHERE id = ?", (document_id,))
    return old_ids


def update_file_stat(db: sqlite3.Connection, document_id: str, size_bytes: int, mtime_ns: int) -> None:
    db.execute("UPDATE documents SET size_bytes = ?, mtime_ns = ? WHERE id = ?", (size_bytes, mtime_ns, document_id))


def write_manifest(db: sqlite3.Connection, manifest: Manifest) -> None:
    db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('manifest', ?)", (manifest.model_dump_json(),))
