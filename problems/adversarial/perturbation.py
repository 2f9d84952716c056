"""The follower's decision set of every adversarial problem here: a perturbation δ of the batch's
images x (``batch[0]``, pixels in [0, 1]) with ‖δ_i‖ ≤ ε in the L∞ or L2 norm and x + δ ∈ [0, 1].
DRO (Eq. 2-3) and AIT (Eq. 5-6) differ in their objectives only."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bilevel.norms import Norm
from bilevel.protocol import Batch, BilevelProblem


class Perturbation(BilevelProblem):
    """Z = B(0, ε) ∩ {δ : x + δ ∈ [0, 1]} in ``norm``; the leader ``leader`` classifies x + δ."""

    def __init__(self, leader: nn.Module, eps: float, norm: Norm | str = Norm.LINF) -> None:
        self.leader, self.eps, self.norm = leader, eps, Norm(norm)

    def init_follower(self, batch: Batch, random_start: bool = False) -> Tensor:
        """δ0 = 0, or uniform in the ε-ball (``random_start``: FGSM-RS's and PGM's start)."""
        x = batch[0]
        return self.norm.sample(x, self.eps) if random_start else torch.zeros_like(x)

    def project(self, batch: Batch, z: Tensor) -> Tensor:
        """Π onto Z: the ball's projection, then the box's clamp of x + δ. Under L∞ both are boxes,
        so this is the exact projection. Under L2 it is feasible (x ∈ [0, 1], so the clamp only
        shrinks each |δ_j|) but not the Euclidean projection onto the intersection: the usual
        step of PGD-L2 (Madry et al. 2018)."""
        x = batch[0]
        return (x + self.norm.project(z, self.eps)).clamp(0.0, 1.0) - x

    def follower_features(self, batch: Batch, z: Tensor) -> Tensor:
        """The perturbed input x + δ, the image part of A_fθ (Eq. 7, Eq. 8)."""
        return batch[0] + z
