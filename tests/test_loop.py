"""The joint step (Algorithm 3): signs of both updates, fused = alternating, and the toy problem
whose follower and leader solutions are known in closed form."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import TinyConvAttacker, image_batch, load_example

from bilevel import JointTrainer, LearnedFollower, SignGradientAscent, UserError
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import SmallCNN

EPS = 0.3


def _setup(leader_lr: float, follower_lr: float, steps: int = 1):
    torch.manual_seed(0)
    problem = AdversarialDRO(SmallCNN(), EPS)
    follower = LearnedFollower(
        TinyConvAttacker(2, 1, EPS), steps=steps, lr=follower_lr, weight_decay=0.0
    )
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=leader_lr)
    return problem, follower, optimizer


@pytest.mark.parametrize("update", ["alternating", "fused"])
def test_one_joint_step_moves_theta_down_on_L_and_phi_up_on_q(update: str) -> None:
    problem, follower, optimizer = _setup(leader_lr=0.05, follower_lr=1e-3)
    batch = image_batch(64)
    with torch.no_grad():
        z_before = follower.solve(problem, batch)
        L_before = float(problem.leader_loss(batch, z_before))
        q_before = float(problem.follower_objective(batch, z_before))
    leader_before = copy.deepcopy(problem.leader)
    JointTrainer(problem, follower, optimizer, update).step(batch)
    with torch.no_grad():
        # θ: the leader loss at the same (fixed) z went down
        assert float(problem.leader_loss(batch, z_before)) < L_before
        # φ: the follower objective against the old leader went up
        old = AdversarialDRO(leader_before, EPS)
        assert float(old.follower_objective(batch, follower.solve(old, batch))) > q_before


def _gradients(update: str, steps: int) -> dict[str, torch.Tensor]:
    problem, follower, optimizer = _setup(leader_lr=0.0, follower_lr=0.0, steps=steps)
    batch = image_batch(16)
    JointTrainer(problem, follower, optimizer, update).step(batch)
    grads = {f"leader.{n}": p.grad.clone() for n, p in problem.leader.named_parameters()}
    grads |= {f"follower.{n}": p.grad.clone() for n, p in follower.net.named_parameters()}
    return grads


@pytest.mark.parametrize("steps", [1, 2])
def test_fused_and_alternating_give_the_same_gradients_without_batch_norm(steps: int) -> None:
    fused, alternating = _gradients("fused", steps), _gradients("alternating", steps)
    assert fused.keys() == alternating.keys()
    for name in fused:
        assert fused[name].abs().max() > 0, name
        torch.testing.assert_close(fused[name], alternating[name], rtol=1e-4, atol=1e-7)


def test_fused_update_refuses_a_hand_designed_follower() -> None:
    problem, _, optimizer = _setup(0.1, 0.1)
    with pytest.raises(UserError, match="learned follower"):
        JointTrainer(problem, SignGradientAscent(1, 0.1), optimizer, "fused")


def test_follower_steps_gives_that_many_phi_updates() -> None:
    problem, follower, optimizer = _setup(leader_lr=0.0, follower_lr=1e-3)
    JointTrainer(problem, follower, optimizer, "alternating", follower_steps=3).step(image_batch(8))
    assert follower.optimizer.state[next(follower.net.parameters())]["step"] == 3


@pytest.mark.parametrize("follower_name", ["grad", "pgm"])
def test_toy_problem_reaches_the_closed_form_answers(follower_name: str) -> None:
    """min_θ E max_{‖z‖∞≤ε} ½‖x + z − θ‖²: z* = ε sign(x − θ), θ* = the data's centre."""
    toy = load_example("toy_quadratic")
    result = toy.solve(follower_name, steps=600, seed=0)
    assert result["leader_error"] < 0.05  # ‖θ − θ*‖ (data spread ±1 around θ*)
    assert result["follower_error"] < 0.05  # mean |z − z*| / ε
    assert result["objective_gap"] < 0.02  # q(z*) − q(z)
