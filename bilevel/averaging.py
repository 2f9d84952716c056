"""An exponential moving average of the leader's parameters θ (Polyak averaging; as robust
training uses it, e.g. Gowal et al. 2020, "Uncovering the limits of adversarial training", and
Rebuffi et al. 2021, against robust overfitting).

After every leader step, θ̄ ← d·θ̄ + (1 − d)·θ, starting at θ̄ = θ after the first step; buffers
(batch-norm statistics) are averaged the same way. The follower and the leader's optimizer keep
working on θ itself; θ̄ is the leader that is validated, selected and tested.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from bilevel.errors import UserError


def check_decay(decay: float) -> float:
    """``--leader-ema``'s domain, one sentence otherwise: d in [0, 1) (0: no average)."""
    if not 0.0 <= decay < 1.0:
        raise UserError(f"--leader-ema must be in [0, 1) (0: off); got {decay}.")
    return decay


class LeaderAverage:
    """θ̄, the exponential moving average of ``leader`` with decay ``decay`` in [0, 1)."""

    def __init__(self, leader: nn.Module, decay: float) -> None:
        ema = get_ema_multi_avg_fn(check_decay(decay))
        self.average = AveragedModel(leader, multi_avg_fn=ema, use_buffers=True)

    @property
    def module(self) -> nn.Module:
        """θ̄ as a module of the leader's class (whoever evaluates it sets its mode)."""
        return self.average.module

    @torch.no_grad()
    def update(self, leader: nn.Module) -> None:
        """One averaging step, after a leader step."""
        self.average.update_parameters(leader)

    def state_dict(self) -> dict[str, Any]:
        return self.average.state_dict()  # θ̄ and the count of steps averaged

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.average.load_state_dict(state)
