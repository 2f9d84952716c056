"""A coordinate-wise LSTM optimizer (Andrychowicz et al., NeurIPS 2016, "Learning to learn by
gradient descent by gradient descent"): g_φ for parameter-space followers.

Every coordinate i of the optimizee's parameter vector is updated by the same small LSTM (weights
φ shared across coordinates; coordinates are the batch dimension), from its own gradient and its
own hidden state:

    [u_i, h_i'] = LSTM_φ(pre(∇_i), h_i),        ψ_i ← ψ_i + s · u_i

with the gradient pre-processing of the paper's Section 3.2 / Appendix A (p = 10):

    pre(g) = (log|g| / p, sign g)     if |g| ≥ e^{-p}
             (−1, e^{p} g)            otherwise,

which keeps inputs of very different magnitudes in a usable range, and an output scale s
(``output_scale``). The step is an ascent step: the caller feeds the
gradient of the objective it maximises. Two LSTM layers of 20 units, as in the paper.

Options for the residual optimizer of ``learned_optimizers.residual``: ``extra_inputs`` more
per-coordinate features after pre(∇) (e.g. Adam's direction), and ``squash`` for u = s · tanh(·).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

LSTMState = list[tuple[Tensor, Tensor]]  # (h, c) per layer, each (coordinates, hidden)


def preprocess_gradient(grad: Tensor, p: float = 10.0) -> Tensor:
    """Andrychowicz et al. (2016), Appendix A: (coordinates,) -> (coordinates, 2)."""
    big = grad.abs() >= math.exp(-p)
    magnitude = torch.where(big, grad.abs().clamp_min(1e-30).log() / p, torch.full_like(grad, -1.0))
    direction = torch.where(big, grad.sign(), grad * math.exp(p))
    return torch.stack([magnitude, direction], dim=-1)


class CoordinateLSTMOptimizer(nn.Module):
    """u = s · Linear(LSTM_φ(pre(g), h)), applied to every coordinate with shared φ."""

    def __init__(
        self,
        hidden_size: int = 20,
        num_layers: int = 2,
        output_scale: float = 0.01,
        preprocess_p: float = 10.0,
        extra_inputs: int = 0,
        squash: bool = False,
    ) -> None:
        super().__init__()
        if hidden_size < 1 or num_layers < 1:
            raise ValueError("CoordinateLSTMOptimizer needs hidden_size and num_layers >= 1")
        self.hidden_size, self.output_scale = hidden_size, output_scale
        self.preprocess_p, self.extra_inputs, self.squash = preprocess_p, extra_inputs, squash
        sizes = [2 + extra_inputs] + [hidden_size] * num_layers
        self.cells = nn.ModuleList(nn.LSTMCell(a, hidden_size) for a in sizes[:-1])
        self.head = nn.Linear(hidden_size, 1)

    def init_state(self, coordinates: int, device: torch.device | None = None) -> LSTMState:
        """Zero hidden and cell states for ``coordinates`` coordinates, in φ's dtype (the cells
        multiply them by φ) and on φ's device unless ``device`` names another."""
        shape, weight = (coordinates, self.hidden_size), self.head.weight
        return [
            (weight.new_zeros(shape, device=device), weight.new_zeros(shape, device=device))
            for _ in self.cells
        ]  # distinct tensors: a loaded state must not write one layer's state into another

    def forward(
        self, grad: Tensor, state: LSTMState, extra: Tensor | None = None
    ) -> tuple[Tensor, LSTMState]:
        """One update: ``grad`` (coordinates,) and ``extra`` (coordinates, extra_inputs) ->
        (update (coordinates,), new state)."""
        x = preprocess_gradient(grad.reshape(-1), self.preprocess_p)
        if self.extra_inputs:
            x = torch.cat([x, extra.reshape(x.shape[0], self.extra_inputs)], dim=1)
        new_state: LSTMState = []
        for cell, (h, c) in zip(self.cells, state, strict=True):
            h, c = cell(x, (h, c))
            new_state.append((h, c))
            x = h
        out = self.head(x).squeeze(-1).view_as(grad)
        return self.output_scale * (torch.tanh(out) if self.squash else out), new_state
