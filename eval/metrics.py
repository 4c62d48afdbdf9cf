"""Evaluation metrics: each a small pure function of one question's record (retrieval's of many
questions at once, so that ranx computes them in one call).

Every per-question metric returns a ``float`` (1.0/0.0 for yes/no metrics, so all of them
average the same way) or ``None`` where the metric does not apply to that question (no gold
documents, no reference answers, no sentences). An aggregate is the mean over the questions
whose value is not ``None``; :mod:`eval.stats` gives its confidence interval.

- Retrieval: :func:`retrieval_metrics` (recall@k, MRR@k, nDCG@k, hit@k) over ranked lists of
  ids and qrels mappings, computed by ranx for many questions at once.
- Answers: SQuAD v1.1's :func:`normalize_answer`, :func:`exact_match`, :func:`token_f1`, and
  ALCE's :func:`contains_reference`.
- Citations (ALCE): :func:`citation_recall`, :func:`citation_precision` with a pluggable
  :class:`SupportJudge`; :class:`OverlapJudge` is the local default. :func:`faithfulness`.
- :func:`abstention_scores` and :func:`percentile` (latency).
"""

from __future__ import annotations

import re
import string
import warnings
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from rag.citations import best_support, split_sentences
from rag.grammar import parse_markers, strip_markers
from rag.words import content_words

# ---------------------------------------------------------------------------------------------
# Retrieval


def _relevant(qrels: Mapping[str, int]) -> dict[str, int]:
    return {doc_id: rel for doc_id, rel in qrels.items() if rel > 0}


def run_from_rankings(rankings: Mapping[str, Sequence[str]]) -> dict[str, dict[str, float]]:
    """A ranx/TREC run from ranked id lists: the id at rank ``r`` (1-based) scores ``1 / r``.

    Build the run from ranks rather than from the retriever's own scores: fused scores tie
    often, ranx breaks ties in no documented order, and then its metrics would score another
    order than the one the retriever returned (and the prompt got). Repeated ids keep their
    first rank.
    """
    return {
        query_id: {doc_id: 1.0 / rank for rank, doc_id in enumerate(dict.fromkeys(ranked), start=1)}
        for query_id, ranked in rankings.items()
    }


# Our metric names that ranx spells differently.
_RANX_NAMES = {"recall": "recall", "mrr": "mrr", "ndcg": "ndcg", "hit": "hit_rate"}


def _ranx_name(metric: str) -> str:
    name, at, cutoff = metric.partition("@")
    if name not in _RANX_NAMES or not at or not cutoff.isdigit():
        raise ValueError(f"unknown retrieval metric {metric!r}: expected recall@k, mrr@k, ndcg@k or hit@k")
    if int(cutoff) < 1:
        raise ValueError(f"k must be at least 1, got {int(cutoff)}")
    return f"{_RANX_NAMES[name]}@{int(cutoff)}"


