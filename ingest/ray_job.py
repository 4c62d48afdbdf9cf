"""The ingestion job on Ray Data: ``rag ingest --engine ray [--ray-address ADDR]``.

The same loaders, chunker and embedder as the in-process job (``ingest.job``), as Ray Data stages:

1. the driver (this process) discovers the files and diffs them against the knowledge base, with the
   in-process job's rules (a stored file whose size and mtime are unchanged is not read; one whose
   content hash is unchanged is not re-indexed); only the files to read enter the dataset;
2. ``LoadAndChunk``, ``map_batches`` on an autoscaling pool of CPU actors: each actor loads the
   embedding model's tokenizer once (in ``__init__``), then loads one file per call (read, hash,
   extract pages, OCR) and chunks it. A file comes out as rows, one per chunk, the first carrying
   the file's record (pages, chunks; or why it failed, or that its content is unchanged);
3. ``EmbedChunks``, ``map_batches`` of ``ingest.embed_batch_chunks`` rows on a fixed pool of actors, one
   GPU each where the cluster has GPUs (else one actor on CPUs): the model is loaded once per actor,
   and each call embeds one batch of chunks, from many files, as the in-process job batches them;
4. the driver gathers each file's rows and, once all its vectors are in, writes the document with
   ``put_document`` (which replaces every row of a stored one), reports the file, and commits every
   ``ingest.commit_seconds``; the last commit rebuilds the keyword index.

Crash safety is the in-process job's: a document is written whole or not at all, and only the
driver writes, in commits. A killed run keeps what it committed; the next run skips those files
(their content hash is stored) and redoes the rest, so it ends equal to a clean run.

Bad files fail alone, as in the in-process job: each loading actor loads through a loader process
of its own, under ``ingest.file_timeout_s`` and ``ingest.file_memory_mb`` (with ``ingest.workers =
0``, in the actor itself, with no limit but ``ingest.max_file_mb``). Not (yet) in this engine:
``--reindex`` (refused: use the in-process engine), and the OCR notes the in-process job prints as
a file's scanned pages start (its summary lists them all the same). Ray is imported only here, only
when used.
"""

from __future__ import annotations

import logging
import os
import pickle
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.discovery import discover
from ingest.job import (
    FileLoad,
    IngestionRun,
    IngestSummary,
    LoaderPool,
    PreparedDocument,
    kb_directory,
    open_knowledge_base_writer,
    prepare_document,
)
from ingest.loaders import SUPPORTED_EXTENSIONS
from ingest.ocr import OcrSettings, check_engine
from ingest.progress import IngestReporter, NullReporter
from rag.config import AppConfig
from rag.context import indexed_text
from rag.embedder import Embedder
from rag.errors import ConfigError, IngestEngineError, first_line
from rag.faults import crash_point
from rag.index import Vectors
from rag.kb import StoredDocument

if TYPE_CHECKING:
    from ray.data import Dataset

log = logging.getLogger(__name__)

EmbedderFactory = Callable[[], Embedder]
"""Builds the embedding model, loaded. Called once per Ray actor (and once in the driver, for the
model's dimension), so it must pickle: ``Components(config).embedder`` does."""

Row = dict[str, Any]
Batch = dict[str, Any]


@dataclass(frozen=True, slots=True)
class RayResources:
    """How the stages use a cluster's resources (see :func:`plan_resources`)."""

    embed_actors: int
    embed_gpus: float  # per embedding actor: 1 on a cluster with GPUs
    embed_cpus: float  # per embedding actor
    embed_threads: int | None  # torch threads of an embedding actor on CPUs (None: torch's default)
    loader_actors: int  # the most loading-and-chunking actors
    loader_cpus: float  # per loading-and-chunking actor


