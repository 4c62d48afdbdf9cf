"""Two runs compared question by question: ``rag eval compare RUN_A RUN_B``.

Samples are paired by question id (questions in only one run, and failed ones, are left out).
For every metric both runs have, :func:`compare_runs` gives the means over the questions where
both have a value, the delta ``B - A``, the paired permutation p-value (the default test, see
:mod:`eval.stats`) and the paired bootstrap one, and lists the questions that got better and
worse on a primary metric: token F1 when both runs answered, else nDCG@10. Runs of different
modes compare on the metrics they share: a closed-book run against a full one gives the gain
from retrieval on the answer metrics; a retrieval-only run against a full one, the retrieval
metrics.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from eval import htmlkit
from eval.records import EvalRunError, Sample, StoredRun, read_run
from eval.scoring import ALL_METRICS, LABELS, QUALITY_METRICS
from eval.stats import paired_bootstrap_pvalue, paired_permutation_pvalue

# Primary metrics, in order of preference: the first one both runs have decides better/worse.
PRIMARY_METRICS = ("f1", "contains", "ndcg@10", "hit@10")


@dataclass(frozen=True, slots=True)
class MetricDelta:
    """One metric over the questions where both runs have it: ``delta = mean_b - mean_a``."""

    name: str
    mean_a: float
    mean_b: float
    delta: float
    n: int
    p_permutation: float | None
    p_bootstrap: float | None


@dataclass(frozen=True, slots=True)
class QuestionChange:
    """A question whose primary metric moved from ``a`` to ``b``."""

    id: str
    question: str
    a: float
    b: float

    @property
    def delta(self) -> float:
        return self.b - self.a


@dataclass(frozen=True, slots=True)
class Comparison:
    """The result of :func:`compare_runs`. ``better``/``worse`` are sorted by the size of the change."""

    run_a: str
    run_b: str
    mode_a: str
    mode_b: str
    same_dataset: bool
    paired: int
    only_a: int
    only_b: int
    primary: str
    metrics: tuple[MetricDelta, ...]
    better: tuple[QuestionChange, ...]
    worse: tuple[QuestionChange, ...]

    def metric(self, name: str) -> MetricDelta:
        """The row of metric ``name``; ``KeyError`` when the runs do not share it."""
        for row in self.metrics:
            if row.name == name:
                return row
        raise KeyError(name)

    def as_dict(self) -> dict[str, Any]:
        """The ``rag eval compare --json`` object."""
        result = asdict(self)
        for key in ("better", "worse"):
            result[key] = [{**asdict(change), "delta": change.delta} for change in getattr(self, key)]
        return result


def compare_runs(
    run_a: Path, run_b: Path, *, primary: str | None = None, n_resamples: int = 10_000, seed: int = 0
) -> Comparison:
    """Compare run folder ``run_b`` (the new one) against ``run_a`` (the baseline).

    Raises :class:`EvalRunError` when a folder is not a run, the runs share no question, or
    ``primary`` is not a metric both have.
    """
    a, b = read_run(run_a), read_run(run_b)
    by_id_a, by_id_b = _usable(a), _usable(b)
    common = [question_id for question_id in by_id_a if question_id in by_id_b]
    if not common:
        raise EvalRunError(f"{run_a} and {run_b} share no question that both evaluated: nothing to compare")
    rows = []
    for name in ALL_METRICS:
        pairs = [(by_id_a[q].metric(name), by_id_b[q].metric(name)) for q in common]
        both = [(x, y) for x, y in pairs if x is not None and y is not None]
        if not both:
            continue
        values_a, values_b = [x for x, _ in pairs], [y for _, y in pairs]
        mean_a, mean_b = float(np.mean([x for x, _ in both])), float(np.mean([y for _, y in both]))
        rows.append(
            MetricDelta(
                name,
                mean_a,
                mean_b,
                mean_b - mean_a,
                len(both),
                # The tests ask whether B differs from A; their statistic is symmetric in the order.
                paired_permutation_pvalue(values_b, values_a, n_resamples, seed),
                paired_bootstrap_pvalue(values_b, values_a, n_resamples, seed),
            )
        )
    shared = [row.name for row in rows if row.name in QUALITY_METRICS]
    if primary is None:
        primary = next((name for name in PRIMARY_METRICS if name in shared), shared[0] if shared else "")
    if primary not in shared:
        raise EvalRunError(
            f"the runs share no metric {primary!r} to rank questions by"
            + (f" (shared: {', '.join(shared)})" if shared else "")
        )
    changes = [
        QuestionChange(q, by_id_b[q].question, x, y)
        for q in common
        if (x := by_id_a[q].metric(primary)) is not None and (y := by_id_b[q].metric(primary)) is not None and x != y
    ]
    return Comparison(
        run_a=str(run_a),
        run_b=str(run_b),
        mode_a=a.mode,
        mode_b=b.mode,
        same_dataset=a.info.get("dataset", {}).get("content_hash") == b.info.get("dataset", {}).get("content_hash"),
        paired=len(common),
        only_a=len(set(by_id_a) - set(by_id_b)),
        only_b=len(set(by_id_b) - set(by_id_a)),
        primary=primary,
        metrics=tuple(rows),
        better=tuple(sorted((c for c in changes if c.delta > 0), key=lambda c: (-c.delta, c.id))),
        worse=tuple(sorted((c for c in changes if c.delta < 0), key=lambda c: (c.delta, c.id))),
    )


def _usable(run: StoredRun) -> dict[str, Sample]:
    return {sample.id: sample for sample in run.samples if not sample.error}


# ---------------------------------------------------------------------------------------------
# Rendering


def render_text(comparison: Comparison, *, listed: int = 10) -> str:
    """A plain-text table of the metrics and the ``listed`` biggest changes each way."""
    lines = [
        f"A: {comparison.run_a} ({comparison.mode_a})",
        f"B: {comparison.run_b} ({comparison.mode_b})",
        f"{comparison.paired} questions paired"
        + (f"; {comparison.only_a} only in A" if comparison.only_a else "")
        + (f"; {comparison.only_b} only in B" if comparison.only_b else ""),
    ]
    if not comparison.same_dataset:
        lines.append("warning: the runs used different datasets (content hashes differ); paired by question id")
    lines.append("")
    lines.append(f"{'metric':<20} {'A':>9} {'B':>9} {'B - A':>9} {'n':>5} {'p perm':>8} {'p boot':>8}")
    for row in comparison.metrics:
        lines.append(
            f"{LABELS.get(row.name, row.name):<20} {row.mean_a:>9.4f} {row.mean_b:>9.4f} {row.delta:>+9.4f} "
            f"{row.n:>5} {_p(row.p_permutation):>8} {_p(row.p_bootstrap):>8}"
        )
    label = LABELS.get(comparison.primary, comparison.primary)
    for title, changes in (("better", comparison.better), ("worse", comparison.worse)):
        lines.append("")
        lines.append(f"{len(changes)} questions {title} in B on {label}" + (":" if changes else ""))
        lines.extend(f"  {change_line(change)}" for change in changes[:listed])
        if len(changes) > listed:
            lines.append(f"  ... and {len(changes) - listed} more (--json lists them all)")
    return "\n".join(lines) + "\n"


TABLE_COLUMNS = ("metric", "A", "B", "B − A", "n", "p (permutation)", "p (bootstrap)")


def metric_table(comparison: Comparison) -> list[dict[str, str | float | int | None]]:
    """The metric rows as records for a table (columns :data:`TABLE_COLUMNS`), to 4 decimals: the web page's table."""

    def shown(value: float | None) -> float | None:
        return None if value is None else round(value, 4)

    return [
        dict(
            zip(
                TABLE_COLUMNS,
                (
                    row.name,
                    shown(row.mean_a),
                    shown(row.mean_b),
                    shown(row.delta),
                    row.n,
                    shown(row.p_permutation),
                    shown(row.p_bootstrap),
                ),
                strict=True,
            )
        )
        for row in comparison.metrics
    ]


