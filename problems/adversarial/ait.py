"""Adversarial interpolation training, AIT (paper Eq. 5-6, Algorithms 2 and 4; Zhang & Xu 2020).

Each sample (x_i, y_i) is paired with a partner (x_j, y_j) of the same batch. The follower moves
x̃_i inside B(x_i, ε) ∩ [0, 1] so that the features f^s(x̃_i) at the penultimate, pooled layer
(``model.features``) move toward the partner's f^s(x_j) (``direction="toward"``: minimise the
cosine distance 1 − cos, as the original AIT and the authors' code do) or away from them
(``direction="away"``: minimise the similarity, Eq. 6 and Algorithm 4 as printed). The leader
minimises the soft-label cross-entropy of f(x̃_i) against the interpolated label (Algorithm 2)

    ỹ_i = (1 − ε_y) y_i + ε_y (1 − y_j) / (C − 1).

The follower's decision z is the perturbation δ = x̃ − x. The follower objective is not the leader
loss, so the problem is not zero-sum (the fused update does not apply).

A batch is ``(x, y, partner)`` with ``partner[i] = j``; ``pair_batch`` makes one from ``(x, y)``.
"""

from __future__ import annotations

from enum import Enum

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bilevel.distributed import unwrap
from bilevel.errors import UserError
from bilevel.norms import Norm
from problems.adversarial.perturbation import Perturbation

AITBatch = tuple[Tensor, Tensor, Tensor]  # (x in [0, 1], integer labels y, partner indices j)


class Pairing(str, Enum):
    """How sample i finds its partner j: the batch reversed (the reference code), or a random
    cyclic permutation of the batch (a random partner, never the sample itself when B > 1)."""

    REVERSED = "reversed"
    PERMUTATION = "permutation"


class Direction(str, Enum):
    """Where the follower moves f^s(x̃_i): toward f^s(x_j) (AIT) or away (Eq. 6 as printed)."""

    TOWARD = "toward"
    AWAY = "away"


def partners(
    batch_size: int, pairing: Pairing | str, generator: torch.Generator | None = None
) -> Tensor:
    """j for every i: ``reversed`` is B−1−i; ``permutation`` draws an order p (from a generator
    seeded by one draw of ``generator``) and pairs p[k] with p[k+1 mod B] (one random cycle, so no
    sample is its own partner). One draw whatever B: under torchrun, shares of unequal sizes
    leave the epoch's generator, and so the later batches' crops and flips, alike on every
    process (``randperm``'s use of a generator depends on B)."""
    if Pairing(pairing) is Pairing.REVERSED:
        return torch.arange(batch_size - 1, -1, -1)
    seed = int(torch.randint(2**62, (), generator=generator))
    order = torch.randperm(batch_size, generator=torch.Generator().manual_seed(seed))
    j = torch.empty_like(order)
    j[order] = order.roll(-1)
    return j


def pair_batch(
    x: Tensor, y: Tensor, pairing: Pairing | str, generator: torch.Generator | None = None
) -> AITBatch:
    """``(x, y)`` → ``(x, y, partner)``, the partner indices on the batch's device."""
    return x, y, partners(len(x), pairing, generator).to(x.device)


def interpolated_labels(y: Tensor, y_partner: Tensor, num_classes: int, eps_y: float) -> Tensor:
    """ỹ = (1 − ε_y) onehot(y) + ε_y (1 − onehot(y_j)) / (C − 1) (Algorithm 2), rows sum to one."""
    if num_classes < 2:
        raise ValueError("label interpolation needs at least two classes")
    one_hot = F.one_hot(y, num_classes).float()
    away_from_partner = (1.0 - F.one_hot(y_partner, num_classes).float()) / (num_classes - 1)
    return (1.0 - eps_y) * one_hot + eps_y * away_from_partner


class AdversarialInterpolation(Perturbation):
    """AIT against perturbations of radius ``eps`` in ``norm`` (L∞ in the paper; pixels in
    [0, 1]); ``leader.features`` is the layer s of Eq. (6).

    The follower always starts uniformly in the ball (the original AIT and the reference's
    L2L-AIT both do), so a learned attacker sees x_init = x + U(−ε, ε), as in the reference.
    """

    zero_sum = False

    def __init__(
        self,
        leader: nn.Module,
        eps: float,
        num_classes: int,
        eps_y: float = 0.5,
        direction: Direction | str = Direction.TOWARD,
        norm: Norm | str = Norm.LINF,
    ) -> None:
        if not 0.0 <= eps_y <= 1.0:
            raise UserError(f"--eps-y must be in [0, 1]; got {eps_y}.")
        super().__init__(leader, eps, norm)
        self.num_classes, self.eps_y, self.direction = num_classes, eps_y, Direction(direction)

    def init_follower(self, batch: AITBatch, random_start: bool = False) -> Tensor:
        """δ0 uniform in the ball always (see the class docstring), or the carried δ of
        ``--carry-decision``; ``random_start`` is accepted for the protocol and has no effect."""
        return super().init_follower(batch, random_start=True)

    def cosine_distance(self, batch: AITBatch, z: Tensor) -> Tensor:
        """Per sample 1 − cos(f^s(x_i + δ_i), f^s(x_j)); the partner's features are a constant."""
        x, _, j = batch
        features = unwrap(self.leader).features  # θ is not trained on this: no DDP reduction
        with torch.no_grad():
            target = features(x[j])
        return 1.0 - F.cosine_similarity(features(x + z), target, dim=1)

    def follower_objective(self, batch: AITBatch, z: Tensor) -> Tensor:
        """q(θ, δ), maximised: −mean(1 − cos) toward the partner, +mean(1 − cos) away from it."""
        distance = self.cosine_distance(batch, z).mean()
        return -distance if self.direction is Direction.TOWARD else distance

    def labels(self, batch: AITBatch) -> Tensor:
        """ỹ for every sample of the batch (Algorithm 2)."""
        _, y, j = batch
        return interpolated_labels(y, y[j], self.num_classes, self.eps_y)

    def leader_loss(self, batch: AITBatch, z: Tensor) -> Tensor:
        """L(θ, δ) = mean_i CE(f_θ(x_i + δ_i), ỹ_i) with soft labels (Eq. 5)."""
        return F.cross_entropy(self.leader(batch[0] + z), self.labels(batch))
