"""Every per-question metric of a run, by name, from what the pipeline produced for one question.

The names are the keys of a sample's ``metrics`` in ``samples.jsonl`` and of ``metrics.json``.
Each value is a float or ``None`` ("does not apply": no gold documents, no reference answer,
no answer sentence, closed-book); see :mod:`eval.metrics` for the definitions.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from eval.metrics import (
    SupportJudge,
    answer_sentences,
    citation_scores,
    contains_reference,
    exact_match,
    faithfulness,
    retrieval_metrics,
    token_f1,
)
from rag.grammar import strip_markers

Scores = dict[str, float | None]

RETRIEVAL_METRICS = ("recall@5", "recall@10", "mrr@10", "ndcg@10", "hit@5", "hit@10")
ANSWER_METRICS = ("em", "f1", "contains")
CITATION_METRICS = ("citation_recall", "citation_precision", "faithfulness")
# Whether the answer's own verdicts (supported citations, verified sentences) land on gold pages.
GROUNDING_METRICS = ("cited", "verified_sentences", "cites_gold", "correct_and_cited")
COST_METRICS = ("latency_s", "completion_tokens")
# Metrics between 0 and 1 where higher is better: the report's bars, compare's better/worse.
QUALITY_METRICS = RETRIEVAL_METRICS + ANSWER_METRICS + CITATION_METRICS + GROUNDING_METRICS
ALL_METRICS = QUALITY_METRICS + COST_METRICS

LABELS = {
    "recall@5": "Recall@5",
    "recall@10": "Recall@10",
    "mrr@10": "MRR@10",
    "ndcg@10": "nDCG@10",
    "hit@5": "Hit@5",
    "hit@10": "Hit@10",
    "em": "Exact match",
    "f1": "Token F1",
    "contains": "Contains answer",
    "citation_recall": "Citation recall",
    "citation_precision": "Citation precision",
    "faithfulness": "Faithfulness",
    "cited": "Answered with a supported citation",
    "verified_sentences": "Verified sentences",
    "cites_gold": "Cites a gold page",
    "correct_and_cited": "Correct and cites gold",
    "latency_s": "Latency (s)",
    "completion_tokens": "Completion tokens",
}


def retrieval_scores(rankings: Sequence[Sequence[str]], qrels: Sequence[Mapping[str, int]]) -> list[Scores]:
    """Recall@5/10, MRR@10, nDCG@10 and hit@5/10 of each ranking (ids best first) against its
    qrels, ``rankings[i]`` with ``qrels[i]``: ranx scores them all in one call."""
    return retrieval_metrics(rankings, qrels, RETRIEVAL_METRICS)


def first_relevant_rank(ranked: Sequence[str], qrels: Mapping[str, int]) -> int | None:
    """The 1-based rank of the first relevant id, counting repeated ids once (as the metrics do);
    ``None`` when none was retrieved."""
    for rank, doc_id in enumerate(dict.fromkeys(ranked), start=1):
        if qrels.get(doc_id, 0) > 0:
            return rank
    return None


def answer_scores(answer: str, references: Sequence[str]) -> Scores:
    """Exact match, token F1 and "contains a reference" of the answer, markers removed."""
    plain = strip_markers(answer)
    return {
        "em": exact_match(plain, references),
        "f1": token_f1(plain, references),
        "contains": contains_reference(plain, references),
    }


def citation_quality(answer: str, passages: Sequence[str], judge: SupportJudge) -> Scores:
    """ALCE citation recall and precision, and faithfulness, of an answer over its prompt's passages.

    ``passages`` are the prompt's passage texts in order (marker ``[n]`` cites ``passages[n-1]``).
    """
    sentences = answer_sentences(answer, passages)
    cited = citation_scores(sentences, judge)
    return {
        "citation_recall": cited.recall,
        "citation_precision": cited.precision,
        "faithfulness": faithfulness([claim for claim, _ in sentences], passages, judge),
    }


def grounding_scores(
    *,
    abstained: bool,
    sentences: int,
    unverified: int,
    cited: bool,
    cited_gold: bool,
    answerable_with_gold: bool,
    contains: float | None,
) -> Scores:
    """The answer's own verdicts against the gold labels; no judge involved.

    - ``cited``: 1 when an answer that does not abstain carries a supported citation (``None``
      for an abstention): its mean is the share of shown answers that are backed.
    - ``verified_sentences``: share of the answer's sentences with a supported citation
      (``None`` for an abstention or an answer with no sentence).
    - ``cites_gold``: for an answerable question with gold sources, 1 when a supported citation
      is on a gold page (an abstention scores 0); else ``None``.
    - ``correct_and_cited``: for such a question with a reference answer, 1 when the answer
      contains a reference and cites a gold page; else ``None``.
    """
    shown = not abstained
    return {
        "cited": (1.0 if cited else 0.0) if shown else None,
        "verified_sentences": (sentences - unverified) / sentences if shown and sentences else None,
        "cites_gold": (1.0 if shown and cited_gold else 0.0) if answerable_with_gold else None,
        "correct_and_cited": (
            (1.0 if shown and cited_gold and contains == 1.0 else 0.0)
            if answerable_with_gold and contains is not None
            else None
        ),
    }


def no_scores(names: Sequence[str]) -> Scores:
    return dict.fromkeys(names)
