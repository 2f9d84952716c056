"""The follower's decision set of every adversarial problem here: a perturbation δ of the batch's
images x (``batch[0]``, pixels in [0, 1]) with ‖δ_i‖ ≤ ε in the L∞ or L2 norm and x + δ ∈ [0, 1].
DRO (Eq. 2-3) and AIT (Eq. 5-6) differ in their objectives only."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bilevel.carry import CarriedDecisions
from bilevel.norms import Norm
from bilevel.protocol import Batch, BilevelProblem


class Perturbation(BilevelProblem):
    """Z = B(0, ε) ∩ {δ : x + δ ∈ [0, 1]} in ``norm``; the leader ``leader`` classifies x + δ.

    ``carried``: each training example's last δ_i, where the follower starts on its next visit
    (ATTA, ``bilevel.carry``); the training loop selects the batch's examples in it.
    With ``carried.free_step`` s > 0 (``--carry-free-step``), each carried δ_i takes one more step
    of s·ε, along the gradient the fused update's backward leaves on it, before it is stored."""

    def __init__(
        self,
        leader: nn.Module,
        eps: float,
        norm: Norm | str = Norm.LINF,
        carried: CarriedDecisions | None = None,
    ) -> None:
        self.leader, self.eps, self.norm, self.carried = leader, eps, Norm(norm), carried

    def init_follower(self, batch: Batch, random_start: bool = False) -> Tensor:
        """δ0 = 0, or uniform in the ε-ball (``random_start``: FGSM-RS's and PGM's start); with
        ``carried``, the example's last δ where it has one (the follower projects it into the
        current ε-ball)."""
        x = batch[0]
        z0 = self.norm.sample(x, self.eps) if random_start else torch.zeros_like(x)
        return z0 if self.carried is None else self.carried.start(z0)

    def end_step(self, batch: Batch, z: Tensor) -> None:
        """Carry the follower's δ to the example's next visit (with ``carried``)."""
        if self.carried is not None:
            self.carried.remember(z)

    @property
    def wants_decision_gradient(self) -> bool:
        return self.carried is not None and self.carried.free_step > 0

    def decision_gradient(self, batch: Batch, z: Tensor, grad: Tensor) -> None:
        """With ``carried.free_step`` s > 0: each carried δ takes one more steepest-ascent step of
        s·ε along ∇_δ L from the leader's own backward before its next visit, Π_Z(δ + s·ε·d), d
        the ball's steepest direction (sign ∇ in L∞, ∇/‖∇‖₂ per example in L2). The step costs no
        pass (Free-AT's reuse of that backward, Shafahi et al. 2019); its gradient is at the θ
        before the leader's step. Extra φ steps (``--follower-steps``) start from the stepped δ."""
        if not self.wants_decision_gradient:
            return
        step = (self.carried.free_step * self.eps) * self.norm.steepest(grad)
        self.carried.remember(self.project(batch, z + step))

    def state_dict(self) -> dict[str, Any]:
        return {} if self.carried is None else {"carried": self.carried.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.carried is not None and "carried" in state:
            self.carried.load_state_dict(state["carried"])

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
