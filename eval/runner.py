"""The evaluation run: a dataset through the same stages as ``rag ask``, batched, into a run folder.

:func:`run_eval` retrieves for every question in batches (``eval.retrieval_batch`` queries per
embedding call and FAISS search), builds each prompt as ``rag ask`` does, generates answers in
large batched generator calls (``eval.generation_batch`` prompts each: in-process vLLM schedules
them together with paged attention), checks citations, scores every question
(:mod:`eval.scoring`), and writes the run folder (:mod:`eval.records`, :mod:`eval.report`).

Three modes: full (retrieve, generate, cite), retrieval-only (no generator), and closed-book (the
generator answers with no passages: the prompt is built from an empty passage list, so the
gain from retrieval is the difference between two runs).

Resuming: a question's record is appended to ``samples.jsonl`` (flushed and fsynced) once it is
complete, and a run given a folder that already holds records skips their question ids. A run
killed during retrieval loses nothing that was written; one killed during generation loses the
answers of the generator call in flight (at most ``eval.generation_batch`` questions), which
the next run regenerates. A folder holding a run of another dataset, mode or settings is refused.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from eval.datasets import EvalDataset, EvalQuestion
from eval.judges import build_judge, describe_judge
from eval.kbcache import prepare_kb
from eval.metrics import SupportJudge
from eval.progress import EvalReporter, NullEvalReporter
from eval.records import (
    RUN_FILE,
    SAMPLES_FILE,
    EvalRunError,
    GoldSource,
    Mode,
    RetrievedPassage,
    Sample,
    SampleLog,
    read_json,
    write_json,
)
from eval.report import headline, utc_timestamp, write_outputs
from eval.scoring import (
    ANSWER_METRICS,
    CITATION_METRICS,
    GROUNDING_METRICS,
    RETRIEVAL_METRICS,
    Scores,
    answer_scores,
    citation_quality,
    first_relevant_rank,
    grounding_scores,
    no_scores,
    retrieval_scores,
)
from rag import __version__
from rag.citations import says_unknown
from rag.components import Components
from rag.config import AppConfig, KbLocation
from rag.embedder import Embedder
from rag.errors import QuestionTooLongError
from rag.generator import Generation, Generator
from rag.kb import open_knowledge_base
from rag.manifest import embedding_settings
from rag.pipeline import Pipeline, prompt_builder
from rag.prompt import ChatTokenizer, Prompt
from rag.records import CitationRecord, rounded
from rag.retriever import retrieve_many
from rag.types import Answer, ScoredChunk

RUN_FORMAT_VERSION = 1


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What :func:`run_eval` did and where it wrote it.

    ``questions`` are those in scope (the first ``limit``); ``evaluated`` were done by this call,
    ``resumed`` were already in the folder. ``failed`` lists ``(question id, reason)`` over the
    whole scope. ``metrics`` is the content of ``metrics.json``; ``files`` maps "samples",
    "metrics", "report", "trec", "qrels" to paths (no "trec" without retrieval).
    """

    out_dir: Path
    dataset: str
    mode: Mode
    questions: int
    evaluated: int
    resumed: int
    failed: tuple[tuple[str, str], ...]
    metrics: dict[str, Any] = field(repr=False)
    files: dict[str, Path]
    seconds: float

    def headline(self) -> dict[str, float | None]:
        """The main means (nDCG@10, hit@k, F1, citation precision/recall...) and the latency p50."""
        return headline(self.metrics)

    def as_dict(self) -> dict[str, Any]:
        """The ``rag eval --json`` object."""
        return {
            "out_dir": str(self.out_dir),
            "dataset": self.dataset,
            "mode": self.mode,
            "questions": self.questions,
            "evaluated": self.evaluated,
            "resumed": self.resumed,
            "failed": [{"id": question_id, "error": reason} for question_id, reason in self.failed],
            "headline": self.headline(),
            "files": {name: str(path) for name, path in self.files.items()},
            "seconds": round(self.seconds, 3),
        }


def default_run_dir(config: AppConfig, dataset: EvalDataset, now: datetime | None = None) -> Path:
    """``<eval.runs_dir>/<dataset name>-<UTC time>``, e.g. ``eval-runs/scifact-20260301T101500Z``."""
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%SZ")
    return config.eval.runs_dir / f"{dataset.name}-{stamp}"


