from __future__ import annotations

from pathlib import Path
from typing import Any

from langchain_core.documents import Document as LcDocument

from ingest.job import run_ingest
from rag.components import Components
from rag.config import RetrievalConfig
from rag.kb.embedded import EmbeddedKnowledgeBase
from rag.langchain import KnowledgeBaseRetriever
from rag.records import HitRecord
from rag.retriever import (
    CrossEncoderReranker,
    CrossEncoderScorer,
    HybridRetriever,
    PageRanker,
    assemble_retriever,
    page_scores,
    rank_by_page,
    reciprocal_rank_fusion,
    retrieve_many,
)
from rag.types import Chunk, ScoredChunk
from tests.fakes import FakeEmbedder


def _hit(chunk_id: int, name: str) -> ScoredChunk:
    chunk = Chunk(chunk_id, "d", 0, f"text {chunk_id}", 1, None, 0, 6, 2)
    return ScoredChunk(chunk=chunk, source="/f", score=0.0, retrievers=(name,))


class FakeRetriever:
    """A fake retriever: answers every query with the first ``k`` of a fixed ranking and records
    each ``k`` it was asked for."""

    def __init__(self, ranking: list[ScoredChunk]) -> None:
        self.ranking = ranking
        self.asked: list[int] = []

    def retrieve(self, query: str, k: int) -> list[ScoredChunk]:
        self.asked.append(k)
        return self.ranking[:k]


def test_rrf_rewards_agreement_and_records_both_retrievers() -> None:
    dense = [_hit(1, "dense"), _hit(2, "dense"), _hit(3, "dense")]
    bm25 = [_hit(3, "bm25"), _hit(4, "bm25"), _hit(1, "bm25")]
    fused = reciprocal_rank_fusion({"dense": dense, "bm25": bm25}, {"dense": 1.0, "bm25": 1.0}, rrf_k=60)
    assert [h.chunk.id for h in fused] == [1, 3, 2, 4]
    assert fused[0].retrievers == ("dense", "bm25") and fused[2].retrievers == ("dense",)
    assert abs(fused[0].score - (1 / 61 + 1 / 63)) < 1e-12


def test_rrf_weights_change_the_order() -> None:
    dense = [_hit(1, "dense"), _hit(2, "dense")]
    bm25 = [_hit(2, "bm25"), _hit(1, "bm25")]
    assert [h.chunk.id for h in reciprocal_rank_fusion({"dense": dense, "bm25": bm25}, {"dense": 2.0}, 60)] == [1, 2]
    assert [h.chunk.id for h in reciprocal_rank_fusion({"dense": dense, "bm25": bm25}, {"bm25": 2.0}, 60)] == [2, 1]


def test_hybrid_asks_each_retriever_for_candidates_then_cuts_to_k() -> None:
    dense = FakeRetriever([_hit(i, "dense") for i in range(1, 30)])
    keyword = FakeRetriever([_hit(i, "bm25") for i in range(29, 0, -1)])
    hits = HybridRetriever(dense, keyword, RetrievalConfig(candidates=20)).retrieve("q", 3)
    assert len(hits) == 3 and dense.asked == [20] and keyword.asked == [20]


def test_modes_and_langchain_adapter_over_a_real_store(tmp_path: Path, make_config: Any) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fruit.txt").write_text("Apples and pears grow in the orchard.")
    (docs / "cars.txt").write_text("Engines, wheels and brakes make a car. Zyxwv is a rare code word.")
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    embedder = FakeEmbedder()
    run_ingest([docs], config, embedder)
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        for mode in ("dense", "keyword", "hybrid"):
            mode_config = config.model_copy(update={"retrieval": RetrievalConfig(mode=mode)})
            hits = Components(mode_config).retriever(kb, embedder).retrieve("zyxwv brakes", 2)
            assert Path(hits[0].source).name == "cars.txt", mode
        hybrid = Components(config).retriever(kb, embedder).retrieve("zyxwv brakes", 2)
        assert hybrid[0].retrievers == ("dense", "bm25")

        adapter = KnowledgeBaseRetriever(retriever=Components(config).retriever(kb, embedder), k=1)
        documents = adapter.invoke("apples in the orchard")
    assert len(documents) == 1 and isinstance(documents[0], LcDocument)
    assert documents[0].page_content == "Apples and pears grow in the orchard."
    assert Path(documents[0].metadata["file"]).name == "fruit.txt"
    assert {"page", "score", "chunk_id", "retrievers", "start", "end"} <= set(documents[0].metadata)
    assert HitRecord.model_validate(documents[0].metadata | {"text": documents[0].page_content}).chunk_id is not None


class FakeCountingEmbedder(FakeEmbedder):
    """The fake embedder, recording the size of each batch of queries it embeds."""

    def __init__(self) -> None:
        super().__init__()
        self.query_batches: list[int] = []

    def embed_queries(self, texts: Any) -> Any:
        self.query_batches.append(len(texts))
        return super().embed_queries(texts)


