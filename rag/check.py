"""``rag check``: whether a knowledge base is whole, and rebuilding what derives from intact parts.

A knowledge base's data of record is its SQLite database: documents, pages, chunks, runs and the
manifest. Everything else derives from it: the FAISS file (the chunks' vectors), the BM25
folder (the chunks' words) and ``manifest.json`` (a readable copy of the manifest). So a check
goes from the data of record outwards:

1. ``kb.sqlite``: SQLite's own ``integrity_check``. If it fails nothing else is trusted, and
   nothing is repaired: SQLite's damage is not this program's to mend (restore a backup, or
   ingest again into a new directory); the file is left as it is.
2. the manifest row: it must read; its counts must match the tables.
3. the FAISS file its generation names: present, readable, one vector per chunk, no other.
4. the BM25 folder: present when the manifest says it is current, readable, one entry per chunk.
5. ``manifest.json``: present and equal to the manifest row.
6. leftovers (the next generation's files of a killed run), chunks without a document, and
   documents whose files are gone: notes.

``--repair`` rebuilds, through the writer's normal crash-safe commit, what derives from the rows:
the manifest (from ``manifest.json`` when that still reads, otherwise from the configuration,
which the report then says), the BM25 index, ``manifest.json``, and the FAISS index by embedding
every stored chunk's text again with the knowledge base's own model. It never deletes a document,
page, chunk or run, and says what it could not save. A repair killed half-way leaves the
knowledge base as it found it (the commit is all or nothing); run it again.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from rag.config import AppConfig
from rag.embedder import Embedder
from rag.errors import KnowledgeBaseDamagedError, KnowledgeBaseLockedError, KnowledgeBaseNotFoundError
from rag.index import FaissIndex
from rag.kb.embedded import EmbeddedWriter, RepairPlan
from rag.kb.generations import (
    INDEX_GLOB,
    KEYWORD_GLOB,
    LOCK_NAME,
    MANIFEST_NAME,
    index_file_name,
    keyword_dir_name,
)
from rag.kb.sqlite_rows import DB_NAME, read_manifest
from rag.keyword import Bm25Index
from rag.manifest import FORMAT_VERSION, Manifest, vector_kind

Level = Literal["error", "warning", "note"]
_SAMPLES = 3


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong. ``error``: a command fails or a result could be wrong; ``warning``: a
    derived file is missing or stale and results are right but slower; ``note``: worth knowing.
    ``repair`` says what ``--repair`` does about it (None: it cannot)."""

    level: Level
    part: str
    problem: str
    repair: str | None = None


@dataclass
class CheckReport:
    """What ``rag check`` found, and with ``--repair`` what it did and could not do."""

    directory: str
    findings: list[Finding] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    not_saved: list[str] = field(default_factory=list)

    @property
    def whole(self) -> bool:
        """No errors or warnings (notes allowed)."""
        return not any(f.level != "note" for f in self.findings)

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.directory,
            "whole": self.whole,
            "findings": [asdict(f) for f in self.findings],
            "repaired": self.repaired,
            "not_saved": self.not_saved,
        }


@dataclass
class _Inspection:
    """What one pass over the knowledge base saw, for the report and for a repair plan."""

    report: CheckReport
    sqlite_damaged: bool = False
    manifest: Manifest | None = None
    manifest_damaged: bool = False
    copy: Manifest | None = None  # manifest.json, when it reads
    index_damaged: bool = False
    chunk_ids: set[int] = field(default_factory=set)
    documents: int = 0


def check_knowledge_base(directory: Path, config: AppConfig) -> CheckReport:
    """Check the knowledge base at ``directory`` (see the module doc); changes nothing.

    Raises KnowledgeBaseNotFoundError when there is none, KnowledgeBaseLockedError while an
    ingest writes to it (its half-written next generation would read as damage)."""
    return _inspect(directory, config).report


