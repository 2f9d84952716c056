"""The gradient-masking checklist (Carlini et al. 2019) passes on an honest undefended model and
FAILS on a deliberately masked one (a quantising first layer, zero input gradient), which
Square, the gradient-free part of AutoAttack, breaks while PGD and FGSM cannot."""

from __future__ import annotations

import math

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


@pytest.mark.parametrize("n", [50, 100, 200, 1000])
def test_a_rise_of_exactly_the_tolerance_passes_and_one_more_example_fails(n) -> None:
    """The tolerance is one example (or 0.5 points): a rise of exactly that must pass for every
    count, though accuracies are floats (0.14 − 0.13 > 0.01 in floating point), and one example
    more must fail. The same for FGSM against the best iterative attack."""
    slack = max(round(0.005 * n), 1)  # the tolerance in examples
    for k in range(0, n - slack - 1):

        def acc(c: int) -> float:
            return torch.arange(n).lt(c).float().mean().item()  # as a float32 mean gives it

        assert cl.check_non_increasing("s", [20, 100], [acc(k), acc(k + slack)], n=n).passed
        assert not cl.check_non_increasing("s", [20, 100], [acc(k), acc(k + slack + 1)], n=n).passed
        fgsm, pgd = torch.arange(n).lt(k), torch.arange(n).lt(k + slack)
        assert cl.check_iterative_beats_fgsm({"pgd20": pgd}, fgsm).passed
        weaker = torch.arange(n).lt(k + slack + 1)  # one example more than FGSM's + tolerance
        assert not cl.check_iterative_beats_fgsm({"pgd20": weaker}, fgsm).passed


def test_chance_level_and_autoattack_margin_lines() -> None:
    assert cl.check_reaches_chance(0.5, 0.08, 10, n=1000).passed
    assert not cl.check_reaches_chance(0.5, 0.4, 10, n=1000).passed
    assert cl.check_autoattack_margin(0.49, {"pgd20": 0.50}).passed
    assert not cl.check_autoattack_margin(0.20, {"pgd20": 0.50, "pgd100": 0.48}).passed
    assert cl.check_autoattack_margin(None, {"pgd20": 0.5}).passed is None


@pytest.mark.parametrize(
    ("n", "classes"), [(50, 10), (100, 10), (150, 10), (200, 10), (300, 10), (1000, 10), (100, 4)]
)
def test_chance_plus_exactly_the_tolerance_passes_and_one_more_example_fails(n, classes) -> None:
    """At the large ε accuracy may exceed chance 1/C by the tolerance (one example or 0.5 points)
    and no more: chance + tolerance passes, one example more fails (accuracies as float32 means)."""
    # in examples: the most that fit in max(0.5 points, one example); 1.5 at n = 300 allows 1
    chance, slack = n // classes, max(math.floor(0.005 * n + 1e-9), 1)

    def acc(c: int) -> float:
        return torch.arange(n).lt(c).float().mean().item()

    assert cl.check_reaches_chance(0.5, acc(chance + slack), classes, n=n).passed
    assert not cl.check_reaches_chance(0.5, acc(chance + slack + 1), classes, n=n).passed


def test_the_autoattack_margin_is_measured_from_the_strongest_pgd() -> None:
    """The best PGD is the one with the lowest accuracy: AutoAttack at 0.45 is 0.01 under PGD-100's
    0.46 (within 0.02), though 0.05 under the weaker PGD-20's 0.50."""
    check = cl.check_autoattack_margin(0.45, {"pgd20": 0.50, "pgd100": 0.46})
    assert check.passed is True
    assert check.detail.startswith("pgd100 0.460") and "gap +0.010" in check.detail


def test_black_box_only_breaks_fail_per_example() -> None:
    white = {"pgd20": torch.tensor([True, True, False, False])}
    fine = {"noise": torch.tensor([True, True, True, False])}
    bad = {"noise": torch.tensor([False, True, True, False])}  # breaks example 0, PGD did not
    assert cl.check_white_beats_black(white, fine).passed
    assert not cl.check_white_beats_black(white, bad).passed


def test_the_autoattack_line_judges_the_strongest_autoattack_run() -> None:
    """``--attacks square,autoattack,pgd20``: a lone Square is an AutoAttack run too, and came
    first; the line must judge the full cascade (0.1, far under PGD's 0.5), not Square's 0.9."""
    from problems.adversarial.evaluation.attacks import AttackResult
    from problems.adversarial.evaluation.evaluate import _checklist

    n = 10

    def result(name: str, correct: int) -> AttackResult:
        return AttackResult(name, {}, torch.arange(n).lt(correct), 0.0, torch.zeros(0))

    square = AutoAttackAdapter(EPS, ("square",))
    square.broken_by = ["square"] * 1 + [""] * 9
    full = AutoAttackAdapter(EPS)
    full.broken_by = ["apgd-ce"] * 9 + [""]
    pgd = pgd_attack(20, EPS, EPS / 8)
    results = [result(square.name, 9), result(full.name, 1), result("pgd20", 5)]
    sweeps = {"steps": {"x": [], "acc": []}, "restarts": {"x": [], "acc": []},
              "eps": {"x": [0.5], "acc": [0.0]}, "large_eps": 0.5}  # fmt: skip
    lines = _checklist([square, full, pgd], results, sweeps, n, 10, OPTIONS)
    margin = next(c for c in lines if c.name.startswith("AutoAttack within"))
    assert margin.passed is False and "autoattack" in margin.detail


