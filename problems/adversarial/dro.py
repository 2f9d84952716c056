"""Adversarial training as distributionally robust optimization (paper Eq. 2, 3 and 7).

    min_θ (1/n) Σ_i ℓ(f_θ(x_i + δ_i), y_i)   s.t.  δ_i ∈ argmax_{δ ∈ B(0, ε)} ℓ(f_θ(x_i + δ), y_i)

The follower's decision z is the per-sample perturbation δ, feasible when ‖δ‖ ≤ ε (L∞, the
paper's, or L2) and x + δ ∈ [0, 1] (``Perturbation``). The problem is zero-sum (q = ℓ = L), so the
fused update is exact.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from problems.adversarial.perturbation import Perturbation

ImageBatch = tuple[Tensor, Tensor]  # (x in [0, 1], integer labels y)


class AdversarialDRO(Perturbation):
    """DRO against perturbations of radius ``eps`` in ``norm`` (pixels in [0, 1])."""

    zero_sum = True

    def follower_objective(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """q(θ, δ) = mean_i CE(f_θ(x_i + δ_i), y_i) (Eq. 3)."""
        x, y = batch
        return F.cross_entropy(self.leader(x + z), y)

    def leader_loss(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """L(θ, δ) = q(θ, δ): CE on the adversarial batch only, as in the paper and the reference."""
        return self.follower_objective(batch, z)
