"""Finding passages for a question: dense, keyword (BM25), fused, optionally reranked.

Every retriever answers ``retrieve(query, k) -> list[ScoredChunk]``, best first; the ones here
also answer ``retrieve_many(queries, k)`` for a batch (one embedding call and one FAISS search for
all the queries: evaluation retrieves hundreds at once), and :func:`retrieve_many` takes any
retriever, batching where it can. The hybrid one
fuses the two rankings by weighted reciprocal rank fusion (Cormack, Clarke and Büttcher,
SIGIR 2009): ``score(c) = sum_r w_r / (rrf_k + rank_r(c))`` with 1-based ranks, which needs no
score calibration between a cosine similarity and a BM25 score.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from rag.config import PageScoring, RetrievalConfig
from rag.embedder import Embedder
from rag.errors import ModelLoadError, first_line
from rag.kb.base import Searcher
from rag.types import ScoredChunk

if TYPE_CHECKING:
    from sentence_transformers import CrossEncoder


class Retriever(Protocol):
    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        """The ``k`` best passages for ``query``, best first."""
        ...


@runtime_checkable
class BatchRetriever(Retriever, Protocol):
    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        """``retrieve(query, k)`` for each query, in order, computed together."""
        ...


def retrieve_many(retriever: Retriever, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
    """The ``k`` best passages for each query: batched when ``retriever`` can, else one query at a time."""
    if isinstance(retriever, BatchRetriever):
        return retriever.retrieve_many(queries, k)
    return [retriever.retrieve(query, k) for query in queries]


class _Batched:
    """``retrieve`` as a batch of one, for retrievers whose work is done per batch."""

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        return self.retrieve_many([query], k)[0]

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        raise NotImplementedError


class DenseRetriever(_Batched):
    """Nearest neighbours of the query's embedding."""

    def __init__(self, searcher: Searcher, embedder: Embedder) -> None:
        self._searcher, self._embedder = searcher, embedder

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        if not queries:
            return []
        return self._searcher.dense(self._embedder.embed_queries(list(queries)), k)


class KeywordRetriever(_Batched):
    """BM25 over the chunk texts, as each knowledge base indexes them."""

    def __init__(self, searcher: Searcher) -> None:
        self._searcher = searcher

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        return self._searcher.keyword(list(queries), k)


def reciprocal_rank_fusion(
    rankings: Mapping[str, Sequence[ScoredChunk]], weights: Mapping[str, float], rrf_k: int
) -> list[ScoredChunk]:
    """Fuse named rankings into one, best first; each hit records every retriever that found it.

    Ties are broken by the order of first appearance, so the result is deterministic.
    """
    scores: dict[int, float] = {}
    found_by: dict[int, list[str]] = {}
    first_seen: dict[int, ScoredChunk] = {}
    for name, ranking in rankings.items():
        weight = weights.get(name, 1.0)
        for rank, hit in enumerate(ranking, start=1):
            chunk_id = hit.chunk.id
            scores[chunk_id] = scores.get(chunk_id, 0.0) + weight / (rrf_k + rank)
            found_by.setdefault(chunk_id, []).append(name)
            first_seen.setdefault(chunk_id, hit)
    order = sorted(scores, key=lambda chunk_id: -scores[chunk_id])
    return [
        ScoredChunk(
            chunk=first_seen[i].chunk, source=first_seen[i].source, score=scores[i], retrievers=tuple(found_by[i])
        )
        for i in order
    ]


class HybridRetriever(_Batched):
    """Dense and keyword rankings fused by reciprocal rank fusion."""

    def __init__(self, dense: Retriever, keyword: Retriever, config: RetrievalConfig) -> None:
        self._dense, self._keyword, self._config = dense, keyword, config

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        depth = max(k, self._config.candidates)
        dense = retrieve_many(self._dense, queries, depth)
        keyword = retrieve_many(self._keyword, queries, depth)
        weights = {"dense": self._config.dense_weight, "bm25": self._config.keyword_weight}
        return [
            reciprocal_rank_fusion({"dense": d, "bm25": b}, weights, self._config.rrf_k)[:k]
            for d, b in zip(dense, keyword, strict=True)
        ]


PageKey = tuple[str, int | None]


def page_of(hit: ScoredChunk) -> PageKey:
    """The page a passage is on: ``(document id, page number)``; a file without pages is one page."""
    return hit.chunk.document_id, hit.chunk.page


def page_scores(hits: Sequence[ScoredChunk], scoring: PageScoring) -> dict[PageKey, float]:
    """Each page's score from its passages among ``hits``: the best one's (``max``) or their sum (``sum``)."""
    scores: dict[PageKey, float] = {}
    for hit in hits:
        page = page_of(hit)
        if page not in scores:
            scores[page] = hit.score
        elif scoring == "sum":
            scores[page] += hit.score
        else:
            scores[page] = max(scores[page], hit.score)
    return scores


