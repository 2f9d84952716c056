"""Hypergradients of a leader with batch norm: the joint loop solves the follower with the leader
in eval mode, so the hypergradient is that of F(θ) = L_train(θ, z*_eval(θ)), and one leader step
moves the running statistics once, whatever the method (float64)."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bilevel import BilevelProblem, JointTrainer
from bilevel.followers import GradientAscent
from bilevel.hypergradients import Hypergradient, hypergradient

DT = torch.float64
B, D, LAM = 8, 3, 6.0

CONFIGS = {
    "implicit-cg": Hypergradient("implicit-cg", cg_iterations=B * D),
    "implicit-neumann": Hypergradient("implicit-neumann", neumann_terms=80, neumann_step=1.0),
    "unrolled": Hypergradient("unrolled", unroll_steps=80, unroll_step_size=1.0),
}


class NormedRegression(BilevelProblem):
    """q = mean_i f(x_i + z_i) − ½λ‖z_i‖² (strongly concave in z: a unique interior maximum),
    L = mean_i (f(x_i + z_i) − y_i)², f an MLP with batch norm."""

    zero_sum = False

    def __init__(self, momentum: float) -> None:
        g = torch.Generator().manual_seed(0)
        self.x = torch.rand(B, D, generator=g, dtype=DT)
        self.y = torch.randn(B, generator=g, dtype=DT)
        torch.manual_seed(0)
        self.leader = nn.Sequential(
            nn.Linear(D, 6), nn.BatchNorm1d(6, momentum=momentum), nn.Tanh(), nn.Linear(6, 1)
        ).to(DT)
        with torch.no_grad():  # running statistics far from the batch's: eval ≠ train
            self.leader[1].running_mean.normal_(generator=g)
            self.leader[1].running_var.uniform_(0.5, 2.0, generator=g)

    def init_follower(self, batch, random_start: bool = False) -> Tensor:
        return torch.zeros(B, D, dtype=DT)

    def project(self, batch, z: Tensor) -> Tensor:
        return z

    def follower_objective(self, batch, z: Tensor) -> Tensor:
        return (self.leader(self.x + z).squeeze(-1) - 0.5 * LAM * z.pow(2).sum(1)).mean()

    def leader_loss(self, batch, z: Tensor) -> Tensor:
        return (self.leader(self.x + z).squeeze(-1) - self.y).pow(2).mean()

    def solve_eval(self) -> Tensor:
        """z*_eval(θ): Newton on the eval-mode q, to machine precision."""
        self.leader.eval()
        z = torch.zeros(B * D, dtype=DT)

        def q(v: Tensor) -> Tensor:
            return self.follower_objective(None, v.view(B, D))

        for _ in range(15):
            grad = torch.autograd.functional.jacobian(q, z)
            z = z - torch.linalg.solve(torch.autograd.functional.hessian(q, z), grad)
        return z.view(B, D).detach()


def finite_difference(p: NormedRegression, direction: list[Tensor], h: float = 1e-5) -> float:
    """d/dt L_train(θ + t·d, z*_eval(θ + t·d)) at t = 0, central differences."""
    params = list(p.leader.parameters())
    values = []
    for sign in (1.0, -1.0):
        with torch.no_grad():
            for w, d in zip(params, direction, strict=True):
                w.add_(sign * h * d)
        z = p.solve_eval()
        p.leader.train()
        with torch.no_grad():
            values.append(p.leader_loss(None, z).item())
        with torch.no_grad():
            for w, d in zip(params, direction, strict=True):
                w.sub_(sign * h * d)
    return (values[0] - values[1]) / (2 * h)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_hypergradient_of_a_batch_norm_leader_matches_finite_differences(method: str) -> None:
    p = NormedRegression(momentum=0.0)  # running statistics frozen: F(θ) is a function of θ
    z = p.solve_eval()
    p.leader.train()  # as the joint loop calls it: L in train mode, z solved in eval mode
    _, grads = hypergradient(p, None, z, CONFIGS[method])
    assert all(m.training for m in p.leader.modules())  # the caller's mode is back
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        direction = [torch.randn(w.shape, generator=g, dtype=DT) for w in p.leader.parameters()]
        mine = sum(float((gr * d).sum()) for gr, d in zip(grads, direction, strict=True))
        assert mine == pytest.approx(finite_difference(p, direction), abs=1e-7)


@pytest.mark.parametrize("method", ["danskin", *CONFIGS])
def test_one_joint_step_updates_the_batch_norm_statistics_once(method: str) -> None:
    p = NormedRegression(momentum=0.1)
    p.hypergradient = Hypergradient("danskin") if method == "danskin" else CONFIGS[method]
    bn = p.leader[1]
    opt = torch.optim.SGD(p.leader.parameters(), lr=0.0)
    JointTrainer(p, GradientAscent(steps=50, step_size=0.5), opt).step(None)
    assert int(bn.num_batches_tracked) == 1  # only L's forward, in train mode, counts
    assert p.leader.training and bn.training


class Recording(NormedRegression):
    """Records the leader's mode at each pass of q and of L; q raises when ``fail`` is set."""

    def __init__(self, fail: bool) -> None:
        super().__init__(momentum=0.1)
        self.fail, self.modes = fail, {"q": set(), "L": set()}

    def follower_objective(self, batch, z: Tensor) -> Tensor:
        self.modes["q"].add(self.leader.training)
        if self.fail:
            raise RuntimeError("boom")
        return super().follower_objective(batch, z)

    def leader_loss(self, batch, z: Tensor) -> Tensor:
        self.modes["L"].add(self.leader.training)
        return super().leader_loss(batch, z)


@pytest.mark.parametrize("method", list(CONFIGS))
def test_q_runs_in_eval_mode_and_the_callers_modes_come_back_whatever_happens(method: str) -> None:
    for fail in (False, True):
        p = Recording(fail)
        p.leader.train()
        p.leader[3].eval()  # a submodule's own mode is the caller's too
        if fail:
            with pytest.raises(RuntimeError, match="boom"):
                hypergradient(p, None, p.init_follower(None), CONFIGS[method])
        else:
            hypergradient(p, None, p.init_follower(None), CONFIGS[method])
            assert p.modes["L"] == {True}
        assert p.modes["q"] == {False}
        assert [m.training for m in p.leader.modules()] == [True, True, True, True, False]
