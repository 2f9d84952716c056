"""One evaluation path: the ``Attack`` base owns eval mode and the feasibility check, and the
training-time accuracies go through it (``robust_accuracy``)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from problems.adversarial.evaluation.attacks import (
    Attack,
    Clean,
    keep_first_break,
    pgd_attack,
    robust_accuracy,
    run_attack,
)


class _Shift(Attack):
    """x + s everywhere, in the L∞ ball of radius ``eps``."""

    name = "shift"

    def __init__(self, eps: float, shift: float) -> None:
        self.eps, self.shift = eps, shift

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        assert not model.training  # the base put the model in eval mode before perturb
        return (x + self.shift).clamp(0, 1)


def _model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(4, 8), nn.Dropout(0.5), nn.Linear(8, 3)).train()


def test_calling_an_attack_sets_eval_mode_and_checks_the_ball() -> None:
    model, x = _model(), torch.full((5, 1, 2, 2), 0.5)
    y = torch.zeros(5, dtype=torch.long)
    x_adv = _Shift(0.1, 0.05)(model, x, y)
    assert not model.training and torch.allclose(x_adv, x + 0.05)
    with pytest.raises(RuntimeError, match="left the linf ε-ball"):
        _Shift(0.1, 0.2)(model, x, y)  # a bug in an attack is never scored
    with pytest.raises(RuntimeError, match="left the linf ε-ball"):
        run_attack(_Shift(0.1, 0.2), model, x, y)


def test_a_nan_adversarial_example_is_a_bug_not_a_robust_example() -> None:
    model, x = _model(), torch.full((5, 1, 2, 2), 0.5)
    y = torch.zeros(5, dtype=torch.long)  # argmax of NaN logits is class 0: all would count
    with pytest.raises(RuntimeError, match="left the linf ε-ball"):
        run_attack(_Shift(0.1, float("nan")), model, x, y)


def test_training_time_accuracies_are_the_attack_path() -> None:
    model = _model()
    x, y = torch.rand(40, 1, 2, 2), torch.randint(0, 3, (40,))
    with torch.no_grad():
        clean = float((model.eval()(x).argmax(1) == y).float().mean())
    assert robust_accuracy(model.train(), x, y, Clean()) == pytest.approx(clean)
    torch.manual_seed(1)
    attacked = robust_accuracy(model, x, y, pgd_attack(10, 0.3, 0.075, from_clean=False))
    assert attacked < clean  # PGD on CE only breaks examples, and at ε = 0.3 it breaks some


def test_restarts_keep_each_example_at_the_first_try_that_breaks_it() -> None:
    """Example 0 is broken by the first candidate, example 1 only by the second; a third that
    breaks both must replace neither (the first break is kept, not the last)."""
    two_class = nn.Sequential(nn.Flatten(), _TwoLogits())  # class 1 where x > 0, else class 0
    x, y = torch.zeros(2, 1, 1, 1), torch.zeros(2, dtype=torch.long)
    first = torch.tensor([1.0, -1.0]).view(2, 1, 1, 1)
    second = torch.tensor([-1.0, 2.0]).view(2, 1, 1, 1)
    third = torch.tensor([3.0, 3.0]).view(2, 1, 1, 1)
    x_adv, broken = x.clone(), torch.zeros(2, dtype=torch.bool)
    for candidate in (first, second, third):
        x_adv, broken = keep_first_break(two_class, x_adv, candidate, y, broken)
    assert broken.tolist() == [True, True]
    assert x_adv.flatten().tolist() == [1.0, 2.0]


class _TwoLogits(nn.Module):
    """Logits (0, s) for a one-pixel input s."""

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        return torch.cat([torch.zeros_like(s), s], dim=1)
