"""Tuning an L2 weight on validation loss: a bilevel problem that is not zero-sum.

    min_{log λ}  ½ mean_val (x_vᵀw* − y_v)²   s.t.   w* = argmin_w ½ mean_train (xᵀw − y)² + ½λ‖w‖²

The follower's w* is ridge regression, w* = (XᵀX/n + λI)⁻¹ Xᵀy/n, so dw*/dλ = −(XᵀX/n + λI)⁻¹ w*
and the validation loss's gradient in log λ is known in closed form. Danskin's gradient is zero
here (the validation loss has no direct λ term): the leader needs dw*/dλ. The script prints the
hypergradient by implicit CG, implicit Neumann, unrolled gradient ascent (T steps) and the closed
form side by side at three values of λ, then tunes log λ with ``JointTrainer`` using the implicit
and the unrolled hypergradient and compares the λ each reaches with the closed-form optimum.
Run: ``python examples/l2_weight_tuning.py``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from bilevel import BilevelProblem, JointTrainer
from bilevel.followers import GradientAscent
from bilevel.hypergradients import Hypergradient, hypergradient

DT = torch.float64
Split = tuple[Tensor, Tensor]
Batch = tuple[Split, Split]  # (train, validation)

# the follower's ascent contracts by max |1 − 0.5·(eig(XᵀX/n) + λ)| per step, on seed 0's data
# 0.84 at λ = e⁻⁴, 0.78 near the optimum λ ≈ e⁻², 0.51 at λ = 1 (there the largest eig sets it)
STEP, STEPS = 0.5, 120


class L2Tuning(BilevelProblem):
    """Leader: log λ. Follower: ridge weights w (a tensor), found by gradient ascent on −loss."""

    zero_sum = False
    per_sample_decision = False  # w: one weight vector for the whole batch

    def __init__(self, log_lam: float) -> None:
        self.leader = nn.Module()
        self.leader.log_lam = nn.Parameter(torch.tensor(log_lam, dtype=DT))

    def init_follower(self, batch: Batch, random_start: bool = False) -> Tensor:
        (x, _), _ = batch  # w has one weight per input dimension
        return torch.zeros(x.shape[1], dtype=DT)

    def project(self, batch: Batch, w: Tensor) -> Tensor:
        return w

    def follower_objective(self, batch: Batch, w: Tensor) -> Tensor:
        (x, y), _ = batch
        lam = self.leader.log_lam.exp()
        return -(0.5 * (x @ w - y).pow(2).mean() + 0.5 * lam * w.pow(2).sum())

    def leader_loss(self, batch: Batch, w: Tensor) -> Tensor:
        _, (xv, yv) = batch
        return 0.5 * (xv @ w - yv).pow(2).mean()

    def follower_features(self, batch: Batch, w: Tensor) -> Tensor:
        return w


def closed_form(batch: Batch, log_lam: Tensor | float) -> tuple[Tensor, Tensor]:
    """(validation loss, its derivative in log λ) from w* and dw*/dλ = −(XᵀX/n + λI)⁻¹ w*."""
    (x, y), (xv, yv) = batch
    log_lam = torch.as_tensor(log_lam, dtype=DT)
    lam = log_lam.exp()
    reg = x.T @ x / len(x) + lam * torch.eye(x.shape[1], dtype=DT)
    w = torch.linalg.solve(reg, x.T @ y / len(x))
    residual = xv @ w - yv
    grad_w = xv.T @ residual / len(xv)
    return 0.5 * residual.pow(2).mean(), lam * (-torch.linalg.solve(reg, w)) @ grad_w


def optimal_log_lambda(batch: Batch, lo: float = -8.0, hi: float = 3.0) -> float:
    """argmin of the closed-form validation loss: a grid, then bisection on its derivative."""
    grid = torch.linspace(lo, hi, 221, dtype=DT)
    losses = torch.stack([closed_form(batch, t)[0] for t in grid])
    i = int(losses.argmin())
    a, b = float(grid[max(i - 1, 0)]), float(grid[min(i + 1, len(grid) - 1)])
    for _ in range(60):
        mid = 0.5 * (a + b)
        a, b = (mid, b) if closed_form(batch, mid)[1] < 0 else (a, mid)
    return 0.5 * (a + b)


def data(seed: int = 0, n: int = 40, n_val: int = 40, dim: int = 10) -> Batch:
    """Linear targets with noise; few samples per dimension, so the L2 weight matters."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(dim, generator=g, dtype=DT) / math.sqrt(dim)
    x = torch.randn(n, dim, generator=g, dtype=DT)
    xv = torch.randn(n_val, dim, generator=g, dtype=DT)
    noise = 0.5
    y = x @ w + noise * torch.randn(n, generator=g, dtype=DT)
    yv = xv @ w + noise * torch.randn(n_val, generator=g, dtype=DT)
    return (x, y), (xv, yv)


METHODS = {
    "danskin": Hypergradient("danskin"),  # blind to dw*/dλ: zero here
    "implicit-cg": Hypergradient("implicit-cg", cg_iterations=10),
    "implicit-neumann": Hypergradient("implicit-neumann", neumann_terms=STEPS, neumann_step=STEP),
    "unrolled": Hypergradient("unrolled", unroll_steps=STEPS, unroll_step_size=STEP),
}


def compare(batch: Batch, log_lams: tuple[float, ...] = (-4.0, -2.0, 0.0)) -> list[dict]:
    """d L_val / d log λ by each method and in closed form, at each λ."""
    rows = []
    for log_lam in log_lams:
        problem = L2Tuning(log_lam)
        w = GradientAscent(STEPS, STEP).solve(problem, batch)
        row = {"lambda": math.exp(log_lam), "closed form": float(closed_form(batch, log_lam)[1])}
        for name, config in METHODS.items():
            row[name] = float(hypergradient(problem, batch, w, config)[1][0])
        rows.append(row)
    return rows


def tune(batch: Batch, method: str, outer_steps: int = 25, lr: float = 10.0) -> float:
    """log λ after ``outer_steps`` joint SGD steps from λ = 1 with the method's hypergradient.

    The validation loss is flat in log λ near its minimum (curvature ≈ 0.05 for the default data),
    hence the large learning rate, about half the inverse curvature.
    """
    problem = L2Tuning(0.0)
    problem.hypergradient = METHODS[method]
    opt = torch.optim.SGD(problem.leader.parameters(), lr=lr)
    trainer = JointTrainer(problem, GradientAscent(STEPS, STEP), opt)
    for _ in range(outer_steps):
        trainer.step(batch)
    return float(problem.leader.log_lam.detach())


def main(seed: int = 0) -> dict:
    batch = data(seed)
    rows = compare(batch)
    names = ["closed form", *METHODS]
    print("d L_val / d log λ:")
    print(f"{'λ':>8}" + "".join(f"{n:>18}" for n in names))
    for row in rows:
        print(f"{row['lambda']:>8.3g}" + "".join(f"{row[n]:>18.10f}" for n in names))
    best = optimal_log_lambda(batch)
    tuned = {m: tune(batch, m) for m in ("implicit-cg", "unrolled")}
    print(
        f"tuned λ: closed-form optimum {math.exp(best):.6f}   "
        + "   ".join(f"{m} {math.exp(t):.6f}" for m, t in tuned.items())
    )
    return {"rows": rows, "best_log_lambda": best, "tuned_log_lambda": tuned}


if __name__ == "__main__":
    main()
