"""Reliability metrics of the stabilisation experiment (Chan et al. 2020), the bootstrap interval,
the permutation test and the stability table, each against values computed by hand on synthetic
curves."""

from __future__ import annotations

import numpy as np
import pytest

from problems.imitation.reliability import (
    across_run_dispersion,
    bootstrap_ci,
    cvar,
    drawdown_cvar,
    drawdowns,
    final_performance,
    iqr,
    permutation_test,
    short_term_risk,
    within_run_dispersion,
)
from problems.imitation.stability import markdown, stability_table, target_checks


def test_iqr_and_dispersion_across_runs() -> None:
    assert float(iqr(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))) == pytest.approx(2.0)
    curves = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 5.0, 9.0]])
    # IQR across runs on the last half: at t=2, q75 − q25 of (1,3,5) = 4 − 2 = 2;
    # at t=3: of (1,5,9) = 7 − 3 = 4; mean 3
    assert across_run_dispersion(curves) == pytest.approx(3.0)
    assert across_run_dispersion(np.ones((4, 6))) == 0.0


def test_cvar_is_the_mean_of_the_worst_tail() -> None:
    values = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 0.0, 6.0, 7.0, 8.0, 9.0])
    assert cvar(values, 0.1) == 0.0  # the single lowest of 10
    assert cvar(values, 0.05) == 0.0  # ⌈0.5⌉ = 1 value
    assert cvar(values, 0.2) == pytest.approx(0.5)  # (0 + 1) / 2
    assert cvar(values, 0.3, "upper") == pytest.approx(8.0)  # (9 + 8 + 7) / 3
    assert cvar(values, 0.15) == pytest.approx(0.5)  # ⌈1.5⌉ = 2 values, rounded up, not down
    with pytest.raises(ValueError):
        cvar(values, 0.1, "middle")


def test_cvar_counts_the_tail_in_exact_arithmetic_not_floating_point() -> None:
    """0.28 · 25 and 0.07 · 100 are 7 exactly, though in floating point both come out as
    7.000000000000001: the tail still holds ⌈7⌉ = 7 values, the mean of 0, …, 6, not 8."""
    assert cvar(np.arange(25.0), 0.28) == pytest.approx(3.0)
    assert cvar(np.arange(100.0), 0.07) == pytest.approx(3.0)
    assert cvar(np.arange(25.0), 0.28, "upper") == pytest.approx(21.0)  # 24, …, 18


def test_dispersion_across_runs_averages_the_last_ceil_tail_t_points_and_at_least_one() -> None:
    """The last ⌈tail · T⌉ of T evaluations (the CVaR's rounding): with T = 5 and tail ½ the last
    3, and with tail 0 still the last one. IQRs across the 3 runs at t = 1, …, 4: 10, 2, 4, 1."""
    curves = np.array(
        [
            [0.0, 0.0, 1.0, 1.0, 0.0],
            [0.0, 10.0, 3.0, 5.0, 1.0],
            [0.0, 20.0, 5.0, 9.0, 2.0],
        ]
    )
    assert across_run_dispersion(curves, tail=0.5) == pytest.approx((2 + 4 + 1) / 3)
    assert across_run_dispersion(curves, tail=0.0) == pytest.approx(1.0)
    assert across_run_dispersion(curves, tail=1.0) == pytest.approx((0 + 10 + 2 + 4 + 1) / 5)


def test_final_performance_is_the_mean_of_the_last_three_evaluations() -> None:
    curves = np.array([[0.0, 1.0, 2.0, 3.0, 4.0], [4.0, 3.0, 2.0, 1.0, 0.0]])
    np.testing.assert_allclose(final_performance(curves), [3.0, 1.0])
    np.testing.assert_allclose(final_performance(curves[:, :2]), [0.5, 3.5])