def repair_knowledge_base(
    directory: Path,
    config: AppConfig,
    embedder_for: Callable[[AppConfig], Embedder],
    progress: Callable[[int, int], None] | None = None,
) -> CheckReport:
    """Check, rebuild what derives from intact rows, and check again (see the module doc).

    ``embedder_for(config)`` gives the embedder of ``config.embedding``, loaded (the ``rag``
    command builds it with :meth:`rag.components.Components.embedder`); it is called with the
    knowledge base's own model and settings, and only when vectors must be embedded again.
    ``progress(done, total)`` follows that embedding. Returns the second check's report, with
    what was repaired and what could not be saved."""
    before = _inspect(directory, config)
    repaired: list[str] = []
    not_saved: list[str] = []
    if before.sqlite_damaged:
        not_saved.append(
            f"{DB_NAME} is damaged and was left as it is: restore it from a backup, or ingest your files "
            "again into a new directory"
        )
        return CheckReport(str(directory), before.report.findings, repaired, not_saved)
    if not any(f.repair is not None for f in before.report.findings):
        # Whole, or only what no rebuild changes (files gone, chunks without a document).
        unsaved = [f"{f.part}: {f.problem}" for f in before.report.findings if f.level != "note"]
        return CheckReport(str(directory), before.report.findings, [], unsaved)

    replacement: Manifest | None = None
    if before.manifest_damaged or before.manifest is None:
        replacement, where = _rebuilt_manifest(directory, before, config)
        repaired.append(f"the manifest, from {where}")
    built = replacement or before.manifest
    assert built is not None
    as_built = config_as_built(config, built)
    vectors = before.index_damaged or (
        replacement is not None and _index_problem(directory, as_built, replacement, before.chunk_ids) is not None
    )
    embed: Callable[[list[str]], Any] = _no_texts
    dimension = built.dimension
    if vectors and before.chunk_ids:
        embedder = embedder_for(as_built)
        embed, dimension = embedder.embed_documents, embedder.dimension
    plan = RepairPlan(manifest=replacement, vectors=vectors)
    with EmbeddedWriter.open(directory, as_built, dimension=dimension, repair=plan) as writer:
        if vectors:
            done = writer.restore_vectors(embed, as_built.ingest.embed_batch_chunks, progress)
            repaired.append(f"the FAISS index: {done} passages embedded again with {built.embedding_model}")
        writer.commit(keyword=True)
    repaired.append("the BM25 index and manifest.json, from the chunk rows")
    after = _inspect(directory, config).report
    not_saved.extend(f"{f.part}: {f.problem}" for f in after.findings if f.level != "note")
    return CheckReport(str(directory), after.findings, repaired, not_saved)


def config_as_built(config: AppConfig, manifest: Manifest) -> AppConfig:
    """``config`` with the model and indexing settings ``manifest`` records, so a repair embeds
    and indexes as the knowledge base was built, whatever the configuration says now."""
    return config.model_copy(
        update={
            "embedding": config.embedding.model_copy(
                update={
                    "model": manifest.embedding_model,
                    "backend": manifest.embedding_backend,
                    "quantization": manifest.embedding_quantization,
                }
            ),
            "chunking": config.chunking.model_copy(
                update={
                    "chunk_tokens": manifest.chunk_tokens,
                    "overlap_tokens": manifest.overlap_tokens,
                    "context": manifest.chunk_context,
                }
            ),
            "ingest": config.ingest.model_copy(update={"pdf_text": manifest.pdf_text}),
        }
    )


def _no_texts(texts: list[str]) -> Any:
    raise AssertionError("no embedder was loaded: there was no chunk to embed")


def _inspect(directory: Path, config: AppConfig) -> _Inspection:
    if not (directory / DB_NAME).is_file():
        raise KnowledgeBaseNotFoundError(f"no knowledge base at {directory}")
    # Shared: writers (ingests, uploads, a repair) wait until the check ends, and are told the
    # knowledge base is in use. Opened for reading: a check creates and changes nothing.
    lock_path = directory / LOCK_NAME
    with open(lock_path if lock_path.is_file() else os.devnull, "rb") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KnowledgeBaseLockedError(
                f"knowledge base {directory} is being written by another process; check it when that ends"
            ) from None
        seen = _Inspection(CheckReport(str(directory)))
        try:
            db = sqlite3.connect(f"file:{directory / DB_NAME}?mode=ro", uri=True, isolation_level=None)
        except sqlite3.DatabaseError as exc:
            _sqlite_damage(seen, str(exc))
            return seen
        try:
            _inspect_rows(directory, config, db, seen)
        except sqlite3.DatabaseError as exc:  # damage that integrity_check did not reach
            _sqlite_damage(seen, str(exc))
        finally:
            db.close()
    return seen


def _sqlite_damage(seen: _Inspection, message: str) -> None:
    seen.sqlite_damaged = True
    seen.report.findings.append(Finding("error", DB_NAME, f"SQLite reports damage: {message}"))


def _add(seen: _Inspection, level: Level, part: str, problem: str, repair: str | None = None) -> None:
    seen.report.findings.append(Finding(level, part, problem, repair))