def retrieval_metrics(
    rankings: Sequence[Sequence[str]], qrels: Sequence[Mapping[str, int]], metrics: Sequence[str]
) -> list[dict[str, float | None]]:
    """Each question's retrieval metrics, computed by ranx for all the questions in one call.

    ``rankings[i]`` is question ``i``'s ranked ids, best first; ``qrels[i]`` maps ids to their
    relevance, and an id is relevant when its value is above 0. The result holds one dict per
    question, keyed by the ``metrics`` given:

    - ``"recall@k"``: ``|relevant ∩ top k| / |relevant|`` (the denominator is not capped at
      ``k``; trec_eval's ``recall_k``).
    - ``"mrr@k"``: the reciprocal rank of the first relevant id in the top ``k``, 0.0 if none is
      there; its mean is MRR@k (Voorhees, TREC-8 QA track, 1999; MS MARCO reports MRR@10).
    - ``"ndcg@k"``: ``DCG@k = Σ_{i=1..k} rel_i / log2(i + 1)`` with ``rel_i`` the qrels value
      of the id at rank ``i`` (0 when unjudged; graded values as they are), over the DCG of the
      ideal ranking, the qrels' own values sorted from high to low and cut at ``k`` (Järvelin
      and Kekäläinen, 2002; trec_eval's ``ndcg_cut.k``, the formula BEIR reports), not the
      ``2^rel - 1`` gain of Burges et al.
    - ``"hit@k"``: 1.0 if any relevant id is in the top ``k``, else 0.0 (ranx's
      ``hit_rate@k``, trec_eval's ``success_k``). With page-level gold (FinanceBench's
      evidence pages) this is "the gold page is among the top k".

    A repeated id (two chunks of one gold page) counts once, at its first rank. A question
    with no relevant id gets ``None`` for every metric (it is left out of the means, as
    trec_eval leaves out queries that have no judgements); one with nothing retrieved scores
    0.0. Raises ``ValueError`` for another metric name or a ``k`` below 1.
    """
    if len(rankings) != len(qrels):
        raise ValueError(f"rankings and qrels differ in length: {len(rankings)} and {len(qrels)}")
    ranx_metrics = [_ranx_name(name) for name in metrics]
    scores: list[dict[str, float | None]] = [dict.fromkeys(metrics) for _ in rankings]
    judged = {str(i): relevant for i, judgements in enumerate(qrels) if (relevant := _relevant(judgements))}
    if not judged:
        return scores
    # ranx imports numba (seconds, and vLLM's CPU workers must not inherit it: rag/keyword.py).
    from ranx import Qrels, Run, evaluate

    ranked = {query_id: rankings[int(query_id)] for query_id in judged if rankings[int(query_id)]}
    # ranx builds no Run from rankings that are all empty; make_comparable below gives every
    # judged query missing from the run an empty ranking (which scores 0).
    run = Run(run_from_rankings(ranked)) if ranked else Run()
    with warnings.catch_warnings():
        # ranx hashes ids to unsigned 64-bit ints and numba warns on the cast; it is harmless.
        warnings.filterwarnings("ignore", message="unsafe cast from uint64 to int64")
        values = evaluate(Qrels(judged), run, ranx_metrics, return_mean=False, make_comparable=True)
    # ranx returns a bare array for a single metric and a dict of them for several.
    per_metric = values if isinstance(values, dict) else {ranx_metrics[0]: values}
    # Each array follows the run's queries (sorted by id, as Qrels sorts its own), as ranx
    # itself reads them when it saves per-query scores in the run.
    for position, query_id in enumerate(run.get_query_ids()):
        scores[int(query_id)] = {
            name: float(per_metric[ranx_name][position]) for name, ranx_name in zip(metrics, ranx_metrics, strict=True)
        }
    return scores