def run_eval(
    dataset: EvalDataset,
    config: AppConfig,
    out_dir: Path,
    *,
    generator: Generator | None = None,
    embedder: Embedder | None = None,
    kb_dir: KbLocation | None = None,
    retrieval_only: bool = False,
    closed_book: bool = False,
    limit: int | None = None,
    judge: SupportJudge | None = None,
    tokenizer: ChatTokenizer | None = None,
    reporter: EvalReporter | None = None,
) -> RunSummary:
    """Evaluate the first ``limit`` questions of ``dataset`` (all by default) into ``out_dir``.

    The caller loads the models and owns them: ``generator`` (loaded; not needed with
    ``retrieval_only``) and ``embedder`` (loaded; not needed with ``closed_book``). ``kb_dir``
    is the knowledge base to search (the user's ``--kb``); without it, BEIR and FinanceBench
    get one built and cached (:func:`eval.kbcache.prepare_kb`; build it before loading vLLM,
    whose idle CPU engine slows embedding) and the project's own format uses
    ``config.kb_dir``. ``judge`` defaults to :func:`eval.judges.build_judge` of ``config.eval``;
    ``tokenizer`` (the generator's chat template, for prompt sizing) to the configured
    generator's own. See the module docstring for resuming. Questions that fail (a question
    too long for the context) are recorded with their error and listed in the summary.

    Raises :class:`EvalRunError` for contradictory arguments or a folder holding another run,
    and the :class:`rag.errors.RagError` of a knowledge base or model that cannot be used.
    """
    started = time.monotonic()
    if retrieval_only and closed_book:
        raise EvalRunError("choose retrieval-only or closed-book: a closed-book run retrieves nothing")
    if generator is None and not retrieval_only:
        raise EvalRunError("answering questions needs a generator (or choose retrieval-only)")
    if embedder is None and not closed_book:
        raise EvalRunError("retrieval needs an embedder (or choose closed-book)")
    if limit is not None and limit < 1:
        raise EvalRunError(f"limit must be at least 1, got {limit}")
    mode: Mode = "retrieval-only" if retrieval_only else "closed-book" if closed_book else "full"
    reporter = reporter or NullEvalReporter()
    if not closed_book:
        assert embedder is not None
        kb_dir = prepare_kb(dataset, config, embedder, kb_dir, reporter=reporter)
        config = config.model_copy(update={"kb_dir": kb_dir})
        # Fail before the run folder is made: a missing knowledge base or one built with another
        # embedding model raises here, with what to do.
        open_knowledge_base(kb_dir, config).close()
    scope = dataset.questions[:limit] if limit is not None else dataset.questions

    out_dir.mkdir(parents=True, exist_ok=True)
    info = _run_info(dataset, config, out_dir, mode, limit, embedder, generator)
    _check_same_run(out_dir, info)
    write_json(out_dir / RUN_FILE, info)

    evaluated = 0
    try:
        with SampleLog.open(out_dir / SAMPLES_FILE) as log:
            todo = [question for question in scope if question.id not in log.done]
            resumed = len(scope) - len(todo)
            if resumed:
                reporter.message(f"resuming: {resumed} of {len(scope)} questions are already in {out_dir}")
            if todo:
                stages = _Stages(config, mode, reporter, log)
                retrieved = stages.retrieve(todo, embedder) if not closed_book else [([], 0.0, {}) for _ in todo]
                if not retrieval_only:
                    assert generator is not None
                    if mode == "full" and judge is None:
                        judge = build_judge(config.eval)
                    stages.answer(todo, retrieved, generator, tokenizer, judge, embedder)
                evaluated = len(todo)
            samples = [log.done[question.id] for question in scope]
    finally:
        reporter.finish()

    metrics, files = write_outputs(
        out_dir, samples, info, n_resamples=config.eval.bootstrap_resamples, seed=config.eval.seed
    )
    failed = tuple((sample.id, sample.error) for sample in samples if sample.error)
    return RunSummary(
        out_dir, dataset.name, mode, len(scope), evaluated, resumed, failed, metrics, files, time.monotonic() - started
    )