def _inspect_rows(directory: Path, config: AppConfig, db: sqlite3.Connection, seen: _Inspection) -> None:
    problems = [row[0] for row in db.execute("PRAGMA integrity_check(10)")]
    if problems != ["ok"]:
        _sqlite_damage(seen, "; ".join(problems[:_SAMPLES]))
        return
    db.execute("BEGIN")  # one snapshot for every query below
    try:
        seen.manifest = read_manifest(db, directory)
    except KnowledgeBaseDamagedError as exc:
        seen.manifest_damaged = True
        _add(seen, "error", f"{DB_NAME} (manifest)", exc.what, "rebuild it")
    seen.chunk_ids = {row[0] for row in db.execute("SELECT id FROM chunks")}
    seen.documents = documents = db.execute("SELECT COUNT(*) FROM documents").fetchone()[0]
    orphans = db.execute("SELECT COUNT(*) FROM chunks WHERE document_id NOT IN (SELECT id FROM documents)").fetchone()
    sources = [row[0] for row in db.execute("SELECT source FROM documents ORDER BY source")]
    db.execute("COMMIT")
    seen.copy = _read_copy(directory)

    manifest = seen.manifest
    if manifest is None and not seen.manifest_damaged and seen.chunk_ids:
        seen.manifest_damaged = True
        _add(seen, "error", f"{DB_NAME} (manifest)", "chunks are stored but the manifest is missing", "rebuild it")
    if manifest is not None:
        if (manifest.documents, manifest.chunks) != (documents, len(seen.chunk_ids)):
            _add(
                seen,
                "error",
                f"{DB_NAME} (manifest)",
                f"the manifest counts {manifest.documents} documents and {manifest.chunks} chunks; "
                f"the tables hold {documents} and {len(seen.chunk_ids)}",
                "count again",
            )
        _inspect_index(directory, config, manifest, seen)
        _inspect_keyword(directory, manifest, seen)
        _inspect_copy(directory, manifest, seen)
        _inspect_leftovers(directory, manifest, seen)
    if orphans[0]:
        _add(
            seen,
            "error",
            f"{DB_NAME} (chunks)",
            f"{orphans[0]} chunks belong to no stored document, so search leaves them out",
            None,
        )
    gone = [source for source in sources if not Path(source).exists()]
    if gone:
        shown = ", ".join(gone[:_SAMPLES]) + (f" and {len(gone) - _SAMPLES} more" if len(gone) > _SAMPLES else "")
        _add(
            seen,
            "note",
            "documents",
            f"{len(gone)} documents' files are no longer where they were ingested from ({shown}); their text stays "
            "searchable; `rag ingest PATH --prune` removes them",
        )
    if manifest is None:
        return
    built = manifest.vectors
    wanted = vector_kind(config.embedding.backend, config.embedding.quantization)
    if manifest.embedding_model != config.embedding.model:
        _add(
            seen,
            "note",
            "configuration",
            f"the knowledge base was built with {manifest.embedding_model}; the configuration names "
            f"{config.embedding.model} (a repair embeds with the knowledge base's own model)",
        )
    elif built != wanted:
        _add(
            seen,
            "note",
            "configuration",
            f"the knowledge base holds {built} vectors; the configuration makes {wanted} vectors (a repair embeds "
            "with the knowledge base's own backend and quantization)",
        )


def _inspect_index(directory: Path, config: AppConfig, manifest: Manifest, seen: _Inspection) -> None:
    problem = _index_problem(directory, config, manifest, seen.chunk_ids)
    if problem is not None:
        seen.index_damaged = True
        repair = f"embed the {len(seen.chunk_ids)} stored passages again with {manifest.embedding_model}"
        _add(seen, "error", index_file_name(manifest.generation), problem, repair)


def _index_problem(directory: Path, config: AppConfig, manifest: Manifest, chunk_ids: set[int]) -> str | None:
    """What is wrong with the FAISS file of ``manifest``'s generation, given the stored chunk ids."""
    path = directory / index_file_name(manifest.generation)
    if not path.is_file():
        return "the current FAISS index file is missing"
    try:
        index = FaissIndex.read(path, config.index)
    except RuntimeError:
        return "the file does not read as a FAISS index (truncated or overwritten?)"
    if index.dimension != manifest.dimension:
        return f"its vectors have {index.dimension} dimensions; the manifest says {manifest.dimension}"
    indexed = [int(i) for i in index.ids()]
    if len(indexed) != len(set(indexed)):
        return "it holds a chunk's vector twice"
    missing, extra = len(chunk_ids - set(indexed)), len(set(indexed) - chunk_ids)
    if missing or extra:
        return f"{missing} chunks have no vector and {extra} vectors have no chunk"
    return None


def _inspect_keyword(directory: Path, manifest: Manifest, seen: _Inspection) -> None:
    name = keyword_dir_name(manifest.generation)
    repair = "rebuild it from the chunk rows"
    if manifest.keyword_generation != manifest.generation:
        # What every killed or running ingest leaves, by design (BM25 is written at a run's end):
        # results are right, and the next ingest's end rebuilds it.
        _add(
            seen,
            "note",
            name,
            "the BM25 index is older than the last commit (an ingest did not finish), so it is built in memory "
            "each time the knowledge base is opened, until the next ingest ends",
            repair,
        )
        return
    folder = directory / name
    if not folder.is_dir():
        _add(seen, "warning", name, "the BM25 folder is missing; it is built in memory on every open", repair)
        return
    try:
        keyword = Bm25Index.read(folder)
        ids = keyword.ids
    except (OSError, ValueError) as exc:
        _add(seen, "warning", name, f"the BM25 folder does not read ({exc}); it is built in memory", repair)
        return
    if set(ids) != seen.chunk_ids or len(ids) != len(seen.chunk_ids):
        _add(seen, "error", name, "the BM25 index names other chunks than the tables hold", repair)


