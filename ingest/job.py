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
import os
import re
import signal
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from stat import S_ISREG
from typing import Any, TypeVar

from pebble import ProcessExpired, ProcessFuture, ProcessPool
from pydantic import BaseModel, Field

from ingest.chunking import chunk_pages
from ingest.discovery import Discovery, discover
from ingest.loaders import SUPPORTED_EXTENSIONS, PdfLoader, configured_loaders, loader_for
from ingest.ocr import (
    ENGINE_TITLES,
    OCR_OFF,
    OcrSettings,
    OcrText,
    OcrUnavailable,
    check_engine,
    pages_to_read,
    read_pages,
    with_ocr_text,
)
from ingest.progress import FileEvent, IngestReporter, NullReporter, shown_path
from rag.config import AppConfig, ChunkingConfig, IngestConfig, PdfTextEngine
from rag.context import indexed_text, page_contexts
from rag.embedder import Embedder, Tokenizer
from rag.errors import DocumentLoadError
from rag.faults import crash_point
from rag.index import Vectors
from rag.kb import KnowledgeBaseWriter, StoredDocument, document_id_for, open_writer, utc_now
from rag.records import FailedFile, OcrFile, TextlessFile
from rag.types import Chunk, Document, LoadedDocument, Page

Answer = TypeVar("Answer")


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
    textless_pages: tuple[int, ...] = ()  # numbered pages with no text (blank, or scans OCR found nothing on)
    ocr_pages: tuple[int, ...] = ()  # numbered pages whose text OCR read
    ocr_pending: tuple[int, ...] = ()  # numbered pages still to be read by OCR (the job's second step)


@dataclass(frozen=True, slots=True)
class ScannedPages:
    """A loader worker's answer for the scanned pages of one file: what OCR read, or why not."""

    found: dict[int, OcrText]
    error: str | None = None


class IngestSummary(BaseModel):
    """What a run did: the ``rag ingest --json`` object (:meth:`as_dict`), filled in as the run goes."""

    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed: int = 0
    skipped: int = 0
    failed: list[FailedFile] = []
    pages_without_text: list[TextlessFile] = []
    pages_read_by_ocr: list[OcrFile] = []
    pages: int = 0
    ocr_pages: int = 0
    new_chunks: int = Field(default=0, exclude=True)  # the run's own count, not reported
    documents: int = 0
    chunks: int = 0
    seconds: float = 0.0

    @property
    def changed(self) -> bool:
        return bool(self.added or self.updated or self.removed)

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json") | {"seconds": round(self.seconds, 3)}


def read_file(
    path: str,
    known_hash: str | None,
    max_bytes: int,
    pdf_text: PdfTextEngine = "pdfium",
    *,
    memory_mb: float | None = None,
    ocr: OcrSettings = OCR_OFF,
) -> FileLoad:
    """Read, hash and (if the content is new) extract one file. Runs in a worker process.

    Never raises for a bad file: the error travels back as ``FileLoad.error``, so one bad
    file cannot stop a batch. At most ``max_bytes + 1`` bytes are read whatever the file's
    stat says (a growing file, ``/proc``). ``memory_mb`` (``ingest.file_memory_mb``, when
    the process runs under that limit) names the limit in the reason for a MemoryError.

    A PDF's pages that OCR should read (``ocr``) are not read here: they come back in
    ``FileLoad.ocr_pending``, for :func:`read_scanned_pages` under a time limit of their own,
    and :func:`with_scanned_pages` then completes the load.
    """
    read = _read_bounded(path, max_bytes)
    if isinstance(read, FileLoad):
        return read
    data, mtime_ns = read
    content_hash = hashlib.sha256(data).hexdigest()
    base = FileLoad(path, len(data), mtime_ns, content_hash)
    if content_hash == known_hash:
        return replace(base, unchanged=True)
    loader = loader_for(Path(path), configured_loaders(pdf_text, ocr))
    if loader is None:
        return replace(base, error="unsupported file type")
    try:
        if isinstance(loader, PdfLoader) and ocr.on:
            document = loader.load_text_layer(Path(path), data)
            pending = pages_to_read(data, document.pages, ocr)
            if pending:
                return replace(base, document=document, ocr_pending=pending)
            document = loader.finish(Path(path), document)
        else:
            document = loader.load(Path(path), data)
    except DocumentLoadError as exc:
        return replace(base, error=exc.reason)
    except MemoryError:
        del data  # the traceback holds the parser's frames; the reason is all that goes back
        return replace(base, error=_memory_reason(memory_mb))
    except Exception as exc:  # noqa: BLE001 - a loader bug must not stop the batch
        return replace(base, error=f"unexpected {type(exc).__name__}: {exc}")
    return _loaded(base, document, max_bytes)


