"""A run's outputs beside its samples: ``metrics.json``, ``report.html`` and the TREC run file.

- :func:`compute_metrics`: every metric's mean over the questions it applies to, with a 95%
  percentile-bootstrap interval (:func:`eval.stats.bootstrap_ci`); the retrieval values are
  ranx's (:func:`eval.metrics.retrieval_metrics`, computed per question when the run scores them);
  abstention precision/recall, latency p50/p95, tokens per answer, the rank of the first gold
  hit, and the run's description from ``run.json`` (configuration, models, dataset hash,
  project version, timestamps).
- :func:`render_report`: one self-contained HTML page (inline CSS and SVG, no script, nothing
  fetched) with the metrics, charts and a per-question table; every text from the data is
  escaped.
- :func:`write_trec`: ``run.trec`` (``qid Q0 docid rank score tag``) and ``run.qrels``
  (``qid 0 docid relevance``), so ``trec_eval run.qrels run.trec`` or any IR tool reproduces
  the retrieval numbers.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from eval import htmlkit, plots
from eval.metrics import abstention_scores, percentile
from eval.records import (
    METRICS_FILE,
    REPORT_FILE,
    TREC_QRELS_FILE,
    TREC_RUN_FILE,
    Sample,
    read_run,
    write_json,
)
from eval.scoring import ALL_METRICS, LABELS, QUALITY_METRICS
from eval.stats import bootstrap_ci
from rag.files import write_text_atomic

METRICS_FORMAT_VERSION = 1
# Passage text shown per passage in the report's question details (samples.jsonl has it all).
_PASSAGE_CHARS = 600
_PROMPT_CHARS = 8000


def utc_timestamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def compute_metrics(
    samples: Sequence[Sample], info: dict[str, Any], *, n_resamples: int = 1000, seed: int = 0
) -> dict[str, Any]:
    """The content of ``metrics.json`` for ``samples`` (one run's records, in dataset order).

    ``info`` is the run's description (``run.json``); it is copied in. Questions that failed
    (their record has an ``error``) are counted and listed but enter no mean. A metric that
    applies to no question is absent from ``metrics``.
    """
    ok = [sample for sample in samples if not sample.error]
    aggregates: dict[str, dict[str, Any]] = {}
    for name in ALL_METRICS:
        values = [sample.metric(name) for sample in ok]
        present = [value for value in values if value is not None]
        if not present:
            continue
        interval = bootstrap_ci(values, n_resamples=n_resamples, seed=seed)
        aggregates[name] = {
            "mean": float(np.mean(present)),
            "ci95": list(interval) if interval is not None else None,
            "n": len(present),
        }

    answered = [sample for sample in ok if sample.abstained is not None]
    abstention = abstention_scores((sample.unanswerable, bool(sample.abstained)) for sample in answered)
    latencies = [t for sample in ok if (t := sample.metric("latency_s")) is not None]
    tokens = [t for sample in ok if (t := sample.metric("completion_tokens")) is not None]
    ranks = Counter(
        str(sample.first_relevant_rank) if sample.first_relevant_rank is not None else "none"
        for sample in ok
        if sample.metric("hit@10") is not None
    )
    return {
        **info,
        "format_version": METRICS_FORMAT_VERSION,
        "finished_at": utc_timestamp(),
        "counts": {
            "questions": len(samples),
            "failed": len(samples) - len(ok),
            "answered": sum(not sample.abstained for sample in answered),
            "abstained": abstention.abstained,
            "unanswerable": sum(sample.unanswerable for sample in ok),
        },
        "metrics": aggregates,
        "abstention": {
            "precision": abstention.precision,
            "recall": abstention.recall,
            "f1": abstention.f1,
            "abstained": abstention.abstained,
            "unanswerable": abstention.unanswerable,
            "abstained_on_unanswerable": abstention.abstained_on_unanswerable,
        },
        "latency_s": _spread(latencies),
        "completion_tokens": _spread(tokens),
        # Each question's latency is its share of the run's time, so this is the run's throughput.
        "questions_per_minute": 60 * len(latencies) / sum(latencies) if latencies and sum(latencies) > 0 else None,
        "first_relevant_rank": dict(sorted(ranks.items(), key=lambda item: _rank_order(item[0]))),
        "failed": [{"id": sample.id, "error": sample.error} for sample in samples if sample.error],
    }


def _spread(values: Sequence[float]) -> dict[str, float | None]:
    return {
        "mean": float(np.mean(values)) if values else None,
        "p50": percentile(values, 50),
        "p95": percentile(values, 95),
    }


def _rank_order(rank: str) -> float:
    return float("inf") if rank == "none" else float(rank)


def headline(metrics: dict[str, Any]) -> dict[str, float | None]:
    """The few numbers to print after a run: the means of the metrics the mode produced."""
    wanted = (
        "ndcg@10",
        "recall@10",
        "hit@5",
        "hit@10",
        "em",
        "f1",
        "contains",
        "citation_recall",
        "citation_precision",
    )
    values: dict[str, float | None] = {
        name: metrics["metrics"][name]["mean"] for name in wanted if name in metrics["metrics"]
    }
    if metrics["latency_s"]["p50"] is not None:
        values["latency_p50_s"] = metrics["latency_s"]["p50"]
    return values


# ---------------------------------------------------------------------------------------------
# TREC


def _trec_token(value: str) -> str:
    """An id as one TREC field: whitespace (the format's separator) percent-quoted."""
    return re.sub(r"\s", lambda match: quote(match.group()), value) or "-"


def write_trec(out_dir: Path, samples: Sequence[Sample], tag: str) -> tuple[Path, Path] | None:
    """Write ``run.trec`` and ``run.qrels`` for the samples that have a retrieval; ``None`` when none has.

    Each question's ranking is its distinct retrieved ids (a document's first chunk gives its
    rank); the score is ``1 / rank``, as :func:`eval.metrics.run_from_rankings` scores the run that
    ``metrics.json`` was computed from, so tools that sort by score see the same order (the
    retrievers' own scores, which tie under fusion, are in ``samples.jsonl``).
    """
    retrieved = [sample for sample in samples if sample.retrieved and not sample.error]
    if not retrieved:
        return None
    run_lines, qrels_lines = [], []
    for sample in retrieved:
        qid = _trec_token(sample.id)
        ranking = dict.fromkeys(passage.id for passage in sample.retrieved)
        for rank, doc_id in enumerate(ranking, start=1):
            run_lines.append(f"{qid} Q0 {_trec_token(doc_id)} {rank} {1 / rank:.6f} {_trec_token(tag)}\n")
        for doc_id, relevance in sample.qrels.items():
            qrels_lines.append(f"{qid} 0 {_trec_token(doc_id)} {relevance}\n")
    run_path, qrels_path = out_dir / TREC_RUN_FILE, out_dir / TREC_QRELS_FILE
    write_text_atomic(run_path, "".join(run_lines))
    write_text_atomic(qrels_path, "".join(qrels_lines))
    return run_path, qrels_path


# ---------------------------------------------------------------------------------------------
# Writing a run's outputs


def write_outputs(
    out_dir: Path, samples: Sequence[Sample], info: dict[str, Any], *, n_resamples: int = 1000, seed: int = 0
) -> tuple[dict[str, Any], dict[str, Path]]:
    """Compute and write ``metrics.json``, ``report.html``, ``run.trec`` and ``run.qrels``.

    Returns the metrics and the paths written (``run.trec`` only when there was retrieval).
    """
    metrics = compute_metrics(samples, info, n_resamples=n_resamples, seed=seed)
    files = {"samples": out_dir / "samples.jsonl", "metrics": out_dir / METRICS_FILE, "report": out_dir / REPORT_FILE}
    write_json(files["metrics"], metrics)
    trec = write_trec(out_dir, samples, out_dir.name)
    if trec is not None:
        files["trec"], files["qrels"] = trec
    write_text_atomic(files["report"], render_report(metrics, samples))
    return metrics, files


def add_comparison_to_report(run_dir: Path, comparison_fragment: str) -> Path:
    """Re-render ``run_dir``'s report with a comparison section (``eval.compare.comparison_html``).

    The report is derived from ``metrics.json`` and the samples, so this loses nothing; a later
    comparison replaces an earlier one. Raises ``EvalRunError`` for a run that has not finished.
    """
    from eval.records import EvalRunError

    run = read_run(run_dir)
    if run.metrics is None:
        raise EvalRunError(f"{run_dir} has no {METRICS_FILE}: the run did not finish; run it again to complete it")
    path = run_dir / REPORT_FILE
    write_text_atomic(path, render_report(run.metrics, run.samples, comparison=comparison_fragment))
    return path


# ---------------------------------------------------------------------------------------------
# The HTML report


def render_report(metrics: dict[str, Any], samples: Sequence[Sample], comparison: str | None = None) -> str:
    """The report page for a run; ``comparison`` is an HTML fragment shown in its own section."""
    dataset, models, mode = metrics.get("dataset", {}), metrics.get("models", {}), metrics.get("mode", "full")
    title = f"Evaluation of {dataset.get('name', '?')} ({mode})"
    sections = [
        f"<h1>{htmlkit.text(title)}</h1>",
        '<p class="muted">'
        + " · ".join(
            f"{label} {htmlkit.text(metrics.get(key))}"
            for label, key in (("run", "name"), ("started", "started_at"), ("finished", "finished_at"))
        )
        + f" · rag-kb {htmlkit.text(metrics.get('project_version'))}</p>",
        _overview(metrics, dataset, models),
        _metric_table(metrics),
        _charts(metrics, samples),
    ]
    if metrics.get("failed"):
        rows = [[htmlkit.text(item["id"]), htmlkit.text(item["error"])] for item in metrics["failed"]]
        sections.append("<h2>Failed questions</h2>" + htmlkit.table(["id", "error"], rows))
    if comparison:
        sections.append(f"<h2>Comparison</h2>{comparison}")
    sections.append(_question_table(samples, mode))
    config = metrics.get("config")
    if config is not None:
        sections.append(
            "<h2>Configuration</h2><details><summary>the resolved configuration of this run</summary>"
            f"<pre>{htmlkit.text(json.dumps(config, indent=2, ensure_ascii=False))}</pre></details>"
        )
    return htmlkit.page(title, "\n".join(sections))


def _overview(metrics: dict[str, Any], dataset: dict[str, Any], models: dict[str, Any]) -> str:
    counts = metrics.get("counts", {})
    rows = [
        ["dataset", htmlkit.text(f"{dataset.get('name')} ({dataset.get('format')}), {dataset.get('path')}")],
        ["dataset hash", f"<code>{htmlkit.text(str(dataset.get('content_hash', ''))[:16])}</code>"],
        ["knowledge base", htmlkit.text(metrics.get("kb_dir") or "none (closed-book)")],
        *[[htmlkit.text(f"{role} model"), htmlkit.text(model)] for role, model in models.items() if model],
        [
            "questions",
            htmlkit.text(
                f"{counts.get('questions', 0)} evaluated, {counts.get('failed', 0)} failed, "
                f"{counts.get('abstained', 0)} abstained, {counts.get('unanswerable', 0)} unanswerable"
            ),
        ],
    ]
    qpm = metrics.get("questions_per_minute")
    if qpm:
        rows.append(["throughput", htmlkit.text(f"{qpm:.1f} questions per minute")])
    return "<h2>Run</h2>" + htmlkit.table(["", ""], rows)


def _metric_table(metrics: dict[str, Any]) -> str:
    rows = []
    for name, value in metrics.get("metrics", {}).items():
        ci = value.get("ci95")
        rows.append(
            [
                htmlkit.text(LABELS.get(name, name)),
                htmlkit.number(value["mean"]),
                htmlkit.text(f"{ci[0]:.3f} – {ci[1]:.3f}") if ci else "–",
                str(value["n"]),
            ]
        )
    abstention = metrics.get("abstention", {})
    if abstention.get("unanswerable") or abstention.get("abstained"):
        for key in ("precision", "recall", "f1"):
            rows.append([htmlkit.text(f"Abstention {key}"), htmlkit.number(abstention.get(key)), "–", ""])
    for key, label in (("latency_s", "Latency"), ("completion_tokens", "Completion tokens")):
        spread = metrics.get(key, {})
        if spread.get("p50") is not None:
            rows.append(
                [
                    htmlkit.text(f"{label} p50 / p95"),
                    htmlkit.text(f"{spread['p50']:.3f} / {spread['p95']:.3f}"),
                    "–",
                    "",
                ]
            )
    note = (
        '<p class="muted">Means over the questions each metric applies to (n), with 95% percentile-bootstrap '
        "intervals. Latency is each question's share of the batched run's time.</p>"
    )
    return "<h2>Metrics</h2>" + htmlkit.table(["metric", "mean", "95% CI", "n"], rows, numeric=(1, 3)) + note


def chart_svgs(metrics: dict[str, Any], samples: Sequence[Sample]) -> list[str]:
    """The run's charts as inline SVG (metric bars with intervals, latency histogram, rank of
    the first gold hit), leaving out those with no data: the report and the web page show these."""
    aggregates = metrics.get("metrics", {})
    bars: list[tuple[str, float, tuple[float, float] | None]] = []
    for name in QUALITY_METRICS:
        if name in aggregates:
            ci = aggregates[name]["ci95"]
            bars.append((LABELS[name], aggregates[name]["mean"], (ci[0], ci[1]) if ci else None))
    charts = [plots.bar_chart(bars, title="Metrics with 95% intervals", y_max=1.0)]
    latencies = [t for sample in samples if (t := sample.metric("latency_s")) is not None]
    charts.append(plots.histogram(latencies, title="Latency per question", x_label="seconds", bins=12))
    ranks = metrics.get("first_relevant_rank", {})
    charts.append(
        plots.count_bars(list(ranks.items()), title="Rank of the first gold hit", x_label="rank (none: not retrieved)")
    )
    return [chart for chart in charts if chart]


def _charts(metrics: dict[str, Any], samples: Sequence[Sample]) -> str:
    return '<h2>Charts</h2><div class="charts">' + "".join(chart_svgs(metrics, samples)) + "</div>"


def _question_table(samples: Sequence[Sample], mode: str) -> str:
    columns = ["ndcg@10", "hit@5"] if mode == "retrieval-only" else ["hit@5", "f1", "contains", "citation_recall"]
    if mode == "closed-book":
        columns = ["em", "f1", "contains"]
    header = ["#", "id", "question", "answer", "gold", "first hit", *[LABELS[c] for c in columns]]
    rows = []
    for number, sample in enumerate(samples, start=1):
        gold = sample.gold or sorted(sample.qrels)
        answer = f"error: {sample.error}" if sample.error else sample.answer or ""
        rows.append(
            [
                str(number),
                htmlkit.text(sample.id),
                htmlkit.text(sample.question) + _details(sample),
                htmlkit.text(answer) + (' <span class="muted">(abstained)</span>' if sample.abstained else ""),
                htmlkit.text("; ".join(gold))
                or ('<span class="muted">unanswerable</span>' if sample.unanswerable else ""),
                htmlkit.text(sample.first_relevant_rank or "–"),
                *[htmlkit.number(sample.metric(c)) for c in columns],
            ]
        )
    numeric = tuple(range(5, 6 + len(columns)))
    return "<h2>Questions</h2>" + htmlkit.table(header, rows, numeric=numeric, css="questions")


def _details(sample: Sample) -> str:
    passages = [
        [
            str(p.rank),
            htmlkit.text(p.where),
            htmlkit.number(p.score, 4),
            "yes" if p.id in sample.qrels else "",
            htmlkit.text(_clip(p.text, _PASSAGE_CHARS)),
        ]
        for p in sample.retrieved
    ]
    citations = [
        [
            f"[{c.n}]",
            htmlkit.text(c.where),
            htmlkit.number(c.support, 2),
            htmlkit.text(c.quote),
        ]
        for c in sample.citations
    ]
    parts = []
    if passages:
        parts.append(htmlkit.table(["rank", "source", "score", "gold", "text"], passages))
    if citations:
        parts.append(htmlkit.table(["citation", "source", "support", "quote"], citations))
    if sample.raw_output is not None:
        parts.append(f"<p>raw output:</p><pre>{htmlkit.text(sample.raw_output)}</pre>")
    if sample.prompt:
        prompt = htmlkit.text(_clip(sample.prompt, _PROMPT_CHARS))
        parts.append(f"<details><summary>prompt</summary><pre>{prompt}</pre></details>")
    if not parts:
        return ""
    return "<details><summary>details</summary>" + "".join(parts) + "</details>"


def _clip(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[:limit] + " …"
