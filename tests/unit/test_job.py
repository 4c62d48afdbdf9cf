"""The ingestion job's logic with a fake embedder: the diff, the outcomes, the summary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from ingest.discovery import discover
from ingest.job import IngestSummary, run_ingest
from ingest.loaders import SUPPORTED_EXTENSIONS, PdfLoader
from rag.errors import ManifestMismatchError
from rag.kb.embedded import EmbeddedKnowledgeBase
from tests.fakes import FakeEmbedder, FakeIngestReporter
from tests.filefactory import make_statement_pdf


@pytest.fixture
def docs(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    (folder / "a.txt").write_text("Apples grow on trees in the orchard. " * 20)
    (folder / "b.md").write_text("# Bananas\n\nBananas are yellow and grow in bunches. " * 10)
    (folder / "notes.xyz").write_text("unsupported")
    (folder / ".hidden.txt").write_text("hidden files are skipped")
    return folder


def _ingest(
    paths: list[Path], config: Any, embedder: FakeEmbedder | None = None, **flags: bool
) -> tuple[IngestSummary, FakeIngestReporter]:
    reporter = FakeIngestReporter()
    summary = run_ingest(paths, config, embedder or FakeEmbedder(), reporter, **flags)
    return summary, reporter


def _chunk_ids(config: Any) -> list[int]:
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.consistency_problems(config) == []
        return sorted(c.id for c, _ in kb.all_chunks())


def test_first_run_adds_and_second_run_adds_nothing(docs: Path, make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    first, reporter = _ingest([docs], config)
    assert (first.added, first.updated, first.unchanged, first.skipped, first.failed) == (2, 0, 0, 1, [])
    assert first.documents == 2 and first.chunks > 2
    assert reporter.started is not None and reporter.started[0] == 2
    ids = _chunk_ids(config)

    second, reporter = _ingest([docs], config)
    assert (second.added, second.updated, second.unchanged) == (0, 0, 2)
    assert not second.changed
    assert reporter.started == (0, 0), "unchanged files are not even read"
    assert _chunk_ids(config) == ids


def test_touched_but_identical_file_is_hashed_not_reprocessed(docs: Path, make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    _ingest([docs], config)
    os.utime(docs / "a.txt", ns=(1, 1))
    embedder = FakeEmbedder()
    summary, reporter = _ingest([docs], config, embedder)
    assert (summary.added, summary.updated, summary.unchanged) == (0, 0, 2)
    assert reporter.started is not None and reporter.started[0] == 1
    assert embedder.encoded_batches == []


def test_edited_file_is_replaced_and_pruned_file_removed(docs: Path, make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    _ingest([docs], config)
    before = _chunk_ids(config)
    (docs / "a.txt").write_text("Cherries are red. " * 5)
    summary, _ = _ingest([docs], config)
    assert (summary.added, summary.updated, summary.unchanged) == (0, 1, 1)
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        texts = [c.text for c, source in kb.all_chunks() if source.endswith("a.txt")]
    assert texts and all("Cherries" in t and "Apples" not in t for t in texts)
    after = _chunk_ids(config)
    assert set(after) != set(before)

    (docs / "b.md").unlink()
    kept, _ = _ingest([docs], config)
    assert kept.removed == 0 and kept.documents == 2, "without --prune nothing is removed"
    pruned, reporter = _ingest([docs], config, prune=True)
    assert pruned.removed == 1 and pruned.documents == 1
    assert [e.outcome for e in reporter.events if e.path.endswith("b.md")] == ["removed"]


def test_bad_files_are_reported_and_good_files_land(docs: Path, make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    (docs / "empty.txt").write_bytes(b"")
    (docs / "binary.txt").write_bytes(bytes(range(256)) * 4)
    (docs / "fake.pdf").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    (docs / "dangling.txt").symlink_to(docs / "gone.txt")
    summary, _ = _ingest([docs, docs / "missing-folder"], config)
    reasons = {Path(f.path).name: f.reason for f in summary.failed}
    assert set(reasons) == {"empty.txt", "binary.txt", "fake.pdf", "dangling.txt", "missing-folder"}
    assert "empty" in reasons["empty.txt"]
    assert "binary" in reasons["binary.txt"]
    assert "not a PDF" in reasons["fake.pdf"]
    assert "cannot read" in reasons["dangling.txt"]
    assert "no such file" in reasons["missing-folder"]
    assert summary.added == 2 and summary.documents == 2


def test_a_file_that_turns_bad_keeps_its_stored_version(docs: Path, make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    _ingest([docs], config)
    before = _chunk_ids(config)
    (docs / "a.txt").write_bytes(b"\x00\x01\x02" * 100)
    summary, _ = _ingest([docs], config)
    assert [Path(f.path).name for f in summary.failed] == ["a.txt"]
    assert _chunk_ids(config) == before


def test_chunks_from_many_files_share_encode_calls(tmp_path: Path, make_config: Any) -> None:
    folder = tmp_path / "many"
    folder.mkdir()
    for n in range(30):
        (folder / f"note{n:02}.txt").write_text(f"Note number {n} says something short.")
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0, ingest__embed_batch_chunks=10)
    embedder = FakeEmbedder()
    summary, _ = _ingest([folder], config, embedder)
    assert summary.added == 30
    assert embedder.encoded_batches == [10, 10, 10]


def test_worker_processes_give_the_same_result(docs: Path, make_config: Any, tmp_path: Path) -> None:
    serial = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    _ingest([docs], serial)
    parallel = make_config(embedding__model="fake/hashing-64", ingest__workers=2, kb_dir=tmp_path / "kb2")
    summary, _ = _ingest([docs], parallel)
    assert summary.added == 2
    assert _chunk_ids(parallel) == _chunk_ids(serial)


def test_reindex_with_another_model_re_embeds_stored_documents(docs: Path, make_config: Any) -> None:
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    _ingest([docs], config)
    (docs / "a.txt").unlink()  # reindexing works from stored pages, not from the files
    other = make_config(embedding__model="fake/other-32", ingest__workers=0)
    embedder = FakeEmbedder("fake/other-32", dimension=32)
    summary, _ = _ingest([docs], other, embedder, reindex=True)
    assert summary.documents == 2
    with EmbeddedKnowledgeBase.open(other.kb_dir, other) as kb:
        assert kb.manifest.embedding_model == "fake/other-32" and kb.manifest.dimension == 32
        assert kb.consistency_problems(other) == []
        assert len({source for _, source in kb.all_chunks()}) == 2


def test_discovery_skips_hidden_counts_unsupported_and_excludes_the_kb(docs: Path) -> None:
    (docs / "kb").mkdir()
    (docs / "kb" / "inside.txt").write_text("should not be ingested")
    (docs / ".git").mkdir()
    (docs / ".git" / "config.txt").write_text("hidden folder")
    found = discover([docs], SUPPORTED_EXTENSIONS, exclude=docs / "kb")
    assert [p.name for p in found.files] == ["a.txt", "b.md"]
    assert [p.name for p in found.unsupported] == ["notes.xyz"]
    assert discover([docs / ".hidden.txt"], SUPPORTED_EXTENSIONS).files == [docs / ".hidden.txt"]


def test_changing_pdf_text_needs_a_reindex_that_extracts_the_pdfs_again(tmp_path: Path, make_config: Any) -> None:
    folder = tmp_path / "filings"
    statement = make_statement_pdf(
        folder / "ACME_2023_10K.pdf", ["Consolidated Statements of Cash Flows"], ["2023"], [("Net income", "5,363")]
    )
    (folder / "notes.txt").write_text("Meeting notes about the garden.")
    with_pypdf = make_config(ingest__workers=0, ingest__pdf_text="pypdf")
    run_ingest([folder], with_pypdf, FakeEmbedder())
    with_pdfium = make_config(ingest__workers=0)
    with pytest.raises(ManifestMismatchError, match=r"pdf_text='pypdf' \(configured: 'pdfium'\).*--reindex"):
        run_ingest([folder], with_pdfium, FakeEmbedder())
    extracted = []

    def loader_spy(self: PdfLoader, path: Path, data: bytes) -> Any:
        extracted.append((self.text_engine, path.name))
        return original(self, path, data)

    original = PdfLoader.load_text_layer  # what every PDF's loading starts with, OCR or not
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(PdfLoader, "load_text_layer", loader_spy)
        # the PDF is read again even from a run given other paths; the text file is re-chunked
        summary = run_ingest([folder / "notes.txt"], with_pdfium, FakeEmbedder(), reindex=True)
    assert extracted == [("pdfium", statement.name)]
    assert summary.failed == [] and (summary.added, summary.documents) == (1, 2)
    with EmbeddedKnowledgeBase.open(with_pdfium.kb_dir, with_pdfium) as kb:
        assert kb.manifest.pdf_text == "pdfium"
        assert kb.consistency_problems(with_pdfium) == []
        texts = {Path(source).name: chunk.text for chunk, source in kb.all_chunks()}
    assert "Net income 5,363" in texts[statement.name]
