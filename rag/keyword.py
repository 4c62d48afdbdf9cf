"""Keyword search (BM25, by bm25s) over the chunks of a knowledge base, keyed by chunk id.

Text is lower-cased, split into words, stripped of English stop words and stemmed (Snowball,
via PyStemmer), the usual BM25 set-up of the BEIR baselines; the stop words and the stemmer are
those of :mod:`rag.words`, which the citation support score counts words with too. A word of
letters and digits also counts as its parts ("FY2023" is "fy2023", "fy" and "2023"), so a
question about "FY2023" finds the filing and the statement column that say "2023", and "2023Q2"
still matches itself. bm25s builds a sparse index that is not updated in place; the store
rebuilds it from the chunk table when a run ends (see ``rag/kb/embedded.py``), which costs little
beside embedding the same chunks.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from rag.words import STEMMER, STOPWORDS, stem

Ids = npt.NDArray[np.int64]
_IDS_FILE = "chunk_ids.npy"
_META_FILE = "keyword.json"
# The version of what _tokenize makes of a text, recorded beside the index: an index written
# with another one is rebuilt rather than searched with tokens it does not hold.
TOKENIZATION = 2
_MIXED = re.compile(r"\b(?=\w*[^\W\d_])(?=\w*\d)\w+\b")
_LETTERS_DIGITS = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])")


def _bm25s() -> Any:
    """bm25s, imported on first use, not with this module.

    bm25s imports numba when it is installed (ranx, for `rag eval`, brings it), and vLLM's CPU
    worker processes fail to start with numba's llvmlite loaded in them (their kernel scan trips
    over llvmlite's objects). A spawned worker re-imports the main module, so a script that
    imports ``rag.pipeline`` at the top and then starts in-process vLLM must not load numba just
    by importing the core.
    """
    import bm25s

    # bm25s sets its logger to DEBUG when imported, which prints a line at every index build;
    # give the level back to the application's logging configuration.
    logging.getLogger("bm25s").setLevel(logging.NOTSET)
    return bm25s


def split_mixed_words(text: str) -> str:
    """``text`` with each word of letters and digits followed by its parts: "FY2023" -> "FY2023 FY 2023"."""
    return _MIXED.sub(lambda word: f"{word[0]} {_LETTERS_DIGITS.sub(' ', word[0])}", text)


_STOPWORD_LIST = sorted(STOPWORDS)  # bm25s takes a list; made once, not per query


def _tokenize(texts: Sequence[str]) -> list[list[str]]:
    tokens = _bm25s().tokenize(
        [split_mixed_words(text) for text in texts],
        stopwords=_STOPWORD_LIST,
        stemmer=stem,
        return_ids=False,
        show_progress=False,
    )
    return [list(words) for words in tokens]


def analyzed(texts: Sequence[str]) -> list[str]:
    """Each text as the words BM25 counts, space-separated (split, stop words out, stemmed): what
    a search engine with its own BM25 (Milvus) is given, so that it counts the same words."""
    return [" ".join(words) for words in _tokenize(texts)]


class Bm25Index:
    """An immutable BM25 index over chunk texts. Build with :meth:`build`, persist with :meth:`write`."""

    def __init__(self, bm25: Any, chunk_ids: Ids) -> None:
        self._bm25 = bm25
        self._ids = chunk_ids
        # The web page's sessions search one index from several threads. With numba installed,
        # bm25s retrieves with a parallel numba kernel, and numba's fallback threading layer
        # (workqueue, where neither TBB nor OpenMP is present) takes no launches from several
        # threads at once, so searches take turns (each takes a few milliseconds).
        self._lock = threading.Lock()

    @classmethod
    def build(cls, chunk_ids: Sequence[int], texts: Sequence[str]) -> Bm25Index:
        bm25 = _bm25s().BM25()
        if texts:
            bm25.index(_tokenize(texts), show_progress=False)
        return cls(bm25, np.asarray(chunk_ids, dtype=np.int64))

    @staticmethod
    def is_current(directory: Path) -> bool:
        """Whether ``directory`` holds an index written with this version's tokenization."""
        try:
            return json.loads((directory / _META_FILE).read_text()).get("tokenization", 1) == TOKENIZATION
        except (OSError, ValueError):
            return False

    @classmethod
    def read(cls, directory: Path) -> Bm25Index:
        """The index written in ``directory``. Raises ValueError for one written with another
        tokenization, or none readable (the caller rebuilds it from the chunks)."""
        if not cls.is_current(directory):
            raise ValueError(f"keyword index {directory} was not written with tokenization {TOKENIZATION}")
        ids = np.load(directory / _IDS_FILE)
        if len(ids) == 0:
            return cls(_bm25s().BM25(), ids)
        return cls(_bm25s().BM25.load(str(directory), show_progress=False), ids)

    def write(self, directory: Path) -> None:
        """Write into ``directory`` (created; the caller renames it into place atomically)."""
        directory.mkdir(parents=True, exist_ok=True)
        if len(self._ids):
            self._bm25.save(str(directory), show_progress=False)
        np.save(directory / _IDS_FILE, self._ids)
        meta = {"chunks": len(self._ids), "stemmer": STEMMER, "tokenization": TOKENIZATION}
        (directory / _META_FILE).write_text(json.dumps(meta))

    def __len__(self) -> int:
        return len(self._ids)

    @property
    def ids(self) -> npt.NDArray[np.int64]:
        """The chunk ids indexed, in the index's order."""
        return self._ids

    def search(self, query: str, k: int) -> list[tuple[int, float]]:
        """Top ``k`` ``(chunk_id, score)`` pairs, best first; chunks sharing no term are left out."""
        if len(self._ids) == 0 or k <= 0:
            return []
        tokens = _tokenize([query])
        if not tokens[0]:
            return []
        with self._lock:
            documents, scores = self._bm25.retrieve(tokens, k=min(k, len(self._ids)), show_progress=False, n_threads=0)
        return [
            (int(self._ids[position]), float(score))
            for position, score in zip(documents[0], scores[0], strict=True)
            if score > 0
        ]
