"""Embedding backends on this machine: load time, encode speed as a ratio to torch, and agreement with torch.

For torch, onnx, onnx int8, openvino and openvino int8 (``embedding.backend`` /
``embedding.quantization``), each in float32 and, where the runtime has it, bfloat16
(``embedding.precision``; bfloat16 pays only on a CPU with bfloat16 units): the first load
(which makes the export, in a fresh data dir), a second load (the export reused), passages
embedded per second (and the ratio to torch float32 in the same run), single-query latency, and
how far the vectors are from torch float32's: cosine of each passage's and query's vector to
torch's (mean, min), and the overlap of each query's top 10 with torch's top 10, with the
variant's own index and mixed (the variant's queries against torch's passage vectors: what
sharing an index would give; the rule in ``rag.manifest.vector_kind``).

Passages: 200-token chunks (the product's loader and chunker) of the FinanceBench 10-K PDFs, and
FinanceBench questions as queries, when ``--financebench`` holds them; else passages recombined
from the README's and the samples' sentences. Run on a quiet machine.

    python bench/embedding_backends.py [--passages 2000] [--financebench ../shared/data/financebench]
"""

from __future__ import annotations

import argparse
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import REPO_ROOT, add_output_arguments, machine_info, publish, section_start

HEADING = "## Embedding backends (bench/embedding_backends.py)"
_PACKAGES = {
    "torch": "torch",
    "sentence_transformers": "sentence-transformers",
    "onnxruntime": "onnxruntime",
    "openvino": "openvino",
}
# (backend, quantization, precision); the first is the reference the others are compared with.
VARIANTS = [
    ("torch", "none", "float32"),
    ("torch", "none", "bfloat16"),
    ("onnx", "none", "float32"),
    ("onnx", "int8", "float32"),
    ("openvino", "none", "float32"),
    ("openvino", "none", "bfloat16"),
    ("openvino", "int8", "float32"),
    ("openvino", "int8", "bfloat16"),
]


def financebench_texts(folder: Path, count: int, queries: int, tokenizer: Any) -> tuple[list[str], list[str]]:
    """Chunks of the 10-K PDFs under ``folder/pdfs``; questions from it and its validation sibling."""
    from ingest.chunking import chunk_pages
    from ingest.loaders import PdfLoader
    from rag.config import ChunkingConfig

    passages: list[str] = []
    loader = PdfLoader()
    for pdf in sorted((folder / "pdfs").glob("*.pdf")):
        document = loader.load(pdf, pdf.read_bytes())
        chunks = chunk_pages(pdf.stem, pdf.stem, document.pages, tokenizer, ChunkingConfig(context="none"))
        passages.extend(c.text for c in chunks if len(c.text.split()) >= 40)
    random.Random(0).shuffle(passages)
    questions = [
        __import__("json").loads(line)["question"]
        for split in (folder, folder.with_name(folder.name + "-validation"))
        if (split / "questions.jsonl").is_file()
        for line in (split / "questions.jsonl").open()
    ]
    return passages[:count], questions[:queries]


