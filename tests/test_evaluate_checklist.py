"""The gradient-masking checklist (Carlini et al. 2019) passes on an honest undefended model and
FAILS on a deliberately masked one (a quantising first layer, zero input gradient), which
Square, the gradient-free part of AutoAttack, breaks while PGD and FGSM cannot."""

from __future__ import annotations

import pytest
import torch
from evaluate_helpers import digits_head, train_mlp

from problems.adversarial.evaluation import checklist as cl
from problems.adversarial.evaluation.attacks import fgsm_attack, pgd_attack
from problems.adversarial.evaluation.autoattack_adapter import AutoAttackAdapter
from problems.adversarial.evaluation.evaluate import EvalOptions, evaluate_model
from problems.adversarial.evaluation.noise_and_cw import RandomNoise
from problems.adversarial.evaluation.suite import SuiteOptions

N, EPS = 24, 0.2
OPTIONS = EvalOptions(run_dir=".", steps_grid=(5, 10, 20), tolerance=0.005)


def _evaluate(model):
    x, y = digits_head(N)
    suite = SuiteOptions(eps=EPS, cifar=False)
    attacks = [
        fgsm_attack(EPS),
        pgd_attack(20, EPS, 2.5 * EPS / 20),
        RandomNoise(EPS, samples=20),
        AutoAttackAdapter(EPS, ("apgd-ce", "square"), square_queries=300),
    ]
    out, _ = evaluate_model(model, x, y, attacks, suite, 10, 1, OPTIONS)
    checks = {c["name"]: c for c in out["checklist"]}
    accs = {a["name"]: a["accuracy"] for a in out["attacks"]}
    return out, checks, accs


def _check(checks: dict, prefix: str) -> dict:
    return next(c for name, c in checks.items() if name.startswith(prefix))


@pytest.fixture(scope="module")
def masked():
    return _evaluate(train_mlp(seed=0, quantise=True))


@pytest.fixture(scope="module")
def honest():
    return _evaluate(train_mlp(seed=0))


def test_masked_model_fails_the_checklist_and_square_exposes_it(masked) -> None:
    out, checks, accs = masked
    assert out["clean_acc"] >= 0.75
    # gradient attacks see a zero gradient: PGD moves nowhere from its random start
    assert accs["pgd20"] >= out["clean_acc"] - 0.25
    # the gradient-free Square attack breaks what PGD could not
    aa = next(a for a in out["attacks"] if a["name"].startswith("autoattack"))
    assert aa["broken_by_component"]["square"] >= N // 3
    assert aa["accuracy"] <= accs["pgd20"] - 0.3
    assert _check(checks, "white-box attacks at least as strong")["passed"] is False
    assert _check(checks, "AutoAttack within")["passed"] is False
    assert out["worst_case"]["accuracy"] <= aa["accuracy"]


def test_honest_model_passes_every_check_it_can_run(honest) -> None:
    out, checks, accs = honest
    failed = [c["name"] + ": " + c["detail"] for c in checks.values() if c["passed"] is False]
    assert not failed
    assert _check(checks, "AutoAttack within")["passed"] is True
    assert accs["pgd20"] <= 0.1


def test_worst_case_is_the_per_example_minimum(honest) -> None:
    out, _, _ = honest
    flags = [torch.tensor([c == "1" for c in out["clean_correct"]])]
    flags += [torch.tensor([c == "1" for c in a["correct"]]) for a in out["attacks"]]
    expected = torch.stack(flags).all(0).float().mean().item()
    assert out["worst_case"]["accuracy"] == pytest.approx(expected)
    assert out["worst_case"]["accuracy"] <= min(a["accuracy"] for a in out["attacks"])


def test_non_increasing_flags_a_rise_beyond_the_tolerance() -> None:
    assert cl.check_non_increasing("s", [10, 20], [0.50, 0.50], n=1000).passed
    assert cl.check_non_increasing("s", [10, 20], [0.50, 0.504], n=1000).passed  # within 0.005
    assert not cl.check_non_increasing("s", [10, 20, 50], [0.50, 0.45, 0.52], n=1000).passed


def test_chance_level_and_autoattack_margin_lines() -> None:
    assert cl.check_reaches_chance(0.5, 0.08, 10, n=1000).passed
    assert not cl.check_reaches_chance(0.5, 0.4, 10, n=1000).passed
    assert cl.check_autoattack_margin(0.49, {"pgd20": 0.50}).passed
    assert not cl.check_autoattack_margin(0.20, {"pgd20": 0.50, "pgd100": 0.48}).passed
    assert cl.check_autoattack_margin(None, {"pgd20": 0.5}).passed is None


def test_black_box_only_breaks_fail_per_example() -> None:
    white = {"pgd20": torch.tensor([True, True, False, False])}
    fine = {"noise": torch.tensor([True, True, True, False])}
    bad = {"noise": torch.tensor([False, True, True, False])}  # breaks example 0, PGD did not
    assert cl.check_white_beats_black(white, fine).passed
    assert not cl.check_white_beats_black(white, bad).passed