def change_line(change: QuestionChange) -> str:
    """``+1.000  0.000 -> 1.000  [q7] What is ...``: one changed question on one line."""
    question = " ".join(change.question.split())
    return f"{change.delta:+.3f}  {change.a:.3f} -> {change.b:.3f}  [{change.id}] {question[:100]}"


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def comparison_html(comparison: Comparison, *, listed: int = 25) -> str:
    """The comparison as an HTML fragment: for the report's section and the web page."""
    rows = []
    for row in comparison.metrics:
        # Lower is better for the cost metrics; higher for the rest.
        good = row.delta < 0 if row.name not in QUALITY_METRICS else row.delta > 0
        css = "" if row.delta == 0 else ("better" if good else "worse")
        rows.append(
            [
                htmlkit.text(LABELS.get(row.name, row.name)),
                htmlkit.number(row.mean_a),
                htmlkit.number(row.mean_b),
                f'<span class="{css}">{row.delta:+.3f}</span>',
                str(row.n),
                htmlkit.p_value(row.p_permutation),
                htmlkit.p_value(row.p_bootstrap),
            ]
        )
    parts = [
        f"<p>A: <code>{htmlkit.text(comparison.run_a)}</code> ({htmlkit.text(comparison.mode_a)})<br>"
        f"B: <code>{htmlkit.text(comparison.run_b)}</code> ({htmlkit.text(comparison.mode_b)})<br>"
        f"{comparison.paired} questions paired by id; p-values: paired permutation and paired bootstrap.</p>",
    ]
    if not comparison.same_dataset:
        parts.append('<p class="worse">The runs used different datasets (content hashes differ).</p>')
    parts.append(htmlkit.table(list(TABLE_COLUMNS), rows, numeric=(1, 2, 3, 4, 5, 6)))
    label = LABELS.get(comparison.primary, comparison.primary)
    for title, changes in (("better", comparison.better), ("worse", comparison.worse)):
        parts.append(f"<h3>{len(changes)} questions {title} in B on {htmlkit.text(label)}</h3>")
        if changes:
            parts.append(
                htmlkit.table(
                    ["id", "question", "A", "B"],
                    (
                        [htmlkit.text(c.id), htmlkit.text(c.question), htmlkit.number(c.a), htmlkit.number(c.b)]
                        for c in changes[:listed]
                    ),
                    numeric=(2, 3),
                )
            )
    return "\n".join(parts)


def comparison_page(comparison: Comparison) -> str:
    """A self-contained page (``compare.html``) holding :func:`comparison_html`."""
    title = f"{Path(comparison.run_b).name} compared with {Path(comparison.run_a).name}"
    return htmlkit.page(title, f"<h1>{htmlkit.text(title)}</h1>\n{comparison_html(comparison)}")
