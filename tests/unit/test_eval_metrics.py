from __future__ import annotations

import math
import re
import string
from collections.abc import Mapping, Sequence

import numpy as np
import pytest

from eval.metrics import (
    OverlapJudge,
    abstention_scores,
    answer_sentences,
    citation_precision,
    citation_recall,
    citation_scores,
    contains_reference,
    exact_match,
    faithfulness,
    normalize_answer,
    percentile,
    retrieval_metrics,
    run_from_rankings,
    token_f1,
)
from eval.stats import bootstrap_ci, paired_bootstrap_pvalue, paired_permutation_pvalue

# ---------------------------------------------------------------------------------------------
# Retrieval (ranx's numbers), checked by hand


def _metric(name: str, ranked: Sequence[str], qrels: Mapping[str, int], k: int) -> float | None:
    """One question's ``name@k`` from :func:`retrieval_metrics`."""
    metric = f"{name}@{k}"
    return retrieval_metrics([ranked], [qrels], [metric])[0][metric]


RANKED = ["d3", "d1", "d5", "d2", "d4"]
QRELS = {"d1": 2, "d2": 1, "d9": 1, "d0": 0}  # relevant: d1 (2), d2 (1), d9 (1, never retrieved); d0 judged 0


def test_recall_by_hand() -> None:
    assert _metric("recall", RANKED, QRELS, 1) == 0.0  # d3 is not relevant
    assert _metric("recall", RANKED, QRELS, 2) == pytest.approx(1 / 3)  # d1 of {d1, d2, d9}
    assert _metric("recall", RANKED, QRELS, 5) == pytest.approx(2 / 3)  # d1, d2 of 3
    assert _metric("recall", RANKED, QRELS, 100) == pytest.approx(2 / 3)  # k past the list: still 2 of 3


def test_mrr_by_hand() -> None:
    assert _metric("mrr", RANKED, QRELS, 10) == 0.5  # first relevant (d1) at rank 2
    assert _metric("mrr", RANKED, QRELS, 1) == 0.0  # not in the top 1
    assert _metric("mrr", ["d9"], QRELS, 10) == 1.0


def test_ndcg_by_hand_graded() -> None:
    # DCG@5 = 2/log2(2+1) [d1 at rank 2] + 1/log2(4+1) [d2 at rank 4] = 1.26186 + 0.43068 = 1.69254
    # IDCG@5 = ideal gains 2, 1, 1: 2/log2(2) + 1/log2(3) + 1/log2(4) = 2 + 0.63093 + 0.5 = 3.13093
    dcg = 2 / math.log2(3) + 1 / math.log2(5)
    idcg = 2 / math.log2(2) + 1 / math.log2(3) + 1 / math.log2(4)
    assert _metric("ndcg", RANKED, QRELS, 5) == pytest.approx(dcg / idcg)
    assert _metric("ndcg", RANKED, QRELS, 5) == pytest.approx(0.54059, abs=1e-5)
    # @2: DCG = 2/log2(3) = 1.26186; IDCG@2 = 2/1 + 1/log2(3) = 2.63093 -> 0.47962
    assert _metric("ndcg", RANKED, QRELS, 2) == pytest.approx((2 / math.log2(3)) / (2 + 1 / math.log2(3)))
    assert _metric("ndcg", RANKED, QRELS, 1) == 0.0


def test_ndcg_binary_and_perfect() -> None:
    # Binary: relevant a, b; ranked b, x, a -> DCG = 1/log2(2) + 1/log2(4) = 1.5; IDCG = 1 + 1/log2(3) = 1.63093
    assert _metric("ndcg", ["b", "x", "a"], {"a": 1, "b": 1}, 10) == pytest.approx(1.5 / (1 + 1 / math.log2(3)))
    assert _metric("ndcg", ["d1", "d2", "d9"], QRELS, 10) == pytest.approx(1.0)


def test_hit_by_hand() -> None:
    assert _metric("hit", RANKED, QRELS, 1) == 0.0
    assert _metric("hit", RANKED, QRELS, 2) == 1.0


