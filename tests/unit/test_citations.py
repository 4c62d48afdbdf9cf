from __future__ import annotations

from typing import Literal

from rag.citations import Citer, best_support, split_sentences
from rag.config import AnswerConfig, CitationsConfig
from rag.grammar import parse_markers, strip_markers
from rag.support import EmbeddingSupport, LexicalSupport, lexical_support
from rag.types import Chunk, ScoredChunk
from tests.fakes import FakeEmbedder


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


def _citer(
    mode: Literal["constrained", "inline", "attributed"] = "inline", min_support: float = 0.5, max_sentences: int = 3
) -> Citer:
    return Citer(
        AnswerConfig(citations=mode, max_sentences=max_sentences), CitationsConfig(min_support=min_support), None
    )


def cite(text: str, passages: list[ScoredChunk] = PASSAGES, **kwargs: object) -> object:
    return _citer(**kwargs).cite(text, passages)  # type: ignore[arg-type]


def test_parse_all_marker_forms() -> None:
    text = "A [1]. B [1, 2]. C [2][3]. D [1;2]. Not a marker: [x] or [ ]."
    assert [numbers for _, _, numbers in parse_markers(text)] == [[1], [1, 2], [2], [3], [1, 2]]


def test_sentences_keep_their_trailing_markers() -> None:
    text = "Employees get 28 days. [1] The robot carries 150 kg [2].\nNew line sentence"
    sentences = [text[a:b].strip() for a, b in split_sentences(text)]
    assert sentences == ["Employees get 28 days. [1]", "The robot carries 150 kg [2].", "New line sentence"]


def test_strip_markers_leaves_no_stray_space() -> None:
    assert strip_markers("The R2 carries 150 kg [2]. It charges [1, 2].") == "The R2 carries 150 kg. It charges."


def test_a_dropped_marker_leaves_no_stray_space_in_the_answer() -> None:
    # Passage 7 does not exist: its marker goes, and the spaces around it do not double up.
    answer = _citer().cite("The R2 carries 150 kg [7] per trip [2] . It charges in 45 minutes [7].", PASSAGES)
    assert answer.text == "The R2 carries 150 kg per trip [2]. It charges in 45 minutes. [2]"


def test_citations_map_to_passages_with_page_offsets_and_quote() -> None:
    answer = _citer().cite("Employees receive 28 days of paid vacation [1]. The R2 carries 150 kg [2].", PASSAGES)
    assert not answer.abstained and not answer.unverified
    first, second = answer.citations
    assert (first.n, first.file, first.page, first.origin, first.supported) == (
        1,
        "/docs/handbook.pdf",
        1,
        "model",
        True,
    )
    assert (first.file_name, second.file_name) == ("handbook.pdf", "faq.md")  # base names, not titles
    assert first.quote == "Full-time employees receive 28 days of paid vacation per year."
    passage = PASSAGES[0].chunk
    assert passage.text[first.start - passage.start : first.end - passage.start] == first.quote
    assert first.support == 1.0
    assert (second.n, second.page, second.quote) == (2, None, "The R2 robot carries up to 150 kg.")
    assert second.sentence == "The R2 carries 150 kg."


def test_markers_pointing_nowhere_are_dropped_from_text_and_citations() -> None:
    answer = _citer().cite("Employees receive 28 days [1][7]. Robots fly [9].", PASSAGES)
    assert answer.text.startswith("Employees receive 28 days [1].")
    assert [c.n for c in answer.citations if c.origin == "model"] == [1]


def test_unsupported_citation_is_flagged_and_its_sentence_unverified() -> None:
    answer = _citer().cite("Employees receive 28 days of paid vacation [1]. The moon is made of cheese [1].", PASSAGES)
    cheese = [c for c in answer.citations if "cheese" in c.sentence]
    assert len(cheese) == 1 and not cheese[0].supported and cheese[0].support < 0.5
    assert not answer.abstained, "the first sentence is verified"
    ((start, end),) = answer.unverified
    assert answer.text[start:end] == "The moon is made of cheese [1]."


def test_answer_with_no_supported_sentence_abstains() -> None:
    assert _citer().cite("The moon is made of cheese [1].", PASSAGES).abstained
    assert _citer().cite("Robots fly to the Moon [5].", PASSAGES).abstained
    assert _citer().cite("I don't know: the documents do not say.", PASSAGES).abstained
    assert _citer().cite("The documents do not mention it [1].", PASSAGES).abstained
    assert not _citer().cite("Employees receive 28 days [1].", PASSAGES).abstained


def test_uncited_sentence_is_attributed_to_the_supporting_span() -> None:
    answer = _citer().cite("The R2 robot can carry 150 kg.", PASSAGES)
    (citation,) = answer.citations
    assert (citation.n, citation.origin, citation.supported) == (2, "attributed", True)
    assert citation.quote == "The R2 robot carries up to 150 kg."
    assert answer.text == "The R2 robot can carry 150 kg. [2]"
    assert not answer.abstained


def test_wrong_model_marker_is_kept_unsupported_and_the_right_passage_attributed() -> None:
    answer = _citer().cite("Full-time staff receive 28 days of paid vacation. [2]", PASSAGES)
    model, attributed = answer.citations
    assert (model.n, model.origin, model.supported) == (2, "model", False)
    assert (attributed.n, attributed.origin, attributed.supported) == (1, "attributed", True)
    assert answer.text.endswith("[2] [1]") and not answer.unverified