def plan_resources(cluster: dict[str, float], embed_actors: int = 0) -> RayResources:
    """The stages' resources on a cluster with ``cluster`` (``ray.cluster_resources()``).

    With GPUs: ``embed_actors`` (0: one per GPU) actors of one GPU and one CPU each; the other CPUs
    load and chunk. On CPUs only: ``embed_actors`` (0: one) actors, each running torch on its share
    of the CPUs, as the in-process job runs it on all of them beside its loader process (embedding
    is the hot path); one CPU each is what Ray counts, so that loading actors fit beside them. On a
    cluster of one CPU the two stages take half of it each, so neither waits for the other forever.
    """
    cpus = max(float(cluster.get("CPU", 1.0)), 1.0)
    gpus = int(cluster.get("GPU", 0.0))
    if gpus:
        actors = embed_actors or gpus
        return RayResources(actors, 1.0, 1.0, None, max(1, int(cpus) - actors), 1.0)
    actors = embed_actors or 1
    share = 0.5 if cpus < 2 else 1.0
    threads = max(1, int(cpus) // actors)
    return RayResources(actors, 0.0, share, threads, max(1, int(cpus - actors * share)), share)


class LoadAndChunk:
    """Stage 2, on CPU actors: load each file with the in-process job's loaders and chunk it.

    Each actor loads the model's tokenizer once, and keeps one loader process (none with
    ``ingest.workers = 0``) for its life: a file is loaded under the in-process job's limits
    (``ingest.file_timeout_s``, ``ingest.file_memory_mb``), and one that hangs or kills its loader
    fails alone, never the actor. Each input row is one file (``path``, ``known_hash``,
    ``stored_id``; empty strings for none); each comes out as ``max(1, chunks)`` rows
    (:func:`file_rows`). Never raises for a bad file.
    """

    def __init__(self, make_embedder: EmbedderFactory, config: AppConfig) -> None:
        self._tokenizer = make_embedder().tokenizer
        self._config = config
        settings = config.ingest.model_copy(update={"workers": min(config.ingest.workers, 1)})
        self._loader = LoaderPool(settings, OcrSettings.of(config.ingest))

    def close(self) -> None:
        """Stop the loader process. Ray ends an actor by killing it; its loader then exits as its
        pipe to the actor closes."""
        self._loader.close()

    def __call__(self, batch: Batch) -> Batch:
        todo = [(str(path), str(known) or None) for path, known in zip(batch["path"], batch["known_hash"], strict=True)]
        stored_ids = [str(stored_id) or None for stored_id in batch["stored_id"]]
        rows: list[Row] = []
        for load, stored_id in zip(self._loader.load(todo), stored_ids, strict=True):
            item: FileLoad | PreparedDocument = load
            if load.error is None and not load.unchanged:
                item = prepare_document(load, stored_id, self._tokenizer, self._config.chunking)
            rows.extend(file_rows(item))
        return rows_to_columns(rows)


def file_rows(item: FileLoad | PreparedDocument) -> list[Row]:
    """One file as rows for the embedding stage: one per chunk (its indexed text), at least one; the
    first carries the pickled ``item``."""
    path = item.load.path if isinstance(item, PreparedDocument) else item.path
    chunks = item.chunks if isinstance(item, PreparedDocument) else []
    record = pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)
    if not chunks:
        return [{"path": path, "index": 0, "count": 0, "item": record, "text": ""}]
    return [
        {
            "path": path,
            "index": i,
            "count": len(chunks),
            "item": record if i == 0 else b"",
            "text": indexed_text(c.context, c.text),
        }
        for i, c in enumerate(chunks)
    ]


def rows_to_columns(rows: Sequence[Row]) -> Batch:
    names = ("path", "index", "count", "item", "text")
    return {name: [row[name] for row in rows] for name in names}


class EmbedChunks:
    """Stage 3, on the embedding actors: the model is loaded once per actor; each call embeds a batch
    of chunk rows (rows that carry no chunk pass through) and adds their vectors as float32 bytes."""

    def __init__(self, make_embedder: EmbedderFactory, threads: int | None) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self._embedder = make_embedder()

    def __call__(self, batch: Batch) -> Batch:
        counts = [int(count) for count in batch["count"]]
        texts = [str(text) for text, count in zip(batch["text"], counts, strict=True) if count]
        vectors = self._embedder.embed_documents(texts) if texts else None
        out: list[bytes] = []
        row = 0
        for count in counts:
            if count and vectors is not None:
                out.append(np.ascontiguousarray(vectors[row], dtype=np.float32).tobytes())
                row += 1
            else:
                out.append(b"")
        return {name: batch[name] for name in ("path", "index", "count", "item")} | {"vector": out}


