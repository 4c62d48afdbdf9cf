"""The ingestion job: discover, diff against the knowledge base, load, chunk, embed, write.

Work flows through three stages that overlap:

1. loading (read, hash, extract pages) runs in ``ingest.workers`` spawned processes, a few
   files ahead of the encoder, so PDF text extraction hides behind the model;
2. chunking runs in this process (one tokenizer call per page: cheap);
3. chunks from many files are gathered into one ``encode`` call of about
   ``ingest.embed_batch_chunks`` chunks, so small files still fill the model's batches.

Documents are committed every ``ingest.commit_seconds``: a killed run keeps everything
committed before it, and the next run skips those files (their content hash is stored) and
redoes at most one commit interval of work.

Skipping is two-level: a stored file whose size and mtime are unchanged is not even read; one
whose stat changed is read and hashed, and only re-processed if its bytes changed.
"""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import time
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from ingest.chunking import chunk_pages
from ingest.discovery import discover
from ingest.loaders import SUPPORTED_EXTENSIONS, PdfLoader, configured_loaders, loader_for
from ingest.progress import FileEvent, IngestReporter, NullReporter
from rag.config import AppConfig, PdfTextEngine
from rag.context import indexed_text, page_contexts
from rag.embedder import Embedder
from rag.errors import DocumentLoadError
from rag.faults import crash_point
from rag.store import KnowledgeBaseWriter, StoredDocument, document_id_for, utc_now
from rag.types import Chunk, Document, LoadedDocument, Page


@dataclass(frozen=True, slots=True)
class FileLoad:
    """A loader worker's answer for one file: pages, or why not."""

    path: str
    size_bytes: int = 0
    mtime_ns: int = 0
    content_hash: str = ""
    document: LoadedDocument | None = None
    unchanged: bool = False
    error: str | None = None


@dataclass
class IngestSummary:
    """What a run did. ``as_dict()`` is the ``rag ingest --json`` object."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    failed: list[dict[str, str]] = field(default_factory=list)
    pages: int = 0
    new_chunks: int = 0
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def as_dict(self) -> dict[str, Any]:
        return {
            "added": self.added,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "removed": self.removed,
            "skipped": self.skipped,
            "failed": self.failed,
            "pages": self.pages,
            "documents": self.documents,
            "chunks": self.chunks,
            "seconds": round(self.seconds, 3),
        }


def read_file(path: str, known_hash: str | None, max_bytes: int, pdf_text: PdfTextEngine = "pdfium") -> FileLoad:
    """Read, hash and (if the content is new) extract one file. Runs in a worker process.

    Never raises for a bad file: the error travels back as ``FileLoad.error``, so one bad
    file cannot stop a batch.
    """
    try:
        stat = Path(path).stat()
        if stat.st_size > max_bytes:
            return FileLoad(path, stat.st_size, error=f"larger than ingest.max_file_mb ({max_bytes / 1e6:.0f} MB)")
        with open(path, "rb") as handle:
            data = handle.read()
    except OSError as exc:
        return FileLoad(path, error=f"cannot read: {exc.strerror or exc}")
    content_hash = hashlib.sha256(data).hexdigest()
    base = FileLoad(path, len(data), stat.st_mtime_ns, content_hash)
    if content_hash == known_hash:
        return replace(base, unchanged=True)
    loader = loader_for(Path(path), configured_loaders(pdf_text))
    if loader is None:
        return replace(base, error="unsupported file type")
    try:
        return replace(base, document=loader.load(Path(path), data))
    except DocumentLoadError as exc:
        return replace(base, error=exc.reason)
    except Exception as exc:  # noqa: BLE001 - a loader bug must not stop the batch
        return replace(base, error=f"unexpected {type(exc).__name__}: {exc}")


def _quiet_pdf_warnings() -> None:
    """Worker initializer: pypdf logs a warning per oddity of a damaged file; the job already
    reports each failed file in one line, so only pypdf's errors are worth showing."""
    logging.getLogger("pypdf").setLevel(logging.ERROR)


