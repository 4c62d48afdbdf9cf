"""Ingestion against the peers a user would pick instead: LlamaIndex and Haystack 2, pages/s and peak RSS.

The same PDFs, the same model folder, the same machine, one run.

The contenders, each in a fresh process of its own, one after another:

``ours``
    The product's ``run_ingest`` into an empty knowledge base with the default configuration
    (``bench/ingestion.py --stage ingest``, ``ingest.workers`` at its default), where
    ``embedding.precision = "auto"`` computes in bfloat16 on a CPU with bfloat16 units; then the
    same ingest with ``embedding.precision=float32``, the peers' precision: the like-for-like row.
``llamaindex``
    ``SimpleDirectoryReader(corpus, recursive=True, required_exts=[".pdf"]).load_data()`` (its PDF
    reader, from llama-index-readers-file, is pypdf: one document per page), then
    ``VectorStoreIndex.from_documents`` with a ``SentenceSplitter`` and ``HuggingFaceEmbedding``
    into its default in-memory vector store.
``haystack``
    An indexing ``Pipeline``: ``PyPDFToDocument`` → ``DocumentSplitter`` →
    ``SentenceTransformersDocumentEmbedder`` → ``DocumentWriter`` into an ``InMemoryDocumentStore``.

The same for all: the model folder the product resolves for its default embedding model
(all-MiniLM-L6-v2, shipped in a PyPI package; the peers get its path, with ``HF_HUB_OFFLINE`` and
``TRANSFORMERS_OFFLINE`` set so that nothing asks a hub), batch size (``embedding.batch_size``),
device and torch thread count (the peers are given the ones the product's run reported),
normalised vectors. The peers compute in float32, their default.

Chunking, made comparable: ours cuts 200-token chunks with a 32-token overlap, counted with the
model's tokenizer (``chunking``; each is embedded behind a short header naming its document and
page). LlamaIndex gets ``SentenceSplitter(chunk_size=200, chunk_overlap=32)`` counting with the
same tokenizer (its default counts tiktoken tokens); Haystack's ``DocumentSplitter`` counts words
only, so it gets ``split_by="word", split_length=150, split_overlap=25``. What each really embedded
is reported: chunks, and the mean model tokens per embedded text with the share the model
truncates (measured after the clock). ``--peer-defaults`` adds a row per peer with its own
default chunking (LlamaIndex 1,024 tiktoken tokens with 200 overlap, Haystack 200 words without
overlap): fewer chunks, most of them cut at the model's limit.

Measured per contender, as ``bench/ingestion.py`` measures its stages: seconds from after the
model is loaded to the index being built (reading the PDFs included; imports and the model load
excluded, the load reported apart); the pages its reader produced (the product: its job's count;
LlamaIndex: its page documents; Haystack: its form-feed-separated pages) and the files it failed
on; chunks; pages/s; peak RSS (``ru_maxrss`` of the process and of its largest waited-for child,
and the largest sum over the process tree, sampled); the load average and the CPU time other
processes used during the window.

The peers are not the product's dependencies: each runs in a virtualenv of its own that this
script makes under ``--venvs`` (``python -m venv``, pip: ``torch==2.13.0`` first, the CPU build,
then the pinned packages in ``PEERS`` with a constraint that keeps that torch), and reuses while
its marker matches the pins. A peer's stage is this very script run by the venv's python
(``--stage``), which is why ``common.py`` imports only the standard library at its top.

Run from the repository root: ``python bench/peers.py`` (a quick smoke run:
``--limit-files 2 --copies 1 --no-write``). The markdown section is printed and written into
``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from common import (
    BENCH_DIR,
    BUSY_LOAD,
    MIB,
    RSS_SAMPLE_SECONDS,
    Result,
    TreeRssSampler,
    Window,
    add_corpus_arguments,
    add_output_arguments,
    build_corpus,
    corpus_pdfs,
    load_cell,
    machine_info,
    other_cpu_cell,
    package_version,
    peak_rss,
    print_stage_result,
    publish,
    rss_cell,
    run_stage_command,
    section_start,
    torch_threads,
)

if TYPE_CHECKING:
    from rag.config import AppConfig

SECTION_HEADING = "## Against the peers (bench/peers.py)"
DEFAULT_VENVS = BENCH_DIR / ".peers-venvs"
VENV_MARKER = "bench-peers.json"
# The CPU build lies on this machine's disk; a bare `torch` would fetch a multi-GB CUDA build.
TORCH_PIN = "torch==2.13.0"
# Every stage process gets these: no model hub, no telemetry.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HAYSTACK_TELEMETRY_ENABLED": "False"}
# Haystack's splitter counts words (cut at spaces): 150 with 25 overlap embed about as many model tokens
# in all as ours on these filings (the table shows each contender's).
HAYSTACK_WORDS, HAYSTACK_OVERLAP_WORDS = 150, 25


@dataclass(frozen=True, slots=True)
class Peer:
    """A peer framework: its stage name, its name in the report, and the pinned packages of its venv
    (the framework's own, the libraries that do its work, and psutil, which this script's RSS
    sampler needs)."""

    name: str
    title: str
    requirements: tuple[str, ...]
    # The distributions whose versions the report names.
    reported: tuple[str, ...]


_SHARED_PINS = (
    "sentence-transformers==6.3.0",
    "transformers==5.24.0",
    "tokenizers==0.23.3",
    "huggingface-hub==2.4.0",
    "numpy==2.4.6",
    "cryptography==50.0.2",  # pypdf's AES, for the encrypted filings
    "psutil==7.2.2",
)
PEERS = (
    Peer(
        "llamaindex",
        "LlamaIndex",
        (
            "llama-index-core==0.14.25",
            "llama-index-embeddings-huggingface==0.8.0",
            "llama-index-readers-file==0.7.0",
            "pypdf==6.21.4",  # llama-index-readers-file 0.7 wants pypdf < 7
            *_SHARED_PINS,
        ),
        ("llama-index-core", "llama-index-embeddings-huggingface", "llama-index-readers-file"),
    ),
    Peer(
        "haystack",
        "Haystack",
        # Haystack 2's last release: 3.x moved SentenceTransformersDocumentEmbedder out of haystack-ai.
        ("haystack-ai==2.31.0", "pypdf==7.1.1", *_SHARED_PINS),
        ("haystack-ai",),
    ),
)
COMMON_REPORTED = ("torch", "sentence-transformers", "transformers", "pypdf")


@dataclass(frozen=True, slots=True)
class PeerSettings:
    """What a peer stage is told: the corpus, the model folder, and the product's run's settings."""

    corpus: Path
    model: Path
    device: str
    threads: int
    batch_size: int
    chunk_tokens: int
    overlap_tokens: int
    defaults: bool  # the peer's own default chunking instead of the matched one


# --- the peers' virtualenvs (made by the driver) ---------------------------------------------


def venv_python(folder: Path) -> Path:
    return folder / "bin" / "python"


def ensure_venv(peer: Peer, root: Path) -> Result:
    """The peer's virtualenv under ``root``, made unless one with the same pins is complete there:
    its path, whether it was made now and in how many seconds, and its ``pip freeze``."""
    folder = root / peer.name
    wanted = {"python": sys.version, "requirements": [TORCH_PIN, *peer.requirements]}
    marker = folder / VENV_MARKER
    with contextlib.suppress(OSError, ValueError):
        recorded = json.loads(marker.read_text())
        if recorded.get("requirements") == wanted["requirements"] and recorded.get("python") == wanted["python"]:
            return {"path": str(folder), "created": False, "seconds": 0.0, "freeze": recorded["freeze"]}
    print(f"[bench] making the {peer.title} virtualenv in {folder} ...", file=sys.stderr, flush=True)
    started = time.perf_counter()
    shutil.rmtree(folder, ignore_errors=True)
    _run_checked([sys.executable, "-m", "venv", str(folder)])
    python = str(venv_python(folder))
    _run_checked([python, "-m", "pip", "install", "--quiet", TORCH_PIN])
    constraints = folder / "constraints.txt"
    constraints.write_text(TORCH_PIN + "\n")
    _run_checked([python, "-m", "pip", "install", "--quiet", "-c", str(constraints), *peer.requirements])
    freeze = _run_checked([python, "-m", "pip", "freeze"]).splitlines()
    seconds = time.perf_counter() - started
    marker.write_text(json.dumps({**wanted, "freeze": freeze, "seconds": seconds}, indent=2) + "\n")
    print(f"[bench] {peer.title} virtualenv made in {seconds:.0f} s", file=sys.stderr, flush=True)
    return {"path": str(folder), "created": True, "seconds": seconds, "freeze": freeze}


def _run_checked(command: Sequence[str]) -> str:
    """Run ``command``; its stdout, or exit with its stderr's end when it fails."""
    completed = subprocess.run(command, capture_output=True, text=True, check=False)
    if completed.returncode != 0:
        raise SystemExit(f"{shlex.join(command)} failed ({completed.returncode}):\n{completed.stderr[-3000:]}")
    return completed.stdout