# ---------------------------------------------------------------------------------------------
# The run's description and the resume check


def _settings(config: AppConfig, mode: Mode) -> dict[str, Any]:
    """The settings a run's records depend on: a folder resumed under other ones is refused."""
    settings: dict[str, Any] = {"retrieval_depth": config.eval.retrieval_depth}
    if mode != "closed-book":
        settings |= {
            "kb_dir": str(config.kb_dir.resolve() if isinstance(config.kb_dir, Path) else config.kb_dir),
            **embedding_settings(config.embedding),
            "chunking": config.chunking.model_dump(mode="json"),
            "retrieval": config.retrieval.model_dump(mode="json"),
        }
    if mode != "retrieval-only":
        generator = config.generator
        settings |= {
            "generator": generator.model_dump(
                mode="json", include={"model", "max_model_len", "max_answer_tokens", "temperature", "dtype"}
            ),
            "judge": config.eval.model_dump(
                mode="json", include={"judge", "judge_model", "judge_base_url", "support_threshold"}
            ),
        }
    return settings


def _run_info(
    dataset: EvalDataset,
    config: AppConfig,
    out_dir: Path,
    mode: Mode,
    limit: int | None,
    embedder: Embedder | None,
    generator: Generator | None,
) -> dict[str, Any]:
    """The content of ``run.json`` (and the head of ``metrics.json``)."""
    return {
        "format_version": RUN_FORMAT_VERSION,
        "name": out_dir.name,
        "mode": mode,
        "limit": limit,
        "started_at": utc_timestamp(),
        "project_version": __version__,
        "dataset": {
            "name": dataset.name,
            "format": dataset.format,
            "path": str(dataset.path),
            "content_hash": dataset.content_hash,
            "questions": len(dataset.questions),
        },
        "kb_dir": str(config.kb_dir) if mode != "closed-book" else None,
        "models": {
            "embedding": embedder.model_id if embedder is not None and mode != "closed-book" else None,
            "reranker": config.retrieval.reranker_model if mode != "closed-book" else None,
            "generator": generator.model_id if generator is not None and mode != "retrieval-only" else None,
            "judge": describe_judge(config.eval) if mode == "full" else None,
        },
        "settings": _settings(config, mode),
        # pydantic writes a SecretStr (ui.password) as "**********", never in clear.
        "config": config.model_dump(mode="json"),
    }


def _check_same_run(out_dir: Path, info: dict[str, Any]) -> None:
    """Refuse to add records to a folder holding a run of another dataset, mode or settings."""
    path = out_dir / RUN_FILE
    if not path.is_file():
        if (out_dir / SAMPLES_FILE).is_file():
            raise EvalRunError(f"{out_dir} holds {SAMPLES_FILE} but no {RUN_FILE}; choose another --out")
        return
    previous = read_json(path)
    differences = []
    if previous.get("mode") != info["mode"]:
        differences.append(f"mode {previous.get('mode')} (now {info['mode']})")
    if previous.get("dataset", {}).get("content_hash") != info["dataset"]["content_hash"]:
        differences.append(f"dataset {previous.get('dataset', {}).get('name')} (another content hash)")
    old, new = previous.get("settings", {}), info["settings"]
    differences += [f"{key}" for key in sorted(set(old) | set(new)) if old.get(key) != new.get(key)]
    if differences:
        raise EvalRunError(
            f"{out_dir} holds a run with other settings ({'; '.join(differences)}); "
            "give another --out to start a new run, or the same settings to resume this one"
        )
    info["started_at"] = previous.get("started_at", info["started_at"])


# ---------------------------------------------------------------------------------------------
# The stages


# A question's ranking, its share of the batch's time, and its retrieval metrics.
Retrieved = tuple[list[ScoredChunk], float, Scores]