def repository_texts(count: int, queries: int) -> tuple[list[str], list[str]]:
    """~200-word passages recombined from the README's and samples' sentences (fixed seed)."""
    text = (REPO_ROOT / "README.md").read_text()
    for sample in (REPO_ROOT / "samples").glob("*.md"):
        text += "\n" + sample.read_text()
    sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", re.sub(r"[`*#|]", " ", text)) if len(s.split()) >= 6]
    rng = random.Random(0)
    passages = []
    for _ in range(count):
        words: list[str] = []
        while len(words) < 200:
            words += rng.choice(sentences).split()
        passages.append(" ".join(words))
    return passages, [rng.choice(sentences) for _ in range(queries)]


def top10(queries: Any, passages: Any) -> Any:
    return np.argsort(-(queries @ passages.T), axis=1)[:, :10]


def overlap(a: Any, b: Any) -> Any:
    return np.array([len(set(x) & set(y)) / 10 for x, y in zip(a, b, strict=True)])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--passages", type=int, default=2000)
    parser.add_argument("--queries", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument(
        "--financebench", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "financebench",
        help="FinanceBench folder with pdfs/ and questions.jsonl (default: %(default)s)",
    )  # fmt: skip
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    import sentence_transformers  # noqa: F401 - imported before any load is timed
    import torch

    from rag.config import EmbeddingConfig
    from rag.embedder import SentenceTransformerEmbedder

    data_dir = Path(tempfile.mkdtemp(prefix="rag-bench-backends-"))  # fresh: the first load exports
    results: list[dict[str, Any]] = []
    reference: dict[str, Any] = {}
    passages: list[str] = []
    questions: list[str] = []
    source = ""
    from rag.embedder import cpu_has_bfloat16

    for backend, quantization, precision in VARIANTS:
        config = EmbeddingConfig(
            backend=backend, quantization=quantization, precision=precision, batch_size=args.batch_size, device="cpu"
        )
        started = time.perf_counter()
        SentenceTransformerEmbedder(config, data_dir=data_dir).load()
        first_load = time.perf_counter() - started
        started = time.perf_counter()
        embedder = SentenceTransformerEmbedder(config, data_dir=data_dir)
        embedder.load()
        load = time.perf_counter() - started
        if not passages:
            if (args.financebench / "pdfs").is_dir():
                passages, questions = financebench_texts(
                    args.financebench, args.passages, args.queries, embedder.tokenizer
                )
                source = f"{len(passages)} FinanceBench chunks of 200 tokens, {len(questions)} FinanceBench questions"
            else:
                passages, questions = repository_texts(args.passages, args.queries)
                source = f"{len(passages)} passages recombined from README/samples sentences"
            print(f"[bench] {source}; {torch.get_num_threads()} torch threads", file=sys.stderr)
        embedder.embed_documents(passages[:32])  # warm-up
        started = time.perf_counter()
        documents = embedder.embed_documents(passages)
        encode = time.perf_counter() - started
        query_vectors = embedder.embed_queries(questions)
        started = time.perf_counter()
        for question in questions:
            embedder.embed_queries([question])
        query_ms = (time.perf_counter() - started) / len(questions) * 1000
        if not reference:
            reference = {"documents": documents, "queries": query_vectors}
        doc_cos = (documents * reference["documents"]).sum(axis=1)
        query_cos = (query_vectors * reference["queries"]).sum(axis=1)
        truth = top10(reference["queries"], reference["documents"])
        own = overlap(top10(query_vectors, documents), truth)
        mixed = overlap(top10(query_vectors, reference["documents"]), truth)
        row = {
            "variant": backend + (" int8" if quantization == "int8" else "") + f" {precision}",
            "first_load_s": first_load,
            "load_s": load,
            "passages_per_s": len(passages) / encode,
            "query_ms": query_ms,
            "doc_cos_mean": float(doc_cos.mean()),
            "doc_cos_min": float(doc_cos.min()),
            "query_cos_mean": float(query_cos.mean()),
            "query_cos_min": float(query_cos.min()),
            "top10_own_mean": float(own.mean()),
            "top10_own_min": float(own.min()),
            "top10_mixed_mean": float(mixed.mean()),
            "top10_mixed_min": float(mixed.min()),
        }
        results.append(row)
        print(f"# {row}", file=sys.stderr)
        del embedder

    shutil.rmtree(data_dir, ignore_errors=True)
    torch_speed = results[0]["passages_per_s"]
    raw = {
        "command": "python bench/embedding_backends.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(list(_PACKAGES)),
        "source": source,
        "batch_size": args.batch_size,
        "results": results,
    }
    versions = ", ".join(f"{name} {raw['machine'][key]}" for key, name in _PACKAGES.items())
    lines = section_start(HEADING, raw, versions)
    lines += [
        f"{source}; batch {args.batch_size}; {torch.get_num_threads()} torch threads; CPU with bfloat16 units "
        f"(AMX or AVX512-BF16): {'yes' if cpu_has_bfloat16() else 'no'}. Speed is passages embedded per second and "
        "its ratio to torch float32 in the same run; agreement is against torch float32's vectors.",
        "",
        "| variant | first load (export) s | load s | passages/s | × torch | query ms | passage cos mean / min "
        "| query cos mean / min | top-10 overlap, own index mean / min | top-10 overlap, float32 index mean / min |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['variant']} | {r['first_load_s']:.1f} | {r['load_s']:.1f} | {r['passages_per_s']:.1f} "
            f"| {r['passages_per_s'] / torch_speed:.2f} | {r['query_ms']:.1f} "
            f"| {r['doc_cos_mean']:.5f} / {r['doc_cos_min']:.5f} "
            f"| {r['query_cos_mean']:.5f} / {r['query_cos_min']:.5f} "
            f"| {r['top10_own_mean']:.3f} / {r['top10_own_min']:.1f} "
            f"| {r['top10_mixed_mean']:.3f} / {r['top10_mixed_min']:.1f} |"
        )
    publish("\n".join(lines) + "\n", raw, args, HEADING)


if __name__ == "__main__":
    main()
