"""Fakes for fast unit tests. They are not the real thing and are named as such.

``FakeEmbedder`` hashes words into a small vector space: deterministic, instant, and close
enough to real embeddings that texts sharing words score higher than texts that do not.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence

import numpy as np

from rag.index import Vectors

_TOKEN = re.compile(r"\w+|[^\w\s]")


class FakeTokenizer:
    """Words and punctuation marks are tokens."""

    def __init__(self, max_tokens: int = 64) -> None:
        self._max_tokens = max_tokens

    @property
    def max_tokens(self) -> int:
        return self._max_tokens

    def token_spans(self, text: str) -> list[tuple[int, int]]:
        return [match.span() for match in _TOKEN.finditer(text)]


class FakeEmbedder:
    """A deterministic bag-of-words hashing embedder (a fake: no model behind it)."""

    def __init__(self, model_id: str = "fake/hashing-64", dimension: int = 64, max_tokens: int = 64) -> None:
        self._model_id = model_id
        self._dimension = dimension
        self._tokenizer = FakeTokenizer(max_tokens)
        self.encoded_batches: list[int] = []

    @property
    def model_id(self) -> str:
        return self._model_id

    @property
    def dimension(self) -> int:
        return self._dimension

    @property
    def tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def load(self) -> None:
        pass

    def embed_documents(self, texts: Sequence[str]) -> Vectors:
        self.encoded_batches.append(len(texts))
        return self._embed(texts)

    def embed_queries(self, texts: Sequence[str]) -> Vectors:
        return self._embed(texts)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        vectors = np.zeros((len(texts), self._dimension), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                bucket = int.from_bytes(hashlib.md5(word.encode()).digest()[:4], "big") % self._dimension
                vectors[row, bucket] += 1.0
            vectors[row, 0] += 1e-3  # never the zero vector
        vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors
