"""The knowledge base's write path and search, embedded against Milvus Lite, on the same chunks.

Why: a knowledge base in Milvus (``--kb milvus-lite:PATH.db`` or ``milvus://``) stores and searches
what the embedded one does; this measures what moving costs where the store is the work, with
the embedding model out of the way (its time is the same for both: bench/ingestion.py).

What is measured, one backend after the other in this process: every document of ``--source`` (an
embedded knowledge base: its documents, pages, chunks and their vectors, read back from SQLite
and FAISS) is written to a new knowledge base of each backend through the writer every ingest
uses (``rag.kb.open_writer``: ``put_document``, a commit every ``--commit-every`` documents as a
long ingest commits every ``ingest.commit_seconds``, and the last commit with the keyword index),
timed from opening the writer to closing it. Then ``--queries`` searches, each alone: dense (a
stored chunk's vector as the query) and keyword (the first words of a stored chunk), median
milliseconds. Both backends must then hold the same chunk ids.

Run from the repository root: ``python bench/kb_write.py --source KB_DIR`` (FinanceBench dev's
knowledge base, as ``rag eval`` caches it, is the reference run). The section is written into
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import os
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import Result, add_output_arguments, machine_info, package_version, publish, section_start

HEADING = "## Knowledge base write path: embedded against Milvus Lite (bench/kb_write.py)"


def read_source(source: Path) -> tuple[Any, list[tuple[Any, list[Any], list[Any], np.ndarray]]]:
    """The manifest and every document of an embedded knowledge base, with pages, chunks, vectors."""
    import faiss

    from rag.kb import sqlite_rows as rows
    from rag.kb.generations import index_file_name

    db = sqlite3.connect(f"file:{source / rows.DB_NAME}?mode=ro", uri=True)
    manifest = rows.read_manifest(db, source)
    assert manifest is not None, f"{source} is not a knowledge base"
    index = faiss.read_index(str(source / index_file_name(manifest.generation)))
    documents = []
    for document in rows.select_documents(db):
        pages = rows.select_pages(db, document.id)
        chunks = _chunks_of(db, document.id)
        vectors = np.vstack([index.reconstruct(chunk.id) for chunk in chunks]).astype(np.float32)
        documents.append((document, pages, chunks, vectors))
    return manifest, documents


def _chunks_of(db: sqlite3.Connection, document_id: str) -> list[Any]:
    """A document's chunks with the header each was indexed with (the reader's look-up leaves it out)."""
    from rag.types import Chunk

    found = db.execute(
        "SELECT id, document_id, ordinal, text, page, page_label, start, end, token_count, coalesce(context, '') "
        "FROM chunks WHERE document_id = ? ORDER BY ordinal",
        (document_id,),
    ).fetchall()
    return [Chunk(*row) for row in found]


def measure(location: str, manifest: Any, documents: list[Any], args: argparse.Namespace) -> Result:
    from rag.config import load_config
    from rag.kb import open_knowledge_base, open_writer

    overrides = {
        "kb_dir": location,
        "embedding.model": manifest.embedding_model,
        "chunking.chunk_tokens": manifest.chunk_tokens,
        "chunking.overlap_tokens": manifest.overlap_tokens,
        "chunking.context": manifest.chunk_context,
        "ingest.pdf_text": manifest.pdf_text,
    }
    config = load_config(environ={}, overrides=overrides)
    chunks = sum(len(chunks) for _, _, chunks, _ in documents)
    began = time.perf_counter()
    with open_writer(config.kb_dir, config, dimension=manifest.dimension) as writer:
        for n, (document, pages, document_chunks, vectors) in enumerate(documents, start=1):
            writer.put_document(document, pages, document_chunks, vectors)
            if n % args.commit_every == 0:
                writer.commit()
        writer.commit(keyword=True)
    seconds = time.perf_counter() - began

    rng = random.Random(7)
    picked = [rng.choice(documents) for _ in range(args.queries)]
    probes = [(vectors[0:1], " ".join(chunks[0].text.split()[:6])) for _, _, chunks, vectors in picked]
    with open_knowledge_base(config.kb_dir, config) as kb:
        searcher = kb.searcher(config)
        dense_ms, keyword_ms = [], []
        for vector, words in probes:
            start = time.perf_counter()
            searcher.dense(vector, 10)
            dense_ms.append(1000 * (time.perf_counter() - start))
            start = time.perf_counter()
            searcher.keyword([words], 10)
            keyword_ms.append(1000 * (time.perf_counter() - start))
        ids = sorted(chunk.id for chunk, _ in kb.all_chunks())
    return {
        "documents": len(documents),
        "chunks": chunks,
        "write_s": round(seconds, 2),
        "chunks_per_s": round(chunks / seconds, 1),
        "dense_ms_p50": round(statistics.median(dense_ms), 2),
        "keyword_ms_p50": round(statistics.median(keyword_ms), 2),
        "ids": ids,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, required=True, help="an embedded knowledge base to copy")
    parser.add_argument("--commit-every", type=int, default=64, help="documents per commit (default 64)")
    parser.add_argument("--queries", type=int, default=100, help="searches of each kind (default 100)")
    add_output_arguments(parser)
    args = parser.parse_args()

    load_before = os.getloadavg()[0]
    manifest, documents = read_source(args.source)
    results: dict[str, Result] = {}
    with tempfile.TemporaryDirectory(prefix="kb-write-") as scratch:
        for name, location in (("embedded", f"{scratch}/kb"), ("milvus-lite", f"milvus-lite:{scratch}/kb.db")):
            results[name] = measure(location, manifest, documents, args)
            print(name, {k: v for k, v in results[name].items() if k != "ids"}, flush=True)
    assert results["embedded"]["ids"] == results["milvus-lite"]["ids"], "both hold the same chunks"
    for result in results.values():
        del result["ids"]
    raw: Result = {
        "command": "python " + " ".join(["bench/kb_write.py", *sys.argv[1:]]),
        "machine": machine_info(["faiss"]),
        "versions": {"pymilvus": package_version("pymilvus"), "milvus-lite": package_version("milvus-lite")},
        "source": str(args.source),
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
    }
    raw |= results
    embedded, milvus = results["embedded"], results["milvus-lite"]
    versions = ", ".join(f"{name} {version}" for name, version in raw["versions"].items())
    lines = section_start(HEADING, raw, versions)
    lines += [
        f"{embedded['documents']} documents, {embedded['chunks']} chunks of the knowledge base `{args.source}` "
        f"written through `rag.kb.open_writer` (a commit every {args.commit_every} documents), then "
        f"{args.queries} searches of each kind, one at a time. The same chunk ids land in both. "
        f"Load average {raw['loadavg_before']:.2f} before, "
        f"{raw['loadavg_after']:.2f} after.",
        "",
        "| backend | write s | chunks/s | dense search ms (p50) | keyword search ms (p50) |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, result in results.items():
        lines.append(
            f"| {name} | {result['write_s']} | {result['chunks_per_s']} | {result['dense_ms_p50']} | "
            f"{result['keyword_ms_p50']} |"
        )
    lines += [
        "",
        f"Milvus Lite writes at {milvus['chunks_per_s'] / embedded['chunks_per_s']:.2f}x the embedded rate; a "
        f"dense search takes {milvus['dense_ms_p50'] / embedded['dense_ms_p50']:.1f}x as long.",
    ]
    publish("\n".join(lines), raw, args, HEADING)


if __name__ == "__main__":
    main()