def test_attributed_mode_ignores_the_model_markers() -> None:
    answer = _citer("attributed").cite("Full-time staff receive 28 days of paid vacation. [2]", PASSAGES)
    assert [(c.n, c.origin) for c in answer.citations] == [(1, "attributed")]
    assert answer.text == "Full-time staff receive 28 days of paid vacation. [1]"


def test_repeats_headers_and_lists_are_cut_and_sentences_bounded() -> None:
    raw = (
        "[1] handbook.pdf, page 1\nFull-time employees receive 28 days of paid vacation. [1] "
        "Full-time employees receive 28 days of paid vacation. [1]\n"
        "handbook.pdf, page 1.\n1. The R2 robot carries up to 150 kg. [2]\n2. It charges in 45 minutes. [2]"
    )
    answer = _citer(max_sentences=2).cite(raw, PASSAGES)
    assert (
        answer.text
        == "Full-time employees receive 28 days of paid vacation. [1] The R2 robot carries up to 150 kg. [2]"
    )


def test_unverified_spans_index_the_final_text() -> None:
    answer = _citer().cite("Robots fly to Mars. Employees receive 28 days of paid vacation.", PASSAGES)
    assert [answer.text[a:b] for a, b in answer.unverified] == ["Robots fly to Mars."]
    assert answer.text == "Robots fly to Mars. Employees receive 28 days of paid vacation. [1]"


def test_threshold_decides() -> None:
    text = "Employees receive 28 days of holiday cash [1]."
    loose, strict = _citer(min_support=0.5).cite(text, PASSAGES), _citer(min_support=0.95).cite(text, PASSAGES)
    assert loose.citations[0].supported and not loose.abstained
    assert not strict.citations[0].supported and strict.abstained


def test_best_support_prefers_the_matching_sentence() -> None:
    start, end, support = best_support("sick leave separate", PASSAGES[0].chunk.text)
    assert PASSAGES[0].chunk.text[start:end] == "Sick leave is separate."
    assert support == 1.0


def test_quotes_do_not_break_at_decimal_points() -> None:
    passage = "Fleet Manager 4.2 raised the fleet size to 500 robots. Released on 14 October."
    start, end, support = best_support("Fleet Manager 4.2 supports 500 robots", passage)
    assert passage[start:end] == "Fleet Manager 4.2 raised the fleet size to 500 robots."
    assert support > 0.5


def test_embedding_support_mixes_cosine_and_words() -> None:
    embedder = FakeEmbedder()
    scorer = EmbeddingSupport(embedder)
    claim = "Employees receive 28 days of paid vacation."
    same, other = scorer.score([(claim, claim), (claim, "It charges in 45 minutes.")])
    assert same > 0.99 and other < 0.3
    assert LexicalSupport().score([(claim, claim)]) == [1.0]
    assert lexical_support("It is.", "It is.") == 0.0, "stop words alone support nothing"


def test_a_question_or_the_question_restated_is_no_claim() -> None:
    question = "What payload can the R2 robot carry?"
    answer = _citer().cite(f"{question} [2] The R2 robot carries up to 150 kg. [2]", PASSAGES, question)
    assert answer.text == "The R2 robot carries up to 150 kg. [2]"
    restated = _citer().cite("The question is what payload the R2 robot can carry. [2]", PASSAGES, question)
    assert restated.abstained and restated.text == ""
    # The filler words are matched stemmed, as the sentence's own words are ("passages", "according").
    filler = _citer().cite("According to the passages, what payload can the R2 robot carry. [2]", PASSAGES, question)
    assert filler.abstained and filler.text == ""


def test_a_number_the_passage_does_not_hold_is_not_supported() -> None:
    from rag.support import number_agreement, numbers

    assert numbers("It cost $1,577.00, or 1577 in 2017; version 4.2.0") == {"1577", "2017", "4.2"}
    assert number_agreement("The R2 runs at 1.55 m/s.", "The R2 runs at 1.5 m/s.") == 0.0
    assert number_agreement("Staff get 28 days.", "Staff receive 28 days of leave.") == 1.0
    answer = _citer().cite("The R2 robot carries up to 190 kg. [2]", PASSAGES)
    assert answer.abstained and not answer.citations[0].supported


def test_an_echoed_header_goes_but_the_marker_before_it_stays() -> None:
    raw = "The R2 robot carries up to 150 kg. [2] faq.md, page 1. [1]"
    answer = _citer().cite(raw, PASSAGES)
    assert answer.text.startswith("The R2 robot carries up to 150 kg. [2]") and "faq.md" not in answer.text
    assert not answer.abstained
    assert (answer.citations[0].n, answer.citations[0].supported) == (2, True)


def test_a_supported_sentence_that_does_not_address_the_question_is_no_answer() -> None:
    question = "How many days of paid vacation do full-time employees get?"
    copied = _citer().cite("Sick leave is separate. [1]", PASSAGES, question)
    assert copied.citations[0].supported and not copied.unverified
    assert copied.abstained, "supported, but it says nothing about vacation days"
    assert not _citer().cite("Full-time employees receive 28 days. [1]", PASSAGES, question).abstained