def _read_copy(directory: Path) -> Manifest | None:
    try:
        return Manifest.model_validate_json((directory / MANIFEST_NAME).read_text())
    except (OSError, ValueError, ValidationError):
        return None


def _inspect_copy(directory: Path, manifest: Manifest, seen: _Inspection) -> None:
    path = directory / MANIFEST_NAME
    if not path.is_file() or (seen.copy is not None and seen.copy.generation < manifest.generation):
        # What a kill between the SQLite commit and the copy's rewrite leaves (the first commit's
        # included); no command reads the copy (only a repair, for a lost manifest row), and the
        # next commit rewrites it.
        problem = "the readable copy of the manifest is missing or of an earlier commit"
        _add(seen, "note", MANIFEST_NAME, problem, "write it again from " + DB_NAME)
        return
    if seen.copy is None:
        problem = "the readable copy of the manifest does not read"
    elif seen.copy.model_copy(update={"updated_at": manifest.updated_at}) != manifest:
        # (a commit that moved no generation, e.g. a run's start, may be killed before the copy)
        problem = "the readable copy of the manifest differs from the manifest in " + DB_NAME
    else:
        return
    _add(seen, "warning", MANIFEST_NAME, problem, "write it again from " + DB_NAME)


def _inspect_leftovers(directory: Path, manifest: Manifest, seen: _Inspection) -> None:
    keep = {index_file_name(manifest.generation), keyword_dir_name(manifest.keyword_generation)}
    leftovers = sorted(
        p.name for p in [*directory.glob(INDEX_GLOB + "*"), *directory.glob(KEYWORD_GLOB)] if p.name not in keep
    )
    if leftovers:
        _add(
            seen,
            "note",
            ", ".join(leftovers[:_SAMPLES]),
            "files of a generation that was never committed (a run was killed); the next ingest removes them",
            "remove them",
        )


def _rebuilt_manifest(directory: Path, seen: _Inspection, config: AppConfig) -> tuple[Manifest, str]:
    """A manifest for rows whose stored one is lost. Its settings come from ``manifest.json`` if
    that reads, else from the configuration (the report says which); its generation is the
    newest index file on disk whose vectors match the rows (then nothing is embedded again), else
    the newest there is (the repair embeds again and commits the one after it)."""
    base = seen.copy if seen.copy is not None and seen.copy.format_version == FORMAT_VERSION else None
    where = MANIFEST_NAME
    if base is None:
        base = Manifest(
            format_version=FORMAT_VERSION,
            embedding_model=config.embedding.model,
            embedding_backend=config.embedding.backend,
            embedding_quantization=config.embedding.quantization,
            dimension=0,
            chunk_tokens=config.chunking.chunk_tokens,
            overlap_tokens=config.chunking.overlap_tokens,
            chunk_context=config.chunking.context,
            pdf_text=config.ingest.pdf_text,
            index_kind=config.index.kind,
            index_structure="flat",
        )
        where = (
            f"the configuration (embedding model {config.embedding.model}, chunk_tokens "
            f"{config.chunking.chunk_tokens}, context {config.chunking.context}, pdf_text {config.ingest.pdf_text}), "
            f"since {MANIFEST_NAME} did not read either; if the knowledge base was built otherwise, re-index it "
            "with `rag ingest --reindex`"
        )
    generations = sorted(
        (int(p.stem.split("-")[1]) for p in directory.glob(INDEX_GLOB) if p.stem.split("-")[1].isdigit()),
        reverse=True,
    )
    if seen.copy is not None:
        # A file above the last commit the copy saw may be a killed run's, e.g. a `--reindex`
        # with another model whose chunk ids match: never trusted without embedding again.
        generations = [g for g in generations if g <= seen.copy.generation]
    base = base.model_copy(update={"documents": seen.documents, "chunks": len(seen.chunk_ids)})
    as_built = config_as_built(config, base)
    for generation in generations:
        try:
            dimension = FaissIndex.read(directory / index_file_name(generation), config.index).dimension
        except RuntimeError:
            continue
        candidate = base.model_copy(update={"generation": generation, "dimension": dimension})
        if _index_problem(directory, as_built, candidate, seen.chunk_ids) is None:
            return candidate, where
    return base.model_copy(update={"generation": max([base.generation, *generations])}), where
