"""Reliability metrics of the stabilisation experiment (Chan et al. 2020) and the permutation test,
against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest

from problems.imitation.reliability import (
    across_run_dispersion,
    drawdown_cvar,
    drawdowns,
    iqr,
    permutation_test,
    within_run_dispersion,
)
from problems.imitation.stability import stability_table


def test_iqr_and_across_run_dispersion() -> None:
    assert float(iqr(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))) == pytest.approx(2.0)
    curves = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 3.0, 5.0], [0.0, 0.0, 5.0, 9.0]])
    # IQR across runs on the last half: at t=2, q75 − q25 of (1,3,5) = 4 − 2 = 2;
    # at t=3: of (1,5,9) = 7 − 3 = 4; mean 3
    assert across_run_dispersion(curves) == pytest.approx(3.0)
    assert across_run_dispersion(np.ones((4, 6))) == 0.0


def test_within_run_dispersion_ignores_trends_but_not_swings() -> None:
    assert within_run_dispersion(np.arange(10.0)) == pytest.approx(0.0)  # a steady climb
    swing = np.array([0.0, 1.0, 0.0, 1.0, 0.0, 1.0])  # differences ±1
    assert within_run_dispersion(swing, window=5) > 1.0


def test_drawdowns_and_their_cvar() -> None:
    curve = np.array([0.0, 2.0, 1.0, 3.0, -1.0, 0.0])
    np.testing.assert_allclose(drawdowns(curve), [0, 0, 1, 0, 4, 3])
    assert drawdown_cvar(curve, alpha=0.05) == pytest.approx(4.0)  # the worst one
    assert drawdown_cvar(curve, alpha=0.5) == pytest.approx((4 + 3 + 1) / 3)
    assert drawdown_cvar(np.arange(5.0)) == 0.0


def test_permutation_test_is_exact_for_small_samples() -> None:
    a, b = np.array([10.0, 11.0, 12.0]), np.array([0.0, 1.0, 2.0])
    # 20 relabellings; only the observed one and its mirror reach the observed |difference|
    assert permutation_test(a, b) == pytest.approx(2 / 20)
    assert permutation_test(a, a.copy()) == pytest.approx(1.0)


def test_stability_table_reads_the_curves() -> None:
    def rows(values):
        return [
            {
                "val_normalised_return": v,
                "val_action_error": 0.5,
                "val_disc_acc": 0.6,
                "env_steps": i,
            }
            for i, v in enumerate(values)
        ]

    histories = {
        ("adam", 0): rows([0.0, 0.2, 0.1, 0.3]),
        ("adam", 1): rows([0.0, 0.4, 0.5, 0.6]),
        ("l2l", 0): rows([0.0, 0.5, 0.5, 0.5]),
        ("l2l", 1): rows([0.0, 0.5, 0.5, 0.5]),
    }
    adam, l2l = stability_table(histories, ["adam", "l2l"], seeds=2)
    assert adam["method"] == "GAIL" and l2l["method"] == "L2L-GAIL"
    assert adam["final_normalised_return"] == pytest.approx((0.2 + 0.5) / 2)  # last-3 means
    assert l2l["final_std"] == 0.0 and l2l["within_run_dispersion"] == pytest.approx(0.25)
    assert l2l["drawdown_cvar"] == 0.0 and adam["drawdown_cvar"] == pytest.approx(0.05)
    assert adam["action_error"] == 0.5 and 0 < adam["p_value_final"] <= 1