def read_scanned_pages(
    path: str,
    content_hash: str,
    numbers: tuple[int, ...],
    max_bytes: int,
    ocr: OcrSettings,
    *,
    memory_mb: float | None = None,
) -> ScannedPages:
    """Read pages ``numbers`` of the PDF at ``path`` by OCR. Runs in a worker process, after
    :func:`read_file` named the pages; the file is read again and must still hash to
    ``content_hash``. Never raises for a bad file (the reason travels back as the error)."""
    read = _read_bounded(path, max_bytes)
    if isinstance(read, FileLoad):
        return ScannedPages({}, read.error)
    data, _ = read
    if hashlib.sha256(data).hexdigest() != content_hash:
        return ScannedPages({}, "the file changed while it was being read; run again")
    try:
        return ScannedPages(read_pages(Path(path), data, numbers, ocr))
    except OcrUnavailable as exc:
        return ScannedPages({}, f"OCR cannot run: {exc}")
    except MemoryError:
        del data
        return ScannedPages({}, _memory_reason(memory_mb))
    except Exception as exc:  # noqa: BLE001 - an engine's bug must not stop the batch
        return ScannedPages({}, f"unexpected {type(exc).__name__} in OCR: {exc}")


def with_scanned_pages(load: FileLoad, scanned: ScannedPages, ocr: OcrSettings, max_bytes: int) -> FileLoad:
    """``load`` (which had pages pending OCR) completed with what :func:`read_scanned_pages` found."""
    assert load.document is not None
    base = replace(load, document=None, ocr_pending=())
    if scanned.error is not None:
        return replace(base, error=scanned.error)
    loader = PdfLoader(ocr=ocr)
    try:
        document = loader.finish(Path(load.path), with_ocr_text(load.document, scanned.found, ocr.mode))
    except DocumentLoadError as exc:
        return replace(base, error=exc.reason)
    return _loaded(base, document, max_bytes)


def _loaded(base: FileLoad, document: LoadedDocument, max_bytes: int) -> FileLoad:
    """``base`` with its loaded ``document``, its pages without text and its pages read by OCR."""
    if sum(len(page.text) for page in document.pages) > max_bytes:  # a zip bomb's text would swamp the parent
        return replace(base, error=f"its text is larger than ingest.max_file_mb ({max_bytes / 1e6:g} MB)")
    textless = tuple(page.number for page in document.pages if page.number is not None and not page.text.strip())
    scanned = tuple(page.number for page in document.pages if page.number is not None and page.read_by_ocr)
    return replace(base, document=document, textless_pages=textless, ocr_pages=scanned)


def _read_bounded(path: str, max_bytes: int) -> tuple[bytes, int] | FileLoad:
    """The bytes of the regular file ``path`` and its mtime, or a FileLoad that says why not."""
    too_large = f"larger than ingest.max_file_mb ({max_bytes / 1e6:g} MB)"
    try:
        # O_NONBLOCK: a FIFO put in the file's place after discovery must not block open()
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        with open(descriptor, "rb", buffering=0) as handle:
            status = os.fstat(descriptor)
            if not S_ISREG(status.st_mode):
                return FileLoad(path, error="not a regular file: only regular files are read")
            if status.st_size > max_bytes:
                return FileLoad(path, status.st_size, error=too_large)
            data = _read_at_most(handle, max_bytes + 1, first=status.st_size + 1)
    except OSError as exc:
        return FileLoad(path, error=f"cannot read: {exc.strerror or exc}")
    if len(data) > max_bytes:
        return FileLoad(path, len(data), error=too_large)
    return data, status.st_mtime_ns


def _read_at_most(handle: Any, limit: int, first: int) -> bytes:
    """Up to ``limit`` bytes from an unbuffered file: ``first`` (the stat size + 1, so that one
    read usually ends at the end of the file) at once, then in pieces if the file holds more."""
    parts: list[bytes] = []
    total = 0
    want = first
    while total < limit and (part := handle.read(min(want, limit - total))):
        parts.append(part)
        total += len(part)
        want = 1 << 20
    return b"".join(parts)