@dataclass
class _Gathered:
    """A file's rows as they reach the driver, until all of them are in."""

    count: int
    item: FileLoad | PreparedDocument | None = None
    vectors: dict[int, Vectors] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        return self.item is not None and len(self.vectors) == self.count


class FileGatherer:
    """Puts each file together from the rows of the embedding stage, which come in any order."""

    def __init__(self) -> None:
        self._files: dict[str, _Gathered] = {}

    def add(self, path: str, index: int, count: int, item: bytes, vector: bytes) -> _Gathered | None:
        """Take one row; the file once its last row is in."""
        gathered = self._files.setdefault(path, _Gathered(count))
        if item:
            gathered.item = pickle.loads(item)  # our own stage's output, from our own cluster
        if count:
            gathered.vectors[index] = np.frombuffer(vector, dtype=np.float32)
        if not gathered.complete:
            return None
        del self._files[path]
        return gathered

    @property
    def incomplete(self) -> list[str]:
        return sorted(self._files)


def record_file(run: IngestionRun, gathered: _Gathered, known: StoredDocument | None) -> bool:
    """Note one gathered file in ``run`` as the in-process job does: failed, unchanged, or (True)
    written with its vectors."""
    item = gathered.item
    if isinstance(item, FileLoad):
        if not run.settle(item, known):
            run.fail(item.path, "the loader returned no document")  # not expected: a bug, not a crash
        return False
    assert item is not None
    if not run.indexable(item):
        return False
    vectors = np.stack([gathered.vectors[i] for i in range(gathered.count)])
    run.store(item, vectors)
    return True


def build_dataset(
    todo: Sequence[tuple[str, str | None]],
    stored: dict[str, StoredDocument],
    config: AppConfig,
    make_embedder: EmbedderFactory,
    resources: RayResources,
) -> Dataset:
    """The stages over the files to read (``ray`` must be initialised)."""
    import ray.data

    items = [
        {"path": path, "known_hash": known or "", "stored_id": stored[path].id if path in stored else ""}
        for path, known in todo
    ]
    dataset = ray.data.from_items(items)
    loaded = dataset.map_batches(
        LoadAndChunk,
        fn_constructor_args=(make_embedder, config),
        batch_size=1,  # one file a call: loading is per file anyway, and a big file holds up nothing else
        compute=ray.data.ActorPoolStrategy(min_size=1, max_size=resources.loader_actors),
        num_cpus=resources.loader_cpus,
    )
    return loaded.map_batches(
        EmbedChunks,
        fn_constructor_args=(make_embedder, resources.embed_threads),
        batch_size=config.ingest.embed_batch_chunks,
        compute=ray.data.ActorPoolStrategy(size=resources.embed_actors),
        num_cpus=resources.embed_cpus,
        num_gpus=resources.embed_gpus,
    )


