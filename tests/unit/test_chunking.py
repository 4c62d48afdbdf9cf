from __future__ import annotations

import itertools

from ingest.chunking import chunk_id, chunk_pages
from rag.config import ChunkingConfig
from rag.types import Page
from tests.fakes import FakeTokenizer

PARAGRAPHS = "\n\n".join(
    f"Paragraph {n} talks about topic {n}. It has a second sentence, and a third one with more words in it."
    for n in range(12)
)


def test_chunk_text_is_exactly_its_span_of_the_page() -> None:
    pages = [Page(1, PARAGRAPHS), Page(2, "Short second page.", label="ii")]
    chunks = chunk_pages(
        "doc", "hash", pages, FakeTokenizer(max_tokens=40), ChunkingConfig(chunk_tokens=40, overlap_tokens=8)
    )
    assert len(chunks) > 3
    for chunk in chunks:
        page = pages[0] if chunk.page == 1 else pages[1]
        assert page.text[chunk.start : chunk.end] == chunk.text
    assert chunks[-1].page == 2 and chunks[-1].page_label == "ii" and chunks[-1].text == "Short second page."
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))


def test_no_chunk_exceeds_the_token_limit_and_all_text_is_covered() -> None:
    tokenizer = FakeTokenizer(max_tokens=30)
    chunks = chunk_pages(
        "doc", "h", [Page(None, PARAGRAPHS)], tokenizer, ChunkingConfig(chunk_tokens=200, overlap_tokens=5)
    )
    assert all(len(tokenizer.token_spans(c.text)) <= 30 for c in chunks)
    assert all(c.token_count == len(tokenizer.token_spans(c.text)) for c in chunks)
    covered = set()
    for chunk in chunks:
        covered.update(range(chunk.start, chunk.end))
    assert all(i in covered for i, ch in enumerate(PARAGRAPHS) if not ch.isspace())


def test_cuts_prefer_paragraph_ends_and_never_split_words() -> None:
    chunks = chunk_pages(
        "d", "h", [Page(1, PARAGRAPHS)], FakeTokenizer(60), ChunkingConfig(chunk_tokens=60, overlap_tokens=0)
    )
    for chunk in chunks[:-1]:
        assert PARAGRAPHS[chunk.end : chunk.end + 2] == "\n\n", repr(PARAGRAPHS[chunk.end - 10 : chunk.end + 5])
    text = "word " * 200
    chunks = chunk_pages(
        "d", "h", [Page(1, text)], FakeTokenizer(16), ChunkingConfig(chunk_tokens=16, overlap_tokens=4)
    )
    assert all(c.text.split() == ["word"] * len(c.text.split()) for c in chunks)


def test_consecutive_chunks_overlap() -> None:
    chunks = chunk_pages(
        "d",
        "h",
        [Page(1, "alpha beta gamma delta " * 30)],
        FakeTokenizer(20),
        ChunkingConfig(chunk_tokens=20, overlap_tokens=5),
    )
    for before, after in itertools.pairwise(chunks):
        assert after.start < before.end, "the next chunk starts inside the previous one"
        assert after.start > before.start


def test_ids_are_stable_and_depend_on_document_content_and_position() -> None:
    pages = [Page(1, PARAGRAPHS)]
    config = ChunkingConfig(chunk_tokens=40, overlap_tokens=8)
    first = [c.id for c in chunk_pages("doc", "hash1", pages, FakeTokenizer(40), config)]
    again = [c.id for c in chunk_pages("doc", "hash1", pages, FakeTokenizer(40), config)]
    changed = [c.id for c in chunk_pages("doc", "hash2", pages, FakeTokenizer(40), config)]
    other_doc = [c.id for c in chunk_pages("doc2", "hash1", pages, FakeTokenizer(40), config)]
    assert first == again
    assert not set(first) & set(changed)
    assert not set(first) & set(other_doc)
    assert len(set(first)) == len(first)
    assert all(0 < i < 2**63 for i in first)
    assert chunk_id("doc", "hash1", 0) == first[0]


def test_empty_and_whitespace_pages_make_no_chunks() -> None:
    assert chunk_pages("d", "h", [Page(1, ""), Page(2, "  \n ")], FakeTokenizer(), ChunkingConfig()) == []


def test_one_huge_unbreakable_token_run_is_still_capped() -> None:
    text = "x" * 5 + "," * 500  # punctuation tokens with no spaces: no word boundary anywhere
    chunks = chunk_pages(
        "d", "h", [Page(1, text)], FakeTokenizer(50), ChunkingConfig(chunk_tokens=50, overlap_tokens=10)
    )
    assert all(c.token_count <= 50 for c in chunks)
    assert "".join(c.text for c in chunks).count(",") >= 500