def test_dispersion_across_time_ignores_trends_but_not_swings() -> None:
    assert within_run_dispersion(np.arange(10.0)) == pytest.approx(0.0)  # a steady climb
    # differences ±1: sorted (−1, −1, 1, 1, 1), q25 = −1, q75 = 1
    swing = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])
    assert within_run_dispersion(swing, window=5) == pytest.approx(2.0)
    # differences 1, 2, 3, 4 in windows of 2: each IQR is half the gap, 0.5
    assert within_run_dispersion(np.array([0.0, 1.0, 3.0, 6.0, 10.0]), window=2) == 0.5


def test_short_term_risk_is_the_expected_worst_drop() -> None:
    curve = np.array([0.0, 2.0, 1.0, 3.0, -1.0, 0.0])  # differences 2, −1, 2, −4, 1
    assert short_term_risk(curve, alpha=0.2) == pytest.approx(4.0)
    assert short_term_risk(curve, alpha=0.4) == pytest.approx(2.5)  # −(−4 − 1) / 2
    assert short_term_risk(np.arange(5.0)) == pytest.approx(-1.0)  # no drop: every step +1


def test_drawdowns_and_their_cvar() -> None:
    curve = np.array([0.0, 2.0, 1.0, 3.0, -1.0, 0.0])
    np.testing.assert_allclose(drawdowns(curve), [0, 0, 1, 0, 4, 3])
    assert drawdown_cvar(curve, alpha=0.05) == pytest.approx(4.0)  # the worst one
    assert drawdown_cvar(curve, alpha=0.5) == pytest.approx((4 + 3 + 1) / 3)
    assert drawdown_cvar(np.arange(5.0)) == 0.0


def test_bootstrap_interval() -> None:
    # resampled means of (0, 1): 0, ½, 1 with probabilities ¼, ½, ¼: the 95% interval is [0, 1]
    assert bootstrap_ci(np.array([0.0, 1.0]), np.mean) == (0.0, 1.0)
    assert bootstrap_ci(np.full(5, 0.3), np.median) == pytest.approx((0.3, 0.3))
    values = np.random.default_rng(0).normal(size=30)
    low, high = bootstrap_ci(values, np.median)
    narrow = bootstrap_ci(values, np.median, level=0.5)
    assert low < narrow[0] <= np.median(values) <= narrow[1] < high
    # the level is the interval's coverage: for the mean of 400 normal draws the percentile
    # interval is close to mean ± z·s/√n, z = 1.960 at 95% and 1.645 at 90%
    draws = np.random.default_rng(1).normal(size=400)
    se = draws.std(ddof=1) / np.sqrt(len(draws))
    for level, z in ((0.95, 1.960), (0.90, 1.645)):
        low, high = bootstrap_ci(draws, np.mean, level=level)
        assert (high - low) / (2 * se) == pytest.approx(z, rel=0.05)


def test_every_bootstrap_resample_holds_as_many_runs_as_the_sample() -> None:
    """Resamples of n runs draw n with replacement: the means of resamples of (0, 1) are 0, ½, 1
    with probabilities ¼, ½, ¼, so the 30% and 70% quantiles (level 0.4) are both ½; resamples of
    one run would give 0 and 1."""
    assert bootstrap_ci(np.arange(7.0), len, level=0.9) == (7.0, 7.0)
    assert bootstrap_ci(np.array([0.0, 1.0]), np.mean, level=0.4) == (0.5, 0.5)


def test_permutation_test_is_exact_for_small_samples() -> None:
    a, b = np.array([10.0, 11.0, 12.0]), np.array([0.0, 1.0, 2.0])
    # 20 relabellings; only the observed one and its mirror reach the observed |difference|
    assert permutation_test(a, b) == pytest.approx(2 / 20)
    assert permutation_test(a, a.copy()) == pytest.approx(1.0)
    # sampled relabellings (C(30, 15) > 100): none of the 100 reaches the observed difference of
    # two separated samples (only the observed split and its mirror do, 2 of 1.6e8), and the
    # observed labelling counts as one: p = (0 + 1) / (100 + 1)
    far, near = np.arange(15.0) + 100, np.arange(15.0)
    assert permutation_test(far, near, permutations=100) == pytest.approx(1 / 101)


