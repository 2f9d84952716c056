"""Reliability metrics for learning curves (Chan et al., ICLR 2020, "Measuring the Reliability of
Reinforcement Learning Algorithms") and a permutation test, for the GAIL stabilisation experiment.

A curve is a 1-D array of evaluations of one run (here, normalised returns at successive
environment-step counts); a set of runs is a 2-D array (runs, evaluations).
"""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np


def iqr(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Inter-quartile range q75 − q25 (linear interpolation)."""
    q75, q25 = np.percentile(values, [75, 25], axis=axis)
    return q75 - q25


def across_run_dispersion(curves: np.ndarray, tail: float = 0.5) -> float:
    """Dispersion across runs (DR): the IQR across runs at each evaluation point, averaged over
    the last ``tail`` fraction of the points (at least one)."""
    curves = np.asarray(curves, dtype=float)
    start = min(int(np.floor(curves.shape[1] * (1 - tail))), curves.shape[1] - 1)
    return float(iqr(curves[:, start:], axis=0).mean())


def within_run_dispersion(curve: np.ndarray, window: int = 5) -> float:
    """Dispersion within runs (DW): detrend by first differences (r_t − r_{t−1}), then the IQR in
    every sliding window of ``window`` differences, averaged over the windows."""
    diffs = np.diff(np.asarray(curve, dtype=float))
    if len(diffs) == 0:
        return 0.0
    window = min(window, len(diffs))
    return float(np.mean([iqr(diffs[i : i + window]) for i in range(len(diffs) - window + 1)]))


def drawdowns(curve: np.ndarray) -> np.ndarray:
    """Drawdown at t: the drop from the running peak, max_{s≤t} r_s − r_t (≥ 0)."""
    curve = np.asarray(curve, dtype=float)
    return np.maximum.accumulate(curve) - curve


def drawdown_cvar(curve: np.ndarray, alpha: float = 0.05) -> float:
    """Long-term risk across time: CVaR_α of the drawdowns, the mean of the worst ⌈α·T⌉ ones."""
    dd = np.sort(drawdowns(curve))[::-1]
    return float(dd[: max(1, int(np.ceil(alpha * len(dd))))].mean())


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