def load_files(
    todo: Sequence[tuple[str, str | None]], workers: int, max_bytes: int, pdf_text: PdfTextEngine = "pdfium"
) -> Iterator[FileLoad]:
    """Load ``(path, known_hash)`` pairs in order, ``workers`` processes at a time.

    At most ``2 * workers + 2`` files are in flight, so memory stays bounded however many
    files there are. A crashed worker fails only the files it held; the pool is restarted.
    """
    if workers == 0:
        _quiet_pdf_warnings()
        for path, known in todo:
            yield read_file(path, known, max_bytes, pdf_text)
        return
    context = multiprocessing.get_context("spawn")  # no fork: the parent holds torch threads
    items = iter(todo)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_quiet_pdf_warnings)
    pending: deque[tuple[str, str | None, Future[FileLoad]]] = deque()
    try:
        while True:
            while len(pending) < 2 * workers + 2 and (item := next(items, None)) is not None:
                pending.append((*item, pool.submit(read_file, item[0], item[1], max_bytes, pdf_text)))
            if not pending:
                return
            path, _, future = pending.popleft()
            try:
                yield future.result()
            except BrokenProcessPool:
                yield FileLoad(path, error="the loader process crashed on this file")
                pool.shutdown(cancel_futures=True)
                pool = ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_quiet_pdf_warnings)
                retry = [(p, known) for p, known, _ in pending]
                pending.clear()
                for retry_path, known in retry:
                    pending.append((retry_path, known, pool.submit(read_file, retry_path, known, max_bytes, pdf_text)))
    finally:
        pool.shutdown(cancel_futures=True)


@dataclass
class _PendingDocument:
    load: FileLoad
    document: Document
    pages: tuple[Page, ...]
    chunks: list[Chunk]
    outcome: str


class _Ingestion:
    """One run's state: the writer, the embedding batch being filled, the tallies."""

    def __init__(
        self, config: AppConfig, embedder: Embedder, writer: KnowledgeBaseWriter, reporter: IngestReporter
    ) -> None:
        self.config = config
        self.embedder = embedder
        self.writer = writer
        self.reporter = reporter
        self.summary = IngestSummary()
        self.run_id = writer.start_run()
        self._batch: list[_PendingDocument] = []
        self._batch_chunks = 0
        self._last_commit = time.monotonic()

    def fail(self, path: str, reason: str, size_bytes: int = 0) -> None:
        self.summary.failed.append({"path": path, "reason": reason})
        self.writer.record_file(self.run_id, path, "failed", reason)
        self.reporter.file_done(FileEvent(path, "failed", size_bytes, reason=reason))

    def unchanged(self, stored: StoredDocument, load: FileLoad | None = None) -> None:
        self.summary.unchanged += 1
        if load is not None:
            self.writer.update_file_stat(stored.id, load.size_bytes, load.mtime_ns)
        size = load.size_bytes if load else stored.size_bytes
        self.reporter.file_done(FileEvent(stored.source, "unchanged", size))

    def accept(self, load: FileLoad, stored: StoredDocument | None) -> None:
        """Chunk a freshly loaded file and queue it for the next embedding batch."""
        assert load.document is not None
        loaded = load.document
        document = Document(
            id=stored.id if stored else document_id_for(load.path),
            source=load.path,
            content_hash=load.content_hash,
            mime_type=loaded.mime_type,
            title=loaded.title,
            page_count=len(loaded.pages),
            size_bytes=load.size_bytes,
            mtime_ns=load.mtime_ns,
            ingested_at=utc_now(),
        )
        contexts = page_contexts(self.config.chunking.context, document.title, document.source, loaded.pages)
        chunks = chunk_pages(
            document.id, document.content_hash, loaded.pages, self.embedder.tokenizer, self.config.chunking, contexts
        )
        if not chunks:
            self.fail(load.path, "no text to index", load.size_bytes)
            return
        outcome = "updated" if stored else "added"
        self._batch.append(_PendingDocument(load, document, loaded.pages, chunks, outcome))
        self._batch_chunks += len(chunks)
        if self._batch_chunks >= self.config.ingest.embed_batch_chunks:
            self.flush()

    def flush(self, *, commit: bool | None = None) -> None:
        """Embed the gathered chunks in one call, store their documents, maybe commit."""
        if self._batch:
            texts = [indexed_text(chunk.context, chunk.text) for pending in self._batch for chunk in pending.chunks]
            vectors = self.embedder.embed_documents(texts)
            crash_point("encoded")
            offset = 0
            for pending in self._batch:
                count = len(pending.chunks)
                self.writer.put_document(
                    pending.document, pending.pages, pending.chunks, vectors[offset : offset + count]
                )
                offset += count
                self.writer.record_file(self.run_id, pending.load.path, pending.outcome, chunks=count)
                setattr(self.summary, pending.outcome, getattr(self.summary, pending.outcome) + 1)
                self.summary.pages += len(pending.pages)
                self.summary.new_chunks += count
                self.reporter.file_done(
                    FileEvent(pending.load.path, pending.outcome, pending.load.size_bytes, len(pending.pages), count)
                )
            self._batch.clear()
            self._batch_chunks = 0
            crash_point("stored")
        due = time.monotonic() - self._last_commit >= self.config.ingest.commit_seconds
        if commit or (commit is None and due):
            self.writer.commit()
            self._last_commit = time.monotonic()

    def reindex_stored(self, stored: dict[str, StoredDocument]) -> None:
        """Re-chunk and re-embed every stored document from its stored pages.

        Runs inside one transaction with no intermediate commit: until it ends, readers keep
        the old index, and a crash keeps it too (the next ``--reindex`` starts over).
        """
        self.reporter.message(f"re-indexing {len(stored)} stored documents with {self.embedder.model_id}")
        for document in stored.values():
            pages = self.writer.stored_pages(document.id)
            contexts = page_contexts(self.config.chunking.context, document.title, document.source, pages)
            chunks = chunk_pages(
                document.id, document.content_hash, pages, self.embedder.tokenizer, self.config.chunking, contexts
            )
            for start in range(0, len(chunks), self.config.ingest.embed_batch_chunks):
                part = chunks[start : start + self.config.ingest.embed_batch_chunks]
                vectors = self.embedder.embed_documents([indexed_text(c.context, c.text) for c in part])
                self.writer.put_chunks(part, vectors)
        self.writer.commit()
        self._last_commit = time.monotonic()


