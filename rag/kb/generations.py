"""The embedded knowledge base's index generations: the FAISS file and BM25 folder that one
committed generation names, how they are read, written and swapped, and the writer's lock.

The ordering that makes a commit crash-safe is in :mod:`rag.kb.embedded`'s module doc.
"""

from __future__ import annotations

import fcntl
import shutil
from pathlib import Path
from typing import Any

from rag.config import AppConfig
from rag.errors import KnowledgeBaseDamagedError, KnowledgeBaseLockedError
from rag.faults import crash_point
from rag.index import FaissIndex
from rag.keyword import Bm25Index
from rag.manifest import Manifest

MANIFEST_NAME = "manifest.json"

LOCK_NAME = ".lock"

INDEX_GLOB = "index-*.faiss"

KEYWORD_GLOB = "bm25-*"


def index_file_name(generation: int) -> str:
    return f"index-{generation:08d}.faiss"


def keyword_dir_name(generation: int) -> str:
    return f"bm25-{generation:08d}"


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


def index_missing(directory: Path, generation: int) -> KnowledgeBaseDamagedError:
    return KnowledgeBaseDamagedError(directory, f"{index_file_name(generation)}, its current index, is missing")


def current_keyword_generation(directory: Path, stored: Manifest | None, reindex: bool) -> int:
    """The stored keyword generation, or -1 (rebuild it at the run's end) for a new or re-indexed
    knowledge base, or one whose BM25 index was written with an earlier tokenization."""
    if stored is None or reindex:
        return -1
    if not Bm25Index.is_current(directory / keyword_dir_name(stored.keyword_generation)):
        return -1
    return stored.keyword_generation


def acquire_lock(directory: Path) -> Any:
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


def remove_stale_files(directory: Path, manifest: Manifest | None) -> None:
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


def write_keyword_index(directory: Path, generation: int, index: Bm25Index) -> None:
    """Write generation ``generation``'s BM25 folder: beside, then renamed into place."""
    target = directory / keyword_dir_name(generation)
    temporary = target.with_name(target.name + ".tmp")
    for stale in (temporary, target):
        shutil.rmtree(stale, ignore_errors=True)
    index.write(temporary)
    crash_point("keyword-written")
    temporary.rename(target)
    crash_point("keyword-renamed")