def test_a_weak_pgd_is_not_hidden_by_a_strong_cw_and_the_printed_tolerance_is_the_one_applied():
    """Iterative vs FGSM judges the weakest iterative attack (PGD-20 at 0.90 against FGSM's 0.40
    is masking, whatever CW-L∞ scores); the white/black line prints the count it allows (300
    examples at 0.5%: 1, not "2" for 1.5) and fails at 2; the AutoAttack line says what it lacks
    when AutoAttack ran but no PGD did."""
    n = 100
    fgsm, pgd20, cw = (torch.arange(n) < k for k in (40, 90, 30))
    assert cl.check_iterative_beats_fgsm({"pgd20": pgd20, "cw-linf": cw}, fgsm).passed is False
    assert cl.check_iterative_beats_fgsm({"pgd20": fgsm, "cw-linf": cw}, fgsm).passed is True
    white = {"pgd20": torch.ones(300, dtype=torch.bool)}
    two = {"noise": torch.arange(300) >= 2}  # two examples broken only by noise
    check = cl.check_white_beats_black(white, two)
    assert check.passed is False and "tolerance 1;" in check.detail
    assert cl.check_white_beats_black(white, {"noise": torch.arange(300) >= 1}).passed is True
    missing = cl.check_autoattack_margin(0.30, {}, label="autoattack")
    assert missing.passed is None and "was not run" not in missing.detail


def test_one_point_is_a_skipped_line_not_a_pass() -> None:
    """A series of one point orders nothing: the line is SKIP (None), never PASS."""
    check = cl.check_non_increasing("s", [20], [0.5], n=100)
    assert check.passed is None and check.line().startswith("[SKIP]")
    assert cl.check_non_increasing("s", [], [], n=100).passed is None


def test_the_detail_names_the_largest_rise() -> None:
    """Two rises beyond the tolerance (0.01 at n = 100): 10 → 20 by 0.05, 50 → 100 by 0.20; the
    line reports the larger, the one a reader must look at."""
    check = cl.check_non_increasing("s", [10, 20, 50, 100], [0.40, 0.45, 0.30, 0.50], n=100)
    assert check.passed is False
    assert check.detail.endswith("rises by 0.200 from 50 to 100")


def test_a_missing_side_of_white_against_black_is_skipped() -> None:
    """Without a white-box attack, or without a black-box one, there is nothing to compare."""
    flags = {"x": torch.tensor([True, False])}
    assert cl.check_white_beats_black({}, flags).passed is None
    assert cl.check_white_beats_black(flags, {}).passed is None


def test_the_fgsm_line_counts_the_examples_only_fgsm_breaks() -> None:
    """FGSM breaks examples 0 and 1; PGD-20 breaks 1 and 2, CW 1 and 3: only example 0 is broken
    by FGSM and by no iterative attack."""
    fgsm = torch.tensor([False, False, True, True, True, True])
    iterative = {
        "pgd20": torch.tensor([True, False, False, True, True, True]),
        "cw-linf": torch.tensor([True, False, True, False, True, True]),
    }
    check = cl.check_iterative_beats_fgsm(iterative, fgsm)
    assert "1 examples broken by FGSM but by no iterative attack" in check.detail


def test_autoattack_weaker_than_pgd_is_no_masking_sign() -> None:
    """The margin bounds how far AutoAttack may fall under the best PGD (PGD overrating the
    model): AutoAttack above PGD (0.60 against 0.50) is no sign of masking and passes."""
    assert cl.check_autoattack_margin(0.60, {"pgd20": 0.50}).passed is True
    assert cl.check_autoattack_margin(0.47, {"pgd20": 0.50}).passed is False


def test_one_black_box_attack_breaking_what_white_box_left_fails_the_line() -> None:
    """Noise breaks nothing beyond PGD, Square breaks two examples PGD left correct: the line is
    judged on the black-box attack that breaks the most, and fails (n = 4: no slack)."""
    white = {"pgd20": torch.tensor([True, True, True, False])}
    black = {
        "noise": torch.tensor([True, True, True, False]),
        "square": torch.tensor([False, False, True, False]),
    }
    check = cl.check_white_beats_black(white, black)
    assert check.passed is False and "noise: 0, square: 2 of 4" in check.detail
