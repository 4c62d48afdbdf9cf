"""Crash safety, shown by killing real ingestion processes at every step that leaves a different
state on disk, then at random moments.

Each case runs ``python -m tests.crashrun`` (the real job, real files, real SQLite and FAISS,
the fake embedder: the model is not what is tested) and kills it with SIGKILL, either at a named
crash point (``RAGTEST_CRASH_AT``, rag/faults.py: the steps inside a commit last milliseconds, and
timing alone does not land there) or after a random delay (seeded; the seed is in the test id).
After the kill, the knowledge base must open with SQLite and FAISS agreeing one to one, and a
re-run must (a) not redo the files that were committed before the kill and (b) end equal to a
clean run: the same documents, chunk ids, counts, dense and BM25 results and scores, and no
leftover files.

Two scenarios: a first ingestion into a new knowledge base, and a second run that edits,
adds and prunes files of a knowledge base (commits that replace and delete vectors).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from ingest.job import IngestSummary, run_ingest
from rag.check import check_knowledge_base
from rag.errors import KnowledgeBaseNotFoundError
from rag.faults import CRASH_ENV, CRASH_POINTS
from rag.kb import open_knowledge_base
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.kb.generations import MANIFEST_NAME
from rag.manifest import Manifest
from tests.crashrun import crash_config
from tests.fakes import FakeEmbedder
from tests.integration.cli import REPO, clean_environment

pytestmark = pytest.mark.integration

QUERIES = ("river delta sediment", "report 3 measured value", "glacier ice core", "harbour crane")
TOPICS = ("river delta sediment", "glacier ice core", "harbour crane", "desert dune", "forest canopy", "coral reef")


def _write_docs(folder: Path, names: range, edition: int = 0) -> None:
    folder.mkdir(exist_ok=True)
    for n in names:
        topic = TOPICS[n % len(TOPICS)]
        sentences = [
            f"Report {n} on the {topic}, part {s}: the team measured value {n * 100 + s + edition}." for s in range(24)
        ]
        (folder / f"report-{n:02}.txt").write_text(" ".join(sentences))


def _run(kb: Path | str, docs: Path, crash: str | None = None, prune: bool = False) -> subprocess.Popen[str]:
    env = clean_environment()
    if crash is not None:
        env[CRASH_ENV] = crash
    command = [sys.executable, "-m", "tests.crashrun", str(kb), str(docs), *(["--prune"] if prune else [])]
    return subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _committed(kb: Path) -> dict[str, str]:
    """Source -> content hash of what the killed run left committed (empty if nothing yet)."""
    config = crash_config(kb)
    try:
        with EmbeddedKnowledgeBase.open(kb, config) as opened:
            assert opened.consistency_problems(config) == []
            return {d.source: d.content_hash for d in opened.documents()}
    except KnowledgeBaseNotFoundError:
        return {}


def _state(kb: Path) -> dict[str, Any]:
    """Everything a user could observe of a knowledge base, for comparing two of them."""
    config = crash_config(kb)
    embedder = FakeEmbedder()
    with EmbeddedKnowledgeBase.open(kb, config) as opened:
        assert opened.consistency_problems(config) == []
        searcher = opened.searcher(config)
        keyword = searcher.keyword_index
        stats = opened.stats()
        # Whole rankings, ties put in name order: equal scores come in chunk-id order, and the ids
        # differ between the two knowledge bases.
        dense = searcher.dense(embedder.embed_queries(list(QUERIES)), stats.chunks)
        # Chunk ids derive from the file's path, and the clean run's files live elsewhere: each
        # chunk is named by its file's name and its position instead.
        name = {c.id: (Path(source).name, c.ordinal) for c, source in opened.all_chunks()}
        state = {
            "documents": {Path(d.source).name: d.content_hash for d in opened.documents()},
            "chunks": sorted(name.values()),
            "counts": (stats.documents, stats.pages, stats.chunks),
            "dense": [_ranking((name[hit.chunk.id], hit.score) for hit in hits) for hits in dense],
            "keyword": [_ranking((name[i], s) for i, s in keyword.search(q, stats.chunks)) for q in QUERIES],
        }
    manifest = Manifest.model_validate_json((kb / MANIFEST_NAME).read_text())
    assert (manifest.documents, manifest.chunks) == (stats.documents, stats.chunks), "manifest.json is current"
    files = sorted(p.name for p in kb.iterdir() if p.name.startswith(("index-", "bm25-")))
    assert [f.split("-")[0] for f in files] == ["bm25", "index"], (
        f"one index and one BM25 folder, no leftovers: {files}"
    )
    assert manifest.keyword_generation == manifest.generation
    return state


def _ranking(hits: Iterable[tuple[tuple[str, int], float]]) -> list[tuple[float, tuple[str, int]]]:
    return sorted((-round(score, 5), name) for name, score in hits)


def _resume(kb: Path, docs: Path, prune: bool) -> IngestSummary:
    return run_ingest([docs], crash_config(kb), FakeEmbedder(), prune=prune)


@pytest.fixture(scope="module")
def clean(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The clean runs every killed run is compared with: first ingestion, and the second run."""
    root = tmp_path_factory.mktemp("clean")
    first, second = root / "first-docs", root / "second-docs"
    _write_docs(first, range(10))
    _write_docs(second, range(10))
    _edit(second)
    first_kb, second_kb = root / "first-kb", root / "second-kb"
    assert not _resume(first_kb, first, prune=False).failed
    assert not _resume(second_kb, second, prune=True).failed
    return {"first": _state(first_kb), "second": _state(second_kb)}


