"""Unrolled differentiation through learned update rules, and parameter-space followers (z is a
module's parameters, evaluated with torch.func.functional_call), against closed forms."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import Tensor, nn
from torch.func import functional_call

from bilevel import BilevelProblem, JointTrainer
from bilevel.followers import GradientAscent
from bilevel.hypergradients import Hypergradient, hypergradient
from bilevel.unrolled import ascent, iterates, unroll

DT = torch.float64


class Quadratic(BilevelProblem):
    """Follower maximises −½ zᵀAz (gradient descent on ½ zᵀAz); no leader parameters."""

    zero_sum = False

    def __init__(self, a: Tensor) -> None:
        self.a, self.leader = a, nn.Module()

    def init_follower(self, batch, random_start: bool = False) -> Tensor:
        raise AssertionError("the tests pass z0")

    def project(self, batch, z: Tensor) -> Tensor:
        return z

    def follower_objective(self, batch, z: Tensor) -> Tensor:
        return -0.5 * z @ self.a @ z

    def leader_loss(self, batch, z: Tensor) -> Tensor:
        return 0.5 * z.pow(2).sum()

    def follower_features(self, batch, z: Tensor) -> Tensor:
        return z


@pytest.mark.parametrize("steps", [1, 4, 10])
def test_learned_step_size_derivative_matches_closed_form(steps: int) -> None:
    """θ_T = (I − ηA)^T θ₀, so dθ_T/dη = −T·A(I − ηA)^{T−1} θ₀."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(4, 4, generator=g, dtype=DT)
    a = q @ q.T / 4 + 0.5 * torch.eye(4, dtype=DT)
    theta0 = torch.randn(4, generator=g, dtype=DT)
    eta = torch.tensor(0.2, dtype=DT, requires_grad=True)
    theta_t = unroll(Quadratic(a), None, steps, ascent(eta), z0=theta0)
    jac = torch.stack([torch.autograd.grad(t, eta, retain_graph=True)[0] for t in theta_t])
    m = torch.eye(4, dtype=DT) - 0.2 * a
    expected = -steps * a @ torch.linalg.matrix_power(m, steps - 1) @ theta0
    torch.testing.assert_close(theta_t, torch.linalg.matrix_power(m, steps) @ theta0)
    torch.testing.assert_close(jac, expected, rtol=1e-12, atol=1e-14)


class Regression(BilevelProblem):
    """Parameter-space follower: ψ = an nn.Linear's parameters (a dict), fitted by ridge on the
    training batch; the leader's λ = exp(log λ) weighs the penalty; leader loss = validation MSE."""

    zero_sum = False

    def __init__(self, dim: int, log_lam: float = 0.0) -> None:
        self.net = nn.Linear(dim, 1, dtype=DT)
        self.leader = nn.Module()
        self.leader.log_lam = nn.Parameter(torch.tensor(log_lam, dtype=DT))

    def init_follower(self, batch, random_start: bool = False) -> dict[str, Tensor]:
        return {k: torch.zeros_like(v) for k, v in self.net.named_parameters()}

    def project(self, batch, z):
        return z

    def _mse(self, z, x: Tensor, y: Tensor) -> Tensor:
        return 0.5 * (functional_call(self.net, z, (x,)).squeeze(1) - y).pow(2).mean()

    def follower_objective(self, batch, z) -> Tensor:
        (x, y), _ = batch
        penalty = sum(v.pow(2).sum() for v in z.values())
        return -(self._mse(z, x, y) + 0.5 * self.leader.log_lam.exp() * penalty)

    def leader_loss(self, batch, z) -> Tensor:
        _, (xv, yv) = batch
        return self._mse(z, xv, yv)

    def follower_features(self, batch, z):
        return z

    def closed_form(self, batch) -> tuple[Tensor, Tensor]:
        """(w̃*, dL_val/dlog λ) with w̃ = [weight, bias] and features [x, 1]."""
        (x, y), (xv, yv) = batch
        xt, xvt = nn.functional.pad(x, (0, 1), value=1.0), nn.functional.pad(xv, (0, 1), value=1.0)
        lam = float(self.leader.log_lam.detach().exp())
        reg = xt.T @ xt / len(x) + lam * torch.eye(xt.shape[1], dtype=DT)
        w = torch.linalg.solve(reg, xt.T @ y / len(x))
        dw_dlam = -torch.linalg.solve(reg, w)
        grad_w = xvt.T @ (xvt @ w - yv) / len(xv)
        return w, lam * dw_dlam @ grad_w


def _regression_batch(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3, generator=g, dtype=DT)
    x, xv = torch.randn(30, 3, generator=g, dtype=DT), torch.randn(20, 3, generator=g, dtype=DT)
    y = x @ w + 0.5 * torch.randn(30, generator=g, dtype=DT)
    yv = xv @ w + 0.5 * torch.randn(20, generator=g, dtype=DT)
    return (x, y), (xv, yv)


