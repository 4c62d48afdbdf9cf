"""Retrieval latency benchmark: dense, BM25 and fused search at 10k and 100k chunks.

Why: a question waits for retrieval before the model can start, and the hybrid retriever runs two
searches plus a fusion. The target (the issue) is fused search at most 50 ms p50 at 100k chunks
on 2 cores, query embedding excluded; the embedding is timed on its own.

What is measured, for each collection size (``--sizes``, default 10,000 and 100,000 chunks):

``dense``  ``FaissIndex.search`` of one query vector, k = ``retrieval.candidates`` (50), with the
           default index configuration (``flat``: exact inner product over every vector).
``bm25``   ``Bm25Index.search`` of one query text, k = 50 (tokenizing, stop words and stemming of
           the query included, as in the product).
``fused``  both searches, each hit wrapped in a ``ScoredChunk``, and the product's
           ``reciprocal_rank_fusion`` of the two rankings (then the top ``retrieval.top_k``), which
           is what ``HybridRetriever`` does, minus the SQLite look-up of the chunk rows.

Each is timed per query (``time.perf_counter``) over ``--queries`` (200) queries after 10
untimed warm-up queries, and reported as p50 and p95 in milliseconds. Building the two indexes is
timed too.

The collection is synthetic, as the issue allows: chunk texts of 100-140 words drawn from a
fixed-seed Zipf distribution over a vocabulary of English stop words and a few thousand made-up
English-like words, and random unit-length 384-d float32 vectors (the default embedding model's
size). Embedding 100k texts with the real model would take hours on this CPU and would not
change the search cost: a flat index costs the same for any vectors, and BM25 depends only on
the term statistics. Queries are 5-10 words from the same distribution, with random unit vectors.

Query embedding is measured separately with the real embedder (``SentenceTransformerEmbedder``,
the packaged all-MiniLM-L6-v2): ``embed_queries([q])`` for ``--embed-queries`` (50) queries one
at a time, after 5 warm-up calls. Add it to the fused latency for the time a question waits.

Threads: ``faiss.omp_set_num_threads(os.cpu_count())``; BM25 runs in the calling thread (as in the
product: ``n_threads=0``); torch uses its default (all cores). The 1-minute load average before
each stage and the CPU time other processes used during each timed loop are recorded.

Run from the repository root: ``python bench/retrieve.py`` (a smoke run:
``python bench/retrieve.py --sizes 2000 --queries 30 --no-write``). The markdown section is
printed and written into ``bench/RESULTS.md`` (``--results``); ``--json`` saves the raw numbers.
"""

from __future__ import annotations

import argparse
import gc
import os
import shlex
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt
from common import (
    BUSY_LOAD,
    Result,
    Window,
    add_output_arguments,
    machine_info,
    publish,
    section_start,
)

if TYPE_CHECKING:
    from rag.index import FaissIndex
    from rag.keyword import Bm25Index
    from rag.types import Chunk

SECTION_HEADING = "## Retrieval latency (bench/retrieve.py)"
TARGET_FUSED_P50_MS = 50.0
TARGET_SIZE = 100_000
DIMENSION = 384
WARMUP_QUERIES = 10
EMBED_WARMUP = 5
METHODS = ("dense", "bm25", "fused")

# The most frequent words of English text: they take the top Zipf ranks, as in real text, and
# BM25 drops them as stop words.
# fmt: off
_STOP_WORDS = (
    "the", "of", "and", "to", "a", "in", "is", "that", "for", "it", "as", "was", "with", "be", "by", "on", "not",
    "he", "this", "are", "or", "his", "from", "at", "which", "but", "have", "an", "they", "you", "were", "her",
    "she", "there", "been", "one", "all", "we", "their", "has", "would", "when", "if", "so", "no", "will", "can",
    "more", "other", "its",
)
_ONSETS = (
    "b", "br", "c", "ch", "cl", "d", "dr", "f", "fl", "g", "gr", "h", "j", "k", "l", "m", "n", "p", "pl", "pr",
    "qu", "r", "s", "sh", "sl", "st", "t", "th", "tr", "v", "w", "z",
)
# fmt: on
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ea", "ee", "ou", "oa", "io")
_CODAS = ("", "", "", "n", "r", "s", "t", "l", "m", "nd", "st", "ck", "ng", "rt")


