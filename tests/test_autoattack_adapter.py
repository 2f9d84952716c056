"""The AutoAttack adapter's cascade bookkeeping on a two-class linear model: what is credited to
which component, over every batch, and that its seed is the package's."""

from __future__ import annotations

import pytest
import torch

from bilevel.errors import UserError
from problems.adversarial.evaluation.attacks import run_attack
from problems.adversarial.evaluation.autoattack_adapter import AutoAttackAdapter


class _Linear2(torch.nn.Module):
    """Two classes on 2x2 images, logit₁ − logit₀ = Σ(x − 0.5) + bias: class 1 for Σx > 2 − bias."""

    def __init__(self, bias: float = 0.0) -> None:
        super().__init__()
        self.bias = bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = (x - 0.5).flatten(1).sum(1, keepdim=True) + self.bias
        return torch.cat([-s, s], 1)


def _digits() -> tuple[torch.Tensor, torch.Tensor]:
    """Four 2x2 images at 0.45 (Σ(x − 0.5) = −0.2, class 0): labels 0, 1, 0, 1, so examples 1
    and 3 are misclassified before any attack; at ε = 0.1 the ball reaches Σ(x − 0.5) = +0.2,
    so APGD-CE breaks examples 0 and 2."""
    return torch.full((4, 1, 2, 2), 0.45), torch.tensor([0, 1, 0, 1])


def test_a_clean_mistake_is_credited_to_no_component() -> None:
    """The cascade attacks only what the model gets right: a clean mistake is "" in broken_by and
    in no component's count, or APGD-CE's share of the robust-accuracy drop is overstated."""
    x, y = _digits()
    attack = AutoAttackAdapter(0.1, ("apgd-ce",), seed=0)
    result = run_attack(attack, _Linear2(), x, y)
    assert attack.broken_by == ["apgd-ce", "", "apgd-ce", ""]
    assert attack.broken_counts() == {"apgd-ce": 2}
    assert result.accuracy == 0.0


def test_broken_by_covers_every_batch_in_order() -> None:
    """run_attack's batches of 2 call the adapter twice: broken_by is per example of both calls,
    in order, and the counts add over them (not the last batch's alone)."""
    x, y = _digits()
    x[2:] = 0.2  # Σ(x − 0.5) = −1.2: out of reach at ε = 0.1, whatever the label
    y[2:] = 0
    attack = AutoAttackAdapter(0.1, ("apgd-ce",), seed=0)
    run_attack(attack, _Linear2(), x, y, batch_size=2)
    assert attack.broken_by == ["apgd-ce", "", "", ""]
    assert attack.broken_counts() == {"apgd-ce": 1}


def test_an_empty_component_list_is_refused() -> None:
    """An empty cascade attacks nothing: its "robust" accuracy would be the clean one."""
    with pytest.raises(UserError, match="choose from apgd-ce"):
        AutoAttackAdapter(0.1, ())


def test_the_adapters_seed_drives_the_packages_random_draws() -> None:
    """Square with 2 queries breaks an example only where its random ±ε stripes are all +ε (a −ε
    column keeps Σ(x − 0.5) at −0.05 or below): which examples it breaks, and so x_adv, is the
    draw. The same seed draws it again; seeds 0 to 3 do not all draw the same."""
    x, y = torch.full((8, 1, 2, 2), 0.4875), torch.zeros(8, dtype=torch.long)
    model = _Linear2()

    def square(seed: int) -> torch.Tensor:
        torch.manual_seed(123)  # the global generator alike: only the adapter's seed differs
        attack = AutoAttackAdapter(0.3, ("square",), seed=seed, square_queries=2)
        return attack(model, x, y)

    first = square(0)
    assert torch.equal(square(0), first)
    assert any(not torch.equal(square(seed), first) for seed in (1, 2, 3))


def test_the_full_cascade_is_the_autoattack_row_and_a_sub_list_names_its_components() -> None:
    """eval.json's and the checklist's "autoattack" row is the standard cascade; a sub-list must
    not pass for it."""
    assert AutoAttackAdapter(0.1).name == "autoattack"
    assert AutoAttackAdapter(0.1, ("apgd-ce", "apgd-t")).name == "autoattack(apgd-ce,apgd-t)"