# --- the peer stages (run by a peer venv's python) -------------------------------------------


def model_max_tokens(model: Path) -> int:
    """The model folder's ``max_seq_length``: the tokens it reads of a text, the rest cut off."""
    return int(json.loads((model / "sentence_bert_config.json").read_text())["max_seq_length"])


def embedded_token_stats(texts: Sequence[str], model: Path) -> Result:
    """Mean model tokens per embedded text (special tokens included) and the share of texts the
    model truncates (longer than its ``max_seq_length``)."""
    from transformers import AutoTokenizer

    limit = model_max_tokens(model)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    lengths = [len(ids) for ids in tokenizer(list(texts), verbose=False)["input_ids"]]
    count = max(len(lengths), 1)
    return {
        "embedded_tokens_mean": sum(lengths) / count,
        "embedded_tokens_total": sum(lengths),
        "embedded_over_limit_share": sum(n > limit for n in lengths) / count,
        "model_max_tokens": limit,
    }


def _set_threads(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def stage_llamaindex(settings: PeerSettings) -> Result:
    """LlamaIndex: ``SimpleDirectoryReader`` and ``VectorStoreIndex.from_documents`` over ``HuggingFaceEmbedding``."""
    from llama_index.core import SimpleDirectoryReader, VectorStoreIndex
    from llama_index.core.node_parser import SentenceSplitter
    from llama_index.core.schema import MetadataMode
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding
    from transformers import AutoTokenizer

    _set_threads(settings.threads)
    if settings.defaults:
        splitter = SentenceSplitter()
    else:
        tokenizer = AutoTokenizer.from_pretrained(str(settings.model))
        splitter = SentenceSplitter(
            chunk_size=settings.chunk_tokens, chunk_overlap=settings.overlap_tokens, tokenizer=tokenizer.tokenize
        )
    with TreeRssSampler() as sampler:
        loading = time.perf_counter()
        embed_model = HuggingFaceEmbedding(
            model_name=str(settings.model), device=settings.device, embed_batch_size=settings.batch_size
        )
        model_load_seconds = time.perf_counter() - loading
        window = Window()
        with window.measure():
            reader = SimpleDirectoryReader(str(settings.corpus), recursive=True, required_exts=[".pdf"])
            documents = reader.load_data()
            index = VectorStoreIndex.from_documents(documents, transformations=[splitter], embed_model=embed_model)
    rss = peak_rss()
    nodes = list(index.docstore.docs.values())
    return {
        "chunking": (
            f"`SentenceSplitter()` defaults: {splitter.chunk_size} tiktoken tokens, {splitter.chunk_overlap} overlap"
            if settings.defaults
            else f"`SentenceSplitter(chunk_size={splitter.chunk_size}, chunk_overlap={splitter.chunk_overlap})`, "
            "model tokens"
        ),
        "pages": len(documents),
        "files_read": sorted({str(d.metadata["file_path"]) for d in documents}),
        "chunks": len(nodes),
        "vectors": len(index.vector_store.data.embedding_dict),
        "model_load_seconds": model_load_seconds,
        "peak_rss_sampled_mib": sampler.peak_bytes / MIB,
        **rss,
        **window.as_dict(loadavg_after=True),
        **embedded_token_stats([n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes], settings.model),
    }


def stage_haystack(settings: PeerSettings) -> Result:
    """Haystack 2: an indexing pipeline of ``PyPDFToDocument``, ``DocumentSplitter``,
    ``SentenceTransformersDocumentEmbedder`` and ``DocumentWriter`` into an ``InMemoryDocumentStore``."""
    from haystack import Pipeline
    from haystack.components.converters import PyPDFToDocument
    from haystack.components.embedders import SentenceTransformersDocumentEmbedder
    from haystack.components.preprocessors import DocumentSplitter
    from haystack.components.writers import DocumentWriter
    from haystack.document_stores.in_memory import InMemoryDocumentStore
    from haystack.utils import ComponentDevice

    _set_threads(settings.threads)
    splitter = (
        DocumentSplitter()
        if settings.defaults
        else DocumentSplitter(split_by="word", split_length=HAYSTACK_WORDS, split_overlap=HAYSTACK_OVERLAP_WORDS)
    )
    embedder = SentenceTransformersDocumentEmbedder(
        model=str(settings.model),
        device=ComponentDevice.from_str(settings.device),
        batch_size=settings.batch_size,
        progress_bar=False,
        normalize_embeddings=True,
        local_files_only=True,
    )
    store = InMemoryDocumentStore()
    pipeline = Pipeline()
    # store_full_path: the copies of a file share its name; the report names the files it failed on
    pipeline.add_component("converter", PyPDFToDocument(store_full_path=True))
    pipeline.add_component("splitter", splitter)
    pipeline.add_component("embedder", embedder)
    pipeline.add_component("writer", DocumentWriter(document_store=store))
    pipeline.connect("converter", "splitter")
    pipeline.connect("splitter", "embedder")
    pipeline.connect("embedder", "writer")
    sources = [str(p) for p in corpus_pdfs(settings.corpus)]
    with TreeRssSampler() as sampler:
        loading = time.perf_counter()
        embedder.warm_up()
        model_load_seconds = time.perf_counter() - loading
        window = Window()
        with window.measure():
            output = pipeline.run({"converter": {"sources": sources}}, include_outputs_from={"converter"})
    rss = peak_rss()
    documents = output["converter"]["documents"]
    chunks = store.filter_documents()
    return {
        "chunking": (
            f"`DocumentSplitter()` defaults: {splitter.split_length} words, {splitter.split_overlap} overlap"
            if settings.defaults
            else f'`DocumentSplitter(split_by="word", split_length={splitter.split_length}, '
            f"split_overlap={splitter.split_overlap})`"
        ),
        # PyPDFToDocument joins a file's pages with form feeds
        "pages": sum((d.content or "").count("\f") + 1 for d in documents),
        "files_read": sorted(str(d.meta["file_path"]) for d in documents),
        "chunks": len(chunks),
        "vectors": sum(d.embedding is not None for d in chunks),
        "model_load_seconds": model_load_seconds,
        "peak_rss_sampled_mib": sampler.peak_bytes / MIB,
        **rss,
        **window.as_dict(loadavg_after=True),
        **embedded_token_stats([d.content or "" for d in chunks], settings.model),
    }


PEER_STAGES: dict[str, Callable[[PeerSettings], Result]] = {
    "llamaindex": stage_llamaindex,
    "haystack": stage_haystack,
}


def run_stage(args: argparse.Namespace) -> int:
    """``--stage PEER``: run one peer's ingest in this (fresh) process; one JSON line on stdout."""
    settings = PeerSettings(
        corpus=Path(args.corpus),
        model=Path(args.model),
        device=args.device,
        threads=args.threads,
        batch_size=args.batch_size,
        chunk_tokens=args.chunk_tokens,
        overlap_tokens=args.overlap_tokens,
        defaults=args.default_chunking,
    )
    # Libraries may print; only the result line goes to stdout.
    with contextlib.redirect_stdout(sys.stderr):
        result = PEER_STAGES[args.stage](settings)
    peer = next(p for p in PEERS if p.name == args.stage)
    result.update(
        device=settings.device,
        precision="float32",
        torch_threads=torch_threads(),
        files=len(result["files_read"]),
        failed=sorted({str(p) for p in corpus_pdfs(settings.corpus)} - set(result.pop("files_read"))),
        pages_per_second=result["pages"] / result["seconds"],
        chunks_per_second=result["chunks"] / result["seconds"],
        versions={name: package_version(name) for name in (*peer.reported, *COMMON_REPORTED)},
    )
    print_stage_result(result)
    return 0


# --- the driver (the product's virtualenv) ---------------------------------------------------


def run_ours(corpus: Path, workdir: Path, config: AppConfig, precision: str | None) -> Result:
    """The product's ingest with ``config``'s ``ingest.workers`` (``bench/ingestion.py``'s stage), and
    ``embedding.precision`` set to ``precision`` when given."""
    # Imported here: this module also runs in the peers' venvs, which need nothing of ingestion's.
    from ingestion import call_stage

    result = call_stage("ingest", corpus, workdir, config.ingest.workers, precision)
    result["failed_reasons"] = result["failed"]
    result["failed"] = [failure["path"] for failure in result["failed"]]  # as the peers report them
    chunking = config.chunking
    result["chunking"] = (
        f"`chunking` defaults: {chunking.chunk_tokens} model tokens, {chunking.overlap_tokens} overlap, "
        f"header `{chunking.context}`"
    )
    return result


def ours_token_stats(corpus: Path, model: Path) -> Result:
    """``embedded_token_stats`` of the texts the product embeds for ``corpus`` (its default config)."""
    from ingestion import product_chunk_texts
    from transformers import AutoTokenizer

    from rag.config import load_config
    from rag.embedder import HuggingFaceTokenizer

    tokenizer = HuggingFaceTokenizer(AutoTokenizer.from_pretrained(str(model)), model_max_tokens(model))
    texts, _pages = product_chunk_texts(corpus, load_config(environ={}), tokenizer)
    return {"embedded_texts": len(texts), **embedded_token_stats(texts, model)}


def run_peer(peer: Peer, venv: Result, settings: PeerSettings, workdir: Path) -> Result:
    """One peer's stage in a fresh process of its venv's python."""
    command = [
        str(venv_python(Path(venv["path"]))),
        str(Path(__file__).resolve()),
        *("--stage", peer.name, "--corpus", str(settings.corpus), "--model", str(settings.model)),
        *("--device", settings.device, "--threads", str(settings.threads)),
        *("--batch-size", str(settings.batch_size), "--chunk-tokens", str(settings.chunk_tokens)),
        *("--overlap-tokens", str(settings.overlap_tokens)),
        *(["--default-chunking"] if settings.defaults else []),
    ]
    label = f"{peer.name}{' defaults' if settings.defaults else ''}"
    print(f"[bench] {label}: running ...", file=sys.stderr, flush=True)
    result = run_stage_command(command, workdir, label)
    result.update(peer=peer.name, title=peer.title, defaults=settings.defaults)
    print(f"[bench] {label}: {result['seconds']:.1f} s {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def run_benchmark(args: argparse.Namespace) -> int:
    from rag.config import load_config
    from rag.embedder import resolve_model_location

    os.environ.update(OFFLINE_ENV)  # inherited by every stage process
    config = load_config(environ={})
    model = Path(resolve_model_location(config.embedding.model))
    if not model.is_dir():
        raise SystemExit(f"the embedding model {config.embedding.model} does not resolve to a local folder: {model}")
    venvs = {peer.name: ensure_venv(peer, Path(args.venvs)) for peer in PEERS}
    command = shlex.join(["python", "bench/peers.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"
        corpus_info = build_corpus(Path(args.data), corpus, args.copies, args.limit_files)
        print(f"[bench] corpus: {corpus_info['files']} files, {corpus_info['pages']} pages", file=sys.stderr)
        corpus_info["ours_embedded"] = ours_token_stats(corpus, model)
        ours = [run_ours(corpus, workdir, config, None)]
        if ours[0]["precision"] != "float32":  # the default computes otherwise: the like-for-like row
            ours.append(run_ours(corpus, workdir, config, "float32"))
        settings = PeerSettings(
            corpus=corpus,
            model=model,
            device=str(ours[0]["device"]),
            threads=int(ours[0]["torch_threads"]),
            batch_size=config.embedding.batch_size,
            chunk_tokens=config.chunking.chunk_tokens,
            overlap_tokens=config.chunking.overlap_tokens,
            defaults=False,
        )
        variants = (False, True) if args.peer_defaults else (False,)
        peers = [
            run_peer(peer, venvs[peer.name], replace(settings, defaults=defaults), workdir)
            for defaults in variants
            for peer in PEERS
        ]
    raw: Result = {
        "command": command,
        "machine": machine_info(("torch", "sentence_transformers", "transformers", "faiss", "pypdf")),
        "model": {"name": config.embedding.model, "folder": str(model), "batch_size": config.embedding.batch_size},
        "corpus": corpus_info,
        "venvs": venvs,
        "pins": {peer.name: [TORCH_PIN, *peer.requirements] for peer in PEERS},
        "ours": ours,
        "peers": peers,
        "ratios": compute_ratios(ours, peers),
    }
    publish(render_markdown(raw), raw, args, SECTION_HEADING)
    return 0


def compute_ratios(ours: Sequence[Result], peers: Sequence[Result]) -> list[Result]:
    """Ours ÷ peer for pages/s and peak RSS, for each of our rows against each peer row."""
    ratios = []
    for own in ours:
        for peer in peers:
            ratios.append(
                {
                    "ours_precision": own["precision"],
                    "peer": peer["peer"],
                    "peer_defaults": peer["defaults"],
                    "pages_per_second": own["pages_per_second"] / peer["pages_per_second"],
                    "peak_rss_sampled": own["peak_rss_sampled_mib"] / peer["peak_rss_sampled_mib"],
                    "peak_rss_process_plus_child": _rss_sum(own) / _rss_sum(peer),
                }
            )
    return ratios


def _rss_sum(result: Result) -> float:
    """Peak RSS of the process plus its largest child (each at its own peak: an upper bound)."""
    return float(result["peak_rss_mib"]) + float(result.get("peak_rss_largest_child_mib", 0.0))


# --- the report ------------------------------------------------------------------------------


def _row_name(result: Result) -> str:
    if "peer" in result:
        return f"{result['title']}{', its default chunking' if result['defaults'] else ''}"
    if result.get("baseline"):
        return f"ours, `embedding.precision={result['precision']}` (like for like)"
    return f"ours, default (`embedding.precision` auto: {result['precision']})"


def _versions_line(raw: Result) -> str:
    machine = raw["machine"]
    parts = [
        f"ours: torch {machine['torch']}, sentence-transformers {machine['sentence_transformers']}, "
        f"transformers {machine['transformers']}, faiss {machine['faiss']}, pypdf {machine['pypdf']}"
    ]
    for peer in raw["peers"]:
        if peer["defaults"]:
            continue
        versions = ", ".join(f"{name} {version}" for name, version in peer["versions"].items())
        parts.append(f"{peer['title']}: {versions}")
    return "; ".join(parts)


def render_markdown(raw: Result) -> str:
    corpus, ours, peers = raw["corpus"], raw["ours"], raw["peers"]
    first = ours[0]
    gpu = f"no GPU used (every contender on `{first['device']}`, {first['torch_threads']} torch threads)"
    lines = section_start(SECTION_HEADING, raw, _versions_line(raw), gpu)
    how = "hard-linked" if corpus["hard_linked"] else "copied"
    lines.append(
        f"Corpus: {corpus['source_files']} FinanceBench SEC filings ({corpus['source_pages']:,} pages, "
        f"{corpus['source_encrypted']} of them AES-encrypted with an empty password, {corpus['source_mib']:.1f} MiB), "
        f"{how} {corpus['copies']}× into a temporary folder: {corpus['files']} files, {corpus['pages']:,} pages. "
        f"Model: the folder the product resolves for `{raw['model']['name']}` (`{raw['model']['folder']}`), given "
        f"to every contender by path, offline; batch {raw['model']['batch_size']}; normalised vectors. The peers "
        "compute in float32, each in a virtualenv of its own (pins in `bench/peers.py`; `pip freeze` in the JSON)."
    )
    lines.append("")
    lines.append(
        "| contender | chunking | precision | seconds | pages | pages/s | chunks | chunks/s | model tokens "
        "embedded (mean per chunk; in all; share cut at the model's limit) | peak RSS MiB (process / largest "
        "worker / sampled tree) | model load s | 1-min load avg start → end | other processes' CPU s |"
    )
    lines.append("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for result in [*ours, *peers]:
        stats = corpus["ours_embedded"] if "peer" not in result else result
        lines.append(
            f"| {_row_name(result)} | {result['chunking']} | {result['precision']} | {result['seconds']:.1f} | "
            f"{result['pages']:,} | {result['pages_per_second']:.2f} | {result['chunks']:,} | "
            f"{result['chunks_per_second']:.1f} | {stats['embedded_tokens_mean']:.0f}; "
            f"{stats['embedded_tokens_total'] / 1000:,.1f}k; {stats['embedded_over_limit_share']:.0%} | "
            f"{rss_cell(result)} | {result['model_load_seconds']:.1f} | "
            f"{load_cell(result)} | {other_cpu_cell(result)} |"
        )
    lines.append("")
    lines.extend(_ratio_lines(raw))
    lines.append("")
    lines.extend(_notes(raw))
    return "\n".join(lines).rstrip() + "\n"


def _ratio_lines(raw: Result) -> list[str]:
    titles = {peer.name: peer.title for peer in PEERS}
    lines = [
        "Ours ÷ peer (pages/s: above 1 is ours faster; peak RSS: below 1 is ours smaller):",
        "",
        "| ours | peer | pages/s | peak RSS, sampled tree | peak RSS, process + largest worker |",
        "|---|---|---:|---:|---:|",
    ]
    for ratio in raw["ratios"]:
        peer = titles[ratio["peer"]] + (", its default chunking" if ratio["peer_defaults"] else "")
        lines.append(
            f"| `embedding.precision` {ratio['ours_precision']} | {peer} | **{ratio['pages_per_second']:.2f}×** | "
            f"{ratio['peak_rss_sampled']:.2f}× | {ratio['peak_rss_process_plus_child']:.2f}× |"
        )
    matched = [
        r for r in raw["ratios"] if not r["peer_defaults"] and r["ours_precision"] == raw["ours"][0]["precision"]
    ]
    faster = all(r["pages_per_second"] > 1 for r in matched)
    smaller = all(r["peak_rss_sampled"] < 1 for r in matched)
    lines += [
        "",
        f"Goal, ahead of both (the default against each peer with matched chunking): pages/s "
        f"{'met' if faster else '**not met**'}; peak RSS (sampled tree) {'smaller' if smaller else '**not smaller**'}.",
    ]
    return lines


def _notes(raw: Result) -> list[str]:
    corpus, ours, peers = raw["corpus"], raw["ours"], raw["peers"]
    notes = [
        "Notes:",
        "",
        "- Seconds run from after the model is loaded (load times in the table) to the index being built, "
        "reading the PDFs included; each contender ran in a fresh process, one after another. Pages are those "
        "the contender's reader produced. Peak RSS: `ru_maxrss` of the process and of its largest waited-for "
        f"child (ours: the loader worker), and the largest sum over the process tree sampled every "
        f"{RSS_SAMPLE_SECONDS} s (pages shared between processes count in each, so ours, with a worker, is "
        "overstated there).",
        "- Model load: ours counts the product's `Components(config).embedder()`, imports of torch and "
        "sentence-transformers included; the peers imported their libraries before the clock, so theirs is the "
        "model alone.",
        "- Text extraction: ours reads PDFs with PDFium (`ingest.pdf_text`) in a loader process while the model "
        "encodes; both peers read with pypdf in the same process, one step after the other.",
        "- Chunking: model tokens per embedded text are counted with the model's tokenizer, special tokens "
        "included; ours embeds each chunk behind a header naming its document and page; LlamaIndex embeds the "
        "`page_label` and `file_path` metadata with each chunk (its splitter counts them into the chunk size); "
        f"Haystack embeds the chunk alone. Texts over {corpus['ours_embedded']['model_max_tokens']} tokens are "
        "truncated by the model.",
        _venv_note(raw),
    ]
    named = [(_row_name(r), r) for r in [*ours, *peers]]
    for name, result in named:
        if result["pages"] != corpus["pages"] or result["failed"]:
            failed = ", ".join(Path(str(f)).name for f in result["failed"]) or "none"
            notes.append(
                f"- **{name}** read {result['pages']:,} of the {corpus['pages']:,} pages; files it failed on: "
                f"{failed} (reasons in its log). Its pages/s counts only the pages it read."
            )
    busy = [name for name, result in named if result["loadavg_before"][0] > BUSY_LOAD]
    if busy:
        notes.append(
            f"- The 1-minute load average was above {BUSY_LOAD} when these began: {', '.join(busy)} (partly the "
            "previous contender: it decays over about a minute); the last column is the CPU time other processes "
            "used during each window, which is what competed with it."
        )
    contended = [
        f"{name} ({result['other_cpu_seconds'] / result['seconds']:.2f} cores)"
        for name, result in named
        if result["other_cpu_seconds"] / result["seconds"] > 0.1
    ]
    if contended:
        notes.append(
            f"- Other processes used more than 0.1 core on average during: {', '.join(contended)}; those timings "
            "are inflated accordingly."
        )
    return notes


def _venv_note(raw: Result) -> str:
    made = [
        f"{peer.title} {raw['venvs'][peer.name]['seconds']:.0f} s"
        for peer in PEERS
        if raw["venvs"][peer.name]["created"]
    ]
    where = ", ".join(made) if made else "none: both were reused"
    return (
        f"- The peers' virtualenvs (`{TORCH_PIN}` first, then the pins; not timed in the table) made in this run: "
        f"{where}."
    )


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_corpus_arguments(parser, copies=1)
    parser.add_argument(
        "--venvs", default=str(DEFAULT_VENVS), help="folder of the peers' virtualenvs, reused (default: %(default)s)"
    )
    parser.add_argument("--peer-defaults", action="store_true", help="also run each peer with its own default chunking")
    add_output_arguments(parser)
    parser.add_argument("--stage", choices=tuple(PEER_STAGES), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--device", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--batch-size", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--chunk-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--overlap-tokens", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--default-chunking", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        return run_stage(args)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
