"""Attacks of ``evaluate`` against an undefended model: each breaks it at a large ε, more PGD
steps are at least as strong (same seed), every x_adv is feasible, and the AutoAttack adapter
(PyPI ``pyautoattack`` 0.2.0) runs on a small CPU model."""

from __future__ import annotations

import pytest
import torch
from evaluate_helpers import digits_head as split_head
from evaluate_helpers import train_mlp
from helpers import TinyConvAttacker

from bilevel.learned_follower import LearnedFollower
from problems.adversarial.dro import AdversarialDRO, cw_margin
from problems.adversarial.evaluation.attacks import (
    FollowerAttack,
    TransferAttack,
    fgsm_attack,
    pgd_attack,
    run_attack,
)
from problems.adversarial.evaluation.autoattack_adapter import STANDARD, AutoAttackAdapter
from problems.adversarial.evaluation.noise_and_cw import CarliniWagnerLinf, RandomNoise
from problems.adversarial.evaluation.suite import SuiteOptions, build_attack

N = 24


@pytest.fixture(scope="module")
def undefended():
    model = train_mlp(seed=0)
    x, y = split_head(N)
    assert (model(x).argmax(1) == y).float().mean() >= 0.75  # a real classifier to break
    return model, x, y


def _learned_attacker(model, eps: float) -> LearnedFollower:
    """A 2-step g_φ (a tiny conv net on [x, ∇]) trained for a few Adam steps against the model."""
    follower = LearnedFollower(TinyConvAttacker(2, 1, eps), steps=2, lr=1e-2)
    x, y = split_head(600)  # test digits 0..599 train φ; the attack is scored on the first N
    problem = AdversarialDRO(model, eps)
    follower.train()
    for i in range(20):
        idx = torch.arange(64) + (i * 64) % 512 + N
        follower.learn(problem, (x[idx], y[idx]))
    return follower.eval()


def test_cw_margin_is_positive_exactly_when_misclassified() -> None:
    logits = torch.tensor([[2.0, 1.0, 0.5], [0.0, 3.0, 1.0]])
    y = torch.tensor([0, 0])
    assert torch.allclose(cw_margin(logits, y), torch.tensor([-1.0, 3.0]))


def test_every_attack_breaks_an_undefended_model_at_large_eps(undefended) -> None:
    model, x, y = undefended
    eps = 0.3
    surrogate = train_mlp(seed=1)
    attacks = [
        fgsm_attack(eps),
        pgd_attack(20, eps, 2.5 * eps / 20),
        pgd_attack(20, eps, 2.5 * eps / 20, "cw"),
        CarliniWagnerLinf(eps, iterations=50),
        TransferAttack("transfer", pgd_attack(20, eps, 2.5 * eps / 20), surrogate, "seed 1"),
        FollowerAttack("learned", _learned_attacker(model, eps), eps),
        RandomNoise(1.0, samples=20),  # noise needs the whole box: MLPs average noise out
    ]
    for attack in attacks:
        result = run_attack(attack, model, x, y)
        limit = 0.1 if attack.white_box else 0.25
        assert result.accuracy <= limit, (attack.name, result.accuracy)
        assert result.correct.dtype == torch.bool and result.correct.shape == (N,)


def test_pgd100_at_least_as_strong_as_pgd20_with_the_same_seed(undefended) -> None:
    model, x, y = undefended
    eps, accs = 0.05, {}
    for k in (20, 100):
        torch.manual_seed(7)
        accs[k] = run_attack(pgd_attack(k, eps, 2.5 * eps / k), model, x, y).accuracy
    clean = (model(x).argmax(1) == y).float().mean().item()
    assert accs[100] <= accs[20] < clean  # ε small enough that PGD-20 does not break everything


