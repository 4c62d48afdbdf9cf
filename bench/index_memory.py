"""Memory per vector of FAISS indexes for 384-d vectors (all-MiniLM-L6-v2's size), for sizing.

Why: docs/scale.md sizes a 10-million-chunk collection; the index is what must fit in a search
node's memory. This measures bytes per vector at a size that fits here, to be multiplied out.

What is measured, each kind in a fresh interpreter (``--stage KIND``), over ``--vectors`` (200,000)
random unit-length float32 vectors (seed 1234; memory does not depend on the values):

``flat``      ``IndexFlatIP``: the product's default (``index.kind = "flat"``), exact.
``ivf``       ``IndexIVFFlat``, ``--nlist`` (1024) cells: the product's ``index.kind = "ivf"``.
``ivfpq``     ``IndexIVFPQ``, ``--nlist`` cells, ``--pq-m`` (48) sub-quantizers of 8 bits: 48 bytes
              of code per vector. Not a product kind (yet): the compressed option for sizing.
``hnsw``      ``IndexHNSWFlat``, M = ``--hnsw-m`` (32, the product's ``index.hnsw_m``).

Each is wrapped in ``IndexIDMap2``, as ``rag/index.py`` wraps every index (chunk ids are int64
FAISS ids); ``flat-bare`` is the flat index without it, so the id map's own cost shows. Inner
product metric throughout. IVF kinds are trained on the first ``64 x nlist`` vectors.

Per kind, divided by the number of vectors: the index file's size (``faiss.write_index``: what it
takes on disk), and the growth of resident memory (RSS, ``/proc/self/statm``) when another fresh
interpreter reads that file (``faiss.read_index``): what a search process holds for it, the id
map's hash table (``rev_map``, rebuilt on load, not in the file) included, training scratch
memory not. And the build time (training + adding, 2 OpenMP threads).

Run from the repository root: ``python bench/index_memory.py`` (a smoke run:
``python bench/index_memory.py --vectors 20000 --no-write``). The markdown section is printed and
written into ``bench/RESULTS.md`` (``--results``); ``--json`` saves the raw numbers.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import (
    Result,
    add_output_arguments,
    machine_info,
    print_stage_result,
    publish,
    run_stage_command,
    section_start,
)

HEADING = "## Index memory (bench/index_memory.py)"
KINDS = ("flat-bare", "flat", "ivf", "ivfpq", "hnsw")
DIMENSION = 384
SEED = 1234


def _rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * resource.getpagesize()


def _vectors(count: int) -> object:
    import numpy as np

    rng = np.random.default_rng(SEED)
    vectors = rng.standard_normal((count, DIMENSION), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors


def _new_index(kind: str, args: argparse.Namespace) -> object:
    import faiss

    ip = faiss.METRIC_INNER_PRODUCT
    if kind in ("flat", "flat-bare"):
        inner = faiss.IndexFlatIP(DIMENSION)
    elif kind == "ivf":
        inner = faiss.IndexIVFFlat(faiss.IndexFlatIP(DIMENSION), DIMENSION, args.nlist, ip)
    elif kind == "ivfpq":
        inner = faiss.IndexIVFPQ(faiss.IndexFlatIP(DIMENSION), DIMENSION, args.nlist, args.pq_m, 8, ip)
    else:
        inner = faiss.IndexHNSWFlat(DIMENSION, args.hnsw_m, ip)
    return inner if kind == "flat-bare" else faiss.IndexIDMap2(inner)


def run_stage(kind: str, args: argparse.Namespace) -> Result:
    """Build ``kind`` over the vectors and write it to ``args.index_file``; its size and build time."""
    import faiss
    import numpy as np

    faiss.omp_set_num_threads(os.cpu_count() or 1)
    vectors = _vectors(args.vectors)
    assert isinstance(vectors, np.ndarray)
    index = _new_index(kind, args)
    loadavg = os.getloadavg()
    started = time.perf_counter()
    inner = index if kind == "flat-bare" else faiss.downcast_index(index.index)  # type: ignore[attr-defined]
    if not inner.is_trained:
        inner.train(vectors[: 64 * args.nlist])
    if kind == "flat-bare":
        index.add(vectors)  # type: ignore[attr-defined]
    else:
        index.add_with_ids(vectors, np.arange(args.vectors, dtype=np.int64))  # type: ignore[attr-defined]
    seconds = time.perf_counter() - started
    faiss.write_index(index, args.index_file)
    return {
        "kind": kind,
        "vectors": args.vectors,
        "file_bytes": Path(args.index_file).stat().st_size,
        "build_seconds": seconds,
        "loadavg_before": loadavg,
    }


def run_load_stage(args: argparse.Namespace) -> Result:
    """Read ``args.index_file`` in this fresh process; the resident memory it added."""
    import faiss

    before = _rss_bytes()
    index = faiss.read_index(args.index_file)
    after = _rss_bytes()
    return {"loaded_vectors": int(index.ntotal), "rss_growth_bytes": after - before}


def table(raw: Result) -> list[str]:
    rows = [
        "| kind | FAISS index | file bytes / vector | RSS when read, bytes / vector | build s | vectors / s added |",
        "|---|---|---:|---:|---:|---:|",
    ]
    names = {
        "flat-bare": "IndexFlatIP (no id map)",
        "flat": "IDMap2(IndexFlatIP)",
        "ivf": f"IDMap2(IndexIVFFlat, nlist {raw['nlist']})",
        "ivfpq": f"IDMap2(IndexIVFPQ, nlist {raw['nlist']}, m {raw['pq_m']} x 8 bits)",
        "hnsw": f"IDMap2(IndexHNSWFlat, M {raw['hnsw_m']})",
    }
    for stage in raw["stages"]:
        n = stage["vectors"]
        rows.append(
            f"| {stage['kind']} | {names[stage['kind']]} | {stage['file_bytes'] / n:,.1f} | "
            f"{stage['rss_growth_bytes'] / n:,.1f} | {stage['build_seconds']:.1f} | "
            f"{n / stage['build_seconds']:,.0f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--vectors", type=int, default=200_000)
    parser.add_argument("--nlist", type=int, default=1024)
    parser.add_argument("--pq-m", type=int, default=48)
    parser.add_argument("--hnsw-m", type=int, default=32)
    parser.add_argument("--kinds", default=",".join(KINDS), help="comma-separated, of: " + ", ".join(KINDS))
    parser.add_argument("--stage", choices=(*KINDS, "load"), help=argparse.SUPPRESS)
    parser.add_argument("--index-file", help=argparse.SUPPRESS)
    add_output_arguments(parser)
    args = parser.parse_args()
    if args.stage:
        print_stage_result(run_load_stage(args) if args.stage == "load" else run_stage(args.stage, args))
        return
    shared = ["--vectors", str(args.vectors), "--nlist", str(args.nlist), "--pq-m", str(args.pq_m)]
    shared += ["--hnsw-m", str(args.hnsw_m)]
    stages = []
    with tempfile.TemporaryDirectory() as workdir:
        for kind in args.kinds.split(","):
            script = [sys.executable, str(Path(__file__).resolve())]
            index_file = ["--index-file", str(Path(workdir) / f"{kind}.faiss")]
            built = run_stage_command([*script, "--stage", kind, *shared, *index_file], Path(workdir), kind)
            loaded = run_stage_command([*script, "--stage", "load", *index_file], Path(workdir), f"{kind} load")
            Path(index_file[1]).unlink()
            stages.append(built | loaded)
            print(f"[bench] {kind}: {stages[-1]['file_bytes'] / args.vectors:,.1f} B/vector", file=sys.stderr)
    raw: Result = {
        "command": "python " + " ".join(["bench/index_memory.py", *sys.argv[1:]]),
        "machine": machine_info(["numpy", "faiss"]),
        "nlist": args.nlist,
        "pq_m": args.pq_m,
        "hnsw_m": args.hnsw_m,
        "stages": stages,
    }
    versions = f"numpy {raw['machine']['numpy']}, faiss {raw['machine']['faiss']}"
    lines = section_start(HEADING, raw, versions)
    lines += [
        f"{args.vectors:,} random unit-length 384-d float32 vectors (all-MiniLM-L6-v2's dimension), inner product, "
        "each kind built in a fresh process with 2 OpenMP threads; IVF kinds trained on the first "
        f"{64 * args.nlist:,} vectors. RSS when read: a fresh process's resident memory after `faiss.read_index` of "
        "the file minus before.",
        "",
        *table(raw),
        "",
        "Raw float32 vectors are 1,536 bytes each (384 x 4); IndexIDMap2 adds 8 bytes of id per vector on disk and "
        "its id-to-position hash table in memory. docs/scale.md multiplies these out to 10 million chunks.",
        "",
    ]
    publish("\n".join(lines), raw, args, HEADING)


if __name__ == "__main__":
    main()