# --- measuring helpers --------------------------------------------------------------------


def latency_stats(seconds: Sequence[float]) -> Result:
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    return {
        "count": len(ms),
        "p50_ms": float(np.percentile(ms, 50)),
        "p95_ms": float(np.percentile(ms, 95)),
        "mean_ms": float(ms.mean()),
        "max_ms": float(ms.max()),
    }


def time_each(work: Callable[[int], object], count: int, warmup: int) -> tuple[list[float], Window]:
    """Run ``work(i)`` for ``warmup`` untimed then ``count`` timed indexes; per-call seconds."""
    for i in range(warmup):
        work(count + i)
    timings: list[float] = []
    window = Window()
    with window.measure():
        for i in range(count):
            started = time.perf_counter()
            work(i)
            timings.append(time.perf_counter() - started)
    return timings, window


# --- the synthetic collection ----------------------------------------------------------------


def vocabulary(size: int, seed: int) -> list[str]:
    """English stop words, then made-up English-like words, ``size`` in all, in Zipf rank order."""
    rng = np.random.default_rng(seed)
    words = list(_STOP_WORDS)
    seen = set(words)
    while len(words) < size:
        syllables = int(rng.choice((1, 2, 2, 3, 3, 4)))
        word = "".join(
            str(rng.choice(_ONSETS)) + str(rng.choice(_VOWELS)) + str(rng.choice(_CODAS)) for _ in range(syllables)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    return words


class WordSource:
    """Draws words by a Zipf law (probability ∝ 1 / rank^s) from a fixed vocabulary."""

    def __init__(self, words: Sequence[str], exponent: float, seed: int) -> None:
        self._words = np.asarray(words, dtype=object)
        weights = 1.0 / np.arange(1, len(words) + 1, dtype=np.float64) ** exponent
        self._p = weights / weights.sum()
        self._rng = np.random.default_rng(seed)

    def texts(self, count: int, low: int, high: int) -> list[str]:
        """``count`` texts of ``low``..``high`` words each."""
        lengths = self._rng.integers(low, high + 1, size=count)
        drawn = self._words[self._rng.choice(len(self._words), size=int(lengths.sum()), p=self._p)]
        bounds = np.concatenate(([0], np.cumsum(lengths)))
        return [" ".join(drawn[bounds[i] : bounds[i + 1]]) for i in range(count)]


def unit_vectors(count: int, rng: np.random.Generator) -> npt.NDArray[np.float32]:
    vectors = rng.standard_normal((count, DIMENSION), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


# --- the measurements ------------------------------------------------------------------------


def bench_size(size: int, words: Sequence[str], args: argparse.Namespace) -> Result:
    """Build both indexes over ``size`` synthetic chunks and time the three searches."""
    from rag.config import IndexConfig, RetrievalConfig
    from rag.index import FaissIndex
    from rag.keyword import Bm25Index
    from rag.retriever import reciprocal_rank_fusion
    from rag.types import Chunk, ScoredChunk

    retrieval = RetrievalConfig()
    index_config = IndexConfig()
    k = retrieval.candidates
    rng = np.random.default_rng(args.seed + size)
    source = WordSource(words, args.zipf, args.seed + size)

    generating = time.perf_counter()
    texts = source.texts(size, 100, 140)
    ids = rng.choice(np.iinfo(np.int64).max - 1, size=size, replace=False).astype(np.int64) + 1
    vectors = unit_vectors(size, rng)
    query_count = args.queries + WARMUP_QUERIES
    query_texts = source.texts(query_count, 5, 10)
    query_vectors = unit_vectors(query_count, rng)
    # Minimal chunk records: fusion only reads ids, and the product fetches the rows from SQLite,
    # which is not timed here.
    chunks: dict[int, Chunk] = {
        int(chunk_id): Chunk(int(chunk_id), "doc", 0, "", None, None, 0, 0, 0) for chunk_id in ids.tolist()
    }
    generate_seconds = time.perf_counter() - generating
    print(f"[bench] {size:,} chunks generated in {generate_seconds:.1f} s", file=sys.stderr, flush=True)

    loadavg_build = os.getloadavg()
    building = time.perf_counter()
    dense_index: FaissIndex = FaissIndex.create(DIMENSION, index_config)
    dense_index.add(ids, vectors)
    dense_build = time.perf_counter() - building
    building = time.perf_counter()
    keyword_index: Bm25Index = Bm25Index.build(ids.tolist(), texts)
    keyword_build = time.perf_counter() - building
    print(
        f"[bench] {size:,}: FAISS built in {dense_build:.2f} s, BM25 in {keyword_build:.1f} s",
        file=sys.stderr,
        flush=True,
    )
    del vectors, texts
    gc.collect()

    def dense(i: int) -> object:
        return dense_index.search(query_vectors[i : i + 1], k)

    def bm25(i: int) -> object:
        return keyword_index.search(query_texts[i], k)

    def fused(i: int) -> object:
        _, found = dense_index.search(query_vectors[i : i + 1], k)
        dense_hits = [
            ScoredChunk(chunks[chunk_id], "", 0.0, ("dense",)) for chunk_id in found[0].tolist() if chunk_id >= 0
        ]
        keyword_hits = [
            ScoredChunk(chunks[chunk_id], "", score, ("bm25",))
            for chunk_id, score in keyword_index.search(query_texts[i], k)
        ]
        weights = {"dense": retrieval.dense_weight, "bm25": retrieval.keyword_weight}
        fused_hits = reciprocal_rank_fusion({"dense": dense_hits, "bm25": keyword_hits}, weights, retrieval.rrf_k)
        return fused_hits[: retrieval.top_k]

    result: Result = {
        "chunks": size,
        "generate_seconds": generate_seconds,
        "build": {
            "faiss_seconds": dense_build,
            "bm25_seconds": keyword_build,
            "loadavg_before": list(loadavg_build),
            "faiss_structure": dense_index.structure,
        },
        "mean_query_words": statistics.mean(len(q.split()) for q in query_texts),
        "mean_bm25_hits": statistics.mean(len(keyword_index.search(q, k)) for q in query_texts[:20]),
    }
    for name, work in (("dense", dense), ("bm25", bm25), ("fused", fused)):
        timings, window = time_each(work, args.queries, WARMUP_QUERIES)
        result[name] = {**latency_stats(timings), **window.as_dict(other_cores=True)}
        print(
            f"[bench] {size:,} {name}: p50 {result[name]['p50_ms']:.2f} ms, p95 {result[name]['p95_ms']:.2f} ms",
            file=sys.stderr,
            flush=True,
        )
    return result


def bench_embedding(words: Sequence[str], args: argparse.Namespace) -> Result:
    """The real embedder, one query per ``embed_queries`` call."""
    import torch

    from rag.components import Components
    from rag.config import load_config
    from rag.embedder import SentenceTransformerEmbedder

    components = Components(load_config(environ={}))
    loading = time.perf_counter()
    embedder = components.embedder()
    load_seconds = time.perf_counter() - loading
    assert isinstance(embedder, SentenceTransformerEmbedder)  # the real model, whose device is reported
    queries = WordSource(words, args.zipf, args.seed - 1).texts(args.embed_queries + EMBED_WARMUP, 5, 10)
    timings, window = time_each(lambda i: embedder.embed_queries([queries[i]]), args.embed_queries, EMBED_WARMUP)
    stats = {**latency_stats(timings), **window.as_dict(other_cores=True)}
    print(f"[bench] query embedding: p50 {stats['p50_ms']:.2f} ms", file=sys.stderr, flush=True)
    return {
        "model": components.config.embedding.model,
        "device": embedder.device,
        "torch_threads": int(torch.get_num_threads()),
        "load_seconds": load_seconds,
        **stats,
    }


# --- the report -------------------------------------------------------------------------------


def target_verdict(sizes: Sequence[Result]) -> Result:
    at_target = next((r for r in sizes if r["chunks"] == TARGET_SIZE), None)
    if at_target is None:
        return {"measured": False}
    p50 = float(at_target["fused"]["p50_ms"])
    return {"measured": True, "fused_p50_ms": p50, "met": p50 <= TARGET_FUSED_P50_MS}


def render_markdown(raw: Result) -> str:
    machine, sizes, embedding, setup = raw["machine"], raw["sizes"], raw["embedding"], raw["setup"]
    versions = (
        f"numpy {machine['numpy']}, faiss {machine['faiss']} ({setup['faiss_threads']} OpenMP threads, set with "
        f"`faiss.omp_set_num_threads(os.cpu_count())`), bm25s {machine['bm25s']}, PyStemmer {machine['pystemmer']}, "
        f"torch {machine['torch']}, sentence-transformers {machine['sentence_transformers']}"
    )
    lines = section_start(SECTION_HEADING, raw, versions)
    lines.append(
        f"Collection: synthetic chunks of 100–140 words drawn by a Zipf law (exponent {setup['zipf']}) from "
        f"{setup['vocabulary']:,} words ({len(_STOP_WORDS)} English stop words at the top ranks, then made-up "
        f"English-like words), with random unit 384-d float32 vectors (seed {setup['seed']}). Default index "
        f"configuration (`index.kind = flat`: exact search). {setup['queries']} queries of 5–10 words from the "
        f"same law with random unit vectors, each timed alone after {WARMUP_QUERIES} untimed warm-up queries; "
        f"k = {setup['candidates']} (`retrieval.candidates`) per retriever."
    )
    lines.append("")
    lines.append(
        "| chunks | FAISS build s | BM25 build s | dense p50 / p95 ms | BM25 p50 / p95 ms | "
        "**fused p50** / p95 ms | 1-min load avg before (dense, BM25, fused) | other processes' cores (same) |"
    )
    lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in sizes:
        cells = [f"{r[m]['p50_ms']:.2f} / {r[m]['p95_ms']:.2f}" for m in ("dense", "bm25")]
        loads = ", ".join(f"{r[m]['loadavg_before'][0]:.2f}" for m in METHODS)
        others = ", ".join(f"{r[m]['other_cores']:.2f}" for m in METHODS)
        lines.append(
            f"| {r['chunks']:,} | {r['build']['faiss_seconds']:.2f} | {r['build']['bm25_seconds']:.1f} | "
            f"{cells[0]} | {cells[1]} | **{r['fused']['p50_ms']:.2f}** / {r['fused']['p95_ms']:.2f} | "
            f"{loads} | {others} |"
        )
    lines.append("")
    e = embedding
    lines.append(
        f"Query embedding (timed apart): `{e['model']}` on `{e['device']}` ({e['torch_threads']} torch threads), "
        f"`embed_queries([q])` one query at a time, {e['count']} queries after {EMBED_WARMUP} warm-up calls: "
        f"p50 **{e['p50_ms']:.2f} ms**, p95 {e['p95_ms']:.2f} ms (model load {e['load_seconds']:.1f} s; "
        f"1-min load avg before {e['loadavg_before'][0]:.2f}, other processes {e['other_cores']:.2f} cores)."
    )
    lines.append("")
    verdict = raw["target"]
    if verdict["measured"]:
        met = "met" if verdict["met"] else "**not met**"
        lines.append(
            f"Result: fused search p50 at {TARGET_SIZE:,} chunks, embedding excluded = **{verdict['fused_p50_ms']:.2f} "
            f"ms** (target ≤ {TARGET_FUSED_P50_MS:.0f} ms: {met})."
        )
    else:
        lines.append(
            f"Result: the target (fused p50 ≤ {TARGET_FUSED_P50_MS:.0f} ms) is set at {TARGET_SIZE:,} chunks, "
            "which this run did not measure."
        )
    lines.append("")
    lines.extend(_notes(raw))
    return "\n".join(lines).rstrip() + "\n"


def _notes(raw: Result) -> list[str]:
    notes = [
        "Notes:",
        "",
        "- dense = `FaissIndex.search` (one vector); BM25 = `Bm25Index.search` (query tokenizing and stemming "
        "included); fused = both, hits wrapped in `ScoredChunk`, `reciprocal_rank_fusion` (the product's "
        "weights and `rrf_k`), top `retrieval.top_k` kept. Not timed: query embedding (above) and the SQLite "
        "look-up of the fused chunks' rows that `HybridRetriever` adds (chunk records here are minimal).",
        "- The vectors are random, not embeddings: exact (flat) search costs the same for any vectors, but an "
        "approximate index (`ivf`, `hnsw`) would behave differently on real embeddings. BM25 cost follows the "
        "term statistics, which the Zipf law imitates.",
    ]
    measured = [(f"{r['chunks']:,} {m}", r[m]) for r in raw["sizes"] for m in METHODS]
    measured.append(("embedding", raw["embedding"]))
    busy = [name for name, r in measured if r["loadavg_before"][0] > BUSY_LOAD]
    contended = [f"{name} ({r['other_cores']:.2f})" for name, r in measured if r["other_cores"] > 0.1]
    if busy or contended:
        parts = []
        if busy:
            parts.append(f"the 1-minute load average was above {BUSY_LOAD} before: {', '.join(busy)}")
        if contended:
            parts.append(f"other processes used more than 0.1 core on average during: {', '.join(contended)}")
        notes.append(
            f"- The machine was not quiet ({'; '.join(parts)}); those latencies, p95 above all, are higher than on "
            "a quiet machine. Part of the load average can be this benchmark's own index building."
        )
    return notes


def run_benchmark(args: argparse.Namespace) -> int:
    import faiss

    from rag.config import RetrievalConfig

    command = shlex.join(["python", "bench/retrieve.py", *sys.argv[1:]])
    threads = os.cpu_count() or 1
    faiss.omp_set_num_threads(threads)
    machine = machine_info(("numpy", "faiss", "bm25s", "pystemmer", "torch", "sentence_transformers"))
    words = vocabulary(args.vocabulary, args.seed)
    sizes = [bench_size(size, words, args) for size in args.sizes]
    gc.collect()
    embedding = bench_embedding(words, args)
    raw: Result = {
        "command": command,
        "machine": machine,
        "setup": {
            "sizes": args.sizes,
            "queries": args.queries,
            "embed_queries": args.embed_queries,
            "vocabulary": args.vocabulary,
            "zipf": args.zipf,
            "seed": args.seed,
            "candidates": RetrievalConfig().candidates,
            "faiss_threads": int(faiss.omp_get_max_threads()),
        },
        "sizes": sizes,
        "embedding": embedding,
        "target": target_verdict(sizes),
    }
    publish(render_markdown(raw), raw, args, SECTION_HEADING)
    return 0


def _sizes(text: str) -> list[int]:
    try:
        sizes = [int(part.replace("_", "")) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated chunk counts, got {text!r}") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("chunk counts must be positive")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=_sizes, default=[10_000, 100_000], help="chunk counts (default: 10000,100000)")
    parser.add_argument("--queries", type=int, default=200, help="timed queries per search (default: %(default)s)")
    parser.add_argument("--embed-queries", type=int, default=50, help="timed query embeddings (default: %(default)s)")
    parser.add_argument("--vocabulary", type=int, default=5000, help="vocabulary size (default: %(default)s)")
    parser.add_argument("--zipf", type=float, default=1.0, help="Zipf exponent of word ranks (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default: %(default)s)")
    add_output_arguments(parser)
    args = parser.parse_args(argv)
    if args.queries < 1 or args.embed_queries < 1:
        parser.error("--queries and --embed-queries must be at least 1")
    if args.vocabulary <= len(_STOP_WORDS):
        parser.error(f"--vocabulary must be larger than {len(_STOP_WORDS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the embedder is a packaged local folder
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
