"""The citation-marker grammar, and the answer grammar of constrained citations, checked with
Python's own regex engine (the same pattern goes to vLLM's structured outputs;
tests/integration/test_answer_real.py checks it there)."""

from __future__ import annotations

import re

import pytest

from rag.grammar import MARKER, answer_pattern, keep_markers, parse_markers, strip_markers
from rag.prompt import ABSTENTION
from ui.render import answer_html


def _admits(pattern: str | None, text: str) -> bool:
    assert pattern is not None
    return re.fullmatch(pattern, text) is not None


def test_admits_cited_sentences_and_the_abstention() -> None:
    pattern = answer_pattern(3, max_sentences=2)
    assert _admits(pattern, "Full-time employees receive 28 days of paid vacation. [1]")
    assert _admits(pattern, "The R2 carries 150 kg. [2][3] Fleet Manager 4.2 supports 500 robots. [3]")
    assert _admits(pattern, "It costs 4.50 euros per km in the U.K! [1]")
    assert _admits(pattern, ABSTENTION)


@pytest.mark.parametrize(
    "text",
    [
        "Employees receive 28 days of paid vacation.",  # no marker
        "Employees receive 28 days of paid vacation. [4]",  # passage 4 is not in the prompt
        "Employees receive 28 days of paid vacation. [0]",
        "Employees receive 28. Days of vacation. [1]",  # a second sentence smuggled before the marker
        "[1] handbook.pdf, page 2. [1]",  # an echoed passage header
        "1. Employees receive 28 days. [1]\n2. Robots fly. [2]",  # a list
        "A. [1] B. [1] C. [1]",  # more sentences than allowed
        ABSTENTION + " Employees receive 28 days. [1]",  # abstention mixed with an answer
        " Leading space. [1]",
        "1. [1] handbook.pdf, page 2.",  # a list opened
        "Word. [1]",  # one word is no sentence
    ],
)
def test_refuses_what_the_small_model_writes_wrong(text: str) -> None:
    assert not _admits(answer_pattern(3, max_sentences=2), text)


def test_markers_are_exactly_the_passages_in_the_prompt() -> None:
    pattern = answer_pattern(12, max_sentences=1)
    for n in range(1, 13):
        assert _admits(pattern, f"A fact. [{n}]")
    assert not _admits(pattern, "A fact. [13]")
    assert not _admits(pattern, "A fact. [012]")
    assert _admits(pattern, '"Quoted" words. [1]')


def test_markers_after_a_sentence_are_bounded() -> None:
    pattern = answer_pattern(3, max_sentences=1)
    assert _admits(pattern, "A fact. [1] [2] [3]")
    assert not _admits(pattern, "A fact. [1] [2] [3] [1]")


def test_no_passages_no_constraint() -> None:
    assert answer_pattern(0, max_sentences=3) is None
    with pytest.raises(ValueError, match="max_sentences"):
        answer_pattern(2, max_sentences=0)


# Strings whose markers are easy to get wrong, with the numbers the grammar reads in them.
TRICKY_MARKERS = [
    ("It carries 150 kg [1].", [[1]]),
    ("It carries 150 kg [1, 2].", [[1, 2]]),
    ("It carries 150 kg [1][2].", [[1], [2]]),
    ("It carries 150 kg [12].", [[12]]),
    ("It carries 150 kg [1 ,2].", [[1, 2]]),
    ("It carries 150 kg [1;2] [3].", [[1, 2], [3]]),
    ("It carries 150 kg [a].", []),
    ("It carries 150 kg [1-2].", []),
    ("It carries 150 kg [ 1 ].", []),
    ("It carries 150 kg [].", []),
    ("Founded in [2023], it carries 150 kg [1].", [[2023], [1]]),  # a year is a marker; the citer drops it
]


@pytest.mark.parametrize(("text", "numbers"), TRICKY_MARKERS)
def test_markers_and_their_numbers(text: str, numbers: list[list[int]]) -> None:
    assert [found for _, _, found in parse_markers(text)] == numbers
    assert [text[start:end] for start, end, _ in parse_markers(text)] == [m[0] for m in MARKER.finditer(text)]


@pytest.mark.parametrize(("text", "numbers"), TRICKY_MARKERS)
def test_the_page_styles_the_markers_the_citer_reads(text: str, numbers: list[list[int]]) -> None:
    styled = re.findall(r'<span class="rag-cite" style="[^"]*">([^<]*)</span>', answer_html(text))
    assert styled == [text[start:end] for start, end, _ in parse_markers(text)]
    assert [[n for _, _, ns in parse_markers(marker) for n in ns] for marker in styled] == numbers


@pytest.mark.parametrize(
    ("text", "plain"),
    [
        ("carries 150 kg [1].", "carries 150 kg."),
        ("carries 150 kg [1, 2].", "carries 150 kg."),
        ("carries 150 kg [1] [2] .", "carries 150 kg."),
        ("carries 150 kg [1]\n, and charges [2]", "carries 150 kg, and charges"),
        ("[1] Carries [2][3] 150 kg.", "Carries 150 kg."),
        ("carries [a] 150 kg [1-2].", "carries [a] 150 kg [1-2]."),
    ],
)
def test_strip_markers_leaves_no_space_before_punctuation(text: str, plain: str) -> None:
    assert strip_markers(text) == plain


def test_keep_markers_drops_numbers_and_keeps_lines() -> None:
    text = "Staff get 28 days [1, 7]. Robots [7] fly [7] .\nFleet [2;9] manager [3]"
    assert keep_markers(text, range(1, 4)) == "Staff get 28 days [1]. Robots fly.\nFleet [2] manager [3]"
    assert keep_markers(text, ()) == "Staff get 28 days. Robots fly.\nFleet manager"


def test_the_constrained_answers_markers_are_markers() -> None:
    pattern = answer_pattern(3, max_sentences=2)
    text = "The R2 carries 150 kg. [2][3] Fleet Manager 4.2 supports 500 robots. [3] [1]"
    assert _admits(pattern, text)
    assert [numbers for _, _, numbers in parse_markers(text)] == [[2], [3], [3], [1]]