def test_repeated_ids_count_once_at_their_first_rank() -> None:
    # Two chunks of the gold page d1: the ranking of distinct ids is d1, d2.
    assert _metric("recall", ["d1", "d1", "d2"], QRELS, 2) == pytest.approx(2 / 3)
    assert _metric("mrr", ["x", "d1", "d1"], QRELS, 10) == 0.5


def test_no_relevant_id_means_not_applicable() -> None:
    for name in ("recall", "mrr", "ndcg", "hit"):
        assert _metric(name, RANKED, {"d3": 0}, 5) is None
        assert _metric(name, RANKED, {}, 5) is None
    assert _metric("recall", [], QRELS, 5) == 0.0  # nothing retrieved is a score, not "not applicable"


def test_k_must_be_positive() -> None:
    with pytest.raises(ValueError, match="k must be at least 1"):
        _metric("recall", RANKED, QRELS, 0)


def test_run_from_rankings_scores_by_rank() -> None:
    assert run_from_rankings({"q": ["a", "b", "a", "c"]}) == {"q": {"a": 1.0, "b": 0.5, "c": 1 / 3}}


def test_many_questions_in_one_call_each_get_their_own_values() -> None:
    # Twelve questions (ranx sorts query ids as strings: "10" before "2"), question i finding its
    # relevant id at rank i + 1; one with only irrelevant judgements, one with nothing retrieved.
    rankings: list[list[str]] = [[f"x{j}" for j in range(i)] + ["gold"] for i in range(12)]
    qrels: list[dict[str, int]] = [{"gold": 1} for _ in range(12)]
    rankings += [["gold"], []]
    qrels += [{"gold": 0}, {"gold": 1}]
    scores = retrieval_metrics(rankings, qrels, ["mrr@20", "hit@5"])
    assert [s["mrr@20"] for s in scores[:12]] == pytest.approx([1 / (i + 1) for i in range(12)])
    assert [s["hit@5"] for s in scores[:12]] == [1.0] * 5 + [0.0] * 7
    assert scores[12] == {"mrr@20": None, "hit@5": None}
    assert scores[13] == {"mrr@20": 0.0, "hit@5": 0.0}


def test_retrieval_metrics_single_metric_names_and_no_judgements() -> None:
    assert retrieval_metrics([["b", "a"]], [{"a": 1}], ["mrr@10"]) == [{"mrr@10": 0.5}]
    assert retrieval_metrics([["a"]], [{"a": 0}], ["ndcg@10"]) == [{"ndcg@10": None}]
    assert retrieval_metrics([], [], ["ndcg@10"]) == []
    with pytest.raises(ValueError, match="unknown retrieval metric"):
        retrieval_metrics([["a"]], [{"a": 1}], ["map@10"])
    with pytest.raises(ValueError, match="differ in length"):
        retrieval_metrics([["a"]], [], ["ndcg@10"])


# ---------------------------------------------------------------------------------------------
# Answers


def _official_normalize_answer(s: str) -> str:
    """Verbatim from SQuAD v1.1's evaluate-v1.1.py (the oracle for the tricky strings below)."""

    def remove_articles(text: str) -> str:
        return re.sub(r"\b(a|an|the)\b", " ", text)

    def white_space_fix(text: str) -> str:
        return " ".join(text.split())

    def remove_punc(text: str) -> str:
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text: str) -> str:
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


TRICKY = {
    "The  Cat!": "cat",
    "theater": "theater",  # "the" inside a word stays
    "1,000": "1000",  # punctuation inside numbers goes
    "$3.5 million": "35 million",
    "A-team": "ateam",  # the hyphen goes first, so "a" is no longer a word
    "the.cat": "thecat",
    "Don't": "dont",
    "an apple a day": "apple day",
    "THE END": "end",
    "a": "",
    "  \tMany\n  spaces ": "many spaces",
    "“Quoted” — text": "“quoted” — text",  # unicode punctuation is not in string.punctuation
    "Über café": "über café",
    "The Theatre and the Arts": "theatre and arts",
}


