"""OCR engines side by side: character accuracy against the known text, and pages per second.

The test pages are real text pages of the FinanceBench SEC filings (``--financebench``): from each
of the first ``--files`` PDFs, the prose page with the most text (digits under 5% of its
characters) and the table page with the largest share of digits (at least 800 characters). Each
page is drawn at ``--dpi`` (300: a clean scan) and read by each engine through the product's own
path (``ingest.ocr.read_pages``: PDFium's picture, the engine, rows of boxes, the page text); the
page's text layer, as the product extracts it (PDFium), is the known text.

Character accuracy is ``1 - edit distance / length of the known text`` (Levenshtein over
characters), after white space is collapsed to single spaces and typographic quotes and dashes
are folded to ASCII in both texts (a text layer has curly quotes where the printed page shows
them; neither engine is asked to tell them apart). Reading order counts: a table whose cells OCR
puts in another order than the text layer loses accuracy even with every character right, which
is why prose and table pages are reported apart.

Speed: pages per second of one engine on one core (one loader worker, the product's setting),
the pages read one after another after the engine is loaded; then with ``--workers`` processes
at once (the 2 cores of the project's machines), as ``ingest.workers = 2`` would run them. The
engine's load time is measured apart. The load average and other processes' CPU time during each
timed window are recorded, so a busy machine shows.

    python bench/ocr.py [--files 6] [--dpi 300] [--workers 2] [--financebench ../shared/data/financebench]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    REPO_ROOT,
    Window,
    add_output_arguments,
    machine_info,
    package_version,
    process_tree_cpu_seconds,
    publish,
    section_start,
)

HEADING = "## OCR (bench/ocr.py)"
ENGINES = ("tesseract", "rapidocr")
_FOLD = str.maketrans(
    {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2013": "-", "\u2014": "-", "\u2212": "-"}
)


def normalised(text: str) -> str:
    return " ".join(text.translate(_FOLD).split())


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance over characters: one numpy row per character of the longer text, the
    insertions of a row taken by a running minimum."""
    if len(a) < len(b):
        a, b = b, a
    if not b:
        return len(a)
    codes = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    offsets = np.arange(len(b) + 1)
    previous = offsets.copy()
    for char in a:
        current = np.empty_like(previous)
        current[0] = previous[0] + 1
        current[1:] = np.minimum(previous[:-1] + (codes != ord(char)), previous[1:] + 1)
        previous = np.minimum.accumulate(current - offsets) + offsets
    return int(previous[-1])


def accuracy(known: str, read: str) -> float:
    """Character accuracy in reading order."""
    known, read = normalised(known), normalised(read)
    return 1.0 - edit_distance(known, read) / max(len(known), 1)


def test_pages(folder: Path, files: int) -> list[dict[str, Any]]:
    """From each of the first ``files`` PDFs: its fullest prose page and its most numeric table page."""
    from ingest.loaders import PdfLoader
    from ingest.ocr import visible_chars

    chosen: list[dict[str, Any]] = []
    for pdf in sorted((folder / "pdfs").glob("*.pdf"))[:files]:
        pages = PdfLoader().load_text_layer(pdf, pdf.read_bytes()).pages
        scored = []
        for page in pages:
            chars = visible_chars(page.text)
            digits = sum(char.isdigit() for char in page.text) / max(chars, 1)
            scored.append((page, chars, digits))
        prose = [item for item in scored if item[2] < 0.05 and item[1] >= 800]
        tables = [item for item in scored if item[1] >= 800]
        if prose:
            page, _, _ = max(prose, key=lambda item: item[1])
            chosen.append({"file": pdf, "page": page.number, "kind": "prose", "text": page.text})
        if tables:
            page, _, _ = max(tables, key=lambda item: item[2])
            chosen.append({"file": pdf, "page": page.number, "kind": "table", "text": page.text})
    return chosen


def _settings(engine: str, dpi: int) -> Any:
    from ingest.ocr import OcrSettings

    return OcrSettings(mode="force", engine=engine, dpi=dpi)  # type: ignore[arg-type]


def read_one(engine: str, dpi: int, file: Path, number: int) -> tuple[str, float]:
    """One page read by OCR (the product's path) and the seconds it took."""
    from ingest.ocr import read_pages

    started = time.perf_counter()
    found = read_pages(file, file.read_bytes(), [number], _settings(engine, dpi))
    seconds = time.perf_counter() - started
    return (found[number].text if number in found else ""), seconds


def warm_engine(engine: str, dpi: int) -> None:
    """Load ``engine`` in this process and read a small picture of two words with it, so that its
    models are loaded (RapidOCR loads them on its first page) before any page is timed."""
    from PIL import Image, ImageDraw

    from ingest.ocr import load_engine

    picture = Image.new("L", (400, 100), 255)
    ImageDraw.Draw(picture).text((20, 30), "Warm engine", fill=0, font_size=32)
    load_engine(_settings(engine, dpi)).read(picture, dpi)


def _read_job(job: tuple[str, int, str, int]) -> str:
    engine, dpi, file, number = job
    return read_one(engine, dpi, Path(file), number)[0]


