"""A chunk's document header: what it is made of, and that it reaches both indexes but not the text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from ingest.chunking import chunk_pages
from ingest.job import run_ingest
from rag.config import ChunkingConfig
from rag.context import MAX_CONTEXT_CHARS, document_context, indexed_text
from rag.errors import ManifestMismatchError
from rag.manifest import Manifest
from rag.store import KnowledgeBase
from rag.types import Page
from tests.fakes import FakeEmbedder, FakeTokenizer


@pytest.mark.parametrize(
    ("title", "source", "expected"),
    [
        # an SEC accession number as the PDF's title says nothing a question would say
        ("0001018724-18-000005", "/kb/AMAZON_2017_10K.pdf", "AMAZON 2017 10K"),
        ("ADBE 10-K FY22", "/kb/ADOBE_2022_10K.pdf", "ADOBE 2022 10K - ADBE 10-K FY22"),
        # a BEIR corpus id is an identifier, not words: no header, the chunk is indexed alone
        ("4983", "/cache/4983.txt", ""),
        # a title that only repeats the file name is not said twice
        ("Employee Handbook", "/kb/employee-handbook.md", "employee handbook"),
        ("Travel policy", "/kb/2024.docx", "Travel policy"),
    ],
)
def test_document_context_names_the_document_in_words(title: str, source: str, expected: str) -> None:
    assert document_context(title, source) == expected


def test_document_context_is_bounded() -> None:
    assert len(document_context("word " * 200, "/kb/report.pdf")) <= MAX_CONTEXT_CHARS


def test_indexed_text_puts_the_header_first_and_leaves_a_bare_chunk_alone() -> None:
    assert indexed_text("ACME 2017 10K", "Net sales rose.") == "ACME 2017 10K\n\nNet sales rose."
    assert indexed_text("", "Net sales rose.") == "Net sales rose."


def test_the_header_comes_off_the_chunk_budget() -> None:
    tokenizer = FakeTokenizer(max_tokens=40)
    page = Page(1, " ".join(f"word{n}." for n in range(300)))
    header = "ACME CORPORATION 2017 ANNUAL REPORT 10K"
    chunks = chunk_pages("d", "h", [page], tokenizer, ChunkingConfig(chunk_tokens=200, overlap_tokens=4), header)
    assert len(chunks) > 5
    for chunk in chunks:
        assert page.text[chunk.start : chunk.end] == chunk.text  # the stored text is the page's own
        assert len(tokenizer.token_spans(indexed_text(header, chunk.text))) <= 40


@pytest.fixture
def filing(tmp_path: Path) -> Path:
    folder = tmp_path / "docs"
    folder.mkdir()
    # the text never names the company or the year: only the file name does
    (folder / "ACME_2017_10K.txt").write_text("Total net sales increased 31% compared with the prior year.\n" * 3)
    (folder / "notes.txt").write_text("Meeting notes about the garden and the weather.\n")
    return folder


def test_chunks_are_embedded_and_keyword_indexed_with_their_document_name(filing: Path, make_config: Any) -> None:
    config = make_config(ingest__workers=0)
    embedder = FakeEmbedder()
    run_ingest([filing], config, embedder)
    assert any(text.startswith("ACME 2017 10K\n\nTotal net sales") for text in embedder.embedded_documents)
    assert any(text.startswith("notes\n\nMeeting notes") for text in embedder.embedded_documents)
    with KnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.manifest.chunk_context == "document"
        stored = {source: chunk for chunk, source in kb.all_chunks()}
        acme = stored[str(filing / "ACME_2017_10K.txt")]
        assert acme.text.startswith("Total net sales")  # what is cited is unchanged
        _, keyword = kb.load_indexes(config)
        assert [chunk_id for chunk_id, _ in keyword.search("acme 2017", 5)] == [acme.id]


def test_without_context_the_file_name_is_not_searchable(filing: Path, make_config: Any) -> None:
    config = make_config(ingest__workers=0, chunking__context="none")
    embedder = FakeEmbedder()
    run_ingest([filing], config, embedder)
    assert all(not text.startswith("ACME") for text in embedder.embedded_documents)
    with KnowledgeBase.open(config.kb_dir, config) as kb:
        _, keyword = kb.load_indexes(config)
        assert keyword.search("acme", 5) == []


def test_changing_the_context_setting_needs_a_reindex(filing: Path, make_config: Any) -> None:
    plain = make_config(ingest__workers=0, chunking__context="none")
    run_ingest([filing], plain, FakeEmbedder())
    contextual = make_config(ingest__workers=0)
    with pytest.raises(ManifestMismatchError, match=r"context='none'.*--reindex"):
        run_ingest([filing], contextual, FakeEmbedder())
    summary = run_ingest([filing], contextual, FakeEmbedder(), reindex=True)
    assert summary.documents == 2
    with KnowledgeBase.open(contextual.kb_dir, contextual) as kb:
        assert kb.manifest.chunk_context == "document"
        assert kb.consistency_problems(contextual) == []
        _, keyword = kb.load_indexes(contextual)
        assert len(keyword.search("acme", 5)) == 1


def test_a_manifest_from_before_the_setting_reads_as_chunks_alone() -> None:
    written_before = (
        '{"format_version": 1, "embedding_model": "m", "dimension": 384, "chunk_tokens": 200,'
        ' "overlap_tokens": 32, "index_kind": "flat", "index_structure": "IDMap,Flat"}'
    )
    assert Manifest.model_validate_json(written_before).chunk_context == "none"