def _memory_reason(memory_mb: float | None) -> str:
    if memory_mb is None:
        return "ran out of memory"
    return f"needed more than {memory_mb:g} MB (ingest.file_memory_mb)"


def _quiet_pdf_warnings() -> None:
    """pypdf logs a warning per oddity of a damaged file; the job already reports each failed
    file in one line, so only pypdf's errors are worth showing."""
    logging.getLogger("pypdf").setLevel(logging.ERROR)


def _start_worker(memory_mb: float) -> None:
    """Loader worker initializer: quiet pypdf, then cap the memory one file may take.

    The cap is RLIMIT_DATA, set to what the worker holds after its imports plus ``memory_mb``:
    it counts the private writable memory a parser fills (heap, anonymous maps), so an
    allocation past it fails (a MemoryError in Python; PDFium aborts, which kills the worker).
    RLIMIT_AS would also count shared libraries, thread stacks and malloc's reserved arenas,
    none of which a hostile file controls. Never raises: pebble would restart a worker whose
    initializer fails, forever.
    """
    _quiet_pdf_warnings()
    import pypdfium2  # noqa: F401 - loaded (and counted) before the budget is measured

    try:
        import resource

        with open("/proc/self/status", encoding="ascii") as status:
            found = re.search(r"^VmData:\s+(\d+) kB", status.read(), re.M)
        if found is None:
            raise OSError("no VmData in /proc/self/status")
        _, hard = resource.getrlimit(resource.RLIMIT_DATA)
        limit = int(found.group(1)) * 1024 + int(memory_mb * 1e6)
        if hard != resource.RLIM_INFINITY:
            limit = min(limit, hard)
        resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
    except (ImportError, OSError, ValueError) as exc:
        logging.getLogger(__name__).warning("ingest.file_memory_mb cannot apply here: %s", exc)


OcrAnnouncer = Callable[[str, int], None]


def load_file(
    path: str,
    known_hash: str | None,
    settings: IngestConfig,
    ocr: OcrSettings = OCR_OFF,
    announce: OcrAnnouncer | None = None,
) -> FileLoad:
    """Load one file in this process, its scanned pages by OCR included: :func:`read_file`, then
    (for pages it left to OCR) :func:`read_scanned_pages`. Never raises for a bad file.

    No time or memory limit applies (``ingest.file_timeout_s`` and ``ingest.file_memory_mb`` are
    the loader pool's): this is the body of ``ingest.workers = 0`` and of a Ray loading task.
    """
    max_bytes = int(settings.max_file_mb * 1e6)
    load = read_file(path, known_hash, max_bytes, settings.pdf_text, ocr=ocr)
    if load.ocr_pending:
        if announce is not None:
            announce(path, len(load.ocr_pending))
        scanned = read_scanned_pages(path, load.content_hash, load.ocr_pending, max_bytes, ocr)
        load = with_scanned_pages(load, scanned, ocr, max_bytes)
    return load


def load_files(
    todo: Sequence[tuple[str, str | None]],
    settings: IngestConfig,
    ocr: OcrSettings = OCR_OFF,
    announce: OcrAnnouncer | None = None,
) -> Iterator[FileLoad]:
    """Load ``(path, known_hash)`` pairs in order, ``settings.workers`` processes at a time (a
    :class:`LoaderPool` for this call alone; see there for the limits that apply to each file)."""
    with LoaderPool(settings, ocr) as pool:
        yield from pool.load(todo, announce)


