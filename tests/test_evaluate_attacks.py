"""Attacks of ``evaluate`` against an undefended model: each breaks it at a large ε, more PGD
steps are at least as strong (same seed), every x_adv is feasible, and the AutoAttack adapter
(PyPI ``pyautoattack`` 0.2.0) runs on a small CPU model."""

from __future__ import annotations

import pytest
import torch
from evaluate_helpers import digits_head as split_head
from evaluate_helpers import train_mlp
from helpers import TinyConvAttacker
from torch import nn

from bilevel.learned_follower import LearnedFollower
from problems.adversarial.dro import AdversarialDRO, cw_margin
from problems.adversarial.evaluation.attacks import (
    Attack,
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


class _RunnerUpAgainstTheGradient(torch.nn.Module):
    """Logits of a one-pixel image v = x − 0.5: the true class 0 at 0, eight classes at 3v and a
    runner-up, class 9, at 1 − 3v. Cross-entropy rises with v (eight classes gain), the CW
    margin Z_0 − max_j Z_j falls with −v (the runner-up gains): the two losses step apart."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, :1] - 0.5
        return torch.cat([torch.zeros_like(v), (3 * v).expand(-1, 8), 1 - 3 * v], 1)


def test_pgd_cw_climbs_the_margin_and_pgd_ce_the_cross_entropy() -> None:
    x, y, eps = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0]), 0.1
    model = _RunnerUpAgainstTheGradient()
    ce = pgd_attack(1, eps, 3 * eps, "ce")(model, x, y) - x
    cw = pgd_attack(1, eps, 3 * eps, "cw")(model, x, y) - x
    assert ce.item() == pytest.approx(eps) and cw.item() == pytest.approx(-eps)


def test_max_perturbation_is_the_largest_over_every_batch() -> None:
    """Batch 1 moves its digits by 0.2, batch 2 by 0.05: the run's largest is 0.2, not the last
    batch's."""

    class _Shift(Attack):
        name, eps = "shift", 0.2

        def perturb(self, model, x, y):
            return x + (0.2 if x[0, 0, 0, 0] == 0.3 else 0.05)

    x = torch.tensor([0.3, 0.3, 0.4, 0.4]).view(4, 1, 1, 1).expand(4, 1, 2, 2).clone()
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 2))
    result = run_attack(_Shift(), model, x, torch.zeros(4, dtype=torch.long), batch_size=2)
    assert result.max_perturbation["linf"] == pytest.approx(0.2)


def test_an_attack_outside_the_box_is_a_bug_even_inside_the_ball() -> None:
    class _PastOne(Attack):
        name, eps = "past-one", 0.1

        def perturb(self, model, x, y):
            return x + 0.05  # within ε of x = 1, but above 1

    with pytest.raises(RuntimeError, match="box"):
        _PastOne()(torch.nn.Flatten(), torch.ones(2, 1, 2, 2), torch.zeros(2, dtype=torch.long))


def test_the_autoattack_adapter_keeps_its_settings_and_its_kind() -> None:
    assert AutoAttackAdapter(0.1, ("square",), square_queries=300).params()["square_queries"] == 300
    assert AutoAttackAdapter(0.1, ("apgd-ce", "square")).white_box  # any gradient component
    assert not AutoAttackAdapter(0.1, ("square",)).white_box


def test_the_cascade_credits_each_break_to_the_first_attack_that_made_it() -> None:
    """What APGD-CE breaks alone it breaks first in the cascade, and Square sees only the rest:
    the shattered-gradients reading counts what Square adds beyond APGD."""
    model, (x, y) = train_mlp(seed=0), split_head(12)
    alone = AutoAttackAdapter(0.06, ("apgd-ce",), seed=0)
    run_attack(alone, model, x, y)
    cascade = AutoAttackAdapter(0.06, ("apgd-ce", "square"), seed=0, square_queries=500)
    run_attack(cascade, model, x, y)
    assert "apgd-ce" in alone.broken_by
    pairs = zip(alone.broken_by, cascade.broken_by, strict=True)
    assert all(c == "apgd-ce" for a, c in pairs if a == "apgd-ce")


def test_cw_linf_keeps_the_first_break_not_the_last_iterate() -> None:
    """Class 1 wins only for x in (0.55, 0.65): Adam's momentum carries the iterate through the
    band and out, so the last iterate is unbroken; the attack keeps the point that broke."""

    class _Band(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            v = x.flatten(1)[:, :1]
            return torch.cat([torch.zeros_like(v), 1 - 20 * (v - 0.6).abs()], 1)

    x, y = torch.full((1, 1, 1, 1), 0.5), torch.tensor([0])
    x_adv = CarliniWagnerLinf(0.3, iterations=12, lr=0.1)(_Band(), x, y)
    assert _Band()(x_adv).argmax(1).item() == 1


def test_a_learned_attacker_attacks_at_the_evaluations_eps_as_the_warm_up_trains_it(
    undefended,
) -> None:
    """g_φ trained at ε = 0.1 and evaluated at ε = 0.2 takes the steps it would take with its
    bound set to 0.2 (what the training ε warm-up does), not steps of the trained ε projected
    into the larger ball; its trained bound is given back afterwards."""
    model, x, y = undefended
    follower = _learned_attacker(model, 0.1)
    torch.manual_seed(0)
    at_trained = FollowerAttack("learned", follower, 0.2).perturb(model, x, y)
    assert follower.net.eps == 0.1
    follower.net.eps = 0.2
    torch.manual_seed(0)
    rescaled = FollowerAttack("learned", follower, 0.2).perturb(model, x, y)
    assert torch.equal(at_trained, rescaled)
    assert (at_trained - x).abs().max() > 0.1 + 1e-3  # beyond the trained bound's reach


def test_a_learned_attacker_of_another_ball_keeps_its_own_bound(undefended) -> None:
    """An L∞ g_φ evaluated in an L2 ball (--attacker-from another run's) keeps its trained ε: the
    L2 radius is not a per-pixel bound; its answer is projected onto the L2 ball."""
    model, x, y = undefended
    follower = _learned_attacker(model, 0.1)
    seen = []
    follower.net.register_forward_hook(lambda net, args, out: seen.append(net.eps))
    x_adv = FollowerAttack("learned", follower, 2.0, norm="l2").perturb(model, x, y)
    assert seen and set(seen) == {0.1}
    assert ((x_adv - x).flatten(1).norm(dim=1) <= 2.0 + 1e-5).all()


def test_cw_linf_scores_the_point_its_last_step_reaches_and_runs_under_no_grad() -> None:
    """Class 0 iff Σx > 1.9, x at the box's centre (Σx = 2): one Adam step of 0.1 in tanh-space
    moves every pixel down, to Σx ≈ 1.8, which breaks it; that point was never scored, so one
    iteration scored only the start. The attack also runs inside torch.no_grad(), as PGD does."""
    model = nn.Linear(4, 2)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 1, 1, 1], [0, 0, 0, 0]]))
        model.bias.copy_(torch.tensor([-1.9, 0.0]))
    x, y = torch.full((1, 4), 0.5), torch.tensor([0])
    assert model(x).argmax(1).item() == 0
    x_adv = CarliniWagnerLinf(0.5, iterations=1)(model, x, y)
    assert model(x_adv).argmax(1).item() == 1
    with torch.no_grad():
        x_adv = CarliniWagnerLinf(0.5, iterations=3)(model, x, y)
    assert model(x_adv).argmax(1).item() == 1
