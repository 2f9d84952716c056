"""Attack names → attacks (``evaluation.suite``): what ``default`` and ``full`` hold in each ball
and beside what the run provides, how a list of names is read, and the PGD step counts allowed
(mutation round 8 found these unpinned)."""

from __future__ import annotations

import re

import pytest
from helpers import TinyConvAttacker
from torch import nn

from bilevel import LearnedFollower, UserError
from problems.adversarial.defaults import MAX_PGD_STEPS
from problems.adversarial.evaluation.suite import SuiteOptions, attack_names, build_attack

EPS = 0.1
# the paper's protocol (the module's docstring): APGD-CE + APGD-T, FGSM, PGD-20 and PGD-100 on
# cross-entropy and on the CW margin, CW-L∞, random noise
PAPER = ["apgd-ce-t", "fgsm", "pgd20", "pgd100", "pgd20-cw", "pgd100-cw", "cw-linf", "noise"]


def follower(norm: str = "linf") -> LearnedFollower:
    return LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=1, norm=norm)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_default_and_full_hold_the_paper_s_attacks_and_what_the_run_provides(norm: str) -> None:
    """Under L2 CW-L∞ leaves both (it has no L2 version); ``full`` has the standard AutoAttack in
    APGD's place; the run's own g_φ and a surrogate add ``learned`` and ``transfer``, another
    run's g_φ (``--attacker-from``) its own column, and none of them is there without them."""
    ball = [n for n in PAPER if norm == "linf" or n != "cw-linf"]
    bare = SuiteOptions(eps=EPS, cifar=False, norm=norm)
    assert attack_names("default", bare) == ball
    assert attack_names("full", bare) == ["autoattack", *ball[1:]]
    provided = SuiteOptions(
        eps=EPS, cifar=False, norm=norm, learned=follower(), surrogate=nn.Linear(2, 2),
        other_learned={"runs/other": follower()},
    )  # fmt: skip
    extra = ["learned", "transfer", "learned:runs/other"]
    assert attack_names("default", provided) == [*ball, *extra]
    assert attack_names("full", provided) == ["autoattack", *ball[1:], *extra]


def test_a_list_is_read_whatever_its_case_and_spacing() -> None:
    options = SuiteOptions(eps=EPS, cifar=False)
    assert attack_names(" Default ", options) == attack_names("default", options)
    assert attack_names("PGD20, FGSM ,noise", options) == ["pgd20", "fgsm", "noise"]


@pytest.mark.parametrize(("spec", "named"), [(",", "(none given)"), ("pgd20x", "pgd20x")])
def test_an_empty_list_or_a_name_that_only_starts_as_pgd_is_refused(spec: str, named: str):
    """Refused as the names are read, before any model is loaded or attacked."""
    with pytest.raises(UserError, match=rf"^Unknown attack\(s\) {re.escape(named)};"):
        attack_names(spec, SuiteOptions(eps=EPS, cifar=False))


@pytest.mark.parametrize("steps", [1, MAX_PGD_STEPS])
def test_pgd_takes_one_to_the_most_steps_and_no_more_or_fewer(steps: int) -> None:
    options = SuiteOptions(eps=EPS, cifar=False)
    for name in (f"pgd{steps}", f"pgd{steps}-cw"):
        attack = build_attack(name, options)
        assert attack.name == name and attack.params()["steps"] == steps
    outside = 0 if steps == 1 else MAX_PGD_STEPS + 1
    with pytest.raises(UserError, match=f"PGD takes 1 to {MAX_PGD_STEPS:,} steps; got {outside:,}"):
        build_attack(f"pgd{outside}", options)


@pytest.mark.parametrize("steps", [7, 20, 100])
def test_pgd_k_steps_by_its_own_k(steps: int) -> None:
    """η of PGD-k is 2.5 ε / k on the digits (and under L2), so k steps cover the ball alike for
    any k; on CIFAR L∞ it is the paper's 0.003 at ε = 0.031, scaled with ε, for every k; a
    --step-size given is every PGD's."""
    for loss in ("", "-cw"):
        digits = build_attack(f"pgd{steps}{loss}", SuiteOptions(eps=EPS, cifar=False))
        assert digits.params()["step_size"] == pytest.approx(2.5 * EPS / steps, rel=1e-12)
        cifar = build_attack(f"pgd{steps}{loss}", SuiteOptions(eps=EPS, cifar=True))
        assert cifar.params()["step_size"] == pytest.approx(0.003 * EPS / 0.031, rel=1e-12)
        given = build_attack(f"pgd{steps}{loss}", SuiteOptions(eps=EPS, cifar=True, step_size=0.01))
        assert given.params()["step_size"] == 0.01  # --step-size, whatever the data and k


def test_a_learned_attacker_from_another_ball_records_the_ball_it_trained_in() -> None:
    """eval.json says which g_φ attacked outside the ball it was trained in (its steps are
    projected onto this evaluation's), and says nothing of the kind for one of this ball."""
    options = SuiteOptions(
        eps=EPS, cifar=False, norm="l2", learned=follower("l2"), learned_source="runs/own",
        other_learned={"runs/linf": follower("linf")},
    )  # fmt: skip
    names = ("learned", "learned:runs/linf")
    own, other = (build_attack(name, options).params() for name in names)
    assert other["trained_norm"] == "linf" and other["source_run"] == "runs/linf"
    assert "trained_norm" not in own and own["source_run"] == "runs/own"
    assert own["norm"] == other["norm"] == "l2"  # both attack in this evaluation's ball