@contextmanager
def ray_cluster(config: AppConfig, address: str | None) -> Iterator[dict[str, float]]:
    """Ray, initialised for this run; its cluster's resources. An address connects to that cluster;
    none starts a local Ray with ``ingest.ray_cpus`` (default: all this machine's CPUs), stopped at
    the end. A Ray this process had already initialised (a test session's) is used as it is."""
    import ray
    import ray.data

    verbose = log.isEnabledFor(logging.INFO)  # rag -v
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # the job's reporter shows progress
    context.print_on_execution_start = False
    if not verbose:  # Ray Data's notes on its own execution are noise beside the job's report
        logging.getLogger("ray.data").setLevel(logging.ERROR)
    if ray.is_initialized():
        yield ray.cluster_resources()
        return
    # The actors' own output (a loader's teardown notes, library warnings) only with -v: the job
    # reports every file, and a failure of the stages comes back as an error.
    options: dict[str, Any] = {"logging_level": logging.INFO if verbose else logging.WARNING, "log_to_driver": verbose}
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(num_cpus=config.ingest.ray_cpus or os.cpu_count(), include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as exc:
        where = f" at {address}" if address else ""
        raise IngestEngineError(f"cannot start or reach Ray{where}: {first_line(exc)}") from None
    try:
        yield ray.cluster_resources()
    finally:
        ray.shutdown()


StageRunner = Callable[
    [Sequence[tuple[str, str | None]], dict[str, StoredDocument], AppConfig, EmbedderFactory, str | None],
    Generator[Batch, None, None],
]
"""Runs the stages over ``(todo, stored, config, make_embedder, address)`` and yields the embedding
stage's output a block at a time: :func:`ray_stages`, or a test's fake that runs them in-process."""


def ray_stages(
    todo: Sequence[tuple[str, str | None]],
    stored: dict[str, StoredDocument],
    config: AppConfig,
    make_embedder: EmbedderFactory,
    address: str | None,
) -> Generator[Batch, None, None]:
    """The stages on Ray Data (see the module doc), their output a block at a time."""
    from ray.exceptions import RayError

    with ray_cluster(config, address) as cluster:
        resources = plan_resources(cluster, config.ingest.ray_embed_actors)
        log.info("ray ingest: cluster %s, stages %s", cluster, resources)
        dataset = build_dataset(todo, stored, config, make_embedder, resources)
        try:
            yield from dataset.iter_batches(batch_size=None, batch_format="numpy")
        except RayError as exc:
            raise IngestEngineError(
                f"the Ray ingestion failed: {first_line(exc)} (the Ray logs have the rest). What was committed is "
                "kept: run the same command again to resume"
            ) from None


def run_ray_ingest(
    paths: Sequence[Path],
    config: AppConfig,
    make_embedder: EmbedderFactory,
    reporter: IngestReporter | None = None,
    *,
    prune: bool = False,
    reindex: bool = False,
    address: str | None = None,
    stages: StageRunner = ray_stages,
) -> IngestSummary:
    """:func:`ingest.job.run_ingest` on Ray Data: the same outcome, summary and reports.

    ``make_embedder`` builds the loaded model in each actor (and once here, for its dimension).
    ``address`` connects to a running Ray cluster; without it a local one is started and stopped
    (a Ray this process has initialised already is used as it is). ``stages``: who runs the stages
    (unit tests run them in this process). Raises ConfigError for ``reindex`` (not in this engine
    yet), and IngestEngineError when Ray cannot start or the dataset fails as a whole (what was
    committed before is kept).
    """
    if reindex:
        raise ConfigError("--reindex is not supported by --engine ray yet: run it with --engine inprocess")
    reporter = reporter or NullReporter()
    started = time.monotonic()
    ocr = OcrSettings.of(config.ingest)
    check_engine(ocr)
    found = discover(paths, SUPPORTED_EXTENSIONS, exclude=kb_directory(config))
    dimension = make_embedder().dimension
    with open_knowledge_base_writer(config, dimension) as writer:
        run = IngestionRun(config, writer, reporter)
        stored = run.discovered(found)
        todo, total_bytes = run.files_to_read(found.files, stored)
        reporter.start(len(todo), total_bytes)
        try:
            if todo:
                blocks = stages(todo, stored, config, make_embedder, address)
                try:
                    store_blocks(run, blocks, stored)
                finally:
                    blocks.close()  # stops a local Ray at once, also when writing failed
            run.finish_writes(stored, prune=prune)
        finally:
            reporter.finish()
        return run.finish(started)


def store_blocks(run: IngestionRun, blocks: Iterable[Batch], stored: dict[str, StoredDocument]) -> None:
    """Write what the embedding stage gives, a block at a time: each file once all its rows are in;
    after a block, a commit when one is due (``ingest.commit_seconds``)."""
    gatherer = FileGatherer()
    for block in blocks:
        wrote = False
        columns = (block[name] for name in ("path", "index", "count", "item", "vector"))
        for path, index, count, item, vector in zip(*columns, strict=True):
            gathered = gatherer.add(str(path), int(index), int(count), bytes(item), bytes(vector))
            if gathered is not None:
                wrote |= record_file(run, gathered, stored.get(str(path)))
        if wrote:
            crash_point("stored")
        run.commit(when_due=True)
    for path in gatherer.incomplete:  # not expected: every row of the dataset comes through
        run.fail(path, "incomplete output from the Ray stages")