class LoaderPool:
    """``settings.workers`` loader processes, started once; :meth:`close` stops them.

    Each file is loaded under ``settings.file_timeout_s`` and ``settings.file_memory_mb``: a worker
    past either is killed (or dies) and is replaced, and the file alone comes back failed, with a
    reason naming the setting. With ``workers == 0`` files are loaded in this process, with no
    bounds but ``max_file_mb``. A run of the in-process job uses one; so does each loading actor of
    the Ray engine, for its whole life.
    """

    def __init__(self, settings: IngestConfig, ocr: OcrSettings = OCR_OFF) -> None:
        self._settings = settings
        self._ocr = ocr
        self._pool: ProcessPool | None = None
        if settings.workers == 0:
            _quiet_pdf_warnings()
        else:
            self._pool = ProcessPool(
                max_workers=settings.workers,
                initializer=_start_worker,
                initargs=(settings.file_memory_mb,),
                context=multiprocessing.get_context("spawn"),  # no fork: the parent holds torch threads
            )

    def __enter__(self) -> LoaderPool:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the workers, killing those still busy (a consumer that stopped early)."""
        if self._pool is not None:
            self._pool.stop()
            self._pool.join()
            self._pool = None

    def load(self, todo: Sequence[tuple[str, str | None]], announce: OcrAnnouncer | None = None) -> Iterator[FileLoad]:
        """Load ``(path, known_hash)`` pairs in order.

        At most ``2 * workers + 2`` files are in flight, so memory stays bounded however many
        files there are. A PDF with pages for OCR is loaded in two steps: its text, then its scanned
        pages in a second task, under ``settings.ocr_page_timeout_s`` per page (and the same memory
        limit); ``announce(path, pages)`` is called as that second step starts.
        """
        settings, ocr, pool = self._settings, self._ocr, self._pool
        if pool is None:
            for path, known in todo:
                yield load_file(path, known, settings, ocr, announce)
            return
        max_bytes = int(settings.max_file_mb * 1e6)
        items = iter(todo)
        pending: deque[tuple[str, ProcessFuture[FileLoad]]] = deque()
        while True:
            while len(pending) < 2 * settings.workers + 2 and (item := next(items, None)) is not None:
                path, known = item
                future = pool.schedule(
                    read_file,
                    args=(path, known, max_bytes, settings.pdf_text),
                    kwargs={"memory_mb": settings.file_memory_mb, "ocr": ocr},
                    timeout=settings.file_timeout_s,
                )
                pending.append((path, future))
            if not pending:
                return
            path, future = pending.popleft()
            timed_out = f"took longer than {settings.file_timeout_s:g} s (ingest.file_timeout_s)"
            answer = _worker_answer(future, settings, timed_out)
            load = FileLoad(path, error=answer) if isinstance(answer, str) else answer
            if load.ocr_pending:
                if announce is not None:
                    announce(path, len(load.ocr_pending))
                limit = settings.ocr_page_timeout_s * len(load.ocr_pending)
                task = pool.schedule(
                    read_scanned_pages,
                    args=(path, load.content_hash, load.ocr_pending, max_bytes, ocr),
                    kwargs={"memory_mb": settings.file_memory_mb},
                    timeout=limit,
                )
                count = len(load.ocr_pending)
                timed_out = (
                    f"reading its {count} scanned page{'s' if count > 1 else ''} by OCR took longer than {limit:g} s "
                    "(ingest.ocr_page_timeout_s per page)"
                )
                found = _worker_answer(task, settings, timed_out)
                scanned = ScannedPages({}, found) if isinstance(found, str) else found
                load = with_scanned_pages(load, scanned, ocr, max_bytes)
            yield load


def _exit_cause(exitcode: int) -> str:
    """The signal's name (SIGKILL) for a negative exit code, else "exit status N"."""
    if exitcode >= 0:
        return f"exit status {exitcode}"
    try:
        return signal.Signals(-exitcode).name
    except ValueError:
        return f"signal {-exitcode}"


def _worker_answer(future: ProcessFuture[Answer], settings: IngestConfig, timed_out: str) -> Answer | str:
    """The worker's answer, or why there is none: ``timed_out`` for the time limit, or a worker
    that died."""
    try:
        return future.result()
    except TimeoutError:
        return timed_out
    except ProcessExpired as exc:
        cause = _exit_cause(exc.exitcode)
        return f"the loader process died ({cause}): {_memory_reason(settings.file_memory_mb)}, or crashed"
    except Exception as exc:  # noqa: BLE001 - the workers never raise: this is the pool (an answer too big to send)
        return f"unexpected {type(exc).__name__}: {exc}"


NO_TEXT = "no text to index"


@dataclass(frozen=True, slots=True)
class PreparedDocument:
    """A loaded file made ready to embed: its record, pages and chunks (none: nothing to index).

    ``outcome`` is ``added`` or ``updated`` (the file was stored before)."""

    load: FileLoad
    document: Document
    pages: tuple[Page, ...]
    chunks: list[Chunk]
    outcome: str