class _Stages:
    """Retrieval and answering for one call of :func:`run_eval`, writing records as they complete."""

    def __init__(self, config: AppConfig, mode: Mode, reporter: EvalReporter, log: SampleLog) -> None:
        self.config = config
        self.mode = mode
        self.reporter = reporter
        self.log = log
        self.components = Components(config)  # what the run builds itself: retriever, citer, tokenizer

    def retrieve(self, questions: Sequence[EvalQuestion], embedder: Embedder | None) -> list[Retrieved]:
        """Rank passages for every question, ``eval.retrieval_batch`` at a time, and score each
        batch's rankings together; in retrieval-only mode each batch's records are written as it
        finishes."""
        assert embedder is not None
        depth = max(self.config.eval.retrieval_depth, self.config.retrieval.top_k)
        batch_size = self.config.eval.retrieval_batch
        results: list[Retrieved] = []
        self.reporter.stage("retrieve", len(questions))
        with open_knowledge_base(self.config.kb_dir, self.config) as kb:
            retriever = self.components.retriever(kb, embedder)
            for start in range(0, len(questions), batch_size):
                batch = questions[start : start + batch_size]
                began = time.perf_counter()
                rankings = retrieve_many(retriever, [question.question for question in batch], depth)
                share = (time.perf_counter() - began) / len(batch)
                scores = retrieval_scores(
                    [_ranked_ids(question, ranking) for question, ranking in zip(batch, rankings, strict=True)],
                    [question.qrels for question in batch],
                )
                for question, ranking, retrieval in zip(batch, rankings, scores, strict=True):
                    results.append((ranking, share, retrieval))
                    if self.mode == "retrieval-only":
                        timings = {"retrieve_s": share, "latency_s": share}
                        self.log.append(_record(question, self.mode, ranking, retrieval=retrieval, timings=timings))
                self.reporter.advance(len(batch))
        return results

    def answer(
        self,
        questions: Sequence[EvalQuestion],
        retrieved: Sequence[Retrieved],
        generator: Generator,
        tokenizer: ChatTokenizer | None,
        judge: SupportJudge | None,
        embedder: Embedder | None,
    ) -> None:
        """Build the prompts, generate in batched calls, cite and score, and write each record."""
        if tokenizer is None:
            tokenizer = self.components.chat_tokenizer()
        # The pipeline's own stages (prompt, generate, cite) over rankings already retrieved at
        # the evaluation's depth: `rag ask` and the page run the very same code.
        citer = self.components.citer(embedder)
        pipeline = Pipeline(self.config, None, prompt_builder(self.config, tokenizer), generator, citer)
        ready: list[tuple[EvalQuestion, Retrieved, Prompt, dict[str, float]]] = []
        for question, (ranking, share, retrieval) in zip(questions, retrieved, strict=True):
            began = time.perf_counter()
            try:
                prompt = pipeline.build_prompt(question.question, [] if self.mode == "closed-book" else ranking)
            except QuestionTooLongError as error:
                self.log.append(_record(question, self.mode, ranking, timings={"retrieve_s": share}, error=str(error)))
                continue
            stage_s = {"retrieve_s": share, "prompt_s": time.perf_counter() - began}
            ready.append((question, (ranking, share, retrieval), prompt, stage_s))

        self.reporter.stage("generate", len(ready))
        batch_size = self.config.eval.generation_batch
        for start in range(0, len(ready), batch_size):
            batch = ready[start : start + batch_size]
            generations, call_s = pipeline.generate([prompt for _, _, prompt, _ in batch])
            # vLLM returns a whole batch at once: a question's own latency is not observable,
            # so it is charged its share of the call (the cost per question), as `rag ask --batch`.
            timings = [{**t, "generate_s": call_s / len(batch), "generate_call_s": call_s} for _, _, _, t in batch]
            answers = pipeline.cite_many(
                [prompt for _, _, prompt, _ in batch], [g.text for g in generations], timings, generations
            )
            for (question, (ranking, _, retrieval), prompt, _), output, answer in zip(
                batch, generations, answers, strict=True
            ):
                self.log.append(self._answered(question, ranking, retrieval, prompt, answer, output, judge))
            self.reporter.advance(len(batch))

    def _answered(
        self,
        question: EvalQuestion,
        ranking: list[ScoredChunk],
        retrieval: Scores,
        prompt: Prompt,
        answer: Answer,
        output: Generation,
        judge: SupportJudge | None,
    ) -> Sample:
        # With no passages every answer counts as abstained (it has no citation to keep), so a
        # closed-book answer abstains only when it says it does not know.
        abstained = says_unknown(answer.text) if self.mode == "closed-book" else answer.abstained
        scores = answer_scores(answer.text, question.answers)
        if self.mode == "full" and not says_unknown(answer.text):
            # An "I don't know" makes no claim to check: it is scored by the abstention metrics.
            assert judge is not None
            scores |= citation_quality(answer.text, [hit.chunk.text for hit in prompt.passages], judge)
        if self.mode == "full":
            qrels = question.qrels
            gold = any(qrels.get(question.retrieved_id(c.file, c.page), 0) > 0 for c in answer.citations if c.supported)
            scores |= grounding_scores(
                abstained=abstained,
                sentences=len(answer.sentences),
                unverified=len(answer.unverified),
                cited=any(c.supported for c in answer.citations),
                cited_gold=gold,
                answerable_with_gold=not question.unanswerable and bool(qrels),
                contains=scores.get("contains"),
            )
        timings = {
            key: answer.timings[key] for key in ("retrieve_s", "prompt_s", "generate_s", "generate_call_s", "cite_s")
        }
        timings["latency_s"] = timings["retrieve_s"] + timings["prompt_s"] + timings["generate_s"] + timings["cite_s"]
        return _record(
            question,
            self.mode,
            ranking,
            retrieval=retrieval,
            prompt=prompt,
            answer=answer,
            abstained=abstained,
            output=output,
            scores=scores,
            timings=timings,
        )