def _pdfs_to_extract_again(
    writer: KnowledgeBaseWriter, stored: dict[str, StoredDocument], config: AppConfig
) -> list[str]:
    """The stored PDFs whose text must be extracted again for ``--reindex``: all of them when the
    knowledge base was built with another ``ingest.pdf_text`` (re-chunking their stored pages
    would keep the old extraction), as long as the file is still there to read."""
    built_with = writer.built_with
    if built_with is None or built_with.pdf_text == config.ingest.pdf_text:
        return []
    return [
        source for source in stored if Path(source).suffix.lower() in PdfLoader.extensions and Path(source).is_file()
    ]


def run_ingest(
    paths: Sequence[Path],
    config: AppConfig,
    embedder: Embedder,
    reporter: IngestReporter | None = None,
    *,
    prune: bool = False,
    reindex: bool = False,
) -> IngestSummary:
    """Bring the knowledge base at ``config.kb_dir`` in step with the files under ``paths``.

    ``embedder`` must be loaded. ``prune`` removes stored documents whose files no longer
    exist; ``reindex`` first re-embeds every stored document (after a model or chunking
    change). Bad files are reported in the summary, never raised.
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    found = discover(paths, SUPPORTED_EXTENSIONS, exclude=config.kb_dir)
    with KnowledgeBaseWriter.open(config.kb_dir, config, dimension=embedder.dimension, reindex=reindex) as writer:
        job = _Ingestion(config, embedder, writer, reporter)
        job.summary.skipped = len(found.unsupported)
        for missing in found.missing:
            job.fail(missing, "no such file or directory")
        stored = writer.stored_documents()
        reread: list[str] = []
        if reindex:
            reread = _pdfs_to_extract_again(writer, stored, config)
            for source in reread:
                # Gone in the same transaction as the old chunks: a crash before they are read
                # again leaves them absent (the next run adds them), never present without chunks.
                writer.remove_document(stored.pop(source).id)
            job.reindex_stored(stored)

        todo: list[tuple[str, str | None]] = []
        total_bytes = 0
        for path in found.files:
            source = str(path)
            known = stored.get(source)
            try:
                stat = path.stat()
            except OSError:
                stat = None  # unreadable: the loader reports why
            if known and stat and (known.size_bytes, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                job.unchanged(known)
                continue
            todo.append((source, known.content_hash if known else None))
            total_bytes += stat.st_size if stat else 0
        listed = {source for source, _ in todo}
        for source in reread:
            if source not in listed:  # outside this run's paths, but its old chunks are gone
                todo.append((source, None))
                total_bytes += Path(source).stat().st_size

        reporter.start(len(todo), total_bytes)
        try:
            max_bytes = int(config.ingest.max_file_mb * 1e6)
            for load in load_files(todo, config.ingest.workers, max_bytes, config.ingest.pdf_text):
                crash_point("loaded")
                known = stored.get(load.path)
                if load.error is not None:
                    job.fail(load.path, load.error, load.size_bytes)
                elif load.unchanged and known is not None:
                    job.unchanged(known, load)
                else:
                    job.accept(load, known)
            job.flush(commit=False)

            if prune:
                for source, document in stored.items():
                    if not Path(source).exists():
                        writer.remove_document(document.id)
                        writer.record_file(job.run_id, source, "removed")
                        job.summary.removed += 1
                        reporter.file_done(FileEvent(source, "removed"))
            writer.commit(keyword=True)
        finally:
            reporter.finish()

        summary = job.summary
        summary.documents = writer.manifest.documents
        summary.chunks = writer.manifest.chunks
        summary.seconds = time.monotonic() - started
        status = "completed with failures" if summary.failed else "completed"
        writer.finish_run(job.run_id, status, summary.as_dict())
    return summary
