"""The bilevel problem protocol (docs/architecture.md, "The protocol"; paper Eq. 1).

A bilevel problem is

    min_θ  L(θ, z*(θ))      s.t.   z*(θ) ∈ argmax_{z ∈ Z} q(θ, z)

The leader owns θ (``problem.leader``); the follower owns a decision z. A new problem is one class
with the methods below; nothing else in the framework changes.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor, nn

Batch = Any  # whatever the problem's data loader yields: (x, y) for images, rollouts for GAIL


@runtime_checkable
class BilevelProblem(Protocol):
    """A leader (minimises ``leader_loss`` over θ) and a follower (maximises ``follower_objective``
    over z ∈ Z).

    ``zero_sum`` says whether q(θ, z) = L(θ, z), as in DRO (Eq. 2-3): then Danskin's theorem lets the
    leader treat z as fixed, and the fused update (one backward for θ and φ) is exact.
    """

    leader: nn.Module
    zero_sum: bool

    def init_follower(self, batch: Batch, random_start: bool = False) -> Tensor:
        """z0: zeros, or uniform in Z when ``random_start`` (the start of PGM, Eq. 4)."""
        ...

    def follower_objective(self, batch: Batch, z: Tensor) -> Tensor:
        """q(θ, z) as a scalar mean over the batch; the follower maximises it."""
        ...

    def project(self, batch: Batch, z: Tensor) -> Tensor:
        """Π_Z(z): the nearest feasible decision (ε-ball ∩ [0,1] box for a perturbation)."""
        ...

    def leader_loss(self, batch: Batch, z: Tensor) -> Tensor:
        """L(θ, z) as a scalar mean over the batch; the leader minimises it."""
        ...

    def follower_features(self, batch: Batch, z: Tensor) -> Tensor:
        """The data part of A_fθ (Eq. 7): what a learned follower sees besides the gradient.

        For DRO it is the perturbed input x + δ. The learned follower concatenates the normalised
        gradient ∇_z q to it channel-wise according to its input mode (naive, grad, grad-only).
        """
        ...


def follower_gradient(problem: BilevelProblem, batch: Batch, z: Tensor) -> Tensor:
    """∇_z q(θ, z) as a constant (no graph to θ or to whatever produced z).

    The objective is a batch mean, so each sample's gradient carries a 1/B factor; every consumer
    here either takes its sign (PGM, Eq. 4) or normalises it per sample, so the factor cancels.
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(problem.follower_objective(batch, z), z)
    return grad.detach()