def chunk_document(
    document: Document | StoredDocument, pages: Sequence[Page], tokenizer: Tokenizer, chunking: ChunkingConfig
) -> list[Chunk]:
    """The chunks of ``document``'s ``pages``, each with its page's header (``chunking.context``)."""
    contexts = page_contexts(chunking.context, document.title, document.source, pages)
    return chunk_pages(document.id, document.content_hash, pages, tokenizer, chunking, contexts)


def prepare_document(
    load: FileLoad, stored_id: str | None, tokenizer: Tokenizer, chunking: ChunkingConfig
) -> PreparedDocument:
    """The :class:`Document` of a freshly loaded file (under ``stored_id`` when the file was stored
    before, so its old rows are replaced) and its chunks. ``load`` must carry a document."""
    assert load.document is not None
    loaded = load.document
    document = Document(
        id=stored_id or document_id_for(load.path),
        source=load.path,
        content_hash=load.content_hash,
        mime_type=loaded.mime_type,
        title=loaded.title,
        page_count=len(loaded.pages),
        size_bytes=load.size_bytes,
        mtime_ns=load.mtime_ns,
        ingested_at=utc_now(),
    )
    chunks = chunk_document(document, loaded.pages, tokenizer, chunking)
    return PreparedDocument(load, document, tuple(loaded.pages), chunks, "updated" if stored_id else "added")


def embed_chunks(embedder: Embedder, chunks: Sequence[Chunk]) -> Vectors:
    """The vectors of ``chunks``, each embedded with its header (what the indexes hold)."""
    return embedder.embed_documents([indexed_text(chunk.context, chunk.text) for chunk in chunks])


def open_knowledge_base_writer(config: AppConfig, dimension: int, *, reindex: bool = False) -> KnowledgeBaseWriter:
    """The writer of ``config``'s knowledge base for one ingestion run: the one place either engine
    (this module's, ``ingest.ray_job``'s) opens it."""
    return open_writer(config.kb_dir, config, dimension=dimension, reindex=reindex)


def kb_directory(config: AppConfig) -> Path | None:
    """The knowledge base's directory when it is embedded: below the paths to ingest, it is not a
    source of documents (its ``uploads`` folder is, named explicitly by the page)."""
    return config.kb_dir if isinstance(config.kb_dir, Path) else None