def test_restarts_take_the_worst_case_per_example(undefended) -> None:
    model, x, y = undefended
    eps = 0.04
    torch.manual_seed(3)
    one = run_attack(pgd_attack(5, eps, 0.01, restarts=1), model, x, y)
    torch.manual_seed(3)
    four = run_attack(pgd_attack(5, eps, 0.01, restarts=4), model, x, y)
    assert not (four.correct & ~one.correct).any()  # restart 1 is the same run: never better
    # where the random start decides (one tiny step in a wide ball), restarts must break more:
    # an example survives four restarts only if it survives each of four single runs drawn in turn
    # (this pins the restarts' draws to one after another from the global generator)
    attack = {"steps": 1, "eps": 0.3, "step_size": 0.001}
    torch.manual_seed(3)
    one = run_attack(pgd_attack(**attack, restarts=1), model, x, y)
    torch.manual_seed(3)
    four = run_attack(pgd_attack(**attack, restarts=4), model, x, y)
    torch.manual_seed(3)
    singles = [run_attack(pgd_attack(**attack), model, x, y).correct for _ in range(4)]
    assert torch.equal(four.correct, torch.stack(singles).all(0))
    assert four.accuracy < one.accuracy


class _Linear2(torch.nn.Module):
    """Two classes, logit₁ − logit₀ = direction · Σ(x − 0.5) + bias."""

    def __init__(self, bias: float, direction: float = 1.0) -> None:
        super().__init__()
        self.bias, self.direction = bias, direction

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.direction * (x - 0.5).flatten(1).sum(1, keepdim=True) + self.bias
        return torch.cat([-s, s], 1)


def test_transfer_sends_what_the_surrogate_found_even_where_the_surrogate_withstood_it() -> None:
    """A robust surrogate (a wide margin) is never fooled, yet its PGD steps point the way that
    fools the target (a thin margin): the transfer row must score them, not the clean x. And, as
    every row, it scores the worst of x and x_adv: a surrogate pointing the other way "mends" the
    target's clean mistakes, which must stay mistakes."""
    eps = 0.05
    x = torch.full((8, 1, 4, 4), 0.501)  # the target's margin 0.016 < 16 pixels · ε
    ones, zeros = torch.ones(8, dtype=torch.long), torch.zeros(8, dtype=torch.long)
    target = _Linear2(0.0)  # class 1 on every x
    for surrogate, y in ((_Linear2(10.0), ones), (_Linear2(-10.0, direction=-1.0), zeros)):
        options = SuiteOptions(eps=eps, cifar=False, surrogate=surrogate, surrogate_source="s")
        result = run_attack(build_attack("transfer", options), target, x, y)
        assert result.accuracy == 0.0


def test_noise_and_transfer_are_black_box_and_pgd_is_white_box() -> None:
    assert not RandomNoise(0.1).white_box
    assert pgd_attack(5, 0.1, 0.02).white_box and fgsm_attack(0.1).white_box


def test_autoattack_adapter_runs_on_a_small_cpu_model(undefended) -> None:
    """The standard cascade's configuration, and a run of its APGD-CE and Square components.

    The full standard version (APGD-T and FAB-T with 9 target classes each) takes minutes on two
    shared CPU cores even for 8 digits, so the run here uses a sub-list of components and 500
    Square queries; ``--attacks full`` runs the standard version."""
    model, x, y = undefended
    standard = AutoAttackAdapter(0.03).params()
    assert standard["package"] == "pyautoattack==0.2.0"
    assert standard["components"] == list(STANDARD) and standard["version"] == "standard"
    assert standard["apgd_iterations"] == 100 and standard["square_queries"] == 5000
    assert standard["apgd_t_targets"] == 9 and standard["fab_t_targets"] == 9
    # a small ε leaves some digits robust to APGD-CE, so Square runs on the rest
    eps, k = 0.06, 12
    attack = AutoAttackAdapter(eps, ("apgd-ce", "square"), seed=0, square_queries=500)
    result = run_attack(attack, model, x[:k], y[:k])
    torch.manual_seed(0)
    pgd = run_attack(pgd_attack(20, eps, 2.5 * eps / 20), model, x[:k], y[:k])
    assert result.accuracy <= pgd.accuracy + 1 / k
    assert len(attack.broken_by) == k and set(attack.broken_by) <= {"", "apgd-ce", "square"}
    clean = model(x[:k]).argmax(1) == y[:k]
    # an example counts as broken exactly when a component broke it (or it was wrong already)
    broken = torch.tensor([b != "" for b in attack.broken_by])
    assert torch.equal(result.correct, clean & ~broken)
    assert (clean & ~result.correct).any()  # it did break something