def _edit(docs: Path) -> None:
    """The second run's changes: 3 files edited, 2 added, 2 deleted."""
    _write_docs(docs, range(3), edition=1)
    _write_docs(docs, range(10, 12))
    for n in (7, 8):
        (docs / f"report-{n:02}.txt").unlink()


def _prepare(tmp_path: Path, scenario: str) -> tuple[Path, Path]:
    """A docs folder and knowledge base set up for ``scenario``."""
    docs, kb = tmp_path / "docs", tmp_path / "kb"
    _write_docs(docs, range(10))
    if scenario == "second":
        assert not _resume(kb, docs, prune=False).failed
        _edit(docs)
    return docs, kb


def _check_recovery(kb: Path, docs: Path, scenario: str, clean: dict[str, Any]) -> None:
    committed = _committed(kb)
    if kb.exists():
        report = check_knowledge_base(kb, crash_config(kb))
        assert report.whole, f"rag check after the kill: {report.findings}"
    files = {str(p): p for p in docs.iterdir()}
    # A file whose committed content is its content now must not be redone.
    done = {s for s, digest in committed.items() if s in files and _sha256(files[s]) == digest}
    resumed = _resume(kb, docs, prune=scenario == "second")
    assert not resumed.failed
    assert resumed.unchanged == len(done), "files committed before the kill are not redone"
    assert resumed.added + resumed.updated == len(files) - len(done)
    assert _state(kb) == clean[scenario]
    assert check_knowledge_base(kb, crash_config(kb)).findings == [], "nothing left for rag check to note"


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# Each point at its first visit, and the commit steps again mid-run (a later generation, with a
# previous index file to replace). keyword-* happen once, at a run's last commit.
CASES = [(point, 1) for point in CRASH_POINTS] + [
    ("loaded", 4),
    ("stored", 3),
    ("index-written", 4),
    ("sqlite-committed", 4),
    ("manifest-written", 4),
]


@pytest.mark.parametrize("scenario", ["first", "second"])
@pytest.mark.parametrize(("point", "visit"), CASES, ids=[f"{p}:{v}" for p, v in CASES])
def test_killed_at_a_named_step_recovers(
    tmp_path: Path, clean: dict[str, Any], scenario: str, point: str, visit: int
) -> None:
    docs, kb = _prepare(tmp_path, scenario)
    process = _run(kb, docs, crash=f"{point}:{visit}", prune=scenario == "second")
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == -signal.SIGKILL, f"the crash point was not reached: {stderr[-2000:]}"
    _check_recovery(kb, docs, scenario, clean)


SWEEP_SEED = int(os.environ.get("RAGTEST_CRASH_SEED", "20261202"))


@pytest.mark.parametrize("scenario", ["first", "second"])
@pytest.mark.parametrize("trial", range(4))
def test_killed_at_a_random_moment_recovers(tmp_path: Path, clean: dict[str, Any], scenario: str, trial: int) -> None:
    docs, kb = _prepare(tmp_path, scenario)
    rng = random.Random(f"{SWEEP_SEED}-{scenario}-{trial}")
    # How long an unkilled run takes after its imports, measured on a copy, so the kill falls
    # inside the run on any machine.
    probe_kb = tmp_path / "probe-kb"
    if scenario == "second":
        shutil.copytree(kb, probe_kb)
    probe = _run(probe_kb, docs, prune=scenario == "second")
    assert probe.stdout is not None and probe.stdout.readline().strip() == "running"
    started = time.monotonic()
    probe.communicate(timeout=120)
    assert probe.returncode == 0
    duration = time.monotonic() - started

    # Within the first 60% of the run as timed (which ends with the interpreter's shutdown), so
    # the kill always interrupts it.
    delay = rng.uniform(0, 0.6 * duration)
    process = _run(kb, docs, prune=scenario == "second")
    assert process.stdout is not None and process.stdout.readline().strip() == "running"
    time.sleep(delay)
    process.send_signal(signal.SIGKILL)
    process.communicate(timeout=120)
    where = json.dumps({"seed": SWEEP_SEED, "delay_s": round(delay, 3), "run_s": round(duration, 3)})
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill: {where}"
    _check_recovery(kb, docs, scenario, clean)


