from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from eval import plots
from eval.records import Sample
from eval.report import compute_metrics, render_report, write_trec
from eval.stats import bootstrap_ci


def _sample(question_id: str, **metrics: float | None) -> dict[str, Any]:
    return {
        "id": question_id,
        "question": f"question {question_id}",
        "answers": ["a"],
        "gold_sources": [],
        "qrels": {},
        "unanswerable": False,
        "retrieved": [],
        "first_relevant_rank": None,
        "answer": "a",
        "abstained": False,
        "citations": [],
        "metrics": metrics,
        "error": None,
    }


def _typed(samples: list[dict[str, Any]]) -> list[Sample]:
    """The records as the runner writes and readers read them."""
    return [Sample.model_validate(sample) for sample in samples]


def _passage(doc_id: str, rank: int) -> dict[str, Any]:
    return {"id": doc_id, "rank": rank, "file": doc_id.split("#")[0]}


INFO = {"name": "run-x", "mode": "full", "dataset": {"name": "set", "format": "jsonl"}, "config": {"a": 1}}


def test_metrics_have_means_bootstrap_intervals_and_counts() -> None:
    samples = [
        _sample("q1", f1=1.0, latency_s=1.0, completion_tokens=10),
        _sample("q2", f1=0.0, latency_s=2.0, completion_tokens=20),
        _sample("q3", f1=1.0, latency_s=3.0, completion_tokens=30),
        _sample("q4", f1=None, latency_s=4.0, completion_tokens=40),
        {**_sample("q5"), "error": "the question is too long", "abstained": None},
    ]
    metrics = compute_metrics(_typed(samples), INFO, n_resamples=500, seed=3)
    f1 = metrics["metrics"]["f1"]
    assert f1["mean"] == pytest.approx(2 / 3) and f1["n"] == 3, "None and failed questions enter no mean"
    expected = bootstrap_ci([1.0, 0.0, 1.0, None], n_resamples=500, seed=3)
    assert expected is not None and f1["ci95"] == list(expected)
    assert 0.0 <= f1["ci95"][0] <= f1["mean"] <= f1["ci95"][1] <= 1.0
    assert metrics["latency_s"] == {"mean": 2.5, "p50": 2.5, "p95": pytest.approx(3.85)}
    assert metrics["completion_tokens"]["p50"] == 25.0
    assert metrics["questions_per_minute"] == pytest.approx(60 * 4 / 10)
    assert metrics["counts"] == {"questions": 5, "failed": 1, "answered": 4, "abstained": 0, "unanswerable": 0}
    assert metrics["failed"] == [{"id": "q5", "error": "the question is too long"}]
    assert metrics["name"] == "run-x" and metrics["config"] == {"a": 1} and metrics["finished_at"].endswith("Z")
    assert "em" not in metrics["metrics"], "a metric that applies to no question is absent"


def test_retrieval_means_come_from_ranx_and_match_the_per_question_values() -> None:
    samples = []
    for i, (ranking, qrels) in enumerate([(["a", "b", "c"], {"b": 1}), (["x", "y"], {"z": 1, "x": 2})]):
        sample = _sample(f"q{i}", **{"ndcg@10": None, "hit@10": None})
        sample |= {"qrels": qrels, "retrieved": [_passage(doc_id, r) for r, doc_id in enumerate(ranking, 1)]}
        samples.append(sample)
    from eval.scoring import first_relevant_rank, retrieval_scores

    rankings = [[p["id"] for p in sample["retrieved"]] for sample in samples]
    scores = retrieval_scores(rankings, [sample["qrels"] for sample in samples])
    for sample, ranked, metrics in zip(samples, rankings, scores, strict=True):
        sample["metrics"] = metrics
        sample["first_relevant_rank"] = first_relevant_rank(ranked, sample["qrels"])
    metrics = compute_metrics(_typed(samples), INFO, n_resamples=200)
    per_question = [s["metrics"]["ndcg@10"] for s in samples]
    assert metrics["metrics"]["ndcg@10"]["mean"] == pytest.approx(np.mean(per_question))
    assert metrics["metrics"]["hit@5"]["mean"] == 1.0
    assert metrics["first_relevant_rank"] == {"1": 1, "2": 1}


def test_report_escapes_every_text_from_the_data() -> None:
    sample = _sample("<b>id</b>", f1=0.5)
    sample |= {
        "question": "Is <script>alert('x')</script> run?",
        "answer": "No & never <img src=x onerror=alert(1)>",
        "raw_output": "</pre><script>bad()</script>",
        "prompt": "<|system|> <script>",
        "retrieved": [{"rank": 1, "id": "f", "file": "<evil>.txt", "page": None, "score": 1.0, "text": "<i>t</i>"}],
        "citations": [{"n": 1, "file": "<evil>.txt", "support": 1.0, "quote": "<q>", "start": 0, "end": 3}],
    }
    typed = _typed([sample])
    metrics = compute_metrics(typed, INFO | {"dataset": {"name": "<set>", "format": "jsonl"}}, n_resamples=200)
    html = render_report(metrics, typed, comparison="<p>fragment</p>")
    assert "<script" not in html and "<img" not in html and "<evil>" not in html and "<i>t</i>" not in html
    assert "Is &lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; run?" in html
    assert "&lt;b&gt;id&lt;/b&gt;" in html and "No &amp; never &lt;img" in html
    assert "<h2>Comparison</h2><p>fragment</p>" in html, "the comparison fragment is HTML already"
    assert html.startswith("<!DOCTYPE html>") and "<style>" in html
    assert not re.search(r"(src|href)=\"https?:", html), "self-contained: nothing fetched"


def test_trec_files_quote_whitespace_and_rank_distinct_ids(tmp_path: Path) -> None:
    sample = _sample("q 1")
    sample |= {
        "qrels": {"my file.pdf#2": 1},
        "retrieved": [_passage("my file.pdf#2", 1), _passage("my file.pdf#2", 2), _passage("b.pdf#1", 3)],
    }
    paths = write_trec(tmp_path, _typed([sample, _sample("no-retrieval")]), "run one")
    assert paths is not None
    assert paths[0].read_text().splitlines() == [
        "q%201 Q0 my%20file.pdf#2 1 1.000000 run%20one",
        "q%201 Q0 b.pdf#1 2 0.500000 run%20one",
    ]
    assert paths[1].read_text() == "q%201 0 my%20file.pdf#2 1\n"
    assert write_trec(tmp_path / "none", _typed([_sample("x")]), "t") is None


def test_charts_escape_labels_and_count_values() -> None:
    chart = plots.bar_chart([("<a>", 0.5, (0.25, 0.75)), ("b", 1.0, None)], title="T & U", y_max=1.0)
    assert chart.startswith("<svg") and chart.endswith("</svg>")
    assert "&lt;a&gt;" in chart and "T &amp; U" in chart and chart.count("<rect") == 2
    assert "95% CI 0.250 to 0.750" in chart
    histogram = plots.histogram([0.0, 0.0, 0.5, 1.0], title="h", x_label="s", bins=4)
    titles = re.findall(r"<title>([^<]*)</title>", histogram)
    assert titles == ["0: 2", "0.25: 0", "0.5: 1", "0.75: 1"], "bins by their start; the maximum in the last"
    assert plots.histogram([], title="h", x_label="s") == "" and plots.bar_chart([], title="t") == ""
    assert plots.histogram([2.0, 2.0], title="h", x_label="s", bins=3).count("<rect") == 3
