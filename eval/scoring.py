"""Every per-question metric of a run, by name, from what the pipeline produced for one question.

The names are the keys of a sample's ``metrics`` in ``samples.jsonl`` and of ``metrics.json``.
Each value is a float or ``None`` ("does not apply": no gold documents, no reference answer,
no answer sentence, closed-book); see :mod:`eval.metrics` for the definitions.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from eval.metrics import (
    SupportJudge,
    answer_sentences,
    citation_scores,
    contains_reference,
    exact_match,
    faithfulness,
    hit_at_k,
    mrr_at_k,
    ndcg_at_k,
    recall_at_k,
    token_f1,
)
from rag.citations import MARKER

Scores = dict[str, float | None]

RETRIEVAL_METRICS = ("recall@5", "recall@10", "mrr@10", "ndcg@10", "hit@5", "hit@10")
ANSWER_METRICS = ("em", "f1", "contains")
CITATION_METRICS = ("citation_recall", "citation_precision", "faithfulness")
COST_METRICS = ("latency_s", "completion_tokens")
# Metrics between 0 and 1 where higher is better: the report's bars, compare's better/worse.
QUALITY_METRICS = RETRIEVAL_METRICS + ANSWER_METRICS + CITATION_METRICS
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
    "latency_s": "Latency (s)",
    "completion_tokens": "Completion tokens",
}

_MARKER_AND_SPACE = re.compile(r"\s*" + MARKER.pattern)


def retrieval_scores(ranked: Sequence[str], qrels: Mapping[str, int]) -> Scores:
    """Recall@5/10, MRR@10, nDCG@10 and hit@5/10 of one ranking (ids best first) against ``qrels``."""
    return {
        "recall@5": recall_at_k(ranked, qrels, 5),
        "recall@10": recall_at_k(ranked, qrels, 10),
        "mrr@10": mrr_at_k(ranked, qrels, 10),
        "ndcg@10": ndcg_at_k(ranked, qrels, 10),
        "hit@5": hit_at_k(ranked, qrels, 5),
        "hit@10": hit_at_k(ranked, qrels, 10),
    }


def first_relevant_rank(ranked: Sequence[str], qrels: Mapping[str, int]) -> int | None:
    """The 1-based rank of the first relevant id, counting repeated ids once (as the metrics do);
    ``None`` when none was retrieved."""
    for rank, doc_id in enumerate(dict.fromkeys(ranked), start=1):
        if qrels.get(doc_id, 0) > 0:
            return rank
    return None


def strip_markers(text: str) -> str:
    """The answer without its ``[n]`` markers (and the space before each), whitespace collapsed."""
    return " ".join(_MARKER_AND_SPACE.sub("", text).split())


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


def no_scores(names: Sequence[str]) -> Scores:
    return dict.fromkeys(names)
