"""One stop-word list and one stemmer: keyword search (BM25) and the citation support score count the same words."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from rag.keyword import _tokenize
from rag.support import lexical_support
from rag.words import STOPWORDS, content_words

PROSE = [
    "Full-time employees have received 28 days of paid vacation per year, which the handbook states in its policies.",
    "The R2 robot carries up to 150 kg and charges in 45 minutes; what it cannot do is climb stairs.",
    "How many sick days does an employee get, and who approves travel expenses over the limits?",
]


def test_the_stop_words_are_bm25s_english_list() -> None:
    from bm25s.stopwords import STOPWORDS_EN

    assert frozenset(STOPWORDS_EN) == STOPWORDS


def test_bm25_and_the_support_score_count_the_same_words() -> None:
    assert _tokenize(PROSE) == [content_words(text) for text in PROSE]
    assert content_words(PROSE[0])[:4] == ["full", "time", "employe", "have"]  # stemmed, "have" is no stop word


def test_what_each_splits_a_text_into_stays_its_own() -> None:
    text = "Revenue in FY2023 was 1,234.5 million, 5 percent up."
    # BM25 indexes the parts of a word of letters and digits, and words of two characters or more.
    assert _tokenize([text]) == [["revenu", "fy2023", "fy", "2023", "234", "million", "percent", "up"]]
    # The support score keeps a number whole, and a one-character one.
    assert content_words(text) == ["revenu", "fy2023", "1,234.5", "million", "5", "percent", "up"]


def test_inflections_support_each_other() -> None:
    assert lexical_support("An employee receives paid vacations.", "Employees received paid vacation.") == 1.0


def test_content_words_from_several_threads_match_one_thread() -> None:
    texts = [f"{text} {n}" for n in range(200) for text in PROSE]
    with ThreadPoolExecutor(max_workers=8) as pool:
        assert list(pool.map(content_words, texts)) == [content_words(text) for text in texts]
