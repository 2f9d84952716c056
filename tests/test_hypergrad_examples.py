"""The hypergradient examples: L2-weight tuning and KL-DRO re-weighting reach their closed forms."""

from __future__ import annotations

import math

import pytest
from helpers import load_example


@pytest.fixture(scope="module")
def l2() -> dict:
    return load_example("l2_weight_tuning").main(seed=0)


@pytest.fixture(scope="module")
def kl() -> dict:
    return load_example("kl_dro_reweighting").main(tau=1.0, seed=0)


def test_l2_tuning_hypergradients_match_the_closed_form(l2: dict) -> None:
    for row in l2["rows"]:
        exact = row["closed form"]
        assert abs(exact) > 1e-4  # a real slope at every λ shown
        assert row["danskin"] == 0.0  # L_val has no direct λ term: Danskin cannot see the slope
        for name in ("implicit-cg", "implicit-neumann"):
            assert row[name] == pytest.approx(exact, rel=1e-8, abs=1e-12), (row["lambda"], name)
        assert row["unrolled"] == pytest.approx(exact, rel=1e-6), row["lambda"]  # T = 120 steps
    signs = [math.copysign(1, row["closed form"]) for row in l2["rows"]]
    assert signs == [-1, -1, 1]  # the optimum lies between the 2nd and 3rd λ


def test_l2_tuning_reaches_the_closed_form_optimal_lambda(l2: dict) -> None:
    for method, log_lam in l2["tuned_log_lambda"].items():
        assert log_lam == pytest.approx(l2["best_log_lambda"], abs=1e-6), method


def test_kl_dro_follower_finds_softmax_weights_and_the_log_mean_exp_value(kl: dict) -> None:
    assert kl["weights_error"] < 1e-11  # max |q − softmax(ℓ/τ)|
    assert kl["value_error"] < 1e-10  # |q(θ, z) − τ log mean exp(ℓ/τ)|


def test_kl_dro_leader_gradients_agree_with_the_closed_form(kl: dict) -> None:
    assert kl["gradient_norm"] > 1.0
    for name in ("danskin", "implicit-cg", "unrolled"):
        assert kl[f"{name}_error"] < 1e-10, name


def test_kl_dro_training_reaches_the_robust_optimum_and_helps_the_minority(kl: dict) -> None:
    assert kl["theta_error"] < 1e-6  # θ vs argmin τ log mean exp(ℓ(θ)/τ)
    assert kl["KL-DRO_minority_loss"] < 0.7 * kl["ERM_minority_loss"]
    assert kl["KL-DRO_mean_loss"] > kl["ERM_mean_loss"]  # robustness costs average fit