def rank_by_page(hits: Sequence[ScoredChunk], scoring: PageScoring) -> list[ScoredChunk]:
    """``hits`` page by page: pages by :func:`page_scores`, best first (ties keep the order of
    the pages' first hits), each page's passages in their own order, with their own scores."""
    scores = page_scores(hits, scoring)
    first_seen = {page: position for position, page in enumerate(dict.fromkeys(map(page_of, hits)))}
    return sorted(hits, key=lambda hit: (-scores[page_of(hit)], first_seen[page_of(hit)]))


class PageRanker(_Batched):
    """Ranks the pages of another retriever's passages, and returns passages page by page.

    A citation, a gold label and what the user checks is a page, but chunks compete alone: a
    statement page cut into three chunks that each match part of the question loses to a page
    with one chunk that matches all of it. The inner retriever's ``candidates`` best chunks are
    grouped by page, the pages ranked by ``retrieval.page_scoring`` and the first ``k`` chunks
    of that order returned, so the prompt gets the best pages' passages together.

    ``max`` is the default because it was measured best: ``sum`` (and the best passage plus a
    fifth of the others') let long pages of loosely matching text win, and lost on both
    FinanceBench splits (README, Retrieval). What made statement pages rise is what each passage
    is indexed with (their page's heading, ``rag/context.py``) and fusing deeper rankings.
    """

    def __init__(self, inner: Retriever, scoring: PageScoring, candidates: int) -> None:
        self._inner, self._scoring, self._candidates = inner, scoring, candidates

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        rankings = retrieve_many(self._inner, queries, max(k, self._candidates))
        return [rank_by_page(hits, self._scoring)[:k] for hits in rankings]


class CrossEncoderScorer:
    """A cross-encoder that scores ``(query, passage)`` pairs. ``load()`` first.

    Load it once and share it: a :class:`CrossEncoderReranker` around any retriever is then
    cheap to build (the web page builds one per question). Safe to call from several threads.
    """

    def __init__(self, model_id: str) -> None:
        self.model_id = model_id
        self._model: CrossEncoder | None = None
        # The model's tokenizer is not safe to share between threads: predictions take turns.
        self._lock = threading.Lock()

    def load(self) -> None:
        from sentence_transformers import CrossEncoder

        try:
            self._model = CrossEncoder(self.model_id)
        except Exception as exc:  # noqa: BLE001 - any failure here means "cannot load"
            raise ModelLoadError(
                f"reranker {self.model_id!r} cannot be loaded: {first_line(exc)}. "
                "Use a local folder, or unset retrieval.reranker_model."
            ) from None

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One relevance score per pair, higher is more relevant; one ``predict`` call for all."""
        if self._model is None:
            raise RuntimeError("call load() before using the reranker")
        if not pairs:
            return []
        with self._lock:
            scores: Any = self._model.predict(list(pairs), show_progress_bar=False)
        return [float(score) for score in scores]


class CrossEncoderReranker(_Batched):
    """Rescores the first ``candidates`` hits of another retriever with a loaded scorer."""

    def __init__(self, inner: Retriever, scorer: CrossEncoderScorer, candidates: int) -> None:
        self._inner, self._scorer, self._candidates = inner, scorer, candidates

    def retrieve_many(self, queries: Sequence[str], k: int) -> list[list[ScoredChunk]]:
        candidates = retrieve_many(self._inner, queries, max(k, self._candidates))
        # One scoring call for every query's candidates: the model batches across queries.
        scores = self._scorer.score(
            [(query, hit.chunk.text) for query, hits in zip(queries, candidates, strict=True) for hit in hits]
        )
        results, offset = [], 0
        for hits in candidates:
            ranked = sorted(zip(hits, scores[offset : offset + len(hits)], strict=True), key=lambda pair: -pair[1])
            offset += len(hits)
            results.append(
                [
                    ScoredChunk(hit.chunk, hit.source, score, retrievers=(*hit.retrievers, "rerank"))
                    for hit, score in ranked[:k]
                ]
            )
        return results


def assemble_retriever(
    retrieval: RetrievalConfig,
    searcher: Searcher,
    embedder: Embedder,
    reranker: CrossEncoderScorer | None = None,
) -> Retriever:
    """The dense, keyword or hybrid retriever ``retrieval.mode`` asks for, ranking pages as
    ``retrieval.page_scoring`` says, over a searcher already loaded (cheap: callers that keep
    it, like the web page, build one per question), and rescored by ``reranker`` (loaded)
    over ``retrieval.rerank_candidates`` when one is given."""
    dense = DenseRetriever(searcher, embedder)
    keyword = KeywordRetriever(searcher)
    chosen: Retriever
    if retrieval.mode == "dense":
        chosen = dense
    elif retrieval.mode == "keyword":
        chosen = keyword
    else:
        chosen = HybridRetriever(dense, keyword, retrieval)
    if retrieval.page_scoring != "none":
        chosen = PageRanker(chosen, retrieval.page_scoring, retrieval.candidates)
    if reranker is not None:
        chosen = CrossEncoderReranker(chosen, reranker, retrieval.rerank_candidates)
    return chosen
