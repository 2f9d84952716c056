"""Hypergradients under two gloo processes on CPU, each on half the batch, against one process on
the whole batch (one process group for every case: each costs seconds).

The problem: a per-sample follower z_i* = x_i + Mθ with q = −½ Σ_i ‖z_i − x_i − Mθ‖² (a sum) or
its batch mean (what the protocol asks), and L = mean ½‖z_i − c‖². The hypergradient is the mean
over samples of a per-sample term, so the average of the two shares' is the whole batch's once
each sample gets the same step. For the mean, ∇_{z_i} q = (1/B)(…), so a share of B/2 samples
doubles every sample's step: ``unroll_step_size`` and ``neumann_step`` are halved under two
processes (``bilevel.hypergradients``), which is one process on the whole batch. For the sum the
per-sample gradient has no 1/B, so the same halving is one process with half the step: the steps
are defined on the batch-mean objective, and a sum is outside the protocol.

A decision shared by the batch (a parameter set w, z* = mean_i x_i + Mθ) keeps its step, and the
two processes average the shares' hypergradients.
"""

from __future__ import annotations

import os
from functools import partial

import pytest
import torch
import torch.distributed as dist
from helpers import join_gloo, spawn_two

from bilevel import BilevelProblem, JointTrainer, NoFollower, distributed
from bilevel.followers import HandDesigned
from bilevel.hypergradients import Hypergradient

M = torch.tensor([[1.0, 0.5, 0.0], [0.0, 1.0, -1.0]])
C = torch.tensor([2.0, -1.0])
STEP = 0.5
CONFIGS = {  # few steps and terms, so that the truncated solves depend on the step size
    "unrolled": lambda s: Hypergradient("unrolled", unroll_steps=3, unroll_step_size=s),
    "implicit-neumann": lambda s: Hypergradient(
        "implicit-neumann", neumann_terms=3, neumann_step=s
    ),
    "unrolled-sgd": lambda s: Hypergradient(
        "unrolled", unroll_steps=3, unroll_optimizer=partial(torch.optim.SGD, lr=s)
    ),
    "unrolled-adam": lambda s: Hypergradient(
        "unrolled", unroll_steps=3, unroll_optimizer=partial(torch.optim.Adam, lr=s)
    ),
}
CASES = [  # (method, q's reduction over the samples, or a decision shared by the batch)
    ("unrolled", "sum"),
    ("unrolled", "mean"),
    ("implicit-neumann", "sum"),
    ("implicit-neumann", "mean"),
    ("unrolled-sgd", "mean"),
    ("unrolled-adam", "mean"),
    ("unrolled", "shared"),
]


class _Shift(BilevelProblem):
    """The module docstring's problem; ``reduction`` "sum", "mean" or "shared"."""

    def __init__(self, reduction: str, config: Hypergradient) -> None:
        self.leader = torch.nn.Linear(3, 1, bias=False)  # θ: the weight row
        self.reduction, self.hypergradient = reduction, config

    def init_follower(self, batch, random_start: bool = False):
        return [torch.zeros(2)] if self.reduction == "shared" else torch.zeros_like(batch)

    def project(self, batch, z):
        return z

    def residual(self, batch, z):
        return (z[0] if self.reduction == "shared" else z) - batch - M @ self.leader.weight[0]

    def follower_objective(self, batch, z):
        per_sample = -0.5 * self.residual(batch, z).pow(2).sum(1)
        return per_sample.sum() if self.reduction == "sum" else per_sample.mean()

    def leader_loss(self, batch, z):
        return 0.5 * ((z[0] if self.reduction == "shared" else z) - C).pow(2).sum(-1).mean()


class _Exact(HandDesigned):
    """z* itself (the implicit hypergradient's follower): z_i = x_i + Mθ."""

    def solve(self, problem: _Shift, batch):
        return (batch + M @ problem.leader.weight[0]).detach()


