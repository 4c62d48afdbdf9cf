"""The evaluation page: the runs of `rag eval`, one run's metrics and questions, two runs compared.

It reads run folders (``eval.records.read_run``) under ``eval.runs_dir``; it loads no model.
Like the chat page, every piece of data text goes through :mod:`ui.render` or ``eval.htmlkit``
escaping, or into Streamlit's own text elements.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit as st

from eval.compare import change_line, compare_runs, metric_table, render_text
from eval.records import RUN_FILE, EvalRunError, Sample, StoredRun, read_run
from eval.report import chart_svgs, headline
from ui.render import answer_html, highlight_html, markdown_literal, passage_html

HEADLINE_LABELS = {
    "ndcg@10": "nDCG@10",
    "recall@10": "recall@10",
    "hit@5": "hit@5",
    "hit@10": "hit@10",
    "em": "EM",
    "f1": "F1",
    "contains": "contains",
    "citation_recall": "citation recall",
    "citation_precision": "citation precision",
    "latency_p50_s": "latency p50 (s)",
}


def run_folders(runs_dir: Path) -> list[Path]:
    """Run folders under ``runs_dir`` (those holding a ``run.json``), newest first."""
    if not runs_dir.is_dir():
        return []
    found = [path for path in runs_dir.iterdir() if path.is_dir() and (path / RUN_FILE).is_file()]
    return sorted(found, key=lambda path: (path / RUN_FILE).stat().st_mtime, reverse=True)


@st.cache_data(max_entries=32, show_spinner=False)
def _load(path: str, stamp: float) -> StoredRun:
    """A run, read again when its samples file changes (``stamp``: its modification time)."""
    del stamp
    return read_run(Path(path))


def _read(path: Path) -> StoredRun | None:
    try:
        return _load(str(path), (path / "samples.jsonl").stat().st_mtime)
    except (EvalRunError, OSError) as exc:
        st.warning(f"{markdown_literal(path.name)}: {markdown_literal(str(exc))}")
        return None


def render_evaluation(runs_dir: Path) -> None:
    """The whole evaluation page for one script run."""
    st.title("Evaluation")
    folders = run_folders(runs_dir)
    if not folders:
        st.info(
            f"No evaluation runs in {runs_dir} yet. Run one with `rag eval DATASET` "
            "(for example `rag eval questions.jsonl`); its results appear here."
        )
        return
    runs = [run for run in (_read(path) for path in folders) if run is not None]
    st.dataframe(_overview_rows(runs), hide_index=True, use_container_width=True)
    names = [run.name for run in runs]
    by_name = {run.name: run for run in runs}
    one_run, two_runs = st.tabs(["One run", "Compare two runs"])
    with one_run:
        chosen = st.selectbox("Run", names, key="eval_run")
        if chosen:
            _run_view(by_name[chosen])
    with two_runs:
        if len(runs) < 2:
            st.info("Two runs are needed for a comparison.")
        else:
            left, right = st.columns(2)
            a = left.selectbox("Run A (before)", names, index=1, key="eval_a")
            b = right.selectbox("Run B (after)", names, index=0, key="eval_b")
            if a and b:
                _compare_view(by_name[a], by_name[b])


def _overview_rows(runs: list[StoredRun]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        dataset = run.info.get("dataset", {})
        row: dict[str, Any] = {
            "run": run.name,
            "dataset": dataset.get("name", ""),
            "mode": run.mode,
            "questions": len(run.samples),
            "finished": run.metrics is not None,
        }
        if run.metrics is not None:
            for key, value in headline(run.metrics).items():
                row[HEADLINE_LABELS.get(key, key)] = None if value is None else round(float(value), 4)
        rows.append(row)
    return rows


def _run_view(run: StoredRun) -> None:
    if run.metrics is None:
        st.warning(
            f"This run has not finished ({len(run.samples)} questions so far): continue it with "
            f"`rag eval DATASET --out {markdown_literal(str(run.path))}`."
        )
        return
    metrics = run.metrics
    counts = metrics.get("counts", {})
    st.caption(
        f"{counts.get('questions', 0)} questions, {counts.get('failed', 0)} failed, "
        f"{counts.get('abstained', 0)} abstained · mode {run.mode} · "
        f"generator {markdown_literal(str(metrics.get('models', {}).get('generator', '–')))}"
    )
    rows = [
        {
            "metric": name,
            "mean": round(values["mean"], 4),
            "95% low": round(values["ci95"][0], 4) if values.get("ci95") else None,
            "95% high": round(values["ci95"][1], 4) if values.get("ci95") else None,
            "questions": values.get("n"),
        }
        for name, values in metrics.get("metrics", {}).items()
    ]
    st.dataframe(rows, hide_index=True, use_container_width=True)
    _charts(run)
    _questions(run)


def _charts(run: StoredRun) -> None:
    assert run.metrics is not None
    charts = chart_svgs(run.metrics, run.samples)
    for column, chart in zip(st.columns(max(len(charts), 1)), charts, strict=False):
        with column:
            st.html(chart)  # our own SVG; every label in it is escaped by eval.plots


def _questions(run: StoredRun) -> None:
    st.subheader("Questions")
    search = st.text_input("Filter by words in the question", key="eval_filter")
    only = st.radio(
        "Show", ["all", "answered", "abstained", "failed", "gold not retrieved"], horizontal=True, key="eval_only"
    )
    samples = [sample for sample in run.samples if _keep(sample, search, only)]
    st.caption(f"{len(samples)} of {len(run.samples)} questions")
    if not samples:
        return
    labels = {f"{sample.id}: {sample.question[:120]}": sample for sample in samples}
    chosen = st.selectbox("Open a question", list(labels), key="eval_question")
    if chosen:
        _question_detail(labels[chosen])


def _keep(sample: Sample, search: str, only: str) -> bool:
    if search and search.lower() not in sample.question.lower():
        return False
    if only == "answered":
        return sample.abstained is False and not sample.error
    if only == "abstained":
        return bool(sample.abstained)
    if only == "failed":
        return bool(sample.error)
    if only == "gold not retrieved":
        return sample.metric("hit@10") == 0.0
    return True


def _question_detail(sample: Sample) -> None:
    st.text(sample.question)
    if sample.gold:
        st.caption("Gold: " + markdown_literal("; ".join(sample.gold)))
    if sample.error:
        st.error(markdown_literal(sample.error))
    if sample.answer is not None:
        st.markdown("**Answer**" + (" (abstained)" if sample.abstained else ""))
        st.html(answer_html(sample.answer))
    metrics = {name: value for name, value in sample.metrics.items() if value is not None}
    if metrics:
        st.dataframe([metrics], hide_index=True, use_container_width=True)
    for citation in sample.citations:
        page = f" · page {citation.page}" if citation.page is not None else ""
        title = f"[{citation.n}] {Path(citation.file).name}{page} · support {citation.support or 0:.0%}"
        with st.expander(markdown_literal(title)):
            st.html(highlight_html(citation.quote, 0, len(citation.quote)))
    with st.expander(f"Retrieved passages ({len(sample.retrieved)})"):
        for passage in sample.retrieved:
            gold_mark = " · gold" if passage.id in sample.qrels else ""
            st.caption(
                markdown_literal(f"{passage.rank}. {passage.where} · score {passage.score or 0:.4f}") + gold_mark
            )
            st.html(passage_html(passage.text))
    if sample.prompt:
        with st.expander("Prompt"):
            st.text(sample.prompt)
    if sample.raw_output is not None:
        with st.expander("Raw model output"):
            st.text(sample.raw_output)


def _compare_view(run_a: StoredRun, run_b: StoredRun) -> None:
    if run_a.path == run_b.path:
        st.info("Pick two different runs.")
        return
    try:
        comparison = compare_runs(run_a.path, run_b.path)
    except EvalRunError as exc:
        st.error(str(exc))
        return
    if not comparison.same_dataset:
        st.warning("The two runs are on different datasets (or versions of one): only shared question ids are paired.")
    st.caption(
        f"{comparison.paired} questions paired · primary metric {comparison.primary} · "
        "p-values: paired permutation test (and paired bootstrap)"
    )
    st.dataframe(metric_table(comparison), hide_index=True, use_container_width=True)
    better, worse = st.columns(2)
    for column, title, changes in ((better, "Better", comparison.better), (worse, "Worse", comparison.worse)):
        with column:
            st.markdown(f"**{title} in B** ({len(changes)})")
            for change in changes[:25]:
                st.text(change_line(change))
    with st.expander("As text (`rag eval compare`)"):
        st.text(render_text(comparison))
