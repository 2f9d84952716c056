"""``solve adversarial-ait``: adversarial interpolation training (Section 2.1, Algorithms 2 and 4)
in the same run machinery as DRO (``solve_dro``): the same data, selection on the validation
split by PGD accuracy, checkpoints, ``--resume``, test table, ``report.md`` and ``curves.png``.

Followers (``--follower``):
- ``ait``: the original AIT ("AIT Net"): one signed-gradient step of size ε on the follower
  objective from a uniform start in the ball, projected (Zhang & Xu 2020; paper Section 4.2);
- ``grad`` (L2L-AIT, Algorithm 4, Eq. 8), ``2-step`` and the other learned attackers of DRO, fed
  with [x_init, ∇_x q].

Defaults beyond DRO's: ``--update follower-first`` (Algorithm 4 steps φ before θ), ε_y = 0.5,
the batch reversed as partners, features pulled ``toward`` the partner's. On CIFAR: the paper's
AIT setting, 200 epochs with lr ×0.1 at epochs 60 and 90 (Section 4.2). ``solve_dro(AITConfig(...),
out)`` trains a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from bilevel.errors import UserError
from bilevel.followers import LearnedFollower, SignGradientAscent
from bilevel.loop import UpdateMode
from problems.adversarial.ait import (
    AdversarialInterpolation,
    AITBatch,
    Direction,
    Pairing,
    pair_batch,
)
from problems.adversarial.config import LEARNED, DROConfig, _choose, build_follower
from problems.adversarial.data import DatasetInfo

AIT_FOLLOWERS = ("ait", *LEARNED)


@dataclass
class AITConfig(DROConfig):
    """Every option of an AIT run (DRO's, plus the label mixing, partners and direction)."""

    FOLLOWER_CHOICES: ClassVar[tuple[str, ...]] = AIT_FOLLOWERS

    follower: str = "ait"
    update: str = "follower-first"
    eps_y: float = 0.5
    pairing: str = "reversed"
    ait_direction: str = "toward"

    def resolve(self) -> AITConfig:
        """DRO's checks and defaults, the paper's CIFAR AIT schedule, and AIT's own options."""
        if self.dataset.lower() in ("cifar10", "cifar100"):
            self.epochs = 200 if self.epochs is None else self.epochs
            if self.milestones is None and self.epochs == 200:
                self.milestones = [60, 90]
        # the paper's L2L-AIT unless asked: bench ait --levers carries the DRO study's choices over
        self.attacker_random_start = bool(self.attacker_random_start)
        self.attacker_sign_step = self.attacker_sign_step or 0.0
        super().resolve()
        _choose("--pairing", self.pairing, tuple(m.value for m in Pairing))
        _choose("--ait-direction", self.ait_direction, tuple(m.value for m in Direction))
        if not 0.0 <= self.eps_y <= 1.0:
            raise UserError(f"--eps-y must be in [0, 1]; got {self.eps_y}.")
        if self.update == UpdateMode.FUSED.value:
            raise UserError(
                "--update fused needs a zero-sum problem, and AIT's follower objective is not its "
                "leader loss; use --update follower-first or alternating."
            )
        return self

    def build_problem(self, model: nn.Module, info: DatasetInfo) -> AdversarialInterpolation:
        return AdversarialInterpolation(
            model, self.eps, info.num_classes, self.eps_y, self.ait_direction
        )

    def make_follower(self, info: DatasetInfo) -> SignGradientAscent | LearnedFollower:
        """``ait``: one signed step of size ε from the uniform start; else DRO's learned ones."""
        if self.follower == "ait":
            return SignGradientAscent(steps=1, step_size=self.eps, random_start=True)
        return build_follower(self, info)

    def training_batch(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> AITBatch:
        """``(x, y, partner)``: partners drawn from the epoch's generator, so resume is exact."""
        return pair_batch(x, y, self.pairing, generator)
