"""``rag eval`` end to end: a small real question set about the bundled samples through the real
pipeline (MiniLM, FAISS, BM25, in-process vLLM with the provisioned SmolLM2), writing all four
outputs, then ``rag eval compare`` of two runs through the command line. One vLLM engine start.

The model is tiny, so answer quality is not asserted; retrieval over four files is, and every
record and file the run promises is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from eval.datasets import load_dataset
from eval.records import read_samples
from eval.runner import run_eval
from ingest.job import run_ingest
from rag.config import AppConfig
from rag.generator import VllmGenerator
from tests.integration.cli import REPO, rag
from tests.integration.conftest import cli_settings, config_for

pytestmark = pytest.mark.integration

QUESTIONS = [
    {
        "id": "vacation",
        "question": "How many days of paid vacation do full-time employees get?",
        "answers": ["28 days"],
        "sources": [{"file": "employee-handbook.pdf", "page": 2}],
    },
    {
        "id": "payload",
        "question": "What payload can the R2 robot carry on its top deck?",
        "answers": ["150 kg"],
        "sources": [{"file": "r2-robot-faq.md"}],
    },
    {
        "id": "hotel",
        "question": "Up to how many euros per night are hotel costs in Hamburg reimbursed?",
        "answers": ["180 euros"],
        "sources": [{"file": "travel-expense-policy.docx"}],
    },
    {
        "id": "fleet",
        "question": "To how many robots was the maximum fleet size per site raised in Fleet Manager 4.2?",
        "answers": ["500 robots", "500"],
        "sources": [{"file": "fleet-manager-4.2-release-notes.html"}],
    },
    {"id": "colour", "question": "What is the CEO's favourite colour?", "answers": [], "unanswerable": True},
]


@pytest.fixture(scope="module")
def setup(
    tmp_path_factory: pytest.TempPathFactory, real_embedder: Any, model_settings: dict[str, Any]
) -> tuple[AppConfig, Path, Path]:
    """A knowledge base over the samples, the question set, and a folder for runs."""
    root = tmp_path_factory.mktemp("eval")
    config = config_for(root / "kb", model_settings, **{"eval.runs_dir": root / "runs"})
    run_ingest([REPO / "samples"], config, real_embedder)
    questions = root / "samples-qa.jsonl"
    questions.write_text("".join(json.dumps(q) + "\n" for q in QUESTIONS), encoding="utf-8")
    return config, questions, root


def test_full_run_writes_every_output(setup: tuple[AppConfig, Path, Path], real_embedder: Any) -> None:
    config, questions, root = setup
    out = root / "full"
    generator = VllmGenerator(config, config.generator.model)
    generator.load()
    try:
        summary = run_eval(load_dataset(questions), config, out, generator=generator, embedder=real_embedder)
    finally:
        generator.close()

    assert summary.failed == () and summary.evaluated == len(QUESTIONS)
    assert {"samples", "metrics", "report", "trec", "qrels"} <= set(summary.files)
    samples = {s.id: s for s in read_samples(out / "samples.jsonl")}
    assert set(samples) == {q["id"] for q in QUESTIONS}
    for sample in samples.values():
        assert sample.raw_output.strip() and sample.prompt and sample.retrieved
        assert sample.completion_tokens > 0 and sample.metrics["latency_s"] > 0
        assert {"em", "f1", "contains", "citation_recall", "hit@5", "ndcg@10"} <= set(sample.metrics)
        for citation in sample.citations:
            assert 1 <= citation.n <= sum(p.in_prompt for p in sample.retrieved)
    top = samples["vacation"].retrieved[0]
    assert Path(top.file).name == "employee-handbook.pdf" and top.page == 2
    assert top.id == "employee-handbook.pdf#2" and samples["vacation"].first_relevant_rank == 1

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["models"]["generator"] == config.generator.model
    assert metrics["models"]["embedding"] == "sentence-transformers/all-MiniLM-L6-v2"
    assert metrics["metrics"]["hit@10"]["mean"] == 1.0 and metrics["metrics"]["hit@10"]["n"] == 4
    assert metrics["metrics"]["ndcg@10"]["mean"] >= 0.5
    low, high = metrics["metrics"]["ndcg@10"]["ci95"]
    assert low <= metrics["metrics"]["ndcg@10"]["mean"] <= high
    assert metrics["counts"]["questions"] == len(QUESTIONS) and metrics["abstention"]["unanswerable"] == 1
    assert metrics["config"]["generator"]["max_answer_tokens"] == 64 and metrics["project_version"] != "unknown"
    html = (out / "report.html").read_text()
    assert "favourite colour" in html and "<svg" in html
    assert (out / "run.trec").read_text().startswith("vacation Q0 employee-handbook.pdf#2 1 ")


def test_compare_two_runs_through_the_command_line(setup: tuple[AppConfig, Path, Path]) -> None:
    config, questions, root = setup
    runs = {}
    for mode in ("dense", "keyword"):
        runs[mode] = root / f"retrieval-{mode}"
        args = ["eval", str(questions), "--retrieval-only", "--out", str(runs[mode]), "--json"]
        result = rag(*args, *cli_settings(config), "--set", f"retrieval.mode={mode}")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads(result.stdout)
        assert summary["mode"] == "retrieval-only" and summary["failed"] == []
        assert {"samples", "metrics", "report", "trec"} <= set(summary["files"])

    result = rag("eval", "compare", str(runs["dense"]), str(runs["keyword"]), "--json")
    assert result.returncode == 0, result.stderr[-3000:]
    comparison = json.loads(result.stdout)
    assert comparison["paired"] == len(QUESTIONS) and comparison["primary"] == "ndcg@10"
    ndcg = next(row for row in comparison["metrics"] if row["name"] == "ndcg@10")
    assert ndcg["n"] == 4 and 0.0 <= ndcg["p_permutation"] <= 1.0
    assert (runs["keyword"] / "compare.html").is_file()
    assert "<h2>Comparison</h2>" in (runs["keyword"] / "report.html").read_text()

    # A retrieval-only run against the full one: compared on the retrieval metrics they share.
    if (root / "full" / "metrics.json").is_file():
        text = rag("eval", "compare", str(runs["dense"]), str(root / "full"))
        assert text.returncode == 0, text.stderr[-3000:]
        assert "nDCG@10" in text.stdout and "questions paired" in text.stdout
