"""Ingestion throughput benchmark: the whole job against its two irreducible costs.

What is measured, on real PDFs (the FinanceBench SEC filings, copied ``--copies`` times so
that the corpus has over 1,000 pages; every copy lies at its own path, so the product treats
it as a separate document and really extracts, chunks, embeds and stores it):

``extract``
    Bare pypdf: ``PdfReader`` (plus ``decrypt("")`` for the encrypted filings) and
    ``page.extract_text()`` for every page, one file after another. This is the loading cost
    that no ingestion design can avoid.
``encode``
    Bare ``SentenceTransformer.encode`` of exactly the chunk texts the product embeds (built
    before the clock starts with the product's own ``read_file`` and ``chunk_pages`` and the
    model's real tokenizer), with the configured batch size. The embedding cost no design
    can avoid.
``ingest``
    The product's ``run_ingest`` into an empty knowledge base, once per ``--workers`` value
    (``ingest.workers``: 0 extracts in-process; 1 or more extract in spawned worker processes
    that overlap the encoder).
``ingest-ray`` (with ``--ray``)
    The product's ``run_ray_ingest`` (``rag ingest --engine ray``) into an empty knowledge base, on
    a local Ray of this machine's CPUs that it starts and stops itself (inside the clock, with the
    model loads of its actors and of the driver, which reads the model's dimension): the whole wait
    of a user. Weighed against the in-process ingest with ``ingest.workers=1`` (the default):
    target ``t_ray <= 1.3 x t_ingest(W=1)``.
``baseline``
    The same ingest with ``ingest.workers=1`` and ``embedding.precision = --baseline-precision``
    (``float32``: the path before ``embedding.precision`` existed), when the default resolves to
    another precision on this machine: the speed-up of the new default, in the same run.

The bare encode computes in the precision the product's embedder resolved (bfloat16 autocast
where ``embedding.precision`` is auto on a CPU with bfloat16 units), so every ratio compares
like with like.

The question it answers: does the job add little on top of those two costs? Serially, the
target is ``t_ingest(W=0) <= 1.10 x (t_extract + t_encode)`` (chunking, hashing, SQLite and
FAISS writes and bookkeeping are cheap). With workers, extraction can hide behind the
encoder, so ``t_ingest(W) / max(t_extract, t_encode)`` is reported too (1.0 is perfect
overlap; it cannot go below 1 on a machine whose cores the encoder already keeps busy).

How: each stage runs in a fresh subprocess of this script (``--stage NAME``, answering one
JSON line on stdout), so its peak RSS (``ru_maxrss`` of the stage process and of its largest
worker, and a sampled sum over the process tree) is its own and no cache carries over. Model
load time is measured apart and never inside a timing. The load average and the CPU time
that *other* processes used during each timed window are recorded, so a busy machine shows
in the results.

Run from the repository root: ``python bench/ingestion.py`` (a quick smoke run:
``--limit-files 2 --copies 1 --workers 0,1 --no-write``). The markdown section is printed
and written into ``bench/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from common import (
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
    from rag.embedder import Tokenizer

SECTION_HEADING = "## Ingestion (bench/ingestion.py)"
SERIAL_TARGET = 1.10
RAY_TARGET = 1.30  # rag ingest --engine ray against the in-process job (ingest.workers=1), wall time


# --- the stages -----------------------------------------------------------------------


def stage_extract(corpus: Path) -> Result:
    """Bare text extraction of every page, sequentially, by the configured ``ingest.pdf_text``."""
    import pypdf
    import pypdfium2 as pdfium

    from rag.config import load_config

    engine = load_config(environ={}).ingest.pdf_text
    files = corpus_pdfs(corpus)
    pages = characters = 0
    window = Window()
    with TreeRssSampler() as sampler, window.measure():
        for path in files:
            data = path.read_bytes()
            if engine == "pdfium":
                document = pdfium.PdfDocument(data)
                for page in document:
                    characters += len(page.get_textpage().get_text_range())
                    pages += 1
                document.close()
                continue
            reader = pypdf.PdfReader(io.BytesIO(data))
            if reader.is_encrypted:
                reader.decrypt("")
            for page in reader.pages:
                characters += len(page.extract_text())
                pages += 1
    return {
        "engine": engine,
        "files": len(files),
        "pages": pages,
        "characters": characters,
        "pages_per_second": pages / window.seconds,
        "peak_rss_sampled_mib": sampler.peak_bytes / MIB,
        **window.as_dict(loadavg_after=True),
        **peak_rss(),
    }


def product_chunk_texts(corpus: Path, config: AppConfig, tokenizer: Tokenizer) -> tuple[list[str], int]:
    """``(texts, pages)``: the texts the product embeds for the corpus's PDFs under ``config``
    (its own ``read_file``, page headers and ``chunk_pages`` with ``tokenizer``), and the pages read."""
    from ingest.chunking import chunk_pages
    from ingest.job import read_file
    from rag.context import indexed_text, page_contexts
    from rag.kb import document_id_for

    texts: list[str] = []
    pages = 0
    for path in corpus_pdfs(corpus):
        load = read_file(str(path), None, int(config.ingest.max_file_mb * 1e6), config.ingest.pdf_text)
        if load.document is None:
            raise RuntimeError(f"{path}: {load.error}")
        document = load.document
        pages += len(document.pages)
        contexts = page_contexts(config.chunking.context, document.title, str(path), document.pages)
        chunks = chunk_pages(
            document_id_for(str(path)), load.content_hash, document.pages, tokenizer, config.chunking, contexts
        )
        texts.extend(indexed_text(chunk.context, chunk.text) for chunk in chunks)
    return texts, pages


def stage_encode(corpus: Path) -> Result:
    """Bare ``SentenceTransformer.encode`` of the chunk texts the product would embed, in the
    precision the product's embedder resolved."""
    from rag.components import Components
    from rag.config import load_config
    from rag.embedder import SentenceTransformerEmbedder, resolve_model_location

    config = load_config(environ={})
    with TreeRssSampler() as sampler:
        # The product's embedder, loaded as the ingest stage loads it (imports included),
        # gives the real tokenizer; its load time is this stage's model load time.
        loading = time.perf_counter()
        embedder = Components(config).embedder()
        model_load_seconds = time.perf_counter() - loading
        assert isinstance(embedder, SentenceTransformerEmbedder)
        precision = embedder.precision

        preparing = time.perf_counter()
        texts, pages = product_chunk_texts(corpus, config, embedder.tokenizer)
        preparation_seconds = time.perf_counter() - preparing
        del embedder  # only its tokenizer was needed; the raw model is loaded below

        from sentence_transformers import SentenceTransformer

        loading = time.perf_counter()
        device = None if config.embedding.device == "auto" else config.embedding.device
        model = SentenceTransformer(resolve_model_location(config.embedding.model), device=device)
        raw_model_load_seconds = time.perf_counter() - loading

        import torch

        window = Window()
        with window.measure(), torch.autocast(model.device.type, torch.bfloat16, enabled=precision == "bfloat16"):
            vectors = model.encode(
                texts,
                batch_size=config.embedding.batch_size,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
    return {
        "model": config.embedding.model,
        "device": str(model.device),
        "precision": precision,
        "batch_size": config.embedding.batch_size,
        "torch_threads": torch_threads(),
        "pages": pages,
        "chunks": len(texts),
        "dimension": int(vectors.shape[1]),
        "chunks_per_second": len(texts) / window.seconds,
        "model_load_seconds": model_load_seconds,
        "raw_model_load_seconds": raw_model_load_seconds,
        "untimed_preparation_seconds": preparation_seconds,
        "peak_rss_sampled_mib": sampler.peak_bytes / MIB,
        **window.as_dict(loadavg_after=True),
        **peak_rss(),
    }


def stage_ingest(
    corpus: Path, kb_dir: Path, workers: int, precision: str | None = None, engine: str = "inprocess"
) -> Result:
    """The product's ``run_ingest`` into an empty knowledge base with ``workers`` loaders
    (and ``embedding.precision`` set to ``precision``, when given); with ``engine`` ``ray``, its
    ``run_ray_ingest`` on a local Ray it starts (``workers`` then applies to nothing)."""
    from ingest.job import run_ingest
    from ingest.ray_job import run_ray_ingest
    from rag.components import Components
    from rag.config import load_config
    from rag.embedder import SentenceTransformerEmbedder

    if kb_dir.exists() and any(kb_dir.iterdir()):
        raise RuntimeError(f"{kb_dir} is not empty")
    # OCR off: the extract stage it is weighed against reads text layers only (one page of the
    # filings, a signature scan, would otherwise be read by OCR in every copy; bench/ocr.py measures OCR).
    overrides: dict[str, object] = {"kb_dir": str(kb_dir), "ingest.workers": workers, "ingest.ocr": "off"}
    if precision:
        overrides["embedding.precision"] = precision
    config = load_config(overrides=overrides, environ={})
    with TreeRssSampler() as sampler:
        loading = time.perf_counter()
        embedder = Components(config).embedder()
        model_load_seconds = time.perf_counter() - loading
        assert isinstance(embedder, SentenceTransformerEmbedder)  # the real model, whose device is reported

        window = Window()
        with window.measure():
            if engine == "ray":
                summary = run_ray_ingest([corpus], config, Components(config).embedder)
            else:
                summary = run_ingest([corpus], config, embedder)
    kb_bytes = sum(p.stat().st_size for p in kb_dir.rglob("*") if p.is_file())
    return {
        "engine": engine,
        "workers": workers,
        "baseline": bool(precision),
        "device": embedder.device,
        "precision": embedder.precision,
        "torch_threads": torch_threads(),
        "files": summary.added,
        "failed": summary.as_dict()["failed"],
        "pages": summary.pages,
        "chunks": summary.new_chunks,
        "pages_per_second": summary.pages / window.seconds,
        "chunks_per_second": summary.new_chunks / window.seconds,
        "job_reported_seconds": summary.seconds,
        "model_load_seconds": model_load_seconds,
        "kb_dir": str(kb_dir),
        "kb_mib": kb_bytes / MIB,
        "embed_batch_chunks": config.ingest.embed_batch_chunks,
        "peak_rss_sampled_mib": sampler.peak_bytes / MIB,
        **window.as_dict(loadavg_after=True),
        **peak_rss(),
    }


def run_stage(args: argparse.Namespace) -> int:
    """``--stage NAME``: run one stage in this (fresh) process; one JSON line on stdout."""
    corpus = Path(args.corpus)
    # Libraries may print; only the result line goes to stdout.
    with contextlib.redirect_stdout(sys.stderr):
        if args.stage == "extract":
            result = stage_extract(corpus)
        elif args.stage == "encode":
            result = stage_encode(corpus)
        elif args.stage == "ingest-ray":
            result = stage_ingest(corpus, Path(args.kb), 0, engine="ray")
        else:
            result = stage_ingest(corpus, Path(args.kb), int(args.workers), args.precision)
    print_stage_result(result)
    return 0


# --- the driver -----------------------------------------------------------------------


def call_stage(
    stage: str, corpus: Path, workdir: Path, workers: int | None = None, precision: str | None = None
) -> Result:
    """Run one stage in a fresh interpreter and return its JSON result."""
    command = [sys.executable, str(Path(__file__).resolve()), "--stage", stage, "--corpus", str(corpus)]
    label = stage
    if stage == "ingest-ray":
        command += ["--kb", str(workdir / "kb-ray")]
    if workers is not None:
        kb_dir = workdir / f"kb-w{workers}{'-' + precision if precision else ''}"
        command += ["--workers", str(workers), "--kb", str(kb_dir)]
        label = f"{stage} W={workers}"
    if precision:
        command += ["--precision", precision]
        label += f" precision={precision}"
    print(f"[bench] {label}: running ...", file=sys.stderr, flush=True)
    result = run_stage_command(command, workdir, label)
    # the whole result goes to the log too, so a run killed later loses no finished stage
    print(f"[bench] {label}: {result['seconds']:.1f} s {json.dumps(result)}", file=sys.stderr, flush=True)
    return result


def compute_ratios(extract: Result, encode: Result, ingests: Sequence[Result], ray: Result | None = None) -> Result:
    t_extract, t_encode = float(extract["seconds"]), float(encode["seconds"])
    both, longest = t_extract + t_encode, max(t_extract, t_encode)
    ratios: Result = {"extract_plus_encode_seconds": both, "max_extract_encode_seconds": longest, "by_workers": {}}
    inprocess = next((r for r in ingests if not r.get("baseline") and int(r["workers"]) == 1), None)
    if ray is not None and inprocess is not None:
        ratios["ray_to_inprocess"] = float(ray["seconds"]) / float(inprocess["seconds"])
        ratios["ray_target_met"] = ratios["ray_to_inprocess"] <= RAY_TARGET
    baseline = next((r for r in ingests if r.get("baseline")), None)
    same = next((r for r in ingests if not r.get("baseline") and int(r["workers"]) == 1), None)
    if baseline is not None and same is not None:
        ratios["speedup_over_baseline"] = float(same["pages_per_second"]) / float(baseline["pages_per_second"])
    for result in ingests:
        if result.get("baseline"):
            continue
        workers, seconds = int(result["workers"]), float(result["seconds"])
        entry = {"to_sum": seconds / both, "to_max": seconds / longest}
        ratios["by_workers"][str(workers)] = entry
        if workers == 0:
            ratios["serial"] = entry["to_sum"]
            ratios["serial_target_met"] = entry["to_sum"] <= SERIAL_TARGET
    return ratios


def render_markdown(raw: Result) -> str:
    machine, corpus, stages, ratios = raw["machine"], raw["corpus"], raw["stages"], raw["ratios"]
    extract, encode, ingests = stages["extract"], stages["encode"], stages["ingest"]
    rows = [*ingests, *([stages["ray"]] if stages.get("ray") else [])]
    gpu = (
        f"no GPU used (model on `{encode['device']}`, {encode['torch_threads']} torch threads, "
        f"computing in {encode.get('precision', 'float32')})"
    )
    versions = (
        f"torch {machine['torch']}, sentence-transformers {machine['sentence_transformers']}, "
        f"transformers {machine['transformers']}, faiss {machine['faiss']}, pypdf {machine['pypdf']}"
    )
    lines = section_start(SECTION_HEADING, raw, versions, gpu)
    how = "hard-linked" if corpus["hard_linked"] else "copied"
    lines.append(
        f"Corpus: {corpus['source_files']} FinanceBench SEC filings ({corpus['source_pages']:,} pages, "
        f"{corpus['source_encrypted']} of them AES-encrypted with an empty password, "
        f"{corpus['source_mib']:.1f} MiB), {how} {corpus['copies']}× into `copy1/` … `copy{corpus['copies']}/` "
        f"of a temporary folder: {corpus['files']} files, {corpus['pages']:,} pages. Each copy has its "
        "own path, so the product treats it as a separate document and really extracts, chunks, "
        "embeds and stores it (nothing is skipped as unchanged). "
        f"Model `{encode['model']}`, `embedding.batch_size` {encode['batch_size']}, default chunking, "
        f"`ingest.embed_batch_chunks` {ingests[0]['embed_batch_chunks'] if ingests else '–'}."
    )
    lines.append("")
    lines.append(
        "| stage | seconds | pages | pages/s | chunks | chunks/s | peak RSS MiB (process / largest worker / "
        "sampled tree) | model load s | 1-min load avg start → end | other processes' CPU s |"
    )
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines.append(
        f"| extract: bare {extract.get('engine', 'pypdf')} | {extract['seconds']:.1f} | {extract['pages']:,} | "
        f"{extract['pages_per_second']:.1f} | – | – | {rss_cell(extract)} | – | {load_cell(extract)} | "
        f"{other_cpu_cell(extract)} |"
    )
    lines.append(
        f"| encode: bare `SentenceTransformer.encode` | {encode['seconds']:.1f} | – | – | "
        f"{encode['chunks']:,} | {encode['chunks_per_second']:.1f} | {rss_cell(encode)} | "
        f"{encode['model_load_seconds']:.1f} | {load_cell(encode)} | {other_cpu_cell(encode)} |"
    )
    for result in rows:
        name = f"ingest, `ingest.workers={result['workers']}`"
        if result.get("engine") == "ray":
            name = "ingest, `--engine ray` (local Ray: start, actors' model loads and stop included)"
        if result.get("baseline"):
            name = (
                f"baseline: ingest, `ingest.workers={result['workers']}`, `embedding.precision={result['precision']}`"
            )
        lines.append(
            f"| {name} | {result['seconds']:.1f} | {result['pages']:,} | "
            f"{result['pages_per_second']:.1f} | {result['chunks']:,} | {result['chunks_per_second']:.1f} | "
            f"{rss_cell(result)} | {result['model_load_seconds']:.1f} | {load_cell(result)} | "
            f"{other_cpu_cell(result)} |"
        )
    lines.append("")
    both, longest = ratios["extract_plus_encode_seconds"], ratios["max_extract_encode_seconds"]
    lines.append(f"Ratios (extract + encode = {both:.1f} s, max(extract, encode) = {longest:.1f} s):")
    lines.append("")
    for result in ingests:
        if result.get("baseline"):
            continue
        entry = ratios["by_workers"][str(result["workers"])]
        if result["workers"] == 0:
            verdict = "met" if entry["to_sum"] <= SERIAL_TARGET else "**not met**"
            lines.append(
                f"- serial, `ingest.workers=0`: ingest / (extract + encode) = **{entry['to_sum']:.3f}** "
                f"(target ≤ {SERIAL_TARGET:.2f}: {verdict})"
            )
        else:
            lines.append(
                f"- `ingest.workers={result['workers']}` (extraction in {result['workers']} worker "
                f"process{'es' if result['workers'] > 1 else ''}): ingest / max(extract, encode) = "
                f"**{entry['to_max']:.3f}**; ingest / (extract + encode) = {entry['to_sum']:.3f}"
            )
    if "ray_to_inprocess" in ratios:
        verdict = "met" if ratios["ray_target_met"] else "**not met**"
        lines.append(
            f"- `--engine ray` against the in-process job (`ingest.workers=1`), wall time: "
            f"**{ratios['ray_to_inprocess']:.3f}** (target ≤ {RAY_TARGET:.2f}: {verdict})"
        )
    if "speedup_over_baseline" in ratios:
        lines.append(
            f"- the default (`embedding.precision` auto: {encode['precision']} here) against the baseline "
            f"(float32), both `ingest.workers=1`: **{ratios['speedup_over_baseline']:.2f}×** pages/s"
        )
    lines.append("")
    lines.extend(_notes(raw))
    return "\n".join(lines).rstrip() + "\n"


def _notes(raw: Result) -> list[str]:
    stages = raw["stages"]
    extract, encode, ingests = stages["extract"], stages["encode"], stages["ingest"]
    named = [("extract", extract), ("encode", encode)] + [
        (f"ingest W={r['workers']}{' baseline' if r.get('baseline') else ''}", r) for r in ingests
    ]
    ray = stages.get("ray")
    if ray:
        named.append(("ingest --engine ray", ray))
    notes = [
        "Notes:",
        "",
        "- Timings exclude model loading (the model is loaded first, then the clock starts; load "
        "times are in the table). Each stage ran in its own fresh process. Peak RSS: `ru_maxrss` of "
        "the stage process, of its largest loader worker (`RUSAGE_CHILDREN`), and the largest sum over "
        f"the process tree sampled every {RSS_SAMPLE_SECONDS} s.",
        "- The bare encode gets all chunk texts in one call (sentence-transformers sorts them by length "
        "across the whole list, so its batches carry little padding); the job encodes groups of about "
        "`ingest.embed_batch_chunks` chunks as files arrive. Bare extraction skips what the loader adds "
        "(page labels, title, text normalisation).",
    ]
    if encode["chunks"] != next((r["chunks"] for r in ingests), encode["chunks"]):
        notes.append(
            f"- **Chunk counts differ**: the bare encode embedded {encode['chunks']:,} chunks, the job "
            f"{ingests[0]['chunks']:,}."
        )
    if ray and ray["chunks"] != encode["chunks"]:
        notes.append(f"- **Chunk counts differ**: `--engine ray` stored {ray['chunks']:,} chunks.")
    if ray:
        notes.append(
            "- `--engine ray` runs in one process that starts a local Ray (`ray.init`, all CPUs), runs the Ray "
            "Data stages (loading and chunking actors, one embedding actor using every core for torch on this "
            "CPU-only machine) and stops Ray; its time includes all of that and the model loads (driver and "
            "actors), which the in-process rows exclude."
        )
    failed = [f"W={r['workers']}: {len(r['failed'])}" for r in ingests if r["failed"]]
    if failed:
        notes.append(f"- **Files failed to ingest** ({', '.join(failed)}); see the JSON for reasons.")
    busy = [name for name, result in named if result["loadavg_before"][0] > BUSY_LOAD]
    if busy:
        notes.append(
            f"- The machine was not idle: the 1-minute load average was above {BUSY_LOAD} when these "
            f"stages began: {', '.join(busy)}. Part of that is this benchmark's own previous stage "
            "(the load average decays over about a minute); the last column is the CPU time that other "
            "processes used during each timed window, which is what actually competed with the stage."
        )
    contended = [
        f"{name} ({result['other_cpu_seconds'] / result['seconds']:.2f} cores)"
        for name, result in named
        if result["other_cpu_seconds"] / result["seconds"] > 0.1
    ]
    if contended:
        notes.append(
            "- Other processes used more than 0.1 core on average during: "
            f"{', '.join(contended)}; those timings are inflated accordingly."
        )
    return notes


def run_benchmark(args: argparse.Namespace) -> int:
    workers = [int(w) for w in str(args.workers).split(",") if w.strip()]
    command = shlex.join(["python", "bench/ingestion.py", *sys.argv[1:]])
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        workdir = Path(tmp)
        corpus = workdir / "corpus"
        corpus_info = build_corpus(Path(args.data), corpus, args.copies, args.limit_files)
        print(
            f"[bench] corpus: {corpus_info['files']} files, {corpus_info['pages']} pages in {corpus}",
            file=sys.stderr,
            flush=True,
        )
        extract = call_stage("extract", corpus, workdir)
        encode = call_stage("encode", corpus, workdir)
        ingests = [call_stage("ingest", corpus, workdir, w) for w in workers]
        ray = call_stage("ingest-ray", corpus, workdir) if args.ray else None
        if args.baseline_precision and args.baseline_precision != encode["precision"]:
            ingests.append(call_stage("ingest", corpus, workdir, 1, args.baseline_precision))
    raw: Result = {
        "command": command,
        "machine": machine_info(("torch", "sentence_transformers", "transformers", "faiss", "pypdf")),
        "corpus": corpus_info,
        "stages": {"extract": extract, "encode": encode, "ingest": ingests, "ray": ray},
        "ratios": compute_ratios(extract, encode, ingests, ray),
    }
    publish(render_markdown(raw), raw, args, SECTION_HEADING)
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    add_corpus_arguments(parser, copies=2)
    parser.add_argument("--workers", default="0,1,2", help="ingest.workers values to run (default: 0,1,2)")
    parser.add_argument(
        "--ray", action="store_true", help="also ingest with `--engine ray` and weigh it against ingest.workers=1"
    )
    parser.add_argument(
        "--baseline-precision", default="float32",
        help="also ingest with workers=1 and this embedding.precision when the default resolves to another "
        "('' to skip; default: %(default)s)",
    )  # fmt: skip
    add_output_arguments(parser)
    parser.add_argument("--stage", choices=("extract", "encode", "ingest", "ingest-ray"), help=argparse.SUPPRESS)
    parser.add_argument("--corpus", help=argparse.SUPPRESS)
    parser.add_argument("--kb", help=argparse.SUPPRESS)
    parser.add_argument("--precision", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.stage:
        return run_stage(args)
    return run_benchmark(args)


if __name__ == "__main__":
    sys.exit(main())