# -- the same promise for a knowledge base in Milvus Lite ----------------------------------------
# Milvus has no transaction: its writer's commit is a sequence of writes (rag/kb/milvus.py), each
# of whose ends is a crash point, and readers see each write. After a kill and a re-run the
# knowledge base must equal a clean run's: no duplicate chunk, no orphan, nothing redone that
# was complete.


def _milvus(folder: Path) -> str:
    return f"milvus-lite:{folder / 'kb.db'}"


def _milvus_state(location: str) -> dict[str, Any]:
    config = crash_config(location)
    embedder = FakeEmbedder()
    with open_knowledge_base(config.kb_dir, config) as opened:
        assert opened.consistency_problems(config) == []
        stats = opened.stats()
        searcher = opened.searcher(config)
        chunks = opened.all_chunks()
        assert len({c.id for c, _ in chunks}) == len(chunks) == stats.chunks, "no duplicate, no orphan"
        name = {c.id: (Path(source).name, c.ordinal) for c, source in chunks}
        dense = searcher.dense(embedder.embed_queries(list(QUERIES)), stats.chunks)
        keyword = searcher.keyword(list(QUERIES), stats.chunks)
        return {
            "documents": {Path(d.source).name: d.content_hash for d in opened.documents()},
            "chunks": sorted(name.values()),
            "counts": (stats.documents, stats.pages, stats.chunks),
            "dense": [_ranking((name[hit.chunk.id], hit.score) for hit in hits) for hits in dense],
            "keyword": [sorted(name[hit.chunk.id] for hit in hits) for hits in keyword],
        }


@pytest.fixture(scope="module")
def clean_milvus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("clean-milvus")
    first, second = root / "first-docs", root / "second-docs"
    _write_docs(first, range(10))
    _write_docs(second, range(10))
    _edit(second)
    states = {}
    for scenario, docs in (("first", first), ("second", second)):
        location = _milvus(root / scenario)
        assert not run_ingest([docs], crash_config(location), FakeEmbedder(), prune=scenario == "second").failed
        states[scenario] = _milvus_state(location)
    return states


MILVUS_CASES = [
    ("milvus-pending", 1),
    ("milvus-chunks", 1),
    ("milvus-old-deleted", 1),
    ("milvus-chunks", 3),
    ("stored", 2),
]


@pytest.mark.parametrize("scenario", ["first", "second"])
@pytest.mark.parametrize(("point", "visit"), MILVUS_CASES, ids=[f"{p}:{v}" for p, v in MILVUS_CASES])
def test_milvus_killed_at_a_named_step_recovers(
    tmp_path: Path, clean_milvus: dict[str, Any], scenario: str, point: str, visit: int
) -> None:
    docs = tmp_path / "docs"
    location = _milvus(tmp_path)
    _write_docs(docs, range(10))
    if scenario == "second":
        assert not run_ingest([docs], crash_config(location), FakeEmbedder()).failed
        _edit(docs)
    process = _run(location, docs, crash=f"{point}:{visit}", prune=scenario == "second")
    _, stderr = process.communicate(timeout=180)
    assert process.returncode == -signal.SIGKILL, f"the crash point was not reached: {stderr[-2000:]}"
    config = crash_config(location)
    try:
        with open_knowledge_base(config.kb_dir, config) as opened:
            committed = {d.source: d.content_hash for d in opened.documents()}
    except KnowledgeBaseNotFoundError:
        committed = {}
    files = {str(p): p for p in docs.iterdir()}
    done = {s for s, digest in committed.items() if s in files and _sha256(files[s]) == digest}
    resumed = run_ingest([docs], config, FakeEmbedder(), prune=scenario == "second")
    assert not resumed.failed
    assert resumed.unchanged == len(done), "documents complete before the kill are not redone"
    assert resumed.added + resumed.updated == len(files) - len(done)
    assert _milvus_state(location) == clean_milvus[scenario]
