"""The joint loop with each hypergradient: the leader's step against the closed forms, memory
constant across outer iterations (no graph kept alive), and the choice's user errors."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from test_hypergradients import DT, N, implicit_closed_form, lq

from bilevel import BilevelProblem, JointTrainer, UserError
from bilevel.followers import GradientAscent
from bilevel.hypergradients import Hypergradient

LR = 0.2


def _expected_step(method: str, p) -> torch.Tensor:
    """λ's closed-form gradient for each method on the linear-quadratic problem."""
    eye = torch.eye(N, dtype=DT)
    a_inv_b, w_star = torch.linalg.solve(p.a, p.b), p.optimum()
    if method == "danskin":  # L has no direct λ term: Danskin sees no gradient at all
        return torch.zeros_like(p.leader.value)
    if method == "implicit-cg":
        return implicit_closed_form(p)
    if method == "implicit-neumann":  # 6 terms of step 0.3
        return a_inv_b.T @ (eye - torch.linalg.matrix_power(eye - 0.3 * p.a, 6)).T @ (w_star - p.c)
    jac = (eye - torch.linalg.matrix_power(eye - 0.25 * p.a, 7)) @ a_inv_b  # 7 steps of 0.25
    return jac.T @ (jac @ p.leader.value.detach() - p.c)


CONFIGS = {
    "danskin": Hypergradient("danskin"),
    "implicit-cg": Hypergradient("implicit-cg", cg_iterations=N),
    "implicit-neumann": Hypergradient("implicit-neumann", neumann_terms=6, neumann_step=0.3),
    "unrolled": Hypergradient("unrolled", unroll_steps=7, unroll_step_size=0.25),
}


@pytest.mark.parametrize("method", list(CONFIGS))
def test_joint_step_moves_the_leader_along_the_chosen_hypergradient(method: str) -> None:
    p = lq()
    p.hypergradient = CONFIGS[method]
    expected = p.leader.value.detach() - LR * _expected_step(method, p)
    opt = torch.optim.SGD(p.leader.parameters(), lr=LR)
    out = JointTrainer(p, GradientAscent(steps=400, step_size=0.3), opt).step(None)
    torch.testing.assert_close(p.leader.value.detach(), expected, rtol=1e-9, atol=1e-11)
    assert not out["leader_loss"].requires_grad


def test_a_string_choice_is_accepted_and_nonsense_is_a_user_error() -> None:
    p = lq()
    p.hypergradient = "implicit-cg"  # default options: 20 CG iterations ≥ n = 5
    expected = p.leader.value.detach() - LR * _expected_step("implicit-cg", p)
    opt = torch.optim.SGD(p.leader.parameters(), lr=LR)
    JointTrainer(p, GradientAscent(400, 0.3), opt).step(None)
    torch.testing.assert_close(p.leader.value.detach(), expected, rtol=1e-9, atol=1e-11)
    with pytest.raises(UserError, match="Unknown hypergradient 'implicit-lu'"):
        Hypergradient("implicit-lu")
    with pytest.raises(UserError, match="first_order applies to the unrolled"):
        Hypergradient("implicit-cg", first_order=True)


class _Box:
    """Stands in for a tensor saved by autograd; alive exactly as long as the graph holding it."""

    __slots__ = ("tensor", "__weakref__")

    def __init__(self, tensor: torch.Tensor) -> None:
        self.tensor = tensor


def _live_counts(problem, outer_steps: int) -> tuple[list[int], int, int]:
    """(saved tensors alive after each outer step, Python tensors alive after step 10 and last)."""
    live: weakref.WeakSet[_Box] = weakref.WeakSet()

    def pack(t: torch.Tensor) -> _Box:
        box = _Box(t)
        live.add(box)
        return box

    opt = torch.optim.SGD(problem.leader.parameters(), lr=0.01)
    trainer = JointTrainer(problem, GradientAscent(steps=20, step_size=0.3), opt)
    counts, tensors = [], []
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda box: box.tensor):
        for step in range(outer_steps):
            trainer.step(None)
            counts.append(len(live))  # graphs are freed by reference counting, no gc needed
            if step in (9, outer_steps - 1):
                gc.collect()
                tensors.append(sum(issubclass(type(o), torch.Tensor) for o in gc.get_objects()))
    return counts, tensors[0], tensors[1]


class _Leaky(BilevelProblem):
    """A problem that keeps every follower objective it returns (and so its autograd graph)."""

    def __init__(self, inner) -> None:
        self.inner, self.kept, self.leader = inner, [], inner.leader

    def init_follower(self, batch, random_start: bool = False):
        return self.inner.init_follower(batch, random_start)

    def project(self, batch, z):
        return self.inner.project(batch, z)

    def leader_loss(self, batch, z):
        return self.inner.leader_loss(batch, z)

    def follower_objective(self, batch, z):
        out = self.inner.follower_objective(batch, z)
        self.kept.append(out)
        return out


@pytest.mark.parametrize("method", ["unrolled", "implicit-cg", "implicit-neumann"])
def test_memory_is_constant_across_50_outer_steps(method: str) -> None:
    p = lq()
    p.hypergradient = CONFIGS[method]
    counts, tensors_at_10, tensors_at_50 = _live_counts(p, 50)
    assert counts == [0] * 50  # no graph survives an outer step
    assert tensors_at_50 == tensors_at_10
    # the detector detects: a problem that keeps its graphs shows growth on both measures
    leaky = _Leaky(lq())
    leaky.hypergradient = CONFIGS[method]
    counts, tensors_at_10, tensors_at_50 = _live_counts(leaky, 12)
    assert counts[-1] > counts[0] > 0
    assert tensors_at_50 > tensors_at_10