def _record(
    question: EvalQuestion,
    mode: Mode,
    ranking: Sequence[ScoredChunk],
    *,
    retrieval: Scores | None = None,
    prompt: Prompt | None = None,
    answer: Answer | None = None,
    abstained: bool | None = None,
    output: Generation | None = None,
    scores: Scores | None = None,
    timings: dict[str, float],
    error: str | None = None,
) -> Sample:
    """One line of ``samples.jsonl``: the question, its gold labels, what each stage produced, every metric.

    ``retrieval`` holds the question's retrieval metrics (:func:`eval.scoring.retrieval_scores`
    of its batch); without it they are ``None``, as for a closed-book run or a failed question.
    """
    qrels = question.qrels
    ranked_ids = _ranked_ids(question, ranking)
    in_prompt = len(prompt.passages) if prompt is not None else 0
    metrics: Scores = no_scores(RETRIEVAL_METRICS + ANSWER_METRICS + CITATION_METRICS + GROUNDING_METRICS)
    metrics |= retrieval or {}
    metrics |= scores or {}
    metrics["latency_s"] = timings.get("latency_s") if error is None else None
    tokens = output.completion_tokens if output is not None else None
    metrics["completion_tokens"] = float(tokens) if tokens is not None else None
    return Sample(
        id=question.id,
        question=question.question,
        answers=list(question.answers),
        gold_sources=[GoldSource(file=source.file, page=source.page) for source in question.gold_sources],
        qrels=qrels,
        unanswerable=question.unanswerable,
        mode=mode,
        retrieved=[
            RetrievedPassage.ranked(hit, rank, doc_id, in_prompt=rank <= in_prompt)
            for rank, (hit, doc_id) in enumerate(zip(ranking, ranked_ids, strict=True), start=1)
        ],
        first_relevant_rank=first_relevant_rank(ranked_ids, qrels) if mode != "closed-book" else None,
        prompt=prompt.text if prompt is not None else None,
        prompt_tokens=prompt.token_count if prompt is not None else None,
        passages_dropped=prompt.dropped if prompt is not None else None,
        raw_output=answer.raw_output if answer is not None else None,
        answer=answer.text if answer is not None else None,
        abstained=abstained,
        unverified_sentences=len(answer.unverified) if answer is not None else None,
        citations=[CitationRecord.of(citation) for citation in (answer.citations if answer is not None else ())],
        completion_tokens=output.completion_tokens if output is not None else None,
        finish_reason=output.finish_reason if output is not None else None,
        timings=rounded(timings),
        metrics=metrics,
        error=error,
    )


def _ranked_ids(question: EvalQuestion, ranking: Sequence[ScoredChunk]) -> list[str]:
    """The ids the question's qrels judge (documents or pages) of a ranking's passages, best first."""
    return [question.retrieved_id(hit.source, hit.chunk.page) for hit in ranking]