def _flat(z: dict[str, Tensor]) -> Tensor:
    return torch.cat([z["weight"].flatten(), z["bias"].flatten()])


@pytest.mark.parametrize(
    "config",
    [
        Hypergradient("implicit-cg", cg_iterations=4, cg_scale=0.05),
        Hypergradient("implicit-neumann", neumann_terms=600, neumann_step=0.5),
        Hypergradient("unrolled", unroll_steps=600, unroll_step_size=0.5),
    ],
    ids=lambda c: c.method.value,
)
def test_parameter_space_follower_hypergradient_matches_ridge_closed_form(config) -> None:
    problem, batch = Regression(3, log_lam=-1.0), _regression_batch()
    w_star, expected = problem.closed_form(batch)
    z = GradientAscent(steps=600, step_size=0.5).solve(problem, batch)
    torch.testing.assert_close(_flat(z), w_star, rtol=1e-10, atol=1e-12)
    _, (grad,) = hypergradient(problem, batch, z, config)
    torch.testing.assert_close(grad, expected, rtol=1e-8, atol=1e-10)


def test_joint_trainer_takes_the_implicit_step_for_a_parameter_space_follower() -> None:
    problem, batch = Regression(3, log_lam=-1.0), _regression_batch()
    problem.hypergradient = Hypergradient("implicit-cg", cg_iterations=4)
    _, expected = problem.closed_form(batch)
    opt = torch.optim.SGD(problem.leader.parameters(), lr=0.3)
    JointTrainer(problem, GradientAscent(steps=600, step_size=0.5), opt).step(batch)
    torch.testing.assert_close(problem.leader.log_lam.detach(), -1.0 - 0.3 * expected)


class CoordinateMLP(nn.Module):
    """A coordinate-wise learned optimizer: u(g) = η·g + W₂ tanh(W₁ g + b₁) + b₂, per coordinate."""

    def __init__(self, step: float, hidden: int = 6) -> None:
        super().__init__()
        self.step = step
        self.inp, self.out = nn.Linear(1, hidden, dtype=DT), nn.Linear(hidden, 1, dtype=DT)

    def forward(self, g: Tensor) -> Tensor:
        learned = self.out(torch.tanh(self.inp(g.reshape(-1, 1)))).reshape(g.shape)
        return self.step * g + learned

    def rule(self, z: list[Tensor], grads: list[Tensor]) -> list[Tensor]:
        return [self(g) for g in grads]


def test_learned_optimizer_with_zeroed_output_reproduces_sgd_exactly() -> None:
    problem, batch = Regression(3), _regression_batch()
    torch.manual_seed(1)
    with torch.no_grad():
        for p in problem.net.parameters():
            p.normal_()
    opt_net = CoordinateMLP(step=0.2)
    nn.init.zeros_(opt_net.out.weight)
    nn.init.zeros_(opt_net.out.bias)
    z0 = {k: v.detach().clone() for k, v in problem.net.named_parameters()}
    sgd_net = copy.deepcopy(problem.net)
    sgd = torch.optim.SGD(sgd_net.parameters(), lr=0.2)
    lam = float(problem.leader.log_lam.detach().exp())
    for z_t in iterates(problem, batch, z0, 8, opt_net.rule):
        sgd.zero_grad()
        (x, y), _ = batch
        loss = problem._mse(dict(sgd_net.named_parameters()), x, y)
        loss = loss + 0.5 * lam * sum(p.pow(2).sum() for p in sgd_net.parameters())
        loss.backward()
        sgd.step()
        for name, p in sgd_net.named_parameters():
            # equal up to one rounding of the last bit (SGD's fused add vs. z + η·g)
            torch.testing.assert_close(z_t[name], p.detach(), rtol=0, atol=1e-15)


def test_meta_gradient_through_a_learned_optimizer_matches_finite_differences() -> None:
    problem, batch = Regression(3), _regression_batch()
    opt_net = CoordinateMLP(step=0.2)
    nn.init.normal_(opt_net.out.weight, std=0.05)

    def validation_after_unroll(w_out: Tensor) -> Tensor:
        def rule(z, grads):
            return [
                0.2 * g + (torch.tanh(opt_net.inp(g.reshape(-1, 1))) @ w_out.T).reshape(g.shape)
                for g in grads
            ]

        return problem.leader_loss(batch, unroll(problem, batch, 5, rule))

    w_out = opt_net.out.weight.detach().clone().requires_grad_(True)
    assert torch.autograd.grad(validation_after_unroll(w_out), w_out)[0].abs().max() > 1e-6
    assert torch.autograd.gradcheck(validation_after_unroll, (w_out,), eps=1e-6, atol=1e-8)
