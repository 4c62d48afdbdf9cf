from __future__ import annotations

from rag.citations import best_support, cite, parse_markers, split_sentences
from rag.types import Chunk, ScoredChunk


def _hit(text: str, page: int | None = 1, start: int = 100, source: str = "/docs/handbook.pdf") -> ScoredChunk:
    chunk = Chunk(
        id=abs(hash(text)) % 10**9 + 1, document_id="d", ordinal=0, text=text, page=page, page_label=None,
        start=start, end=start + len(text), token_count=len(text.split()),
    )  # fmt: skip
    return ScoredChunk(chunk=chunk, source=source, score=1.0, retrievers=("dense",))


PASSAGES = [
    _hit(
        "Welcome to the company. Full-time employees receive 28 days of paid vacation per year. Sick leave is separate."
    ),
    _hit("The R2 robot carries up to 150 kg. It charges in 45 minutes.", page=None, start=0, source="/docs/faq.md"),
]


def test_parse_all_marker_forms() -> None:
    text = "A [1]. B [1, 2]. C [2][3]. D [1;2]. Not a marker: [x] or [ ]."
    assert [numbers for _, _, numbers in parse_markers(text)] == [[1], [1, 2], [2], [3], [1, 2]]


def test_sentences_keep_their_trailing_markers() -> None:
    text = "Employees get 28 days. [1] The robot carries 150 kg [2].\nNew line sentence"
    sentences = [text[a:b].strip() for a, b in split_sentences(text)]
    assert sentences == ["Employees get 28 days. [1]", "The robot carries 150 kg [2].", "New line sentence"]


def test_citations_map_to_passages_with_page_offsets_and_quote() -> None:
    answer = cite("Employees receive 28 days of paid vacation [1]. The R2 carries 150 kg [2].", PASSAGES)
    assert not answer.abstained
    first, second = answer.citations
    assert (first.n, first.file, first.page) == (1, "/docs/handbook.pdf", 1)
    assert first.quote == "Full-time employees receive 28 days of paid vacation per year."
    passage = PASSAGES[0].chunk
    assert passage.text[first.start - passage.start : first.end - passage.start] == first.quote
    assert first.support == 1.0
    assert (second.n, second.page, second.quote) == (2, None, "The R2 robot carries up to 150 kg.")
    assert second.sentence == "The R2 carries 150 kg ."


def test_markers_pointing_nowhere_are_dropped_from_text_and_citations() -> None:
    answer = cite("Employees receive 28 days [1][7]. Robots fly [9].", PASSAGES)
    assert answer.text == "Employees receive 28 days [1]. Robots fly."
    assert [c.n for c in answer.citations] == [1]


def test_no_valid_citation_or_i_dont_know_means_abstained() -> None:
    assert cite("Employees receive 28 days.", PASSAGES).abstained
    assert cite("Robots fly [5].", PASSAGES).abstained
    assert cite("I don't know: the documents do not say.", PASSAGES).abstained
    assert cite("The documents do not mention it [1].", PASSAGES).abstained
    assert not cite("Employees receive 28 days [1].", PASSAGES).abstained


def test_support_is_low_for_an_unsupported_claim() -> None:
    answer = cite("The moon is made of cheese [1].", PASSAGES)
    assert answer.citations[0].support < 0.34


def test_best_support_prefers_the_matching_sentence() -> None:
    start, end, support = best_support("sick leave separate", PASSAGES[0].chunk.text)
    assert PASSAGES[0].chunk.text[start:end] == "Sick leave is separate."
    assert support == 1.0


def test_quotes_do_not_break_at_decimal_points() -> None:
    passage = "Fleet Manager 4.2 raised the fleet size to 500 robots. Released on 14 October."
    start, end, support = best_support("Fleet Manager 4.2 supports 500 robots", passage)
    assert passage[start:end] == "Fleet Manager 4.2 raised the fleet size to 500 robots."
    assert support > 0.5