def parallel_pages_per_second(engine: str, dpi: int, pages: list[dict[str, Any]], workers: int) -> dict[str, Any]:
    """Pages per second with ``workers`` processes reading at once, each with its engine loaded."""
    context = multiprocessing.get_context("spawn")
    with context.Pool(workers, initializer=warm_engine, initargs=(engine, dpi)) as pool:
        pool.map(time.sleep, [0.5] * workers, chunksize=1)  # every worker has started (and warmed up)
        window = Window(own_clock=lambda: process_tree_cpu_seconds(os.getpid()))  # the workers' CPU is ours
        with window.measure():
            pool.map(_read_job, [(engine, dpi, str(p["file"]), p["page"]) for p in pages], chunksize=1)
    return {"pages_per_s": len(pages) / window.seconds, **window.as_dict(other_cores=True)}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--files", type=int, default=6, help="PDFs to take pages from (2 pages each)")
    parser.add_argument("--dpi", type=int, default=300)
    parser.add_argument("--workers", type=int, default=2, help="processes for the parallel speed (0: skip)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument(
        "--financebench", type=Path, default=REPO_ROOT.parent / "shared" / "data" / "financebench",
        help="FinanceBench folder with pdfs/ (default: %(default)s)",
    )  # fmt: skip
    add_output_arguments(parser)
    args = parser.parse_args(argv)

    from ingest.ocr import check_engine

    pages = test_pages(args.financebench, args.files)
    if not pages:
        raise SystemExit(f"no test pages: no PDFs under {args.financebench / 'pdfs'}")
    print(f"[bench] {len(pages)} pages from {args.files} filings at {args.dpi} dpi", file=sys.stderr)
    results: list[dict[str, Any]] = []
    for engine in args.engines.split(","):
        check_engine(_settings(engine, args.dpi))
        started = time.perf_counter()
        warm_engine(engine, args.dpi)
        load_s = time.perf_counter() - started
        rows = []
        window = Window()
        with window.measure():
            for page in pages:
                text, seconds = read_one(engine, args.dpi, page["file"], page["page"])
                score = accuracy(page["text"], text)
                rows.append({
                    "file": page["file"].name, "page": page["page"], "kind": page["kind"], "accuracy": score,
                    "seconds": seconds,
                    "chars": len(normalised(page["text"])),
                })  # fmt: skip
                where = f"{page['file'].name} p.{page['page']} {page['kind']}"
                print(f"# {engine} {where}: {score:.4f} in {seconds:.1f} s", file=sys.stderr)
        parallel = parallel_pages_per_second(engine, args.dpi, pages, args.workers) if args.workers > 1 else None
        results.append({
            "engine": engine, "load_s": load_s, "pages": rows,
            "one_core": {"pages_per_s": len(pages) / window.seconds, **window.as_dict(other_cores=True)},
            "parallel": parallel,
        })  # fmt: skip

    raw = {
        "command": "python bench/ocr.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "machine": machine_info(["onnxruntime"]),
        "dpi": args.dpi,
        "workers": args.workers,
        "results": results,
    }
    raw["machine"]["rapidocr"] = package_version("rapidocr")
    raw["machine"]["tesseract"] = _tesseract_version()
    versions = (
        f"rapidocr {raw['machine']['rapidocr']} (onnxruntime {raw['machine']['onnxruntime']}), "
        f"tesseract {raw['machine']['tesseract']}"
    )
    lines = section_start(HEADING, raw, versions)
    kinds = {kind: sum(p["kind"] == kind for p in pages) for kind in ("prose", "table")}
    lines += [
        f"{len(pages)} pages of {args.files} FinanceBench filings ({kinds['prose']} prose pages, each filing's "
        f"fullest; {kinds['table']} table pages, each filing's most numeric), drawn at {args.dpi} dpi by PDFium and "
        "read through `ingest.ocr.read_pages`; the known text is the page's own text layer (PDFium). Character "
        "accuracy = 1 - Levenshtein distance / known length, white space collapsed and typographic quotes and "
        "dashes folded in both texts; reading order counts (a table read column by column loses). One core: "
        "pages read one after another by one process with the engine loaded (as one loader worker reads them); "
        f"{args.workers} workers: that many processes at once.",
        "",
        "| engine | prose pages: accuracy mean / min | table pages: accuracy mean / min | all pages "
        f"| pages/s, one core | pages/s, {args.workers} workers | s/page, one core | engine load s "
        f"| other processes' cores during the one-core / {args.workers}-worker runs |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        rows = result["pages"]
        cells = []
        for kind in ("prose", "table"):
            scores = [row["accuracy"] for row in rows if row["kind"] == kind]
            cells.append(f"{np.mean(scores):.4f} / {min(scores):.4f}" if scores else "-")
        total = sum(row["chars"] for row in rows)
        weighted = sum(row["accuracy"] * row["chars"] for row in rows) / total
        one_core = result["one_core"]["pages_per_s"]
        parallel = f"{result['parallel']['pages_per_s']:.3f}" if result["parallel"] else "-"
        others = f"{result['one_core']['other_cores']:.2f}"
        others += f" / {result['parallel']['other_cores']:.2f}" if result["parallel"] else ""
        lines.append(
            f"| {result['engine']} | {cells[0]} | {cells[1]} | {weighted:.4f} | {one_core:.3f} | {parallel} "
            f"| {1 / one_core:.1f} | {result['load_s']:.1f} | {others} |"
        )
    lines += [
        "",
        "Per page: accuracy, seconds on one core:",
        "",
        "| page | kind | " + " | ".join(result["engine"] for result in results) + " |",
        "|---|---|" + "---:|" * len(results),
    ]
    for i, page in enumerate(pages):
        cells = [f"{r['pages'][i]['accuracy']:.4f}, {r['pages'][i]['seconds']:.1f} s" for r in results]
        lines.append(f"| {page['file'].name} p.{page['page']} | {page['kind']} | " + " | ".join(cells) + " |")
    publish("\n".join(lines) + "\n", raw, args, HEADING)


def _tesseract_version() -> str:
    import subprocess

    program = shutil.which("tesseract")
    if program is None:
        return "not installed"
    completed = subprocess.run([program, "--version"], capture_output=True, text=True, check=False)
    first = (completed.stdout or completed.stderr).splitlines()
    return first[0].removeprefix("tesseract ").strip() if first else "unknown"


if __name__ == "__main__":
    main()