class IngestionRun:
    """One run's bookkeeping, whichever engine loads and embeds: the run's record in the knowledge
    base, the summary, the reporter's events, and a commit every ``ingest.commit_seconds``."""

    def __init__(self, config: AppConfig, writer: KnowledgeBaseWriter, reporter: IngestReporter) -> None:
        self.config = config
        self.writer = writer
        self.reporter = reporter
        self.summary = IngestSummary()
        self.run_id = writer.start_run()
        self._last_commit = time.monotonic()

    def discovered(self, found: Discovery) -> dict[str, StoredDocument]:
        """Note what discovery found that is not read (unsupported, missing, rejected); the stored
        documents by source."""
        self.summary.skipped = len(found.unsupported)
        for missing in found.missing:
            self.fail(missing, "no such file or directory")
        for rejected, reason in found.rejected:
            self.fail(rejected, reason)
        return self.writer.stored_documents()

    def files_to_read(
        self, files: Sequence[Path], stored: dict[str, StoredDocument], reread: Sequence[str] = ()
    ) -> tuple[list[tuple[str, str | None]], int]:
        """The ``(path, stored content hash)`` pairs to load and their total size. A stored file whose
        size and mtime are unchanged is noted unchanged here, unread. ``reread``: stored sources whose
        rows ``--reindex`` removed, read again even when outside ``files``."""
        todo: list[tuple[str, str | None]] = []
        total_bytes = 0
        for path in files:
            source = str(path)
            known = stored.get(source)
            try:
                stat = path.stat()
            except OSError:
                stat = None  # unreadable: the loader reports why
            if known and stat and (known.size_bytes, known.mtime_ns) == (stat.st_size, stat.st_mtime_ns):
                self.unchanged(known)
                continue
            todo.append((source, known.content_hash if known else None))
            total_bytes += stat.st_size if stat else 0
        listed = {source for source, _ in todo}
        for source in reread:
            if source not in listed:  # outside this run's paths, but its old chunks are gone
                todo.append((source, None))
                total_bytes += Path(source).stat().st_size
        return todo, total_bytes

    def fail(self, path: str, reason: str, size_bytes: int = 0) -> None:
        self.summary.failed.append(FailedFile(path=path, reason=reason))
        self.writer.record_file(self.run_id, path, "failed", reason)
        self.reporter.file_done(FileEvent(path, "failed", size_bytes, reason=reason))

    def unchanged(self, stored: StoredDocument, load: FileLoad | None = None) -> None:
        self.summary.unchanged += 1
        if load is not None:
            self.writer.update_file_stat(stored.id, load.size_bytes, load.mtime_ns)
        size = load.size_bytes if load else stored.size_bytes
        self.reporter.file_done(FileEvent(stored.source, "unchanged", size))

    def settle(self, load: FileLoad, known: StoredDocument | None) -> bool:
        """Note a loaded file that needs no embedding (it failed, or its content is unchanged): True;
        False for one to index."""
        if load.error is not None:
            self.fail(load.path, load.error, load.size_bytes)
            return True
        if load.unchanged and known is not None:
            self.unchanged(known, load)
            return True
        return False

    def indexable(self, prepared: PreparedDocument) -> bool:
        """Whether ``prepared`` has chunks to embed; a file without is noted failed."""
        if not prepared.chunks:
            self.fail(prepared.load.path, NO_TEXT, prepared.load.size_bytes)
            return False
        return True

    def store(self, prepared: PreparedDocument, vectors: Vectors) -> None:
        """Write one embedded document (replacing every row of a stored one) and note it; it lands
        with the next commit."""
        count = len(prepared.chunks)
        self.writer.put_document(prepared.document, prepared.pages, prepared.chunks, vectors)
        load, pages, outcome = prepared.load, len(prepared.pages), prepared.outcome
        self.writer.record_file(self.run_id, load.path, outcome, chunks=count)
        setattr(self.summary, outcome, getattr(self.summary, outcome) + 1)
        self.summary.pages += pages
        self.summary.new_chunks += count
        if load.textless_pages:
            self.summary.pages_without_text.append(
                TextlessFile(path=load.path, pages=list(load.textless_pages), of=pages)
            )
        if load.ocr_pages:
            self.summary.ocr_pages += len(load.ocr_pages)
            engine = next(page.ocr_engine for page in prepared.pages if page.ocr_engine is not None)
            scanned = OcrFile(path=load.path, pages=list(load.ocr_pages), of=pages, engine=engine)
            self.summary.pages_read_by_ocr.append(scanned)
        event = FileEvent(load.path, outcome, load.size_bytes, pages, count, None, load.textless_pages, load.ocr_pages)
        self.reporter.file_done(event)

    def commit(self, *, when_due: bool = False) -> None:
        """Commit (with ``when_due``: only once ``ingest.commit_seconds`` have passed since the last)."""
        if when_due and time.monotonic() - self._last_commit < self.config.ingest.commit_seconds:
            return
        self.writer.commit()
        self._last_commit = time.monotonic()

    def finish_writes(self, stored: dict[str, StoredDocument], *, prune: bool) -> None:
        """The run's last writes: with ``prune``, remove the stored documents whose files are gone;
        then the last commit, which also rebuilds the keyword index."""
        if prune:
            for source, document in stored.items():
                if not Path(source).exists():
                    self.writer.remove_document(document.id)
                    self.writer.record_file(self.run_id, source, "removed")
                    self.summary.removed += 1
                    self.reporter.file_done(FileEvent(source, "removed"))
        self.writer.commit(keyword=True)

    def finish(self, started: float) -> IngestSummary:
        """The summary, completed with the knowledge base's counts and the run's time, as recorded."""
        summary = self.summary
        summary.documents = self.writer.manifest.documents
        summary.chunks = self.writer.manifest.chunks
        summary.seconds = time.monotonic() - started
        status = "completed with failures" if summary.failed else "completed"
        self.writer.finish_run(self.run_id, status, summary.as_dict())
        return summary


