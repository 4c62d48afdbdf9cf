"""Confidence intervals and paired significance tests over per-question metric values.

Where each is used:

- :func:`bootstrap_ci`: the 95% interval beside every aggregate in ``metrics.json`` and the
  report (percentile bootstrap over questions).
- :func:`paired_permutation_pvalue`: the p-value ``rag eval compare`` reports by default. It
  needs no assumption on the metrics' distribution (many are 0/1 per question), is exact for
  up to ``log2(n_resamples)`` questions, and is the test Dror et al. (2018) recommend for NLP.
- :func:`paired_bootstrap_pvalue`: the alternative of Koehn (2004) and Berg-Kirkpatrick et al.
  (2012), for comparison with papers that report it.

All take ``None`` as "not applicable to this question" and skip it (for the paired tests, a
question is skipped when either run has ``None``), are vectorised with numpy, and are
deterministic for a given ``seed``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

# Resampling draws at most this many numbers at once, so memory stays bounded for large sets.
_MAX_DRAWS = 4_000_000


class Statistic(Protocol):
    """A reduction along an axis, such as ``np.mean`` or ``np.median``."""

    def __call__(self, a: NDArray[np.float64], /, *, axis: int) -> NDArray[np.float64]: ...


def _mean(a: NDArray[np.float64], /, *, axis: int) -> NDArray[np.float64]:
    return np.asarray(np.mean(a, axis=axis), dtype=np.float64)


def _present(values: Sequence[float | None]) -> NDArray[np.float64]:
    return np.asarray([value for value in values if value is not None], dtype=np.float64)


def _paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> NDArray[np.float64]:
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    return np.asarray([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None], dtype=np.float64)


def _resampled(
    values: NDArray[np.float64], statistic: Statistic, n_resamples: int, rng: np.random.Generator
) -> NDArray[np.float64]:
    """``statistic`` of ``n_resamples`` samples drawn with replacement from ``values``."""
    n = len(values)
    block = max(1, _MAX_DRAWS // n)
    results = []
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        results.append(statistic(values[rng.integers(0, n, size=(rows, n))], axis=1))
    return np.concatenate(results)


def bootstrap_ci(
    values: Sequence[float | None],
    statistic: Statistic = _mean,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of ``statistic`` (the mean by default).

    Resamples the questions with replacement ``n_resamples`` times and returns the
    ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the statistic (Efron and
    Tibshirani, 1993, ch. 13). ``None`` values are skipped; returns ``None`` when none is left.
    """
    data = _present(values)
    if not data.size:
        return None
    stats = _resampled(data, statistic, n_resamples, np.random.default_rng(seed))
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(stats, [tail, 100 - tail])
    return float(low), float(high)


def paired_bootstrap_pvalue(
    a: Sequence[float | None], b: Sequence[float | None], n_resamples: int = 10_000, seed: int = 0
) -> float | None:
    """Two-sided paired bootstrap p-value for "the mean of ``a`` equals the mean of ``b``".

    ``a[i]`` and ``b[i]`` are the same question under two runs. With ``d`` the per-question
    differences, the bootstrap distribution of ``mean(d*)`` is shifted to mean 0 (the null
    hypothesis), and the p-value is the share of resamples at least as far from 0 as the
    observed mean, counted with the +1 of Davison and Hinkley (1997) so it is never 0:
    ``(1 + #{|mean(d*) - mean(d)| >= |mean(d)|}) / (1 + n_resamples)``.
    ``None`` when no question has both values.
    """
    differences = _paired_differences(a, b)
    if not differences.size:
        return None
    observed = float(differences.mean())
    means = _resampled(differences, _mean, n_resamples, np.random.default_rng(seed))
    extreme = np.abs(means - observed) >= abs(observed) - _tolerance(observed)
    return float((1 + extreme.sum()) / (1 + n_resamples))


def paired_permutation_pvalue(
    a: Sequence[float | None], b: Sequence[float | None], n_resamples: int = 10_000, seed: int = 0
) -> float | None:
    """Two-sided paired permutation (sign-flip) p-value for "``a`` and ``b`` do not differ".

    Under the null hypothesis the two runs' values of a question are exchangeable, so each
    per-question difference is as likely to have either sign. The p-value is the share of sign
    assignments whose mean difference is at least as far from 0 as the observed one (Fisher's
    randomisation test; Dror et al., 2018). When ``2 ** n <= n_resamples`` all assignments are
    enumerated and the p-value is exact; otherwise ``n_resamples`` random ones are drawn and the
    +1 correction of Phipson and Smyth (2010) applies: ``(1 + hits) / (1 + n_resamples)``.
    Identical runs give 1.0. ``None`` when no question has both values.
    """
    differences = _paired_differences(a, b)
    n = differences.size
    if not n:
        return None
    observed = abs(float(differences.mean()))
    tolerance = _tolerance(observed)
    if 2**n <= n_resamples:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        hits = np.abs((signs * differences).mean(axis=1)) >= observed - tolerance
        return float(hits.mean())
    rng = np.random.default_rng(seed)
    block = max(1, _MAX_DRAWS // n)
    hits_count = 0
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        signs = rng.choice(np.array([1.0, -1.0]), size=(rows, n))
        hits_count += int((np.abs((signs * differences).mean(axis=1)) >= observed - tolerance).sum())
    return (1 + hits_count) / (1 + n_resamples)


def _tolerance(observed: float) -> float:
    # Sums of the same numbers in another order differ in the last bits; without a tolerance a
    # resample equal to the observed statistic could count as less extreme (as scipy does).
    return abs(observed) * 1e-12 + 1e-15
