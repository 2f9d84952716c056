"""A toy bilevel problem whose follower and leader solutions are known in closed form.

    min_θ  E_x max_{‖z‖∞ ≤ ε}  ½‖x + z − θ‖²

Follower: z*(θ, x) = ε · sign(x − θ) (push the point away from θ, coordinate-wise).
Leader: the objective is E Σ_j ½(|x_j − θ_j| + ε)², whose minimiser for data symmetric about μ is
θ* = μ (the ε·E sign(θ − x) term vanishes where mean and median agree).

The whole problem is one class against ``bilevel.BilevelProblem``; nothing in the framework changes.
Run: ``python examples/toy_quadratic.py``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bilevel import BilevelProblem, JointTrainer, LearnedFollower, SignGradientAscent


class Centre(nn.Module):
    """The leader's θ: a point in R^d."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.zeros(dim))


class ToyQuadratic(BilevelProblem):
    """Zero-sum toy: q(θ, z) = L(θ, z) = mean_i ½‖x_i + z_i − θ‖², z_i in the L∞ ball of radius ε."""

    zero_sum = True

    def __init__(self, dim: int = 2, eps: float = 0.5) -> None:
        self.leader, self.eps = Centre(dim), eps

    def init_follower(self, batch: Tensor, random_start: bool = False) -> Tensor:
        if random_start:
            return torch.empty_like(batch).uniform_(-self.eps, self.eps)
        return torch.zeros_like(batch)

    def project(self, batch: Tensor, z: Tensor) -> Tensor:
        return z.clamp(-self.eps, self.eps)

    def follower_objective(self, batch: Tensor, z: Tensor) -> Tensor:
        return 0.5 * (batch + z - self.leader.theta).pow(2).sum(dim=1).mean()

    leader_loss = follower_objective

    def follower_features(self, batch: Tensor, z: Tensor) -> Tensor:
        return batch + z

    def optimal_follower(self, batch: Tensor) -> Tensor:
        """The closed-form z*(θ, x) = ε sign(x − θ)."""
        return self.eps * torch.sign(batch - self.leader.theta.detach())


class TanhHead(nn.Module):
    """A tiny g_φ for vector decisions: ε · tanh(MLP(A))."""

    def __init__(self, in_features: int, out_features: int, eps: float, hidden: int = 32) -> None:
        super().__init__()
        self.eps = eps
        self.mlp = nn.Sequential(
            nn.Linear(in_features, hidden), nn.Tanh(), nn.Linear(hidden, out_features)
        )

    def forward(self, a: Tensor) -> Tensor:
        return self.eps * torch.tanh(self.mlp(a))


def sample(n: int, mean: Tensor, generator: torch.Generator) -> Tensor:
    """Data symmetric about ``mean`` (uniform on a box), so θ* = mean."""
    return mean + 2 * torch.rand(n, mean.numel(), generator=generator) - 1


def solve(follower_name: str = "grad", steps: int = 600, seed: int = 0) -> dict[str, float]:
    """Train θ and (if learned) φ jointly; return the distances to the closed-form answers."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    mean = torch.tensor([1.5, -0.5])
    problem = ToyQuadratic(dim=2, eps=0.5)
    if follower_name == "pgm":
        follower = SignGradientAscent(steps=5, step_size=0.25, random_start=True)
    else:
        net = TanhHead(4, 2, problem.eps)
        follower = LearnedFollower(net, steps=1, input_mode="grad", lr=1e-2, weight_decay=0.0)
    leader_opt = torch.optim.SGD(problem.leader.parameters(), lr=0.05)
    trainer = JointTrainer(problem, follower, leader_opt)
    for _ in range(steps):
        trainer.step(sample(128, mean, gen))
    test = sample(2000, mean, gen)
    z = follower.solve(problem, test)
    z_star = problem.optimal_follower(test)
    with torch.no_grad():
        gap = problem.follower_objective(test, z_star) - problem.follower_objective(test, z)
    return {
        "leader_error": float((problem.leader.theta.detach() - mean).norm()),
        "follower_error": float((z - z_star).abs().mean() / problem.eps),
        "objective_gap": float(gap),
    }


if __name__ == "__main__":
    for name in ("grad", "pgm"):
        result = solve(name)
        print(f"{name:>5}: " + "  ".join(f"{k} {v:.4f}" for k, v in result.items()))
