"""Small models for the evaluation tests: a quickly trained MLP on mnist5k digits (undefended),
and the same MLP behind a quantising first layer, whose input gradient is exactly zero
(``torch.round``), the textbook case of gradient masking (Athalye et al. 2018, "shattered
gradients"): gradient attacks see nothing, while the function is as easy to fool as before.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from problems.adversarial.data import load_dataset


class MLP(nn.Module):
    def __init__(self, hidden: int = 64) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.ReLU())
        self.head = nn.Linear(hidden, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.body(x))


class Quantised(nn.Module):
    """f(round(x · levels) / levels): the same function up to rounding, zero input gradient."""

    def __init__(self, inner: nn.Module, levels: int = 16) -> None:
        super().__init__()
        self.inner, self.levels = inner, levels

    def forward(self, x: Tensor) -> Tensor:
        return self.inner(torch.round(x * self.levels) / self.levels)


def train_mlp(seed: int, n: int = 1000, epochs: int = 3, quantise: bool = False) -> nn.Module:
    """An undefended classifier trained for about a second on the first ``n`` training digits."""
    generator = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    x, y = load_dataset("mnist5k").train
    x, y = x[:n], y[:n]
    model: nn.Module = MLP()
    if quantise:
        model = Quantised(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for i in range(0, n, 64):
            idx = order[i : i + 64]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval()


def digits_head(n: int) -> tuple[Tensor, Tensor]:
    x, y = load_dataset("mnist5k").test
    return x[:n], y[:n]
