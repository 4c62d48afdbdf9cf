from __future__ import annotations

import json
from pathlib import Path

import pytest

from eval.compare import compare_runs, comparison_html, comparison_page, render_text
from eval.datasets import load_dataset
from eval.records import EvalRunError, Sample, SampleLog, write_json
from eval.runner import run_eval
from eval.stats import paired_bootstrap_pvalue
from tests.evalkit import GOOD_ANSWERS, PAYLOAD, VACATION, build_kb, eval_config, write_questions
from tests.fakes import FakeChatTokenizer, FakeEmbedder, FakeGenerator


def _run_folder(path: Path, mode: str, values: dict[str, dict[str, float | None]], content_hash: str = "h") -> Path:
    """A run folder written by hand: ``values`` maps question id to its metrics."""
    path.mkdir()
    write_json(path / "run.json", {"mode": mode, "dataset": {"name": "set", "content_hash": content_hash}})
    with SampleLog.open(path / "samples.jsonl") as log:
        for question_id, metrics in values.items():
            log.append(Sample(id=question_id, question=f"<q> {question_id}?", metrics=metrics))
    return path


def test_deltas_and_exact_permutation_pvalue(tmp_path: Path) -> None:
    a = _run_folder(tmp_path / "a", "full", {f"q{i}": {"f1": 0.0, "ndcg@10": 0.5} for i in range(6)})
    b_values: dict[str, dict[str, float | None]] = {f"q{i}": {"f1": 1.0, "ndcg@10": 0.5} for i in range(6)}
    b_values["q9"] = {"f1": 1.0, "ndcg@10": 1.0}  # only in B: not paired
    b = _run_folder(tmp_path / "b", "full", b_values)
    comparison = compare_runs(a, b)
    f1 = comparison.metric("f1")
    assert (f1.mean_a, f1.mean_b, f1.delta, f1.n) == (0.0, 1.0, 1.0, 6)
    # Six questions all better by 1: of the 2^6 sign assignments only "all +" and "all -" are as extreme.
    assert f1.p_permutation == pytest.approx(2 / 64)
    assert f1.p_bootstrap == paired_bootstrap_pvalue([1.0] * 6, [0.0] * 6, 10_000, 0)
    assert comparison.metric("ndcg@10").delta == 0.0 and comparison.metric("ndcg@10").p_permutation == 1.0
    assert comparison.primary == "f1" and comparison.paired == 6 and (comparison.only_a, comparison.only_b) == (0, 1)
    assert [c.id for c in comparison.better] == [f"q{i}" for i in range(6)] and comparison.worse == ()
    with pytest.raises(KeyError):
        comparison.metric("em")


def test_better_and_worse_questions_from_two_real_runs(tmp_path: Path) -> None:
    embedder = FakeEmbedder()
    build_kb(tmp_path, eval_config(tmp_path), embedder)
    dataset = load_dataset(write_questions(tmp_path / "handbook.jsonl"))
    config = eval_config(tmp_path)
    # A answers the payload question wrongly; B gets it right but misses the vacation days.
    answers_a = GOOD_ANSWERS | {PAYLOAD: "The R2 robot carries up to 90 kg [1]."}
    answers_b = GOOD_ANSWERS | {VACATION: "Employees receive paid vacation [1]."}
    runs = []
    for name, answers in (("a", answers_a), ("b", answers_b)):
        run_eval(
            dataset, config, tmp_path / name, generator=FakeGenerator(answers), embedder=embedder,
            tokenizer=FakeChatTokenizer(),
        )  # fmt: skip
        runs.append(tmp_path / name)
    comparison = compare_runs(*runs)
    assert comparison.primary == "f1" and comparison.same_dataset and comparison.paired == 4
    assert [c.id for c in comparison.better] == ["payload"] and [c.id for c in comparison.worse] == ["vacation"]
    assert comparison.better[0].delta > 0 > comparison.worse[0].delta
    contains = comparison.metric("contains")
    assert contains.mean_a == contains.mean_b and contains.p_permutation == 1.0
    assert "hotel" not in [c.id for c in comparison.better + comparison.worse], "unchanged: in neither list"

    text = render_text(comparison)
    assert "1 questions better in B on Token F1" in text and "[payload]" in text and "Token F1" in text
    data = json.loads(json.dumps(comparison.as_dict()))
    assert data["better"][0]["id"] == "payload" and data["better"][0]["delta"] > 0
    assert {row["name"] for row in data["metrics"]} >= {"f1", "em", "contains", "hit@5", "citation_recall"}
    html = comparison_page(comparison)
    assert "<script" not in html and "&lt;script&gt;" not in comparison_html(comparison)  # HOTEL is unchanged
    assert html.startswith("<!DOCTYPE html>") and "p (permutation)" in html


def test_closed_book_against_full_compares_the_answer_metrics(tmp_path: Path) -> None:
    closed = _run_folder(tmp_path / "closed", "closed-book", {"q1": {"f1": 0.2, "ndcg@10": None}})
    full = _run_folder(tmp_path / "full", "full", {"q1": {"f1": 0.8, "ndcg@10": 1.0}})
    comparison = compare_runs(closed, full)
    assert [row.name for row in comparison.metrics] == ["f1"] and comparison.metric("f1").delta == pytest.approx(0.6)
    assert (comparison.mode_a, comparison.mode_b) == ("closed-book", "full")


def test_retrieval_runs_rank_by_ndcg_and_escape_questions(tmp_path: Path) -> None:
    a = _run_folder(tmp_path / "a", "retrieval-only", {"q1": {"ndcg@10": 0.2}, "q2": {"ndcg@10": 0.9}}, "h1")
    b = _run_folder(tmp_path / "b", "retrieval-only", {"q1": {"ndcg@10": 0.7}, "q2": {"ndcg@10": 0.4}}, "h2")
    comparison = compare_runs(a, b)
    assert comparison.primary == "ndcg@10" and not comparison.same_dataset
    assert [c.id for c in comparison.better] == ["q1"] and [c.id for c in comparison.worse] == ["q2"]
    assert "different datasets" in render_text(comparison)
    html = comparison_html(comparison)
    assert "&lt;q&gt; q1?" in html and "<q>" not in html


def test_runs_that_cannot_be_compared(tmp_path: Path) -> None:
    a = _run_folder(tmp_path / "a", "full", {"q1": {"f1": 1.0}})
    b = _run_folder(tmp_path / "b", "full", {"q2": {"f1": 1.0}})
    with pytest.raises(EvalRunError, match="share no question"):
        compare_runs(a, b)
    with pytest.raises(EvalRunError, match="not an evaluation run folder"):
        compare_runs(a, tmp_path)
    c = _run_folder(tmp_path / "c", "full", {"q1": {"f1": 0.5}})
    with pytest.raises(EvalRunError, match="no metric 'ndcg@10'"):
        compare_runs(a, c, primary="ndcg@10")
