"""The leader's optimizer and learning-rate schedule (``--leader-optimizer``, ``--schedule``): SGD
with momentum and ×0.1 steps, the paper's (Section 4), or Adam, constant or cosine, as levers."""

from __future__ import annotations

from typing import Any

import torch
from torch.optim import Optimizer, lr_scheduler

from problems.adversarial.config import AdversarialConfig


def leader_optimizer(cfg: AdversarialConfig, params: Any) -> Optimizer:
    """``--leader-optimizer``: SGD with momentum (the paper) or Adam, weight decay for both."""
    if cfg.leader_optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def lr_schedule(cfg: AdversarialConfig, optimizer: Optimizer) -> lr_scheduler.LRScheduler:
    """``--schedule``, stepped once per epoch: ×0.1 at ``milestones``, constant, or cosine
    annealing to zero over ``epochs``."""
    if cfg.schedule == "constant":
        return lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    if cfg.schedule == "cosine":
        return lr_scheduler.CosineAnnealingLR(optimizer, T_max=cfg.epochs)
    return lr_scheduler.MultiStepLR(optimizer, cfg.milestones, gamma=0.1)