def _step(batch: torch.Tensor, method: str, reduction: str, step: float = STEP) -> torch.Tensor:
    """θ after one leader step (SGD, lr 1) along the hypergradient on ``batch``."""
    torch.manual_seed(0)
    problem = _Shift(reduction, CONFIGS[method](step))
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=1.0)
    follower = _Exact() if method == "implicit-neumann" else NoFollower()
    JointTrainer(problem, follower, optimizer).step(batch)
    return problem.leader.weight.detach().clone()


def _batch() -> torch.Tensor:
    return torch.arange(16.0).view(8, 2) / 8


def _worker(rank: int, port: int, out: str) -> None:
    join_gloo(rank, port)
    share = distributed.shard(_batch(), distributed.Context(rank, 2))
    torch.save({case: _step(share, *case) for case in CASES}, f"{out}.{rank}")
    dist.barrier()
    distributed.shutdown()
    os._exit(0)  # the results are saved: skip gloo's teardown (tests/test_distributed.py)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> list[dict]:
    """Each rank's θ after its step, for every case."""
    out = tmp_path_factory.mktemp("ddp_hyper") / "theta.pt"
    spawn_two(_worker, str(out))
    return [torch.load(f"{out}.{rank}", weights_only=True) for rank in range(2)]


@pytest.mark.parametrize("case", CASES, ids=["-".join(case) for case in CASES])
def test_hypergradient_steps_over_two_processes_are_one_process_on_the_whole_batch(
    two_processes, case
) -> None:
    """A hypergradient sets .grad by hand, which DDP's hooks never see: hypergradient_step
    all-reduces it. With the steps of a per-sample decision halved, two processes on half a
    batch each step as one process on the whole (with half the step for q a sum); a shared
    decision keeps its step and averages the halves' hypergradients."""
    method, reduction = case
    halves = [_step(_batch()[r::2], method, reduction) for r in (0, 1)]
    assert not torch.allclose(halves[0], halves[1])  # each half alone would step elsewhere
    if reduction == "shared":
        expected = (halves[0] + halves[1]) / 2
    else:
        expected = _step(_batch(), method, reduction, STEP / 2 if reduction == "sum" else STEP)
        if method != "unrolled-adam":  # the step size matters (Adam's hardly: see below)
            other = _step(_batch(), method, reduction, STEP if reduction == "sum" else STEP / 2)
            assert (other - expected).abs().max() > 1e-2
    for theta in (two_processes[0][case], two_processes[1][case]):
        torch.testing.assert_close(theta, expected, rtol=1e-5, atol=1e-6)


def test_adam_unrolling_hardly_depends_on_the_gradients_scale() -> None:
    """Why Adam passes with or without the 1/N: its step divides by the gradient's size, so
    climbing q or q/2 differs by its ε alone (here well below float32's resolution)."""
    whole = _step(_batch(), "unrolled-adam", "mean")
    torch.manual_seed(0)
    problem = _Shift("sum", CONFIGS["unrolled-adam"](STEP))  # the sum: 8 times the mean's scale
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=1.0)
    JointTrainer(problem, NoFollower(), optimizer).step(_batch())
    torch.testing.assert_close(problem.leader.weight.detach(), whole, rtol=1e-5, atol=1e-6)


def test_only_a_per_sample_tensor_decision_rescales_the_steps(monkeypatch) -> None:
    """Under N processes the unrolled and Neumann steps take 1/N for one decision per example;
    a tensor the batch shares (GAIL's ψ, a ridge weight vector, coupled softmax weights) and a
    parameter set keep theirs."""
    from helpers import load_example

    from bilevel.hypergradients import per_sample_share
    from problems.imitation.gail import GAIL

    monkeypatch.setattr(distributed, "world_size", lambda: 4)
    z = torch.zeros(8, 3)
    assert per_sample_share(BilevelProblem(), z) == 0.25
    assert per_sample_share(BilevelProblem(), [z]) == 1.0
    shared = [GAIL, load_example("l2_weight_tuning").L2Tuning]
    shared.append(load_example("kl_dro_reweighting").KLDRO)
    for problem_class in shared:
        assert problem_class.per_sample_decision is False, problem_class.__name__
        assert per_sample_share(problem_class.__new__(problem_class), z) == 1.0