# ---------------------------------------------------------------------------------------------
# Answers

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1's official normalisation (``evaluate-v1.1.py``, Rajpurkar et al., 2016).

    In this order: lower-case; delete every ASCII punctuation character of
    ``string.punctuation`` (so ``"1,000"`` becomes ``"1000"`` and ``"A-team"`` ``"ateam"``, while
    unicode punctuation such as ``"—"`` or curly quotes stays); replace the whole words
    ``a``/``an``/``the`` by a space (``"theater"`` keeps its ``the``); collapse runs of
    whitespace to one space and strip the ends.
    """
    text = "".join(char for char in text.lower() if char not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, references: Sequence[str]) -> float | None:
    """1.0 if the normalised prediction equals any normalised reference, else 0.0 (SQuAD v1.1 EM).

    The maximum over references, as SQuAD's ``metric_max_over_ground_truths``. ``None`` when
    there is no reference (an unanswerable question: score it with :func:`abstention_scores`).
    """
    if not references:
        return None
    predicted = normalize_answer(prediction)
    return 1.0 if any(predicted == normalize_answer(reference) for reference in references) else 0.0


def token_f1(prediction: str, references: Sequence[str]) -> float | None:
    """Token-level F1 of the normalised prediction and reference, best over references (SQuAD v1.1).

    Tokens are the whitespace-separated words after :func:`normalize_answer`; overlap counts
    each token as often as it occurs in both (multiset intersection);
    ``F1 = 2PR / (P + R)`` with ``P = overlap / |prediction|``, ``R = overlap / |reference|``.
    As in v1.1 (unlike v2.0), no overlap gives 0.0, even when both sides normalise to nothing.
    ``None`` when there is no reference.
    """
    if not references:
        return None
    predicted = normalize_answer(prediction).split()
    return max(_f1(predicted, normalize_answer(reference).split()) for reference in references)


def _f1(predicted: list[str], reference: list[str]) -> float:
    overlap = sum((Counter(predicted) & Counter(reference)).values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(predicted), overlap / len(reference)
    return 2 * precision * recall / (precision + recall)


def contains_reference(prediction: str, references: Sequence[str]) -> float | None:
    """1.0 if any normalised reference is a substring of the normalised prediction, else 0.0.

    ALCE's ``exact_presence`` ("str-EM", Gao et al., 2023), the usual answer metric for long
    generated answers that a short reference cannot equal. It is a character substring test:
    ``"cat"`` is found in ``"concatenate"``. A reference that normalises to nothing (``"the"``)
    is skipped, since it would be found in every prediction. ``None`` when there is no reference.
    """
    if not references:
        return None
    predicted = normalize_answer(prediction)
    normalised = (normalize_answer(reference) for reference in references)
    return 1.0 if any(reference and reference in predicted for reference in normalised) else 0.0


# ---------------------------------------------------------------------------------------------
# Citations and faithfulness


class SupportJudge(Protocol):
    """Decides whether passages support a claim: the entailment check of ALCE's AutoAIS.

    ``supports(claim, passages)`` is True when the passages taken together (their
    concatenation) entail the claim. ALCE uses a T5-XXL NLI model; :class:`OverlapJudge` is a
    local word-overlap check; an NLI cross-encoder or an LLM judge fits the same Protocol.
    """

    def supports(self, claim: str, passages: Sequence[str]) -> bool: ...


@dataclass(frozen=True, slots=True)
class OverlapJudge:
    """The local support check of ``rag ask``: content-word overlap with the passages' best spans.

    For each passage, :func:`rag.citations.best_support` picks the sentence (or two adjacent
    sentences) sharing the most content words with the claim; the claim is supported when the
    share of its content words found in those spans, taken together, is at least ``threshold``.
    With one passage this is exactly the ``support`` that ``rag ask`` records on a citation; with
    several, each passage adds the words of its best span, so two passages that each hold half
    of a claim support it jointly, and adding a passage never lowers the score. A claim made
    only of stop words ("It is.") is not supported. It checks words, not meaning: a negation or a
    swapped number with the same words passes.
    """

    threshold: float = 0.5

    def score(self, claim: str, passages: Sequence[str]) -> float:
        """Share (0 to 1) of the claim's content words found in the passages' best spans."""
        claim_words = set(content_words(claim))
        if not claim_words:
            return 0.0
        found: set[str] = set()
        for passage in passages:
            start, end, _ = best_support(claim, passage)
            found |= claim_words.intersection(content_words(passage[start:end]))
        return len(found) / len(claim_words)

    def supports(self, claim: str, passages: Sequence[str]) -> bool:
        return self.score(claim, passages) >= self.threshold


def answer_sentences(answer: str, passages: Sequence[str]) -> list[tuple[str, tuple[str, ...]]]:
    """An answer's sentences, markers removed, each with the texts of the passages it cites.

    ``passages`` are the prompt's passages in order (marker ``[n]`` is ``passages[n - 1]``).
    Sentences are split and markers read as ``rag ask`` does (:mod:`rag.citations`); a marker
    number with no passage behind it is ignored, as ``rag ask`` drops it from the answer. This is
    the input :func:`citation_recall`, :func:`citation_precision` and :func:`faithfulness` take.
    """
    sentences = []
    for start, end in split_sentences(answer):
        sentence = answer[start:end]
        numbers = dict.fromkeys(n for _, _, ns in parse_markers(sentence) for n in ns if 1 <= n <= len(passages))
        # "28 days [1]." becomes "28 days." (as ALCE's remove_citations).
        claim = strip_markers(sentence)
        if claim:
            sentences.append((claim, tuple(passages[n - 1] for n in numbers)))
    return sentences


@dataclass(frozen=True, slots=True)
class CitationScores:
    """ALCE citation recall and precision of one answer (``None``: the answer has no sentence)."""

    recall: float | None
    precision: float | None


def citation_scores(sentences: Sequence[tuple[str, Sequence[str]]], judge: SupportJudge) -> CitationScores:
    """Citation recall and precision of one answer, exactly as ALCE's ``compute_autoais`` computes them.

    ``sentences`` are ``(sentence, texts of the passages it cites)``, citations removed from the
    sentence (:func:`answer_sentences` builds them). Source: Gao et al., 2023, "Enabling Large
    Language Models to Generate Text with Citations", and ``eval.py`` of princeton-nlp/ALCE.

    - A sentence is *supported* when it cites at least one passage and the judge says the cited
      passages jointly support it. **Recall** = supported sentences / all sentences (a
      sentence without citations counts, as unsupported).
    - A citation is *precise* when its sentence is supported and either the passage alone
      supports the sentence or the sentence's other citations without it do not. So a single
      citation is precise iff it supports its sentence, and every citation of an unsupported
      sentence is imprecise. **Precision** = precise citations / all citations of the answer;
      0.0 when the answer has sentences but no citation at all (as ALCE).

    Both are ``None`` for an answer with no sentence (ALCE skips it). Abstaining answers ("I
    don't know") score 0 here as in ALCE; leaving them out is the caller's choice. The mean
    over answers (a macro average, as ALCE) is the reported figure. Each joint check is made
    once per sentence and shared by both numbers, which matters when the judge is a model.
    """
    if not sentences:
        return CitationScores(None, None)
    supported = precise = citations = 0
    for sentence, cited in sentences:
        citations += len(cited)
        if not cited or not judge.supports(sentence, cited):
            continue
        supported += 1
        if len(cited) == 1:
            precise += 1
            continue
        for i, passage in enumerate(cited):
            others = [*cited[:i], *cited[i + 1 :]]
            if judge.supports(sentence, [passage]) or not judge.supports(sentence, others):
                precise += 1
    return CitationScores(supported / len(sentences), precise / citations if citations else 0.0)


def citation_recall(sentences: Sequence[tuple[str, Sequence[str]]], judge: SupportJudge) -> float | None:
    """ALCE citation recall of one answer: the share of its sentences their citations support.

    See :func:`citation_scores` for the exact definition (use it when both numbers are needed).
    """
    return citation_scores(sentences, judge).recall


def citation_precision(sentences: Sequence[tuple[str, Sequence[str]]], judge: SupportJudge) -> float | None:
    """ALCE citation precision of one answer: the share of its citations that are needed.

    See :func:`citation_scores` for the exact definition (use it when both numbers are needed).
    """
    return citation_scores(sentences, judge).precision


def faithfulness(sentences: Sequence[str], retrieved_passages: Sequence[str], judge: SupportJudge) -> float | None:
    """Share of the answer's sentences that at least one retrieved passage supports on its own.

    Unlike citation recall it ignores which passages the answer cites: it asks whether the
    answer stays within what retrieval gave the model. Each passage is judged alone rather
    than all of them concatenated: an NLI model's input holds one passage, not ten, and a
    claim stitched from words scattered over ten passages is not grounded. Pass sentences
    without markers (the first items of :func:`answer_sentences`). ``None`` when the answer
    has no sentence; 0.0 when nothing was retrieved. Abstaining answers score 0 ("I don't
    know" is in no passage): the caller decides whether to leave them out.
    """
    if not sentences:
        return None
    supported = sum(
        any(judge.supports(sentence, [passage]) for passage in retrieved_passages) for sentence in sentences
    )
    return supported / len(sentences)


# ---------------------------------------------------------------------------------------------
# Abstention and latency


@dataclass(frozen=True, slots=True)
class AbstentionScores:
    """How well the system abstains on unanswerable questions (abstaining is the positive class).

    ``precision``: share of abstentions that were on unanswerable questions (``None`` when it
    never abstained); ``recall``: share of unanswerable questions it abstained on (``None``
    when there is none); ``f1``: their harmonic mean (``None`` when either is ``None``, 0.0 when
    both are 0). The counts are kept so a report can show "3 of 4".
    """

    precision: float | None
    recall: float | None
    f1: float | None
    abstained: int
    unanswerable: int
    abstained_on_unanswerable: int


def abstention_scores(records: Iterable[tuple[bool, bool]]) -> AbstentionScores:
    """Precision, recall and F1 of abstaining, from ``(gold_unanswerable, predicted_abstained)`` pairs.

    The standard binary-classification definitions with "abstain" as the positive class, as
    used for unanswerable questions since SQuAD 2.0 (Rajpurkar et al., 2018).
    """
    pairs = list(records)
    unanswerable = sum(gold for gold, _ in pairs)
    abstained = sum(predicted for _, predicted in pairs)
    both = sum(gold and predicted for gold, predicted in pairs)
    precision = both / abstained if abstained else None
    recall = both / unanswerable if unanswerable else None
    f1 = None
    if precision is not None and recall is not None:
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return AbstentionScores(precision, recall, f1, abstained, unanswerable, both)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0 to 100) with linear interpolation between order statistics.

    numpy's default method (Hyndman and Fan's type 7, also R's default): p50 of ``[1, 2, 3, 4]``
    is 2.5. For latency p50/p95. ``None`` for no values.
    """
    if not values:
        return None
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))
