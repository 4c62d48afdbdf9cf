"""A knowledge base in Milvus Lite, used as a user uses it: ``rag ingest``, ``rag search``,
``rag ask`` and ``rag eval --retrieval-only`` with ``--kb milvus-lite:PATH.db``, each a real
subprocess with the real embedding model, against the same commands over the embedded backend.
Both must give the same top pages."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from rag.components import Components
from rag.config import AppConfig
from rag.kb import open_knowledge_base
from rag.retriever import retrieve_many
from tests.integration.cli import REPO, rag
from tests.integration.conftest import cli_settings, config_for
from tests.integration.test_eval_real import QUESTIONS

pytestmark = pytest.mark.integration

QUERIES = [
    "How many days of paid vacation do full-time employees get?",
    "What payload can the R2 robot carry?",
    "hotel costs reimbursed per night in Hamburg",
    "maximum fleet size per site",
]


@pytest.fixture(scope="module")
def knowledge_bases(tmp_path_factory: pytest.TempPathFactory, model_settings: dict[str, Any]) -> dict[str, AppConfig]:
    """The samples ingested by ``rag ingest`` into each backend."""
    root = tmp_path_factory.mktemp("milvus")
    configs = {
        "embedded": config_for(root / "kb", model_settings),
        "milvus": config_for(f"milvus-lite:{root / 'kb.db'}", model_settings),  # type: ignore[arg-type]
    }
    for config in configs.values():
        result = rag("ingest", str(REPO / "samples"), "--json", *cli_settings(config))
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout)
        assert (summary["added"], summary["documents"], summary["failed"]) == (4, 4, [])
    return configs


def _pages(hits: list[dict[str, Any]]) -> list[tuple[str, int | None]]:
    return [(Path(hit["file"]).name, hit["page"]) for hit in hits]


def test_ingest_again_changes_nothing_and_info_counts_alike(knowledge_bases: dict[str, AppConfig]) -> None:
    infos = {}
    for name, config in knowledge_bases.items():
        again = rag("ingest", str(REPO / "samples"), "--json", *cli_settings(config))
        assert again.returncode == 0, again.stderr[-3000:]
        assert (json.loads(again.stdout)["unchanged"], json.loads(again.stdout)["added"]) == (4, 0)
        info = rag("info", "--json", *cli_settings(config))
        assert info.returncode == 0, info.stderr[-3000:]
        infos[name] = json.loads(info.stdout)
    keys = ("documents", "pages", "chunks", "embedding_model", "dimension", "indexing")
    assert {k: infos["milvus"][k] for k in keys} == {k: infos["embedded"][k] for k in keys}
    assert infos["milvus"]["index"] == "milvus FLAT" and infos["milvus"]["last_run"]["status"] == "completed"


def _retrieve(config: AppConfig, embedder: Any, queries: list[str], k: int) -> list[list[tuple[str, int | None]]]:
    """The pages of the passages ``rag search`` and ``rag ask`` retrieve, in process."""
    with open_knowledge_base(config.kb_dir, config) as kb:
        rankings = retrieve_many(Components(config).retriever(kb, embedder), queries, k)
    return [[(Path(hit.source).name, hit.chunk.page) for hit in hits] for hits in rankings]


def test_search_finds_the_same_pages_in_both(knowledge_bases: dict[str, AppConfig], real_embedder: Any) -> None:
    found = {name: _retrieve(config, real_embedder, QUERIES, 5) for name, config in knowledge_bases.items()}
    assert found["milvus"] == found["embedded"]
    result = rag("search", QUERIES[0], "--json", "-k", "3", *cli_settings(knowledge_bases["milvus"]))
    assert result.returncode == 0, result.stderr[-3000:]
    assert _pages(json.loads(result.stdout)) == found["embedded"][0][:3]


def test_eval_retrieval_only_scores_both_alike(knowledge_bases: dict[str, AppConfig], tmp_path: Path) -> None:
    questions = tmp_path / "qa.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    metrics = {}
    for name, config in knowledge_bases.items():
        out = tmp_path / name
        result = rag("eval", str(questions), "--retrieval-only", "--out", str(out), "--json", *cli_settings(config))
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[name] = json.loads((out / "metrics.json").read_text())
    for key in ("hit@5", "ndcg@10", "mrr@10"):
        mean = metrics["embedded"]["metrics"][key]["mean"]
        assert metrics["milvus"]["metrics"][key]["mean"] == pytest.approx(mean), key
    assert metrics["milvus"]["metrics"]["hit@5"]["mean"] == 1.0


def test_ask_answers_from_the_same_passages(
    knowledge_bases: dict[str, AppConfig], model_server: AppConfig, real_embedder: Any
) -> None:
    question = "Up to how many euros per night are hotel costs in Hamburg reimbursed?"
    config = knowledge_bases["milvus"]
    assert config.generator.port == model_server.generator.port
    result = rag("ask", question, "--json", *cli_settings(config))
    assert result.returncode == 0, result.stderr[-3000:]
    record = json.loads(result.stdout)
    embedded = knowledge_bases["embedded"]
    assert _pages(record["retrieved"]) == _retrieve(embedded, real_embedder, [question], embedded.retrieval.top_k)[0]
    assert _pages(record["retrieved"])[0][0] == "travel-expense-policy.docx"
    assert record["answer"].strip() and record["citations"], record
