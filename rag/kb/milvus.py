"""A knowledge base in Milvus: a server or cluster (``milvus://HOST:PORT/COLLECTION``) or Milvus
Lite (``milvus-lite:PATH.db``), the same client code for both (pymilvus ``MilvusClient``).

Collections, all named after the location's collection ``C``:

- ``C``: one row per chunk, keyed by chunk id: its vector, text, header, file, page, span, token
  count, document id and document version (content hash), and the text BM25 indexes; Milvus
  turns that text into a sparse BM25 vector itself (a ``BM25`` function, Milvus 2.5+), so keyword
  search is Milvus's own full-text search. The dense index is ``index.kind``: FLAT, IVF_FLAT or
  HNSW (GPU indexes are a server's choice: see docs/scale.md).
- ``C_documents``, ``C_pages``, ``C_runs``, ``C_run_files``, ``C_meta`` (the manifest, the
  generation, counters): what the embedded knowledge base keeps in SQLite. Milvus wants a vector
  in every collection; these carry a 2-dimensional zero vector nobody searches.

Milvus has no transactions, so crash safety rests on the order of writes at :meth:`commit` (the
writer gathers a commit's documents and writes them in batches):

1. each new or changed document's row is written *pending* (content hash ``""``);
2. its chunks and pages are upserted by id (a re-run writes the same rows again: no duplicate);
3. the chunks and page parts of its old version, those not rewritten, are deleted;
4. its row is written with its content hash: only now does a re-run skip the file.

A crash anywhere leaves a pending row, which the next run re-does (its hash never matches) or
``--prune`` removes with everything it points to: no duplicate and no orphan. Readers see each
write as it lands (consistency level Strong), not a whole commit at once: between steps 2 and 3
a search can meet a changed document's old and new passages together. That is the one promise of
the embedded knowledge base this backend does not keep.

Not supported here, with the error saying so: ``--reindex`` (ingest into a new collection) and
``rag check`` (Milvus checks its own storage). Milvus Lite opens a file in one process at a time,
so the page and an ingest cannot share a ``milvus-lite:`` knowledge base; a server has no such
limit, and its one writer at a time is the user's to keep (Milvus has no lock to take).
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rag.config import AppConfig, IndexConfig, MilvusLocation
from rag.context import indexed_text
from rag.errors import (
    KnowledgeBaseDamagedError,
    KnowledgeBaseError,
    KnowledgeBaseLockedError,
    KnowledgeBaseNotFoundError,
    first_line,
)
from rag.faults import crash_point
from rag.index import Vectors
from rag.kb.base import (
    Closing,
    KnowledgeBaseStats,
    RunInfo,
    StoredDocument,
    boxes_from_json,
    boxes_to_json,
    scored_chunks,
    utc_now,
)
from rag.keyword import analyzed
from rag.manifest import FORMAT_VERSION, Manifest
from rag.records import FailedFile
from rag.types import Chunk, Document, Page, ScoredChunk

if TYPE_CHECKING:
    from pymilvus import MilvusClient

logger = logging.getLogger(__name__)

# VARCHAR holds at most 65,535 bytes; a page's text is stored in parts of at most this many
# characters (4 bytes each at worst in UTF-8).
PAGE_PART_CHARS = 16_000
_TEXT_BYTES = 65_535
_PATH_BYTES = 4_096
_SCAN_BATCH = 4_096
# Milvus is given text already analysed by rag.keyword (split, stop words out, stemmed: the words
# bm25s counts), and only splits it into those words again: so both backends count the same words. Milvus's
# own stemmer and stop-word filters would differ from them (the standard tokenizer keeps the
# words as they are), and Milvus Lite ignores those filters
# altogether (measured with pymilvus 3.0.2 / milvus-lite 3.2.2: "cherry" does not find
# "cherries" with a stemmer filter set). bm25s's k1 and b.
_ANALYZER = {"tokenizer": "standard"}
_BM25_PARAMS = {"bm25_k1": 1.5, "bm25_b": 0.75}
_CHUNK_FIELDS = [
    "id",
    "document_id",
    "ordinal",
    "page",
    "page_label",
    "start",
    "end",
    "token_count",
    "text",
    "context",
    "source",
]
_DOCUMENT_FIELDS = [
    "id",
    "source",
    "content_hash",
    "mime_type",
    "title",
    "page_count",
    "size_bytes",
    "mtime_ns",
    "ingested_at",
]
_NOWHERE = [0.0, 0.0]  # the vector of a row in a collection that is never searched


def _quote(value: str) -> str:
    """A string literal for a Milvus filter expression."""
    return json.dumps(value)


class _LiteNoise(logging.Filter):
    """Drops the two log records every scan of Milvus Lite makes (it lacks the call that takes a
    snapshot timestamp, ``AllocTimestamp``, and pymilvus then takes its own, which is correct for
    the one process a Lite file has), and the traceback it logs for a file another process holds,
    which :func:`_connect` reports in one line."""

    NOISE = ("Method not implemented", "failed to get mvccTs", "Failed to start MilvusLite server")

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(noise in message for noise in self.NOISE)


_LITE_NOISE = _LiteNoise()
# Milvus Lite serves a file from a server inside this process, started by the first client of the
# file and kept, holding the file's lock, until the process ends. Counting our open clients lets
# the last one to close stop it, so another process (an ingest after a search) can open the file.
_lite_clients: dict[str, int] = {}
_lite_lock = threading.Lock()


def _connect(location: MilvusLocation) -> MilvusClient:
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    if location.lite:
        for name in ("grpc._server", "pymilvus.client.iterator.query_iterator", "milvus_lite.server_manager"):
            logging.getLogger(name).addFilter(_LITE_NOISE)  # adding the same filter twice keeps one
    try:
        client = MilvusClient(uri=location.uri)
    except MilvusException as exc:
        if location.lite:
            raise KnowledgeBaseLockedError(
                f"knowledge base {location} cannot be opened: {first_line(exc)}. Milvus Lite opens a file in one "
                "process at a time (is the page or an ingest using it?); a Milvus server has no such limit"
            ) from None
        raise KnowledgeBaseError(f"cannot reach Milvus at {location}: {first_line(exc)}") from None
    if location.lite:
        with _lite_lock:
            _lite_clients[location.uri] = _lite_clients.get(location.uri, 0) + 1
    return client


@contextmanager
def _refusals(location: MilvusLocation) -> Iterator[None]:
    """Milvus refusing to open or create the collections, as one line naming the location (a server
    older than 2.5 has no BM25 function, for one)."""
    from pymilvus.exceptions import MilvusException

    try:
        yield
    except MilvusException as exc:
        raise KnowledgeBaseError(
            f"Milvus at {location} refused to open the knowledge base: {first_line(exc)} "
            "(a knowledge base in Milvus needs Milvus 2.5 or later, for its BM25 function)"
        ) from None


def _disconnect(location: MilvusLocation, client: MilvusClient) -> None:
    client.close()
    if not location.lite:
        return
    with _lite_lock:
        left = _lite_clients.get(location.uri, 1) - 1
        _lite_clients[location.uri] = left
        if left == 0:
            del _lite_clients[location.uri]
            from milvus_lite.server_manager import server_manager_instance

            server_manager_instance.release_server(location.uri)


def _index_params(config: IndexConfig) -> tuple[str, dict[str, Any], dict[str, Any]]:
    """Milvus index type, build parameters and search parameters for ``index.kind``."""
    if config.milvus_gpu:
        if config.kind == "hnsw":  # CAGRA is Milvus's graph index on a GPU
            return "GPU_CAGRA", {"intermediate_graph_degree": 2 * config.hnsw_m, "graph_degree": config.hnsw_m}, {}
        if config.kind == "ivf":
            return "GPU_IVF_FLAT", {"nlist": config.ivf_nlist}, {"nprobe": config.ivf_nprobe}
        return "GPU_BRUTE_FORCE", {}, {}
    if config.kind == "hnsw":
        return "HNSW", {"M": config.hnsw_m, "efConstruction": 2 * config.hnsw_m}, {"ef": config.hnsw_ef_search}
    if config.kind == "ivf":
        return "IVF_FLAT", {"nlist": config.ivf_nlist}, {"nprobe": config.ivf_nprobe}
    return "FLAT", {}, {}


class _Collections:
    """The collections of one location, and the reads both the reader and the writer make."""

    def __init__(self, location: MilvusLocation, client: MilvusClient) -> None:
        self.location = location
        self.client = client
        self.closed = False
        name = location.collection
        self.chunks = name
        self.documents = f"{name}_documents"
        self.pages = f"{name}_pages"
        self.runs = f"{name}_runs"
        self.run_files = f"{name}_run_files"
        self.meta = f"{name}_meta"

    def close(self) -> None:
        """Disconnect; closing again does nothing (a Lite file is released once, by its last client)."""
        if not self.closed:
            self.closed = True
            _disconnect(self.location, self.client)

    def names(self) -> tuple[str, ...]:
        return (self.chunks, self.documents, self.pages, self.runs, self.run_files, self.meta)

    def load(self) -> None:
        """Load every collection into memory: Milvus answers nothing about one that is released
        (as all are after a restart)."""
        for name in self.names():
            if self.client.has_collection(name):
                self.client.load_collection(name)

    def exists(self) -> bool:
        return bool(self.client.has_collection(self.meta))

    def create(self, dimension: int, index: IndexConfig) -> None:
        """Create every collection that is missing (a new knowledge base)."""
        from pymilvus import DataType, Function, FunctionType, MilvusClient

        def table(name: str, key: tuple[str, Any], fields: list[tuple[str, Any, dict[str, Any]]]) -> None:
            if self.client.has_collection(name):
                return
            schema = MilvusClient.create_schema(auto_id=False)
            key_name, key_type = key
            schema.add_field(
                key_name, key_type, is_primary=True, **({"max_length": 512} if key_type == DataType.VARCHAR else {})
            )
            for field, kind, options in fields:
                schema.add_field(field, kind, **options)
            schema.add_field("nowhere", DataType.FLOAT_VECTOR, dim=2)
            params = self.client.prepare_index_params()
            params.add_index("nowhere", index_type="FLAT", metric_type="L2")
            self.client.create_collection(name, schema=schema, index_params=params, consistency_level="Strong")

        text = {"max_length": _TEXT_BYTES}
        path = {"max_length": _PATH_BYTES}
        short = {"max_length": 256}
        nullable_text = {"max_length": _TEXT_BYTES, "nullable": True}
        nullable_short = {"max_length": 256, "nullable": True}
        integer: dict[str, Any] = {}
        if not self.client.has_collection(self.chunks):
            schema = MilvusClient.create_schema(auto_id=False)
            schema.add_field("id", DataType.INT64, is_primary=True)
            schema.add_field("document_id", DataType.VARCHAR, **short)
            schema.add_field("content_hash", DataType.VARCHAR, **short)
            schema.add_field("source", DataType.VARCHAR, **path)
            schema.add_field("ordinal", DataType.INT64)
            schema.add_field("page", DataType.INT64, nullable=True)
            schema.add_field("page_label", DataType.VARCHAR, **nullable_short)
            schema.add_field("start", DataType.INT64)
            schema.add_field("end", DataType.INT64)
            schema.add_field("token_count", DataType.INT64)
            schema.add_field("text", DataType.VARCHAR, **text)
            schema.add_field("context", DataType.VARCHAR, **nullable_text)
            schema.add_field("indexed", DataType.VARCHAR, enable_analyzer=True, analyzer_params=_ANALYZER, **text)
            schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dimension)
            schema.add_field("sparse", DataType.SPARSE_FLOAT_VECTOR)
            schema.add_function(
                Function(
                    name="bm25",
                    function_type=FunctionType.BM25,
                    input_field_names=["indexed"],
                    output_field_names=["sparse"],
                )
            )
            kind, build, _ = _index_params(index)
            params = self.client.prepare_index_params()
            params.add_index("vector", index_type=kind, metric_type="IP", params=build)
            params.add_index("sparse", index_type="SPARSE_INVERTED_INDEX", metric_type="BM25", params=_BM25_PARAMS)
            self.client.create_collection(self.chunks, schema=schema, index_params=params, consistency_level="Strong")
        table(
            self.documents,
            ("id", DataType.VARCHAR),
            [
                ("source", DataType.VARCHAR, path),
                ("content_hash", DataType.VARCHAR, short),
                ("mime_type", DataType.VARCHAR, short),
                ("title", DataType.VARCHAR, path),
                ("page_count", DataType.INT64, integer),
                ("size_bytes", DataType.INT64, integer),
                ("mtime_ns", DataType.INT64, integer),
                ("ingested_at", DataType.VARCHAR, short),
            ],
        )
        table(
            self.pages,
            ("key", DataType.VARCHAR),
            [
                ("document_id", DataType.VARCHAR, short),
                ("ordinal", DataType.INT64, integer),
                ("part", DataType.INT64, integer),
                ("number", DataType.INT64, {"nullable": True}),
                ("label", DataType.VARCHAR, nullable_short),
                ("text", DataType.VARCHAR, text),
                ("ocr_engine", DataType.VARCHAR, nullable_short),
                ("ocr_boxes", DataType.VARCHAR, nullable_text),
            ],
        )
        table(
            self.runs,
            ("id", DataType.INT64),
            [
                ("started_at", DataType.VARCHAR, short),
                ("finished_at", DataType.VARCHAR, nullable_short),
                ("status", DataType.VARCHAR, short),
                ("summary", DataType.VARCHAR, text),
            ],
        )
        table(
            self.run_files,
            ("key", DataType.VARCHAR),
            [
                ("run_id", DataType.INT64, integer),
                ("path", DataType.VARCHAR, path),
                ("outcome", DataType.VARCHAR, short),
                ("reason", DataType.VARCHAR, nullable_text),
                ("chunks", DataType.INT64, integer),
            ],
        )
        table(self.meta, ("key", DataType.VARCHAR), [("value", DataType.VARCHAR, text)])

    # -- reads ----------------------------------------------------------------------------------

    def scan(self, collection: str, fields: list[str], filter: str = "") -> Iterator[dict[str, Any]]:
        """Every row matching ``filter``, in batches (a plain query stops at 16,384 rows)."""
        iterator = self.client.query_iterator(collection, batch_size=_SCAN_BATCH, filter=filter, output_fields=fields)
        try:
            while batch := iterator.next():
                yield from batch
        finally:
            iterator.close()

    def meta_value(self, key: str) -> str | None:
        rows = self.client.query(self.meta, filter=f"key == {_quote(key)}", output_fields=["value"])
        return str(rows[0]["value"]) if rows else None

    def manifest(self) -> Manifest | None:
        value = self.meta_value("manifest")
        if value is None:
            return None
        try:
            return Manifest.model_validate_json(value)
        except ValueError:
            raise KnowledgeBaseDamagedError(str(self.location), f"its manifest in {self.meta} does not read") from None

    def count(self, collection: str, filter: str = "") -> int:
        rows = self.client.query(collection, filter=filter, output_fields=["count(*)"])
        return int(rows[0]["count(*)"])

    def documents_count(self) -> int:
        return self.count(self.documents, 'content_hash != ""')

    def chunks_by_id(self, ids: Sequence[int]) -> dict[int, tuple[Chunk, str]]:
        found: dict[int, tuple[Chunk, str]] = {}
        for start in range(0, len(ids), _SCAN_BATCH):
            part = list(ids[start : start + _SCAN_BATCH])
            for row in self.client.query(self.chunks, filter=f"id in {part}", output_fields=_CHUNK_FIELDS):
                found[int(row["id"])] = (_chunk(row), str(row["source"]))
        return found

    def pages_of(self, document_id: str, number: int | None = None, *, one: bool = False) -> list[Page]:
        filter = f"document_id == {_quote(document_id)}"
        if one:
            filter += " and number is null" if number is None else f" and number == {number}"
        fields = ["ordinal", "part", "number", "label", "text", "ocr_engine", "ocr_boxes"]
        rows = sorted(self.scan(self.pages, fields, filter), key=lambda row: (row["ordinal"], row["part"]))
        pages: list[Page] = []
        ordinals: list[int] = []
        for row in rows:
            if ordinals and ordinals[-1] == row["ordinal"]:
                last = pages[-1]
                pages[-1] = Page(last.number, last.text + row["text"], last.label, last.ocr_engine, last.boxes)
                continue
            ordinals.append(row["ordinal"])
            pages.append(
                Page(row["number"], row["text"], row["label"], row["ocr_engine"], boxes_from_json(row["ocr_boxes"]))
            )
        return pages

    def run(self, run_id: int) -> RunInfo | None:
        rows = self.client.query(self.runs, filter=f"id == {run_id}", output_fields=["*"])
        if not rows:
            return None
        row = rows[0]
        failed = sorted(
            (
                FailedFile(path=file["path"], reason=file["reason"] or "")
                for file in self.scan(self.run_files, ["path", "reason"], f'run_id == {run_id} and outcome == "failed"')
            ),
            key=lambda file: file.path,
        )
        return RunInfo(
            id=run_id,
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            status=row["status"],
            summary=json.loads(row["summary"]) if row["summary"] else {},
            failed=failed,
        )


def _chunk(row: dict[str, Any]) -> Chunk:
    return Chunk(
        id=int(row["id"]),
        document_id=row["document_id"],
        ordinal=int(row["ordinal"]),
        page=row["page"],
        page_label=row["page_label"],
        start=int(row["start"]),
        end=int(row["end"]),
        token_count=int(row["token_count"]),
        text=row["text"],
        context=row["context"],
    )


def _document(row: dict[str, Any]) -> Document:
    return Document(*(row[field] for field in _DOCUMENT_FIELDS))


class MilvusSearcher:
    """Dense and BM25 search, both run by Milvus over what is stored now."""

    def __init__(self, kb: MilvusKnowledgeBase, index: IndexConfig, generation: int) -> None:
        self._kb, self.generation = kb, generation
        self._search_params = {"metric_type": "IP", "params": _index_params(index)[2]}

    def dense(self, query_vectors: Vectors, k: int) -> list[list[ScoredChunk]]:
        if len(query_vectors) == 0:
            return []
        with self._kb.lock:
            results = self._kb.collections.client.search(
                self._kb.collections.chunks,
                data=[vector.tolist() for vector in query_vectors],
                anns_field="vector",
                limit=k,
                search_params=self._search_params,
                output_fields=[],
            )
        rankings = [[(int(hit["id"]), float(hit["distance"])) for hit in hits] for hits in results]
        return scored_chunks(self._kb.chunks, rankings, "dense")

    def keyword(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        texts = analyzed(queries)
        asked = [i for i, text in enumerate(texts) if text]
        rankings: list[list[tuple[int, float]]] = [[] for _ in queries]
        if asked:
            with self._kb.lock:
                results = self._kb.collections.client.search(
                    self._kb.collections.chunks,
                    data=[texts[i] for i in asked],
                    anns_field="sparse",
                    limit=k,
                    search_params={"metric_type": "BM25"},
                    output_fields=[],
                )
            for i, hits in zip(asked, results, strict=True):
                # Milvus Lite reports BM25 scores negated (a server, positive): best first either way.
                rankings[i] = [(int(hit["id"]), abs(float(hit["distance"]))) for hit in hits]
        return scored_chunks(self._kb.chunks, rankings, "bm25")


class MilvusKnowledgeBase(Closing):
    """Read access to a knowledge base in Milvus; safe to share between threads."""

    def __init__(self, collections: _Collections, manifest: Manifest) -> None:
        self.collections = collections
        self.manifest = manifest
        self.lock = threading.RLock()  # one client, its calls in turn

    @classmethod
    def open(cls, location: MilvusLocation, config: AppConfig | None = None) -> MilvusKnowledgeBase:
        """Open for reading. With ``config``, refuse a knowledge base built with another model."""
        if location.lite and not Path(location.uri).exists():
            raise KnowledgeBaseNotFoundError(
                f"no knowledge base at {location}; create one with `rag ingest PATH --kb {location}`"
            )
        collections = _Collections(location, _connect(location))
        try:
            with _refusals(location):
                if collections.exists():
                    collections.load()
                manifest = collections.manifest() if collections.exists() else None
            if manifest is None:
                raise KnowledgeBaseNotFoundError(
                    f"knowledge base {location} is empty; add documents with `rag ingest PATH --kb {location}`"
                )
            if config is not None:
                manifest.check_embedding(config.embedding, str(location))
            return cls(collections, manifest)
        except BaseException:
            collections.close()
            raise

    @property
    def location(self) -> str:
        return str(self.collections.location)

    def close(self) -> None:
        self.collections.close()

    def generation(self) -> int:
        with self.lock:
            manifest = self.collections.manifest()
        if manifest is not None:
            self.manifest = manifest
        return self.manifest.generation

    def document(self, document_id: str) -> Document | None:
        with self.lock:
            rows = self.collections.client.query(
                self.collections.documents,
                filter=f"id == {_quote(document_id)}",
                output_fields=_DOCUMENT_FIELDS,
            )
        return _document(rows[0]) if rows else None

    def page(self, document_id: str, number: int | None) -> Page | None:
        with self.lock:
            pages = self.collections.pages_of(document_id, number, one=True)
        return pages[0] if pages else None

    def chunks(self, ids: Iterable[int]) -> dict[int, tuple[Chunk, str]]:
        wanted = sorted({int(i) for i in ids})
        if not wanted:
            return {}
        with self.lock:
            return self.collections.chunks_by_id(wanted)

    def all_chunks(self) -> list[tuple[Chunk, str]]:
        with self.lock:
            rows = list(self.collections.scan(self.collections.chunks, _CHUNK_FIELDS))
        found = [(_chunk(row), str(row["source"])) for row in rows]
        return sorted(found, key=lambda pair: (pair[1], pair[0].ordinal))

    def documents(self) -> list[Document]:
        with self.lock:
            rows = list(self.collections.scan(self.collections.documents, _DOCUMENT_FIELDS, 'content_hash != ""'))
        return sorted((_document(row) for row in rows), key=lambda document: document.source)

    def searcher(self, config: AppConfig) -> MilvusSearcher:
        return MilvusSearcher(self, config.index, self.generation())

    def stats(self) -> KnowledgeBaseStats:
        with self.lock:
            manifest = self.collections.manifest() or self.manifest
            pages = self.collections.count(self.collections.pages, "part == 0")
            ocr_pages = self.collections.count(self.collections.pages, "part == 0 and ocr_engine is not null")
            last = self.collections.meta_value("last_run")
            last_run = self.collections.run(int(last)) if last is not None else None
        size = 0
        if self.collections.location.lite:
            size = sum(p.stat().st_size for p in Path(self.collections.location.uri).rglob("*") if p.is_file())
        return KnowledgeBaseStats.of(
            manifest,
            pages=pages,
            ocr_pages=ocr_pages,
            size=size,
            last_run=last_run,
            index=manifest.index_structure,
        )

    def consistency_problems(self, config: AppConfig) -> list[str]:
        with self.lock:
            complete = {
                row["id"] for row in self.collections.scan(self.collections.documents, ["id"], 'content_hash != ""')
            }
            chunk_documents = [
                row["document_id"] for row in self.collections.scan(self.collections.chunks, ["document_id"])
            ]
            manifest = self.collections.manifest() or self.manifest
        problems = []
        orphans = sum(1 for document_id in chunk_documents if document_id not in complete)
        if orphans:
            problems.append(f"{orphans} chunks belong to no stored document (an interrupted run: run it again)")
        if (manifest.chunks, manifest.documents) != (len(chunk_documents), len(complete)):
            problems.append("manifest counts disagree with the collections")
        return problems


class MilvusWriter(Closing):
    """The writer of a knowledge base in Milvus. Documents are written at :meth:`commit`, in the
    order the module doc gives; until then they are held here (with their vectors)."""

    def __init__(self, collections: _Collections, manifest: Manifest, built_with: Manifest | None) -> None:
        self.collections = collections
        self.manifest = manifest
        self.built_with = built_with
        self._documents: dict[str, tuple[Document, Sequence[Page], Sequence[Chunk], Vectors]] = {}
        self._removed: set[str] = set()
        self._stats: dict[str, tuple[int, int]] = {}
        self._run_files: list[dict[str, Any]] = []
        self._dirty = False

    @classmethod
    def open(
        cls, location: MilvusLocation, config: AppConfig, *, dimension: int, reindex: bool = False
    ) -> MilvusWriter:
        """Open (creating the collections if needed) for writing."""
        if reindex:
            raise KnowledgeBaseError(
                f"--reindex is not supported for a knowledge base in Milvus ({location}): ingest into a new "
                "collection with the new settings, and point --kb at it once it is complete"
            )
        if location.lite:
            Path(location.uri).parent.mkdir(parents=True, exist_ok=True)
        collections = _Collections(location, _connect(location))
        try:
            with _refusals(location):
                if collections.exists():
                    collections.load()
                stored = collections.manifest() if collections.exists() else None
            if stored is not None:
                stored.check_embedding(config.embedding, str(location))
                stored.check_indexing(config, str(location))
                if stored.format_version != FORMAT_VERSION:
                    raise KnowledgeBaseError(
                        f"knowledge base {location} has format {stored.format_version}; this version reads format "
                        f"{FORMAT_VERSION}. Ingest into a new collection."
                    )
            with _refusals(location):
                collections.create(dimension, config.index)
                collections.load()
                # Runs left "running" were killed.
                running = collections.client.query(collections.runs, filter='status == "running"', output_fields=["*"])
                for row in running:
                    collections.client.upsert(collections.runs, [{**row, "status": "interrupted"}])
            kind, _, _ = _index_params(config.index)
            manifest = Manifest.describing(
                config,
                dimension=dimension,
                index_structure=f"milvus {kind}",
                generation=stored.generation if stored is not None else 0,
                keyword_generation=stored.generation if stored is not None else 0,
            )
            if stored is not None:
                manifest = manifest.model_copy(update={"documents": stored.documents, "chunks": stored.chunks})
            return cls(collections, manifest, stored)
        except BaseException:
            collections.close()
            raise

    def close(self) -> None:
        """Drop what was not committed and disconnect."""
        self._documents.clear()
        self.collections.close()

    def stored_documents(self) -> dict[str, StoredDocument]:
        fields = ["id", "source", "content_hash", "size_bytes", "mtime_ns", "title"]
        return {
            row["source"]: StoredDocument(*(row[field] for field in fields))
            for row in self.collections.scan(self.collections.documents, fields)
        }

    def stored_pages(self, document_id: str) -> list[Page]:
        return self.collections.pages_of(document_id)

    def sources_with_empty_pages(self) -> set[str]:
        empty = {
            row["document_id"]
            for row in self.collections.scan(self.collections.pages, ["document_id", "text"], "number is not null")
            if not row["text"].strip()
        }
        return {source for source, stored in self.stored_documents().items() if stored.id in empty}

    def _next_run_id(self) -> int:
        value = self.collections.meta_value("last_run")
        return int(value) + 1 if value is not None else 1

    def _put_meta(self, key: str, value: str) -> None:
        self.collections.client.upsert(self.collections.meta, [{"key": key, "value": value, "nowhere": _NOWHERE}])

    def start_run(self) -> int:
        run_id = self._next_run_id()
        row = {"id": run_id, "started_at": utc_now(), "finished_at": None, "status": "running", "summary": ""}
        self.collections.client.upsert(self.collections.runs, [{**row, "nowhere": _NOWHERE}])
        self._put_meta("last_run", str(run_id))
        return run_id

    def finish_run(self, run_id: int, status: str, summary: dict[str, Any]) -> None:
        self.commit()
        text = json.dumps(summary)
        if len(text.encode()) > _TEXT_BYTES:  # the per-file lists of a huge run: they are in run_files too
            text = json.dumps({key: value for key, value in summary.items() if not isinstance(value, list)})
        rows = self.collections.client.query(self.collections.runs, filter=f"id == {run_id}", output_fields=["*"])
        started = rows[0]["started_at"] if rows else utc_now()
        row = {"id": run_id, "started_at": started, "finished_at": utc_now(), "status": status, "summary": text}
        self.collections.client.upsert(self.collections.runs, [{**row, "nowhere": _NOWHERE}])

    def record_file(self, run_id: int, path: str, outcome: str, reason: str | None = None, chunks: int = 0) -> None:
        key = f"{run_id}:{hashlib.sha256(path.encode()).hexdigest()}"  # a path may be longer than a key
        row = {"key": key, "run_id": run_id, "path": path, "outcome": outcome}
        self._run_files.append({**row, "reason": reason, "chunks": chunks, "nowhere": _NOWHERE})
        self._dirty = True

    def put_document(
        self, document: Document, pages: Sequence[Page], chunks: Sequence[Chunk], vectors: Vectors
    ) -> None:
        if len(chunks) != len(vectors):
            raise ValueError(f"{len(chunks)} chunks but {len(vectors)} vectors")
        self._removed.discard(document.id)
        self._documents[document.id] = (document, pages, chunks, vectors)
        self._dirty = True

    def put_chunks(self, chunks: Sequence[Chunk], vectors: Vectors) -> None:
        raise KnowledgeBaseError(
            f"re-indexing is not supported for a knowledge base in Milvus ({self.collections.location})"
        )

    def remove_document(self, document_id: str) -> None:
        self._documents.pop(document_id, None)
        self._removed.add(document_id)
        self._dirty = True

    def update_file_stat(self, document_id: str, size_bytes: int, mtime_ns: int) -> None:
        self._stats[document_id] = (size_bytes, mtime_ns)
        self._dirty = True

    def commit(self, *, keyword: bool = False) -> None:
        """Write what was gathered, in the crash-safe order of the module doc. ``keyword`` changes
        nothing: Milvus keeps its BM25 index up to date as rows land."""
        if not self._dirty:
            return
        client, c = self.collections.client, self.collections
        documents = list(self._documents.values())
        if documents:
            client.upsert(c.documents, [_document_row(d, pending=True) for d, _, _, _ in documents])
            crash_point("milvus-pending")
            pairs = [
                (chunk, document, vector)
                for document, _, chunks, vectors in documents
                for chunk, vector in zip(chunks, vectors, strict=True)
            ]
            words = analyzed([indexed_text(chunk.context or "", chunk.text) for chunk, _, _ in pairs])
            rows = [_chunk_row(*pair, indexed) for pair, indexed in zip(pairs, words, strict=True)]
            for start in range(0, len(rows), 512):
                client.upsert(c.chunks, rows[start : start + 512])
            page_rows = [row for document, pages, _, _ in documents for row in _page_rows(document.id, pages)]
            for start in range(0, len(page_rows), 512):
                client.upsert(c.pages, page_rows[start : start + 512])
            crash_point("milvus-chunks")
            ids = [document.id for document, _, _, _ in documents]
            kept_chunks = {chunk.id for _, _, chunks, _ in documents for chunk in chunks}
            kept_pages = {row["key"] for row in page_rows}
            self._delete_rows(ids, kept_chunks, kept_pages)
            crash_point("milvus-old-deleted")
            client.upsert(c.documents, [_document_row(d, pending=False) for d, _, _, _ in documents])
        for document_id in self._removed:
            # Its row first becomes pending, so a crash part-way leaves it for --prune to finish.
            rows = client.query(c.documents, filter=f"id == {_quote(document_id)}", output_fields=["*"])
            if rows:
                client.upsert(c.documents, [{**rows[0], "content_hash": "", "size_bytes": -1, "mtime_ns": -1}])
            self._delete_rows([document_id], set(), set())
            client.delete(c.documents, ids=[document_id])
        for document_id, (size, mtime) in self._stats.items():
            rows = client.query(c.documents, filter=f"id == {_quote(document_id)}", output_fields=["*"])
            if rows:
                client.upsert(c.documents, [{**rows[0], "size_bytes": size, "mtime_ns": mtime}])
        if self._run_files:
            client.upsert(c.run_files, self._run_files)
        manifest = self.manifest.model_copy(
            update={
                "generation": self.manifest.generation + 1,
                "keyword_generation": self.manifest.generation + 1,
                "documents": c.documents_count(),
                "chunks": c.count(c.chunks),
                "updated_at": utc_now(),
            }
        )
        self._put_meta("manifest", manifest.model_dump_json())
        self.manifest = manifest
        self._documents.clear()
        self._removed.clear()
        self._stats.clear()
        self._run_files.clear()
        self._dirty = False

    def _delete_rows(self, document_ids: list[str], kept_chunks: set[int], kept_pages: set[str]) -> None:
        """Delete the chunks and page parts of ``document_ids`` that are not in the kept sets."""
        client, c = self.collections.client, self.collections
        for start in range(0, len(document_ids), 256):
            quoted = ", ".join(_quote(i) for i in document_ids[start : start + 256])
            old_chunks = [
                row["id"]
                for row in c.scan(c.chunks, ["id"], f"document_id in [{quoted}]")
                if row["id"] not in kept_chunks
            ]
            old_pages = [
                row["key"]
                for row in c.scan(c.pages, ["key"], f"document_id in [{quoted}]")
                if row["key"] not in kept_pages
            ]
            for part in range(0, len(old_chunks), 4096):
                client.delete(c.chunks, ids=old_chunks[part : part + 4096])
            for part in range(0, len(old_pages), 4096):
                client.delete(c.pages, ids=old_pages[part : part + 4096])


def _document_row(document: Document, *, pending: bool) -> dict[str, Any]:
    row = {field: getattr(document, field) for field in _DOCUMENT_FIELDS}
    if pending:
        # Neither its hash nor its size and mtime match the file: a re-run reads it again.
        row |= {"content_hash": "", "size_bytes": -1, "mtime_ns": -1}
    return {**row, "nowhere": _NOWHERE}


def _chunk_row(chunk: Chunk, document: Document, vector: Any, indexed: str) -> dict[str, Any]:
    return {
        "id": chunk.id,
        "document_id": chunk.document_id,
        "content_hash": document.content_hash,
        "source": document.source,
        "ordinal": chunk.ordinal,
        "page": chunk.page,
        "page_label": chunk.page_label,
        "start": chunk.start,
        "end": chunk.end,
        "token_count": chunk.token_count,
        "text": chunk.text,
        "context": chunk.context,
        "indexed": indexed,
        "vector": [float(x) for x in vector],
    }


def _page_rows(document_id: str, pages: Sequence[Page]) -> list[dict[str, Any]]:
    rows = []
    for ordinal, page in enumerate(pages):
        parts = [page.text[i : i + PAGE_PART_CHARS] for i in range(0, len(page.text), PAGE_PART_CHARS)] or [""]
        for part, text in enumerate(parts):
            rows.append(
                {
                    "key": f"{document_id}:{ordinal}:{part}",
                    "document_id": document_id,
                    "ordinal": ordinal,
                    "part": part,
                    "number": page.number,
                    "label": page.label,
                    "text": text,
                    "ocr_engine": page.ocr_engine,
                    "ocr_boxes": boxes_to_json(page.boxes) if part == 0 else None,
                    "nowhere": _NOWHERE,
                }
            )
    return rows
