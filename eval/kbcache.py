"""The knowledge base a dataset is evaluated on, built and cached for benchmark corpora.

- ``--kb DIR`` given: that knowledge base, as it is.
- BEIR: each corpus document is written as ``<corpus-id>.txt`` (title, a blank line, the text;
  the id percent-quoted by :func:`eval.datasets.corpus_file_name`) and ingested, so a retrieved
  file name maps back to its corpus id.
- FinanceBench: its PDF folder is ingested.
- The project's own JSONL: the configured knowledge base (``kb_dir``), since its questions are
  about the user's own documents.

A built knowledge base is cached under ``<eval.runs_dir>/.kb-cache/<key>/``, the key being a
hash of the dataset's content hash and every setting the index depends on (embedding model,
chunking, index structure), so a second run, or a run that only changes retrieval or generation
settings, reuses it. Ingestion is incremental, so a build that was stopped continues.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING

from eval.datasets import EvalDataset, corpus_file_name, iter_beir_corpus
from eval.progress import EvalReporter, NullEvalReporter
from eval.records import write_json
from rag.config import AppConfig, KbLocation, MilvusLocation
from rag.embedder import Embedder
from rag.files import write_text_atomic
from rag.manifest import embedding_settings

if TYPE_CHECKING:
    from ingest.progress import IngestReporter

CACHE_DIR = ".kb-cache"
_DONE_FILE = "complete.json"
# Bump when the way a corpus is written to files changes: cached knowledge bases are then rebuilt.
_CORPUS_LAYOUT = 1


def corpus_cache_key(dataset: EvalDataset, config: AppConfig) -> str:
    """The cache key of ``dataset``'s knowledge base under ``config``: 16 hex digits."""
    settings = {
        "dataset": dataset.content_hash,
        "format": dataset.format,
        "layout": _CORPUS_LAYOUT,
        **embedding_settings(config.embedding),
        "chunking": config.chunking.model_dump(mode="json"),
        "pdf_text": config.ingest.pdf_text,
        "ocr": config.ingest.model_dump(mode="json", include={"ocr", "ocr_engine", "ocr_min_chars", "ocr_dpi"}),
        "index": config.index.model_dump(mode="json", include={"kind", "ivf_nlist", "hnsw_m"}),
    }
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode("utf-8")).hexdigest()[:16]


def needs_built_kb(dataset: EvalDataset) -> bool:
    """Whether ``dataset`` brings its own documents (BEIR, FinanceBench) rather than using ``kb_dir``."""
    return dataset.format in ("beir", "financebench")


def prepare_kb(
    dataset: EvalDataset,
    config: AppConfig,
    embedder: Embedder,
    kb_dir: KbLocation | None = None,
    *,
    ingest_reporter: IngestReporter | None = None,
    reporter: EvalReporter | None = None,
) -> KbLocation:
    """The knowledge base to evaluate ``dataset`` on, building it first when needed.

    ``kb_dir`` (the user's ``--kb``) wins; the project's own format uses ``config.kb_dir``;
    BEIR and FinanceBench get a cached knowledge base (see the module docstring), or, when
    ``kb_dir`` is in Milvus, have their documents ingested there (incrementally: a second run
    adds nothing), so a benchmark can be scored through Milvus. ``embedder`` must be loaded.
    Files that fail to ingest are reported through ``reporter`` and left out (a document that
    cannot be indexed cannot be retrieved, which the metrics then show).
    """
    into_milvus = isinstance(kb_dir, MilvusLocation) and needs_built_kb(dataset)
    if kb_dir is not None and not into_milvus:
        return kb_dir
    if not needs_built_kb(dataset):
        return config.kb_dir
    reporter = reporter or NullEvalReporter()
    folder = config.eval.runs_dir / CACHE_DIR / corpus_cache_key(dataset, config)
    kb: KbLocation = kb_dir if kb_dir is not None else folder / "kb"
    if not into_milvus and (folder / _DONE_FILE).is_file():
        reporter.message(f"using the cached knowledge base {kb}")
        return kb
    folder.mkdir(parents=True, exist_ok=True)
    if dataset.format == "beir":
        assert dataset.corpus is not None
        reporter.message(f"writing the corpus of {dataset.name} to {folder / 'docs'}")
        sources = write_beir_corpus(dataset.corpus, folder / "docs")
    else:
        assert dataset.docs is not None
        sources = dataset.docs
    reporter.message(f"building the knowledge base {kb} from {sources} (cached for later runs)")
    # ingest is the sibling package's public entry point; imported here so that reading a run
    # (reports, compare, the web page) does not load it.
    from ingest.job import run_ingest

    summary = run_ingest([sources], config.model_copy(update={"kb_dir": kb}), embedder, ingest_reporter)
    if summary.failed:
        reporter.message(f"{len(summary.failed)} document(s) could not be ingested and cannot be retrieved:")
        for failure in summary.failed[:20]:
            reporter.message(f"  {failure.path}: {failure.reason}")
    write_json(
        folder / _DONE_FILE,
        {
            "dataset": dataset.name,
            "content_hash": dataset.content_hash,
            "documents": summary.documents,
            "chunks": summary.chunks,
            "failed": summary.failed,
        },
    )
    return kb


def write_beir_corpus(corpus: Path, folder: Path) -> Path:
    """Write each document of a BEIR ``corpus.jsonl`` to ``folder/<corpus-id>.txt``; returns ``folder``.

    Files already there are kept (a stopped write continues); each new one is written by
    :func:`~rag.files.write_text_atomic` (a hidden partial file, which ingestion skips, renamed into
    place), so none is ever half written.
    """
    folder.mkdir(parents=True, exist_ok=True)
    for doc_id, title, text in iter_beir_corpus(corpus):
        path = folder / corpus_file_name(doc_id)
        if path.exists():
            continue
        write_text_atomic(path, f"{title}\n\n{text}" if title.strip() else text)
    return folder
