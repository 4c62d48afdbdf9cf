"""Confidence intervals and paired significance tests over per-question metric values.

The resampling is scipy's (:func:`scipy.stats.bootstrap`, :func:`scipy.stats.permutation_test`);
this module adapts it to per-question metrics. Where each is used:

- :func:`bootstrap_ci`: the 95% interval beside every aggregate in ``metrics.json`` and the
  report (percentile bootstrap over questions).
- :func:`paired_permutation_pvalue`: the p-value ``rag eval compare`` reports by default. It
  needs no assumption on the metrics' distribution (many are 0/1 per question), is exact for
  up to ``log2(n_resamples)`` questions, and is the test Dror et al. (2018) recommend for NLP.
- :func:`paired_bootstrap_pvalue`: the alternative of Koehn (2004) and Berg-Kirkpatrick et al.
  (2012), for comparison with papers that report it.

All take ``None`` as "not applicable to this question" and skip it (for the paired tests, a
question is skipped when either run has ``None``), and are deterministic for a given ``seed``.
scipy needs two values to resample; with one, each function gives what resampling one value
gives (it always draws that value).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

# Resampling holds at most this many numbers at once (scipy's ``batch`` is this over the number
# of questions), so memory stays bounded for large sets.
_MAX_DRAWS = 4_000_000


class Statistic(Protocol):
    """A reduction along an axis, such as ``np.mean`` or ``np.median``."""

    def __call__(self, a: NDArray[np.float64], /, *, axis: int) -> NDArray[np.float64]: ...


def _mean(a: NDArray[np.float64], /, *, axis: int) -> NDArray[np.float64]:
    return np.asarray(np.mean(a, axis=axis), dtype=np.float64)


def _abs_mean(a: NDArray[np.float64], /, *, axis: int) -> NDArray[np.float64]:
    return np.abs(_mean(a, axis=axis))


def _present(values: Sequence[float | None]) -> NDArray[np.float64]:
    return np.asarray([value for value in values if value is not None], dtype=np.float64)


def _paired_differences(a: Sequence[float | None], b: Sequence[float | None]) -> NDArray[np.float64]:
    if len(a) != len(b):
        raise ValueError(f"paired values differ in length: {len(a)} and {len(b)}")
    return np.asarray([x - y for x, y in zip(a, b, strict=True) if x is not None and y is not None], dtype=np.float64)


def _batch(values: NDArray[np.float64]) -> int:
    return max(1, _MAX_DRAWS // values.size)


def _bootstrap(
    values: NDArray[np.float64], statistic: Statistic, n_resamples: int, seed: int, confidence: float = 0.95
) -> tuple[tuple[float, float], NDArray[np.float64]]:
    """The percentile interval and the bootstrap distribution of ``statistic`` over ``values``."""
    if values.size == 1:
        # scipy refuses a single value; every resample of it is that value.
        value = float(statistic(values, axis=0))
        return (value, value), np.full(n_resamples, value)
    # scipy.stats takes seconds to import: the Evaluation page imports this module at start.
    from scipy import stats

    result = stats.bootstrap(
        (values,),
        statistic,
        n_resamples=n_resamples,
        batch=_batch(values),
        vectorized=True,
        confidence_level=confidence,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    interval = result.confidence_interval
    return (float(interval.low), float(interval.high)), result.bootstrap_distribution


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
    Tibshirani, 1993, ch. 13), by :func:`scipy.stats.bootstrap` with ``method="percentile"``.
    ``None`` values are skipped; returns ``None`` when none is left.
    """
    data = _present(values)
    if not data.size:
        return None
    interval, _ = _bootstrap(data, statistic, n_resamples, seed, confidence)
    return interval


def paired_bootstrap_pvalue(
    a: Sequence[float | None], b: Sequence[float | None], n_resamples: int = 10_000, seed: int = 0
) -> float | None:
    """Two-sided paired bootstrap p-value for "the mean of ``a`` equals the mean of ``b``".

    ``a[i]`` and ``b[i]`` are the same question under two runs. With ``d`` the per-question
    differences, the bootstrap distribution of ``mean(d*)`` (:func:`scipy.stats.bootstrap`) is
    shifted to mean 0 (the null hypothesis), and the p-value is the share of resamples at least
    as far from 0 as the observed mean, counted with the +1 of Davison and Hinkley (1997) so it
    is never 0: ``(1 + #{|mean(d*) - mean(d)| >= |mean(d)|}) / (1 + n_resamples)``.
    ``None`` when no question has both values.
    """
    differences = _paired_differences(a, b)
    if not differences.size:
        return None
    observed = float(differences.mean())
    # scipy has no bootstrap test: it gives the distribution, the count is Koehn's.
    _, means = _bootstrap(differences, _mean, n_resamples, seed)
    # Sums of the same numbers in another order differ in the last bits; without a tolerance a
    # resample equal to the observed statistic could count as less extreme.
    tolerance = abs(observed) * 1e-12 + 1e-15
    extreme = np.abs(means - observed) >= abs(observed) - tolerance
    return float((1 + extreme.sum()) / (1 + n_resamples))


def paired_permutation_pvalue(
    a: Sequence[float | None], b: Sequence[float | None], n_resamples: int = 10_000, seed: int = 0
) -> float | None:
    """Two-sided paired permutation (sign-flip) p-value for "``a`` and ``b`` do not differ".

    Under the null hypothesis the two runs' values of a question are exchangeable, so each
    per-question difference is as likely to have either sign. The p-value is the share of sign
    assignments whose mean difference is at least as far from 0 as the observed one (Fisher's
    randomisation test; Dror et al., 2018): :func:`scipy.stats.permutation_test` of the
    differences' absolute mean with ``permutation_type="samples"`` (a sign flip, for one sample).
    When ``2 ** n <= n_resamples`` all assignments are enumerated and the p-value is exact;
    otherwise ``n_resamples`` random ones are drawn and the +1 correction of Phipson and Smyth
    (2010) applies: ``(1 + hits) / (1 + n_resamples)``. A resample within scipy's relative
    tolerance (``100 * machine epsilon``) of the observed value counts as a hit. Identical runs
    give 1.0. ``None`` when no question has both values.
    """
    differences = _paired_differences(a, b)
    if not differences.size:
        return None
    if differences.size == 1:
        # scipy refuses a single value; both signs of one difference are as far from 0.
        return 1.0
    from scipy import stats

    # The absolute mean with "greater" counts |mean| >= |observed|: the two-sided test above.
    # scipy's own "two-sided" doubles the smaller tail instead, which equals it only when the
    # null distribution is exactly symmetric (the exact test), not for random sign flips.
    result = stats.permutation_test(
        (differences,),
        _abs_mean,
        permutation_type="samples",
        vectorized=True,
        n_resamples=n_resamples,
        batch=_batch(differences),
        alternative="greater",
        rng=np.random.default_rng(seed),
    )
    return float(result.pvalue)
