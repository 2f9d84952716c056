"""Random noise and CW-L∞ on closed-form toy models: noise draws at least once, as often as
asked, and stops drawing for a broken example; CW keeps each example's first break while others
are still attacked."""

from __future__ import annotations

import pytest
import torch

from bilevel.errors import UserError
from problems.adversarial.evaluation.noise_and_cw import CarliniWagnerLinf, RandomNoise


def test_noise_with_no_draw_is_refused() -> None:
    """Zero draws would score every example unattacked: the noise row would be clean accuracy."""
    with pytest.raises(UserError, match="--noise-samples must be at least 1; got 0"):
        RandomNoise(0.1, samples=0)


class _Constant(torch.nn.Module):
    """Calls every image class ``winner``, and counts the images it is shown."""

    def __init__(self, winner: int) -> None:
        super().__init__()
        self.winner, self.seen = winner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen += len(x)
        return torch.nn.functional.one_hot(torch.full((len(x),), self.winner), 2).float()


def test_random_noise_draws_as_many_samples_as_asked() -> None:
    """A model no draw breaks sees every example once per draw, however the draws are batched."""
    model, x = _Constant(0), torch.full((3, 1, 2, 2), 0.5)
    RandomNoise(0.1, samples=7)(model, x, torch.zeros(3, dtype=torch.long))
    assert model.seen == 7 * 3


def test_noise_stops_drawing_for_an_example_once_it_is_broken() -> None:
    """A model that calls every image class 1 breaks every label-0 example at the first draw:
    the other 6 draws are not made, so the model sees each example once."""
    model, x = _Constant(1), torch.full((3, 1, 2, 2), 0.5)
    x_adv = RandomNoise(0.1, samples=7)(model, x, torch.zeros(3, dtype=torch.long))
    assert model.seen == 3
    assert (x_adv - x).abs().max() <= 0.1 + 1e-6


class _Band(torch.nn.Module):
    """Class 1 wins only for a first pixel v in (0.55, 0.65)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x.flatten(1)[:, :1]
        return torch.cat([torch.zeros_like(v), 1 - 20 * (v - 0.6).abs()], 1)


def test_cw_keeps_an_examples_first_break_while_another_is_still_attacked() -> None:
    """Example 0 (v = 0.5) passes through the band and out under Adam's momentum; example 1
    (v = 0, ε = 0.3) never reaches it, so the attack runs every iteration. Example 0 must keep
    the point in the band, not the last iterate past it."""
    x, y = torch.tensor([0.5, 0.0]).view(2, 1, 1, 1), torch.tensor([0, 0])
    x_adv = CarliniWagnerLinf(0.3, iterations=12, lr=0.1)(_Band(), x, y)
    assert _Band()(x_adv).argmax(1).tolist() == [1, 0]
    assert (x_adv - x).abs().max() <= 0.3 + 1e-6