def test_permutation_test_is_two_sided_and_exact_up_to_the_budget() -> None:
    """The p-value of |mean(a) − mean(b)| does not depend on which sample comes first, and 20
    relabellings with a budget of 20 are all enumerated: 2 of 20 reach the observed difference
    (the observed split and its mirror), so p = 2/20 exactly, not a sampled (hits + 1)/21."""
    a, b = np.array([10.0, 11.0, 12.0]), np.array([0.0, 1.0, 2.0])
    assert permutation_test(b, a) == pytest.approx(2 / 20)
    assert permutation_test(a, b, permutations=20) == pytest.approx(2 / 20)
    assert permutation_test(b, a, permutations=20) == pytest.approx(2 / 20)


def test_stability_table_and_target_from_synthetic_curves() -> None:
    def rows(values):
        return [
            {"val_normalised_return": v, "val_action_error": 0.5, "env_steps": i}
            for i, v in enumerate(values)
        ]

    histories = {
        ("GAIL", 0): rows([0.0, 0.2, 0.1, 0.3]),  # final 0.2, drawdown CVaR 0.1
        ("GAIL", 1): rows([0.0, 0.4, 0.5, 0.6]),  # final 0.5, no drawdown
        ("L2L", 0): rows([0.0, 0.5, 0.5, 0.5]),
        ("L2L", 1): rows([0.0, 0.5, 0.5, 0.5]),
    }
    adam, l2l = stability_table(histories, ["GAIL", "L2L"], seeds=2)
    assert adam["final_median"] == pytest.approx(0.35) and adam["final_cvar"] == pytest.approx(0.2)
    assert adam["final_iqr"] == pytest.approx(0.15)  # q75 − q25 of (0.2, 0.5)
    assert adam["drawdown_cvar"] == pytest.approx(0.05)  # median of (0.1, 0)
    assert adam["final_std"] == pytest.approx(np.std([0.2, 0.5], ddof=1))
    assert adam["action_error"] == 0.5 and "p_value_vs_first" not in adam
    assert l2l["final_iqr"] == 0.0 and l2l["drawdown_cvar"] == 0.0
    assert l2l["within_run_dispersion"] == pytest.approx(0.25)  # IQR of (0.5, 0, 0)
    assert l2l["short_term_risk"] == 0.0
    assert l2l["p_value_vs_first"] == pytest.approx(1.0)  # every split puts 0.2 on one side
    low, high = adam["final_median_ci"]
    assert 0.2 <= low <= 0.35 <= high <= 0.5
    (line,) = target_checks([adam, l2l])
    assert line.startswith("- L2L against GAIL: met")
    assert "not met" in target_checks([l2l, adam])[0]
    table = markdown({"env": "E", "steps": 4, "seeds": 2, "rows": [adam, l2l]})
    assert "| GAIL | 2 | 3 | 0.350 |" in table and "met (median yes" in table


def test_the_p_value_compares_each_follower_with_the_first() -> None:
    """Three seeds each, every final of B above every final of A: of the 20 relabellings only the
    observed one and its mirror reach the difference, so B's p-value is 2/20 (compared with
    itself, or with a copy of its own runs, it would be 1)."""

    def rows(final: float):
        return [
            {"val_normalised_return": v, "val_action_error": 0.5, "env_steps": i}
            for i, v in enumerate([0.0, final, final, final])
        ]

    histories = {("A", s): rows(0.1 * s) for s in range(3)}
    histories |= {("B", s): rows(0.9 + 0.1 * s) for s in range(3)}
    _, b = stability_table(histories, ["A", "B"], seeds=3)
    assert b["p_value_vs_first"] == pytest.approx(2 / 20)
