"""Adversarial training as distributionally robust optimization (paper Eq. 2 and 3; Eq. 7 is its
learned follower, ``bilevel.learned_follower``).

    min_θ (1/n) Σ_i ℓ(f_θ(x_i + δ_i), y_i)   s.t.  δ_i ∈ argmax_{δ ∈ B(0, ε)} ℓ(f_θ(x_i + δ), y_i)

The follower's decision z is the per-sample perturbation δ, feasible when ‖δ‖ ≤ ε (L∞, the
paper's, or L2) and x + δ ∈ [0, 1] (``Perturbation``). The problem is zero-sum (q = ℓ = L), so the
fused update is exact.

The follower's steps may climb a surrogate of q instead (``ascent="margin"``): the CW margin
max_{j≠y} Z_j − Z_y (Carlini & Wagner 2017's f_6), the loss of PGD-CW, of APGD-T's DLR family and
of Square. Only the direction of the steps changes: φ still ascends q, θ still descends L = q.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from bilevel.carry import CarriedDecisions
from bilevel.norms import Norm
from problems.adversarial.perturbation import Perturbation

ImageBatch = tuple[Tensor, Tensor]  # (x in [0, 1], integer labels y)
ASCENT_LOSSES = ("ce", "margin")


def cw_margin(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example margin max_{j≠y} Z_j − Z_y (> 0 exactly when the example is misclassified)."""
    true = logits.gather(1, y[:, None]).squeeze(1)
    others = logits.scatter(1, y[:, None], float("-inf"))
    return others.amax(1) - true


class AdversarialDRO(Perturbation):
    """DRO against perturbations of radius ``eps`` in ``norm`` (pixels in [0, 1])."""

    zero_sum = True

    def __init__(
        self,
        leader: nn.Module,
        eps: float,
        norm: Norm | str = Norm.LINF,
        carried: CarriedDecisions | None = None,
        ascent: str = "ce",
    ) -> None:
        super().__init__(leader, eps, norm, carried)
        if ascent not in ASCENT_LOSSES:
            raise ValueError(f"ascent must be one of {ASCENT_LOSSES}; got {ascent!r}")
        self.ascent = ascent

    def follower_objective(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """q(θ, δ) = mean_i CE(f_θ(x_i + δ_i), y_i) (Eq. 3)."""
        x, y = batch
        return F.cross_entropy(self.leader(x + z), y)

    def leader_loss(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """L(θ, δ) = q(θ, δ): CE on the adversarial batch only, as in the paper and the reference."""
        return self.follower_objective(batch, z)

    def ascent_objective(self, batch: ImageBatch, z: Tensor) -> Tensor:
        """What the follower's steps climb: q, or with ``ascent="margin"`` the batch mean of the
        CW margin (``cw_margin``)."""
        if self.ascent == "ce":
            return self.follower_objective(batch, z)
        x, y = batch
        return cw_margin(self.leader(x + z), y).mean()