class _EmbeddingBatch:
    """The in-process engine's encode batch: chunks from many files gathered into one call of about
    ``ingest.embed_batch_chunks`` chunks, so small files still fill the model's batches."""

    def __init__(self, run: IngestionRun, embedder: Embedder) -> None:
        self.run = run
        self.embedder = embedder
        self._batch: list[PreparedDocument] = []
        self._batch_chunks = 0

    def add(self, prepared: PreparedDocument) -> None:
        self._batch.append(prepared)
        self._batch_chunks += len(prepared.chunks)
        if self._batch_chunks >= self.run.config.ingest.embed_batch_chunks:
            self.flush()

    def flush(self, *, commit: bool | None = None) -> None:
        """Embed the gathered chunks in one call, store their documents; commit when ``commit``, or
        (None) when one is due."""
        if self._batch:
            vectors = embed_chunks(self.embedder, [chunk for prepared in self._batch for chunk in prepared.chunks])
            crash_point("encoded")
            offset = 0
            for prepared in self._batch:
                count = len(prepared.chunks)
                self.run.store(prepared, vectors[offset : offset + count])
                offset += count
            self._batch.clear()
            self._batch_chunks = 0
            crash_point("stored")
        if commit is not False:
            self.run.commit(when_due=not commit)


def _reindex_stored(run: IngestionRun, embedder: Embedder, stored: dict[str, StoredDocument]) -> None:
    """Re-chunk and re-embed every stored document from its stored pages.

    Runs inside one transaction with no intermediate commit: until it ends, readers keep the old
    index, and a crash keeps it too (the next ``--reindex`` starts over).
    """
    run.reporter.message(f"re-indexing {len(stored)} stored documents with {embedder.model_id}")
    size = run.config.ingest.embed_batch_chunks
    for document in stored.values():
        pages = run.writer.stored_pages(document.id)
        chunks = chunk_document(document, pages, embedder.tokenizer, run.config.chunking)
        for start in range(0, len(chunks), size):
            part = chunks[start : start + size]
            run.writer.put_chunks(part, embed_chunks(embedder, part))
    run.commit()


def _pdfs_to_extract_again(
    writer: KnowledgeBaseWriter, stored: dict[str, StoredDocument], config: AppConfig
) -> list[str]:
    """The stored PDFs whose text must be extracted again for ``--reindex``, as long as the file is
    still there to read: all of them when the knowledge base was built with another
    ``ingest.pdf_text`` (re-chunking their stored pages would keep the old extraction); else, with
    ``ingest.ocr`` on, those with pages stored without text (scanned pages stored before OCR was
    on, which OCR may now read)."""
    built_with = writer.built_with
    if built_with is not None and built_with.pdf_text != config.ingest.pdf_text:
        wanted = set(stored)
    elif config.ingest.ocr != "off":
        wanted = writer.sources_with_empty_pages()
    else:
        return []
    return [
        source
        for source in stored
        if source in wanted and Path(source).suffix.lower() in PdfLoader.extensions and Path(source).is_file()
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
    change). Bad files are reported in the summary, never raised. Raises ConfigError when
    ``ingest.ocr`` is on and its engine cannot run here (before anything is read).
    """
    reporter = reporter or NullReporter()
    started = time.monotonic()
    ocr = OcrSettings.of(config.ingest)
    check_engine(ocr)
    found = discover(paths, SUPPORTED_EXTENSIONS, exclude=kb_directory(config))
    with open_knowledge_base_writer(config, embedder.dimension, reindex=reindex) as writer:
        run = IngestionRun(config, writer, reporter)
        stored = run.discovered(found)
        reread: list[str] = []
        if reindex:
            reread = _pdfs_to_extract_again(writer, stored, config)
            for source in reread:
                # Gone in the same transaction as the old chunks: a crash before they are read
                # again leaves them absent (the next run adds them), never present without chunks.
                writer.remove_document(stored.pop(source).id)
            _reindex_stored(run, embedder, stored)
        todo, total_bytes = run.files_to_read(found.files, stored, reread)

        reporter.start(len(todo), total_bytes)
        try:
            engine = ENGINE_TITLES[ocr.engine]

            def announce(path: str, pages: int) -> None:
                plural = "s" if pages > 1 else ""
                reporter.message(f"reading {pages} scanned page{plural} of {shown_path(path)} by OCR ({engine})")

            batch = _EmbeddingBatch(run, embedder)
            for load in load_files(todo, config.ingest, ocr, announce):
                crash_point("loaded")
                known = stored.get(load.path)
                if run.settle(load, known):
                    continue
                prepared = prepare_document(load, known.id if known else None, embedder.tokenizer, config.chunking)
                if run.indexable(prepared):
                    batch.add(prepared)
            batch.flush(commit=False)
            run.finish_writes(stored, prune=prune)
        finally:
            reporter.finish()
        return run.finish(started)
