"""Adversarial training as distributionally robust optimization (paper Eq. 2, 3 and 7).

    min_θ (1/n) Σ_i ℓ(f_θ(x_i + δ_i), y_i)   s.t.  δ_i ∈ argmax_{δ ∈ B(0, ε)} ℓ(f_θ(x_i + δ), y_i)

The follower's decision z is the per-sample perturbation δ, feasible when ‖δ‖∞ ≤ ε and
x + δ ∈ [0, 1]. The problem is zero-sum (q = ℓ = L), so the fused update is exact.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

ImageBatch = tuple[Tensor, Tensor]  # (x in [0, 1], integer labels y)


class AdversarialDRO:
    """DRO against L∞ perturbations of radius ``eps`` (pixels in [0, 1])."""

    zero_sum = True

    def __init__(self, leader: nn.Module, eps: float) -> None:
        self.leader, self.eps = leader, eps

    def init_follower(self, batch: ImageBatch, random_start: bool = False) -> Tensor:
        x, _ = batch
        if random_start:
            return torch.empty_like(x).uniform_(-self.eps, self.eps)
        return torch.zeros_like(x)

    def project(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """Π onto B(0, ε) ∩ {δ : x + δ ∈ [0, 1]}: both are boxes, so clamping is exact."""
        x, _ = batch
        return (x + z.clamp(-self.eps, self.eps)).clamp(0.0, 1.0) - x

    def follower_objective(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """q(θ, δ) = mean_i CE(f_θ(x_i + δ_i), y_i) (Eq. 3)."""
        x, y = batch
        return F.cross_entropy(self.leader(x + z), y)

    def leader_loss(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """L(θ, δ) = q(θ, δ): CE on the adversarial batch only, as in the paper and the reference."""
        return self.follower_objective(batch, z)

    def follower_features(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """The perturbed input x + δ, the image part of A_fθ (Eq. 7)."""
        x, _ = batch
        return x + z


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch_size: int = 500) -> float:
    """Top-1 accuracy of ``model`` in eval mode."""
    model.eval()
    correct = sum(
        (model(x[i : i + batch_size]).argmax(1) == y[i : i + batch_size]).sum().item()
        for i in range(0, len(x), batch_size)
    )
    return correct / max(len(x), 1)


def robust_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, follower, eps: float, batch_size: int = 500
) -> float:
    """Accuracy on the follower's perturbations of (x, y), model in eval mode.

    Any follower works: PGD-k is ``SignGradientAscent(k, η, random_start=True)``; a learned
    attacker is its ``LearnedFollower``.
    """
    model.eval()
    if isinstance(follower, nn.Module):
        follower.eval()
    problem = AdversarialDRO(model, eps)
    correct = 0
    for i in range(0, len(x), batch_size):
        batch = (x[i : i + batch_size], y[i : i + batch_size])
        delta = follower.solve(problem, batch)
        with torch.no_grad():
            correct += (model(batch[0] + delta).argmax(1) == batch[1]).sum().item()
    return correct / max(len(x), 1)
