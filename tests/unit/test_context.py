"""A chunk's document header: what it is made of, and that it reaches both indexes but not the text."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pypdf import PdfWriter

from ingest.chunking import chunk_pages
from ingest.job import run_ingest
from rag.components import Components
from rag.config import ChunkingConfig
from rag.context import (
    MAX_CONTEXT_CHARS,
    MAX_HEADING_CHARS,
    document_context,
    indexed_text,
    page_contexts,
    page_heading,
    running_lines,
)
from rag.errors import ManifestMismatchError
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.manifest import Manifest
from rag.types import Page
from tests.fakes import FakeEmbedder, FakeTokenizer
from tests.filefactory import make_pdf, make_statement_pdf


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
    chunks = chunk_pages("d", "h", [page], tokenizer, ChunkingConfig(chunk_tokens=200, overlap_tokens=4), [header])
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
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        assert kb.manifest.chunk_context == "page"  # the default; a text file has no page headings
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
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
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
    with EmbeddedKnowledgeBase.open(contextual.kb_dir, contextual) as kb:
        assert kb.manifest.chunk_context == "page"
        assert kb.consistency_problems(contextual) == []
        _, keyword = kb.load_indexes(contextual)
        assert len(keyword.search("acme", 5)) == 1


def test_a_manifest_from_before_the_setting_reads_as_chunks_alone() -> None:
    written_before = (
        '{"format_version": 1, "embedding_model": "m", "dimension": 384, "chunk_tokens": 200,'
        ' "overlap_tokens": 32, "index_kind": "flat", "index_structure": "IDMap,Flat"}'
    )
    assert Manifest.model_validate_json(written_before).chunk_context == "none"


def test_running_lines_are_those_printed_on_many_pages() -> None:
    pages = [Page(n, f"Table of Contents\nACME Corp\nSection {n} text about item {n}.\n{n}") for n in range(1, 11)]
    assert running_lines(pages) == {"Table of Contents", "ACME Corp"}
    # three pages are too few to tell a running header from a heading
    assert running_lines(pages[:2]) == set()


def test_page_heading_skips_running_lines_and_lines_without_words() -> None:
    text = (
        "Table of Contents\n  42 \nACME Corp and Subsidiaries\nConsolidated Statements  of Cash Flows\n"
        "(Millions) 2023 2022\nNet income 5,363 4,869"
    )
    heading = page_heading(text, {"Table of Contents"})
    assert heading == "ACME Corp and Subsidiaries Consolidated Statements of Cash Flows"
    assert page_heading("12\n\n$ 5\n", set()) == ""
    assert len(page_heading("word " * 100, set())) <= MAX_HEADING_CHARS


def test_page_contexts_add_the_heading_for_paged_files_only() -> None:
    pages = [
        Page(1, "ACME Corp and Subsidiaries\nConsolidated Balance Sheets\nCash 10"),
        Page(2, "ACME Corp and Subsidiaries\nNotes to the statements\nNote 1"),
    ]
    assert page_contexts("page", "", "/kb/ACME_2023_10K.pdf", pages) == [
        "ACME 2023 10K - ACME Corp and Subsidiaries Consolidated Balance Sheets",
        "ACME 2023 10K - ACME Corp and Subsidiaries Notes to the statements",
    ]
    assert page_contexts("document", "", "/kb/ACME_2023_10K.pdf", pages) == ["ACME 2023 10K"] * 2
    assert page_contexts("none", "", "/kb/ACME_2023_10K.pdf", pages) == ["", ""]
    # a file without pages keeps the document's header: its first line is already its title
    assert page_contexts("page", "Handbook", "/kb/handbook.md", [Page(None, "# Handbook\nLeave")]) == ["handbook"]


def test_each_page_header_comes_off_its_own_chunks_budget() -> None:
    tokenizer = FakeTokenizer(max_tokens=40)
    pages = [Page(1, " ".join(f"word{n}." for n in range(100))), Page(2, " ".join(f"item{n}." for n in range(100)))]
    headers = ["ACME 2017 10K", "ACME 2017 10K - ACME Corp Consolidated Statements of Cash Flows and more words"]
    chunks = chunk_pages("d", "h", pages, tokenizer, ChunkingConfig(chunk_tokens=200, overlap_tokens=4), headers)
    assert {chunk.context for chunk in chunks if chunk.page == 2} == {headers[1]}
    for chunk in chunks:
        assert len(tokenizer.token_spans(indexed_text(chunk.context, chunk.text))) <= 40
    with pytest.raises(ValueError, match="1 contexts for 2 pages"):
        chunk_pages("d", "h", pages, tokenizer, ChunkingConfig(), headers[:1])


_YEARS = {
    "2022": [("Net income", "4,100", "3,900"), ("Purchases of property, plant and equipment", "(1,210)", "(1,150)")],
    "2023": [("Net income", "5,363", "4,100"), ("Purchases of property, plant and equipment", "(1,577)", "(1,210)")],
}


def _filings(folder: Path) -> dict[str, Path]:
    """Two 10-Ks of one company, a year apart, each a narrative page, then a cash flow statement."""
    paths = {}
    for year, rows in _YEARS.items():
        path = folder / f"ACME_{year}_10K.pdf"
        make_statement_pdf(
            path,
            ["ACME Corp and Subsidiaries", "Consolidated Statements of Cash Flows"],
            [year, str(int(year) - 1)],
            rows,
        )
        narrative = make_pdf(folder / "narrative.pdf", [f"ACME Corp annual report {year}. Our robots sold well."])
        writer = PdfWriter()
        writer.append(str(narrative))
        writer.append(str(path))
        with path.open("wb") as handle:
            writer.write(handle)
        narrative.unlink()
        paths[year] = path
    return paths


def test_the_statement_page_of_the_year_asked_comes_first(tmp_path: Path, make_config: Any) -> None:
    folder = tmp_path / "filings"
    paths = _filings(folder)
    config = make_config(ingest__workers=0, chunking__context="page", retrieval__mode="keyword")
    embedder = FakeEmbedder()
    run_ingest([folder], config, embedder)
    assert any(
        "ACME 2023 10K - ACME Corp and Subsidiaries Consolidated Statements of Cash Flows\n\n" in text
        for text in embedder.embedded_documents
    )
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        retriever = Components(config).retriever(kb, embedder)
        hits = retriever.retrieve("Using the cash flow statement, what were ACME's FY2023 capital expenditures?", 3)
    assert (hits[0].source, hits[0].chunk.page) == (str(paths["2023"]), 2)