@pytest.mark.parametrize(("raw", "expected"), TRICKY.items())
def test_normalisation_matches_the_official_script(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected
    assert normalize_answer(raw) == _official_normalize_answer(raw)


def test_exact_match() -> None:
    assert exact_match("The cat.", ["dog", "a cat"]) == 1.0  # max over references
    assert exact_match("cats", ["cat"]) == 0.0
    assert exact_match("The", ["a"]) == 1.0  # both normalise to "": equal, as in v1.1
    assert exact_match("anything", []) is None


def test_token_f1_by_hand() -> None:
    # "the quick brown fox" -> [quick, brown, fox]; "a quick fox jumps" -> [quick, fox, jumps]
    # overlap 2: P = 2/3, R = 2/3, F1 = 2/3
    assert token_f1("the quick brown fox", ["a quick fox jumps"]) == pytest.approx(2 / 3)
    # against "brown fox": overlap 2, P = 2/3, R = 2/2 = 1, F1 = 2 * (2/3) * 1 / (5/3) = 0.8; the max wins
    assert token_f1("the quick brown fox", ["a quick fox jumps", "brown fox"]) == pytest.approx(0.8)
    # multiset overlap: [x, x, y] and [x, y, y] share one x and one y: P = R = 2/3
    assert token_f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert token_f1("The", ["a"]) == 0.0  # v1.1: no overlap gives 0, even when both are empty
    assert token_f1("cat", []) is None


def test_contains_reference() -> None:
    assert contains_reference("It cost 1,000 dollars.", ["1000"]) == 1.0
    assert contains_reference("We concatenate them.", ["cat"]) == 1.0  # a character substring, as ALCE
    assert contains_reference("a dog", ["cat", "the cow"]) == 0.0
    assert contains_reference("anything", ["the"]) == 0.0  # normalises to "": skipped
    assert contains_reference("anything", []) is None


# ---------------------------------------------------------------------------------------------
# Citations (ALCE) and faithfulness


class FakeJudge:
    """A fake support judge: a claim is a string of fact letters, supported when every letter
    appears in the concatenated passages. Counts its calls."""

    def __init__(self) -> None:
        self.calls = 0

    def supports(self, claim: str, passages: Sequence[str]) -> bool:
        self.calls += 1
        return set(claim) <= set("".join(passages))


ANSWER = [
    ("AB", ["A", "B"]),  # supported jointly; each citation needed: removing either breaks support -> 2 precise
    ("AB", ["A", "B", "AB", "C"]),  # supported; only "AB" supports alone, the rest can go -> 1 precise of 4
    ("X", ["Y"]),  # one citation that does not support -> unsupported, 0 of 1
    ("XY", ["X", "Z"]),  # several citations, not jointly supporting -> all imprecise, 0 of 2
    ("Q", []),  # no citation -> unsupported, adds nothing to precision's denominator
    ("C", ["C"]),  # one citation that supports -> 1 of 1
]


def test_alce_recall_and_precision_by_hand() -> None:
    # recall: supported sentences 1, 2, 6 of 6 -> 0.5
    # precision: precise 2 + 1 + 0 + 0 + 1 = 4 of citations 2 + 4 + 1 + 2 + 0 + 1 = 10 -> 0.4
    assert citation_recall(ANSWER, FakeJudge()) == 0.5
    assert citation_precision(ANSWER, FakeJudge()) == pytest.approx(0.4)


@pytest.mark.parametrize(
    ("sentences", "recall", "precision"),
    [
        ([("AB", ["A", "B"])], 1.0, 1.0),  # neither supports alone, but removing either breaks support
        ([("AB", ["AB", "A"])], 1.0, 0.5),  # "AB" alone supports; "A" does not and is not needed
        ([("AB", ["AB", "AB"])], 1.0, 1.0),  # each supports alone, so each counts, though redundant
        ([("XY", ["X", "Z"])], 0.0, 0.0),  # unsupported: even the relevant "X" is imprecise
        ([("Q", [])], 0.0, 0.0),  # no citation at all: precision 0, as ALCE
        ([], None, None),  # no sentence: not applicable
    ],
)
def test_alce_branches(sentences: list[tuple[str, list[str]]], recall: float | None, precision: float | None) -> None:
    scores = citation_scores(sentences, FakeJudge())
    assert (scores.recall, scores.precision) == (recall, precision)


def test_joint_check_is_made_once_per_sentence() -> None:
    judge = FakeJudge()
    citation_scores([("AB", ["A", "B"])], judge)
    # 1 joint check, then per citation: alone (no), without it (no) -> 1 + 2 * 2
    assert judge.calls == 5


PASSAGES = [
    "Welcome to the company. Full-time employees receive 28 days of paid vacation per year. Sick leave is separate.",
    "The R2 robot carries up to 150 kg.",
    "It charges in 45 minutes.",
]


def test_overlap_judge_reuses_the_verifier_and_supports_jointly() -> None:
    judge = OverlapJudge()
    assert judge.score("Employees receive 28 days of paid vacation.", [PASSAGES[0]]) == 1.0
    claim = "The robot carries 150 kg and charges in 45 minutes."
    # content words: robot, carrie(s), 150, kg, charge(s), 45, minute(s) = 7
    assert judge.score(claim, [PASSAGES[1]]) == pytest.approx(4 / 7)  # robot, carrie, 150, kg
    assert judge.score(claim, [PASSAGES[2]]) == pytest.approx(3 / 7)  # charge, 45, minute
    assert judge.score(claim, PASSAGES[1:]) == 1.0  # together
    strict = OverlapJudge(threshold=0.8)
    assert not strict.supports(claim, [PASSAGES[1]])
    assert strict.supports(claim, PASSAGES[1:])
    assert not judge.supports("It is.", PASSAGES)  # only stop words


def test_answer_sentences_pair_each_sentence_with_its_cited_texts() -> None:
    answer = "Employees get 28 days [1]. The robot carries 150 kg [2][3].\nNo citation here. Bad marker [9]."
    assert answer_sentences(answer, PASSAGES) == [
        ("Employees get 28 days.", (PASSAGES[0],)),
        ("The robot carries 150 kg.", (PASSAGES[1], PASSAGES[2])),
        ("No citation here.", ()),
        ("Bad marker.", ()),
    ]


def test_faithfulness_needs_one_passage_per_sentence() -> None:
    # "AB" is in passage "AB"; "C" in "C"; "XY" only across "X" and "Y", which does not count -> 2/3
    assert faithfulness(["AB", "C", "XY"], ["AB", "C", "X", "Y"], FakeJudge()) == pytest.approx(2 / 3)
    assert faithfulness(["AB"], [], FakeJudge()) == 0.0
    assert faithfulness([], ["AB"], FakeJudge()) is None


# ---------------------------------------------------------------------------------------------
# Abstention and latency


def test_abstention_by_hand() -> None:
    # unanswerable: 3 (rows 1, 2, 5); abstained: 3 (rows 1, 3, 5); both: 2 -> P = R = F1 = 2/3
    scores = abstention_scores([(True, True), (True, False), (False, True), (False, False), (True, True)])
    assert (scores.precision, scores.recall, scores.f1) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert (scores.abstained, scores.unanswerable, scores.abstained_on_unanswerable) == (3, 3, 2)


def test_abstention_undefined_cases() -> None:
    never_abstained = abstention_scores([(True, False), (False, False)])
    assert (never_abstained.precision, never_abstained.recall, never_abstained.f1) == (None, 0.0, None)
    nothing_unanswerable = abstention_scores([(False, True)])
    assert (nothing_unanswerable.precision, nothing_unanswerable.recall) == (0.0, None)
    assert abstention_scores([(True, False), (False, True)]).f1 == 0.0  # P = R = 0


def test_percentile_is_numpys_linear() -> None:
    assert percentile([4.0, 1.0, 3.0, 2.0], 50) == 2.5
    # p95 of 1..4: position 0.95 * 3 = 2.85 -> 3 + 0.85 * (4 - 3) = 3.85
    assert percentile([1.0, 2.0, 3.0, 4.0], 95) == pytest.approx(3.85)
    assert percentile([], 50) is None


# ---------------------------------------------------------------------------------------------
# Statistics


def test_bootstrap_ci_contains_the_mean_and_is_deterministic() -> None:
    values = list(np.random.default_rng(1).normal(0.6, 0.2, size=200))
    interval = bootstrap_ci(values)
    assert interval is not None
    low, high = interval
    assert low < float(np.mean(values)) < high
    # The normal approximation's half-width, 1.96 * sd / sqrt(n), within 20%
    assert (high - low) / 2 == pytest.approx(1.96 * np.std(values) / math.sqrt(200), rel=0.2)
    assert bootstrap_ci(values) == interval
    assert bootstrap_ci(values, seed=1) != interval
    assert bootstrap_ci([*values, None]) == interval  # None is skipped
    assert bootstrap_ci([None, None]) is None


def test_bootstrap_ci_other_statistic() -> None:
    interval = bootstrap_ci([1.0, 2.0, 3.0, 4.0, 100.0], statistic=np.median)
    assert interval is not None and interval[1] <= 100.0


def test_permutation_pvalue() -> None:
    same = [0.1, 0.5, 0.9, 1.0, 0.0] * 10
    assert paired_permutation_pvalue(same, same) == 1.0
    rng = np.random.default_rng(2)
    b = rng.uniform(0, 1, size=60)
    a = b + 0.3 + rng.normal(0, 0.1, size=60)
    p = paired_permutation_pvalue(list(a), list(b))
    assert p is not None and p < 0.001
    assert paired_permutation_pvalue(list(a), list(b)) == p  # deterministic
    # Exact for 5 questions: differences 1..5, mean 3; of the 2^5 sign flips only all-plus and
    # all-minus reach |mean| >= 3 -> p = 2/32
    assert paired_permutation_pvalue([1.0, 2.0, 3.0, 4.0, 5.0], [0.0] * 5) == pytest.approx(2 / 32)


def test_paired_bootstrap_pvalue() -> None:
    same = [0.0, 1.0, 1.0, 0.0] * 20
    assert paired_bootstrap_pvalue(same, same) == 1.0
    rng = np.random.default_rng(3)
    b = rng.uniform(0, 1, size=60)
    p = paired_bootstrap_pvalue(list(b + 0.3), list(b - rng.normal(0, 0.1, size=60)))
    assert p is not None and p < 0.001


def test_paired_tests_skip_missing_pairs_and_check_lengths() -> None:
    assert paired_permutation_pvalue([1.0, None, 2.0], [1.0, 3.0, None]) == 1.0  # one pair left: d = 0
    assert paired_bootstrap_pvalue([None], [1.0]) is None
    with pytest.raises(ValueError, match="differ in length"):
        paired_permutation_pvalue([1.0], [1.0, 2.0])


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # a shown answer, one of two sentences verified, a supported citation on a gold page, correct
        ((False, 2, 1, True, True, True, 1.0), (1.0, 0.5, 1.0, 1.0)),
        # right words, wrong page: not cited on gold, so not "correct and cited"
        ((False, 1, 0, True, False, True, 1.0), (1.0, 1.0, 0.0, 0.0)),
        # an abstention on an answerable question scores 0 on both gold metrics
        ((True, 1, 1, False, False, True, 0.0), (None, None, 0.0, 0.0)),
        # an unanswerable question has no gold metrics
        ((False, 1, 1, False, False, False, None), (0.0, 0.0, None, None)),
    ],
)
def test_grounding_scores(answer: tuple, expected: tuple) -> None:
    from eval.scoring import grounding_scores

    abstained, sentences, unverified, cited, cited_gold, with_gold, contains = answer
    scores = grounding_scores(
        abstained=abstained,
        sentences=sentences,
        unverified=unverified,
        cited=cited,
        cited_gold=cited_gold,
        answerable_with_gold=with_gold,
        contains=contains,
    )
    assert tuple(scores[k] for k in ("cited", "verified_sentences", "cites_gold", "correct_and_cited")) == expected
