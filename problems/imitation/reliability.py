"""Reliability metrics for learning curves (Chan, Fishman, Canny, Korattikara & Guadarrama, ICLR
2020, "Measuring the Reliability of Reinforcement Learning Algorithms"), bootstrap confidence
intervals and a permutation test, for the GAIL stabilisation experiment.

A curve is a 1-D array of evaluations of one run (here, normalised returns at successive
environment-step counts); a set of runs is a 2-D array (runs, evaluations). Chan et al.'s metrics:

- dispersion across time (DT, ``within_run_dispersion``): IQR of the detrended curve (first
  differences r_t − r_{t−1}) in sliding windows;
- short-term risk across time (SRT, ``short_term_risk``): CVaR of the first differences, lower
  tail, reported as the expected drop (positive: the curve falls);
- long-term risk across time (LRT, ``drawdown_cvar``): CVaR of the drawdowns from the running peak,
  upper tail;
- dispersion across runs (DR, ``iqr`` of the final performances, or ``across_run_dispersion``:
  IQR across runs at each evaluation, averaged over the late evaluations);
- risk across runs (RR, ``cvar`` of the final performances, lower tail).

CVaR_α is the mean of the worst ⌈α n⌉ of n values (the reference implementation takes the values
beyond the α-quantile; the two agree when α n is a whole number). Chan et al. also low-pass
filter curves before the across-run metrics; with 25 evaluations per run, none is applied here.
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import combinations
from math import ceil, comb

import numpy as np


def iqr(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Inter-quartile range q75 − q25 (linear interpolation)."""
    q75, q25 = np.percentile(values, [75, 25], axis=axis)
    return q75 - q25


def cvar(values: np.ndarray, alpha: float, tail: str = "lower") -> float:
    """Conditional value at risk: the mean of the ⌈α n⌉ lowest (``tail="lower"``) or highest
    (``"upper"``) values."""
    ordered = np.sort(np.asarray(values, dtype=float).reshape(-1))
    if tail == "upper":
        ordered = ordered[::-1]
    elif tail != "lower":
        raise ValueError(f"tail must be 'lower' or 'upper'; got {tail!r}")
    return float(ordered[: max(1, ceil(alpha * len(ordered) - 1e-9))].mean())


def final_performance(curves: np.ndarray, last: int = 3) -> np.ndarray:
    """Each run's performance at the end of training: the mean of its last ``last`` evaluations."""
    curves = np.asarray(curves, dtype=float)
    return curves[:, -min(last, curves.shape[1]) :].mean(axis=1)


def across_run_dispersion(curves: np.ndarray, tail: float = 0.5) -> float:
    """Dispersion across runs (DR): the IQR across runs at each evaluation point, averaged over
    the last ``tail`` fraction of the points (at least one)."""
    curves = np.asarray(curves, dtype=float)
    start = min(int(np.floor(curves.shape[1] * (1 - tail))), curves.shape[1] - 1)
    return float(iqr(curves[:, start:], axis=0).mean())


def within_run_dispersion(curve: np.ndarray, window: int = 5) -> float:
    """Dispersion across time (DT): detrend by first differences (r_t − r_{t−1}), then the IQR in
    every sliding window of ``window`` differences, averaged over the windows."""
    diffs = np.diff(np.asarray(curve, dtype=float))
    if len(diffs) == 0:
        return 0.0
    window = min(window, len(diffs))
    return float(np.mean([iqr(diffs[i : i + window]) for i in range(len(diffs) - window + 1)]))


def short_term_risk(curve: np.ndarray, alpha: float = 0.05) -> float:
    """Short-term risk across time (SRT): −CVaR_α of the first differences (lower tail), i.e. the
    expected drop between successive evaluations in the worst α of them."""
    diffs = np.diff(np.asarray(curve, dtype=float))
    return -cvar(diffs, alpha, "lower") if len(diffs) else 0.0


def drawdowns(curve: np.ndarray) -> np.ndarray:
    """Drawdown at t: the drop from the running peak, max_{s≤t} r_s − r_t (≥ 0)."""
    curve = np.asarray(curve, dtype=float)
    return np.maximum.accumulate(curve) - curve


def drawdown_cvar(curve: np.ndarray, alpha: float = 0.05) -> float:
    """Long-term risk across time (LRT): CVaR_α of the drawdowns, the mean of the worst ⌈α T⌉."""
    return cvar(drawdowns(curve), alpha, "upper")


def bootstrap_ci(
    values: np.ndarray,
    statistic: Callable[[np.ndarray], float],
    level: float = 0.95,
    resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval (Efron 1979) of ``statistic`` over runs:
    ``resamples`` resamples of the runs with replacement, the (1 ± level)/2 quantiles."""
    values = np.asarray(values, dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(values), size=(resamples, len(values)))
    stats = np.array([statistic(values[i]) for i in idx])
    low, high = np.percentile(stats, [50 * (1 - level), 50 * (1 + level)])
    return float(low), float(high)


def permutation_test(
    a: np.ndarray, b: np.ndarray, permutations: int = 10_000, seed: int = 0
) -> float:
    """Two-sided p-value of mean(a) − mean(b) under random relabelling (exact when all
    relabellings number at most ``permutations``); the observed labelling counts as one."""

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    pooled, n = np.concatenate([a, b]), len(a)
    observed = abs(a.mean() - b.mean())
    total = len(pooled)

    if comb(total, n) <= permutations:
        splits = [np.array(c) for c in combinations(range(total), n)]
    else:
        rng = np.random.default_rng(seed)
        splits = [rng.permutation(total)[:n] for _ in range(permutations)]
    hits = 0
    for idx in splits:
        mask = np.zeros(total, dtype=bool)
        mask[idx] = True
        hits += abs(pooled[mask].mean() - pooled[~mask].mean()) >= observed - 1e-12
    exact = comb(total, n) <= permutations
    return float(hits / len(splits)) if exact else float((hits + 1) / (len(splits) + 1))