class FakeCrossEncoderModel:
    """A fake reranking model: scores a passage by the words it shares with the query."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, pairs: list[tuple[str, str]], **kwargs: Any) -> list[float]:
        self.calls.append(len(pairs))
        return [float(len(set(q.lower().split()) & set(t.lower().split()))) for q, t in pairs]


def test_retrieve_many_equals_one_at_a_time_and_embeds_once(tmp_path: Path, make_config: Any) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    for name, text in {"a.txt": "apples and pears", "b.txt": "engines and brakes", "c.txt": "pears and brakes"}.items():
        (docs / name).write_text(text)
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    embedder = FakeCountingEmbedder()
    run_ingest([docs], config, embedder)
    queries = ["pears", "brakes", "apples engines"]
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        for mode in ("dense", "keyword", "hybrid"):
            mode_config = config.model_copy(update={"retrieval": RetrievalConfig(mode=mode)})
            retriever = Components(mode_config).retriever(kb, embedder)
            embedder.query_batches.clear()
            batched = retrieve_many(retriever, queries, 2)
            assert embedder.query_batches == ([] if mode == "keyword" else [3]), mode
            assert batched == [retriever.retrieve(query, 2) for query in queries], mode

        model = FakeCrossEncoderModel()
        scorer = CrossEncoderScorer("fake")
        scorer._model = model  # a fake in place of load()
        reranker = CrossEncoderReranker(Components(config).retriever(kb, embedder), scorer, candidates=3)
        batched = reranker.retrieve_many(queries, 2)
        assert model.calls == [9], "one predict call for every query's candidates"
        assert batched == [reranker.retrieve(query, 2) for query in queries]
        assert all(hit.retrievers[-1] == "rerank" for hits in batched for hit in hits)
    fixed = FakeRetriever([_hit(1, "dense"), _hit(2, "dense")])
    assert retrieve_many(fixed, ["x", "y"], 1) == [[fixed.ranking[0]], [fixed.ranking[0]]] and fixed.asked == [1, 1]


def _page_hit(chunk_id: int, document: str, page: int | None, score: float) -> ScoredChunk:
    chunk = Chunk(chunk_id, document, chunk_id, f"text {chunk_id}", page, None, 0, 6, 2)
    return ScoredChunk(chunk=chunk, source=f"/{document}.pdf", score=score, retrievers=("dense",))


# A page that three passages match (page 7, a statement cut in three) against a page with the
# single best passage (page 2).
_PAGES = [
    _page_hit(1, "a", 2, 0.030),
    _page_hit(2, "a", 7, 0.029),
    _page_hit(3, "b", 1, 0.028),
    _page_hit(4, "a", 7, 0.020),
    _page_hit(5, "a", 7, 0.018),
    _page_hit(6, "b", 1, 0.010),
]


def test_page_scores_max_and_sum() -> None:
    assert page_scores(_PAGES, "max") == {("a", 2): 0.030, ("a", 7): 0.029, ("b", 1): 0.028}
    summed = page_scores(_PAGES, "sum")
    assert abs(summed[("a", 7)] - 0.067) < 1e-12 and abs(summed[("b", 1)] - 0.038) < 1e-12


def test_rank_by_page_returns_passages_page_by_page() -> None:
    by_max = [h.chunk.id for h in rank_by_page(_PAGES, "max")]
    assert by_max == [1, 2, 4, 5, 3, 6]  # pages by their best passage; a page's passages together
    by_sum = [h.chunk.id for h in rank_by_page(_PAGES, "sum")]
    assert by_sum == [2, 4, 5, 3, 6, 1]  # the page three passages match rises to the top


def test_pages_of_different_documents_are_different_pages() -> None:
    hits = [_page_hit(1, "a", 1, 0.02), _page_hit(2, "b", 1, 0.015), _page_hit(3, "b", 1, 0.015)]
    assert [h.chunk.id for h in rank_by_page(hits, "sum")] == [2, 3, 1]
    assert [h.chunk.id for h in rank_by_page(hits, "max")] == [1, 2, 3]


def test_page_ranker_ranks_the_candidates_and_cuts_to_k() -> None:
    inner = FakeRetriever(_PAGES)
    hits = PageRanker(inner, "sum", candidates=6).retrieve("q", 3)
    assert [h.chunk.id for h in hits] == [2, 4, 5] and inner.asked == [6]
    assert [h.score for h in hits] == [0.029, 0.020, 0.018]  # passages keep their own scores


def test_assembled_retriever_ranks_pages_unless_told_not_to(tmp_path: Path, make_config: Any) -> None:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "fruit.txt").write_text("Apples and pears grow in the orchard.")
    config = make_config(embedding__model="fake/hashing-64", ingest__workers=0)
    embedder = FakeEmbedder()
    run_ingest([docs], config, embedder)
    with EmbeddedKnowledgeBase.open(config.kb_dir, config) as kb:
        searcher = kb.searcher(config)
        for scoring in ("max", "sum"):
            retrieval = config.retrieval.model_copy(update={"page_scoring": scoring})
            assert isinstance(assemble_retriever(retrieval, searcher, embedder), PageRanker)
        retrieval = config.retrieval.model_copy(update={"page_scoring": "none"})
        assert isinstance(assemble_retriever(retrieval, searcher, embedder), HybridRetriever)
