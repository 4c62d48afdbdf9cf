"""Ingestion on real files with the real packaged model, real FAISS and real SQLite.

The command line runs as a subprocess, exactly as a user runs it; the library calls reuse one
model loaded per session.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from ingest.job import run_ingest
from rag.config import AppConfig, load_config
from rag.faults import CRASH_ENV
from rag.kb.embedded import EmbeddedKnowledgeBase
from tests.filefactory import (
    make_binary_txt,
    make_corrupt_pdf,
    make_docx,
    make_fake_pdf,
    make_pdf,
    make_truncated_pdf,
)
from tests.integration.cli import REPO, clean_environment, rag

pytestmark = pytest.mark.integration


HANDBOOK_PAGES = [
    "Contents. Introduction. Leave policy. Equipment.",
    "Preface. This handbook was written by the people team in 2026.",
    "Vacation. Every full-time employee receives 28 days of paid vacation per calendar year.",
    "Equipment. Laptops use full-disk encryption and passwords of at least 14 characters.",
]


def _config(kb: Path, **overrides: Any) -> AppConfig:
    return load_config(overrides={"kb_dir": kb, **overrides}, environ={})


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    make_pdf(root / "handbook.pdf", HANDBOOK_PAGES, title="Handbook", page_labels=[(0, "/r", ""), (2, "/D", "")])
    make_pdf(
        root / "sec" / "filing.pdf",
        ["Revenue grew 12 percent to 4.1 billion dollars."],
        owner_password="owner",
        user_password="",
    )
    (root / "faq.md").write_text("# Robot FAQ\n\nThe R2 robot carries up to 150 kg on its top deck.\n")
    (root / "notes.txt").write_text("Meeting notes: the Lyon office opens on 3 March.\n")
    (root / "release.html").write_text(
        "<html><head><title>Release 4.2</title><script>alert('x')</script></head>"
        "<body><p>Fleet size per site raised to 500 robots.</p></body></html>"
    )
    make_docx(
        root / "policy.docx", ["# Expenses", "Hotels are reimbursed up to 180 euros per night."], title="Expenses"
    )
    return root


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    (root / "empty.pdf").write_bytes(b"")
    make_truncated_pdf(root / "truncated.pdf")
    make_corrupt_pdf(root / "corrupt.pdf")
    make_pdf(root / "locked.pdf", ["secret"], user_password="hunter2", owner_password="owner")
    make_fake_pdf(root / "picture.pdf")
    make_binary_txt(root / "binary.txt")
    (root / "unreadable.txt").symlink_to(root / "vanished.txt")
    (root / "image.png").write_bytes(b"\x89PNG")
    return root


def test_cli_reports_every_bad_input_and_lands_the_good_files(corpus: Path, bad_files: Path, tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    result = rag("ingest", str(corpus), str(bad_files), str(tmp_path / "no-such-dir"), "--kb", str(kb), "--json")
    assert result.returncode == 2, result.stderr
    summary = json.loads(result.stdout)
    assert {"added", "updated", "unchanged", "removed", "failed", "documents", "chunks", "seconds"} <= set(summary)
    reasons = {Path(f["path"]).name: f["reason"] for f in summary["failed"]}
    assert reasons.keys() == {
        "empty.pdf",
        "truncated.pdf",
        "corrupt.pdf",
        "locked.pdf",
        "picture.pdf",
        "binary.txt",
        "unreadable.txt",
        "no-such-dir",
    }
    assert reasons["empty.pdf"] == "empty file"
    assert "truncated" in reasons["truncated.pdf"]
    assert reasons["corrupt.pdf"].startswith("damaged PDF")
    assert "password" in reasons["locked.pdf"]
    assert reasons["picture.pdf"] == "not a PDF file"
    assert "binary" in reasons["binary.txt"]
    assert reasons["unreadable.txt"].startswith("cannot read")
    assert "no such file" in reasons["no-such-dir"]
    assert summary["added"] == 6 and summary["documents"] == 6 and summary["skipped"] == 1
    assert "Traceback" not in result.stderr
    for name in reasons:
        assert name in result.stderr, "each failure is reported as it happens, by name"

    info = rag("info", "--kb", str(kb), "--json")
    assert info.returncode == 0, info.stderr
    facts = json.loads(info.stdout)
    assert facts["documents"] == 6 and facts["chunks"] == summary["chunks"] and facts["bytes"] > 0
    assert facts["embedding_model"] == "sentence-transformers/all-MiniLM-L6-v2" and facts["index"] == "flat"
    assert (facts["embedding_backend"], facts["embedding_quantization"]) == ("torch", "none")
    assert facts["indexing"] == {"chunk_tokens": 200, "overlap_tokens": 32, "context": "page", "pdf_text": "pdfium"}
    assert facts["last_run"]["status"] == "completed with failures"
    assert {Path(f["path"]).name for f in facts["last_run"]["failed"]} == reasons.keys()

    again = rag("ingest", str(corpus), "--kb", str(kb))
    assert again.returncode == 0, again.stderr
    assert "nothing changed: 6 file(s) already up to date" in again.stdout

    search = rag("search", "How many vacation days do employees get?", "--kb", str(kb), "-k", "3", "--json")
    assert search.returncode == 0, search.stderr
    hits = json.loads(search.stdout)
    assert Path(hits[0]["file"]).name == "handbook.pdf" and hits[0]["page"] == 3
    assert "28 days" in hits[0]["text"] and hits[0]["retrievers"] == ["dense", "bm25"]
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)


def test_usage_errors_exit_1_with_a_message(corpus: Path, tmp_path: Path) -> None:
    missing = rag("info", "--kb", str(tmp_path / "nothing"))
    assert missing.returncode == 1 and "rag ingest" in missing.stderr and "Traceback" not in missing.stderr
    bad = rag("ingest", str(corpus), "--kb", str(tmp_path / "kb"), "--set", "chunking.chunk_tokens=abc")
    assert bad.returncode == 1 and "chunking.chunk_tokens" in bad.stderr and "'abc'" in bad.stderr


def test_rerun_edit_and_prune_with_the_real_model(corpus: Path, tmp_path: Path, real_embedder: Any) -> None:
    docs = tmp_path / "docs"
    subprocess.run(["cp", "-r", str(corpus), str(docs)], check=True)
    config = _config(tmp_path / "kb", **{"ingest.workers": 1})
    first = run_ingest([docs], config, real_embedder)
    assert first.added == 6 and not first.failed

    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        chunks = kb.all_chunks()
        assert kb.consistency_problems(config) == []
    labels = {c.page: c.page_label for c, source in chunks if source.endswith("handbook.pdf")}
    assert labels == {1: "i", 2: "ii", 3: "1", 4: "2"}
    html = [c.text for c, source in chunks if source.endswith("release.html")]
    assert html and "alert" not in " ".join(html)
    tokenizer = real_embedder._model.tokenizer  # the model's own tokenizer, specials included
    assert all(len(tokenizer(c.text)["input_ids"]) <= real_embedder._model.max_seq_length for c, _ in chunks)

    second = run_ingest([docs], config, real_embedder)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 6)

    (docs / "notes.txt").write_text("Meeting notes: the Lyon office now opens on 10 March.\n")
    (docs / "faq.md").unlink()
    third = run_ingest([docs], config, real_embedder, prune=True)
    assert (third.added, third.updated, third.unchanged, third.removed) == (0, 1, 4, 1)
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        texts = {source: c.text for c, source in kb.all_chunks()}
        assert kb.consistency_problems(config) == []
    assert not any(source.endswith("faq.md") for source in texts)
    assert "10 March" in texts[str(docs / "notes.txt")]


def _write_many_notes(folder: Path, count: int) -> None:
    folder.mkdir()
    for n in range(count):
        sentences = [f"Report {n}, section {s}: the team measured value {n * 100 + s} in the field." for s in range(40)]
        (folder / f"report-{n:03}.txt").write_text(" ".join(sentences))


def test_kill_9_mid_run_then_rerun_equals_a_clean_run(tmp_path: Path, real_embedder: Any) -> None:
    docs = tmp_path / "docs"
    _write_many_notes(docs, 24)
    killed_kb = tmp_path / "killed"
    settings = [
        "--set",
        "ingest.commit_seconds=0.05",
        "--set",
        "ingest.embed_batch_chunks=4",
        "--set",
        "ingest.workers=0",
    ]
    process = subprocess.Popen(
        [sys.executable, "-m", "ui.cli", "ingest", str(docs), "--kb", str(killed_kb), *settings],
        cwd=REPO,
        env=clean_environment(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    config = _config(killed_kb)
    committed = 0
    reads_during_write = 0
    info_during_write: dict[str, Any] | None = None
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and process.poll() is None:
            try:
                with EmbeddedKnowledgeBase.open(killed_kb, config) as kb:
                    # A reader during the write sees one committed state: rows and vectors agree.
                    assert kb.consistency_problems(config) == []
                    committed = kb.stats().documents
                    reads_during_write += 1
            except Exception as exc:
                if "no knowledge base" not in str(exc) and "is empty" not in str(exc):
                    raise
            if committed >= 2 and info_during_write is None:
                info = rag("info", "--kb", str(killed_kb), "--json")
                assert info.returncode == 0, info.stderr
                info_during_write = json.loads(info.stdout)
            if committed >= 4:
                break
            time.sleep(0.05)
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    assert 4 <= committed < 24, f"the kill must land mid-run (committed {committed})"
    assert reads_during_write > 0
    assert info_during_write is not None and info_during_write["last_run"]["status"] == "running"

    with EmbeddedKnowledgeBase.open(killed_kb, config) as kb:
        assert kb.consistency_problems(config) == []
        survived = kb.stats().documents
    assert survived >= committed

    resumed = run_ingest([docs], config, real_embedder)
    assert resumed.unchanged == survived, "files committed before the kill are not redone"
    assert resumed.added == 24 - survived and not resumed.failed

    clean_config = _config(tmp_path / "clean")
    clean = run_ingest([docs], clean_config, real_embedder)
    with (
        EmbeddedKnowledgeBase.open(killed_kb, config) as a,
        EmbeddedKnowledgeBase.open(clean_config.kb_dir, clean_config) as b,
    ):
        assert a.consistency_problems(config) == [] and b.consistency_problems(clean_config) == []
        assert sorted(c.id for c, _ in a.all_chunks()) == sorted(c.id for c, _ in b.all_chunks())
        assert a.stats().chunks == b.stats().chunks == clean.chunks
        assert sorted(a.load_index(config).ids().tolist()) == sorted(b.load_index(clean_config).ids().tolist())
        assert a.stats().last_run is not None and a.stats().last_run.status == "completed"  # type: ignore[union-attr]


def test_killed_inside_a_commit_with_the_real_model_checks_whole_and_resumes(
    tmp_path: Path, real_embedder: Any
) -> None:
    """End to end with the real model: `rag ingest` killed between its third SQLite commit and
    manifest.json (rag/faults.py), then `rag check`, then `rag ingest` again, all as a user runs them."""
    docs = tmp_path / "docs"
    _write_many_notes(docs, 6)
    kb = tmp_path / "kb"
    settings = [
        "--set",
        "ingest.commit_seconds=0.01",
        "--set",
        "ingest.embed_batch_chunks=4",
        "--set",
        "ingest.workers=0",
    ]
    command = [sys.executable, "-m", "ui.cli", "ingest", str(docs), "--kb", str(kb), *settings]
    env = {**clean_environment(), CRASH_ENV: "sqlite-committed:3"}
    killed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]

    check = rag("check", "--kb", str(kb), "--json")
    report = json.loads(check.stdout)
    assert check.returncode == 0 and report["whole"], report
    with EmbeddedKnowledgeBase.open(kb, _config(kb)) as opened:
        survived = opened.stats().documents
    assert 0 < survived < 6

    resumed = rag("ingest", str(docs), "--kb", str(kb), "--json", *settings)
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads(resumed.stdout)
    assert (summary["unchanged"], summary["added"]) == (survived, 6 - survived)
    assert json.loads(rag("check", "--kb", str(kb), "--json").stdout)["findings"] == []

    clean_config = _config(tmp_path / "clean")
    run_ingest([docs], clean_config, real_embedder)
    with (
        EmbeddedKnowledgeBase.open(kb, _config(kb)) as a,
        EmbeddedKnowledgeBase.open(clean_config.kb_dir, clean_config) as b,
    ):
        assert sorted(c.id for c, _ in a.all_chunks()) == sorted(c.id for c, _ in b.all_chunks())
        query = real_embedder.embed_queries(["the team measured value 304 in the field"])
        hits_a = a.searcher(_config(kb)).dense(query, 5)[0]
        hits_b = b.searcher(clean_config).dense(query, 5)[0]
        assert [(h.chunk.id, round(h.score, 4)) for h in hits_a] == [(h.chunk.id, round(h.score, 4)) for h in hits_b]


def test_model_mismatch_tells_how_to_reindex(corpus: Path, tmp_path: Path, real_embedder: Any) -> None:
    config = _config(tmp_path / "kb")
    run_ingest([corpus / "notes.txt"], config, real_embedder)
    result = rag("search", "lyon", "--kb", str(config.kb_dir), "--set", "embedding.model=intfloat/e5-small-v2")
    assert result.returncode == 1
    assert "rag ingest PATH --reindex" in result.stderr and "Traceback" not in result.stderr
