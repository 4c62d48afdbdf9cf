"""Which words of a text count: one stop-word list and one stemmer for keyword search and citations.

Keyword search (BM25, :mod:`rag.keyword`) and the citation support score (:mod:`rag.support`)
both drop the same English stop words and stem what is left with the same stemmer (Snowball
English, via PyStemmer), so a word the search matches on is a word the support score counts,
and "employees receive" supports "an employee received" in both.

What each splits a text into stays its own:

- :func:`content_words` (support) keeps a number whole, thousands separators and decimals
  included ("1,234.5" is one word, not "234"), and keeps one-character words ("5 days").
- BM25 (``rag.keyword._tokenize``) takes words of two characters or more, as bm25s does, and also
  indexes the parts of a word of letters and digits ("FY2023" is also "fy" and "2023").

Beyond those, the two give the same words for a text (a unit test holds them to it).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Sequence

import Stemmer

# bm25s's English stop words (its stopwords="en"; Lucene's English list), written out here so that
# importing this module does not import bm25s, which loads numba (see rag/keyword.py's _bm25s).
# A unit test checks that the two lists are the same.
STOPWORDS = frozenset(
    (
        "a",
        "an",
        "and",
        "are",
        "as",
        "at",
        "be",
        "but",
        "by",
        "for",
        "if",
        "in",
        "into",
        "is",
        "it",
        "no",
        "not",
        "of",
        "on",
        "or",
        "such",
        "that",
        "the",
        "their",
        "then",
        "there",
        "these",
        "they",
        "this",
        "to",
        "was",
        "will",
        "with",
    )
)
# PyStemmer's name of the Snowball stemmer; recorded beside a keyword index.
STEMMER = "english"

# A word, or a number with its thousands separators and decimals ("1,234.5").
_WORD = re.compile(r"\w+(?:[.,][0-9]+)*")
_stemmers = threading.local()


def stem(words: Sequence[str]) -> list[str]:
    """The stems of ``words``, in order. Safe to call from several threads: a PyStemmer stemmer
    keeps a cache between calls, so each thread has its own."""
    stemmer = getattr(_stemmers, "stemmer", None)
    if stemmer is None:
        stemmer = _stemmers.stemmer = Stemmer.Stemmer(STEMMER)
    return list(stemmer.stemWords(list(words)))


def content_words(text: str) -> list[str]:
    """The words and numbers of ``text``, lower-cased, stop words removed, stemmed, in order."""
    return stem([word for word in _WORD.findall(text.lower()) if word not in STOPWORDS])
