"""Learned optimizers that start as Adam: g_φ for a parameter-space follower (GAIL's
discriminator ψ) whose update at initialisation is exactly Adam's, so that the learned follower
starts as the hand-designed one and meta-training can only move it from there.

Adam (Kingma & Ba, ICLR 2015) is written here as a function of explicit state (m, v, t), computed
as ``torch.optim.Adam`` computes it (``lerp`` for m, bias corrections in Python floats), so a
follower that unrolls it gives the ψ trajectory of a follower that calls ``torch.optim.Adam``
(``tests/test_gail_followers.py``). It is an *ascent* step: the caller feeds ∇ of what it maximises.

- ``ResidualLSTMOptimizer`` (L2L-GAIL, K unrolled steps): the coordinate-wise LSTM of
  Andrychowicz et al. (NeurIPS 2016) as a residual on Adam,

      u = Adam_step(g) + s · tanh(head(LSTM_φ([pre(g), d], h))),     d = m̂ / (√v̂ + ε_Adam),

  with ``head`` initialised to zero, so u = Adam_step(g) at φ₀.
- ``OneShotStepNet`` (the paper-faithful one-shot follower, Jiang et al. 2021, Eq. 7 and
  Algorithm 3): one application of a coordinate-wise MLP f_φ to A = [pre(g), d],

      Δψ = η · d + s · tanh(f_φ(A)),

  with f_φ's last layer initialised to zero (φ₀: one Adam step of size η); the follower projects
  ψ_t + Δψ onto the trust region ‖ψ − ψ_t‖ ≤ ε (``problem.project``).

Both take (grad, state) and return (update, state); a state is a dict of tensors, which the
follower keeps as buffers (so checkpoints and ``--resume`` carry it).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learned_optimizers.lstm_optimizer import CoordinateLSTMOptimizer, preprocess_gradient

OptimizerState = dict[str, Tensor]


def adam_init(coordinates: int, like: Tensor) -> OptimizerState:
    """Adam's state before its first step: m = v = 0, t = 0, in ``like``'s dtype and device (those
    of the network that serves ψ, which must be ψ's: m and v are ψ-shaped)."""
    return {
        "m": like.new_zeros(coordinates),
        "v": like.new_zeros(coordinates),
        "t": like.new_zeros(()),
    }


def adam_update(
    grad: Tensor, state: OptimizerState, lr: float, betas: tuple[float, float], eps: float
) -> tuple[Tensor, Tensor, OptimizerState]:
    """One Adam ascent step on ``grad``: (step, direction d = step / lr, new state), with

    m ← β₁ m + (1 − β₁) g,  v ← β₂ v + (1 − β₂) g²,  step = lr/(1 − β₁ᵗ) · m / (√v/√(1 − β₂ᵗ) + ε).
    """
    beta1, beta2 = betas
    grad = grad.detach()
    m = state["m"].lerp(grad, 1 - beta1)
    v = state["v"].mul(beta2).addcmul(grad, grad, value=1 - beta2)
    t = state["t"] + 1
    step_count = float(t)
    bias_correction1 = 1 - beta1**step_count
    bias_correction2_sqrt = (1 - beta2**step_count) ** 0.5
    denom = (v.sqrt() / bias_correction2_sqrt).add(eps)
    direction = m / denom / bias_correction1
    step = torch.zeros_like(grad).addcdiv(m, denom, value=lr / bias_correction1)
    return step, direction, {"m": m, "v": v, "t": t}


class ResidualLSTMOptimizer(nn.Module):
    """u = Adam_step(g) + s · tanh(head(LSTM_φ([pre(g), d]))); zero head, so Adam at φ₀."""

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        hidden_size: int = 20,
        num_layers: int = 2,
        residual_scale: float | None = None,
    ) -> None:
        super().__init__()
        self.lr, self.betas, self.eps = lr, betas, eps
        self.residual_scale = lr if residual_scale is None else residual_scale
        self.lstm = CoordinateLSTMOptimizer(
            hidden_size, num_layers, output_scale=self.residual_scale, extra_inputs=1, squash=True
        )
        nn.init.zeros_(self.lstm.head.weight)
        nn.init.zeros_(self.lstm.head.bias)

    def init_state(self, coordinates: int) -> OptimizerState:
        """Adam's zero state and the LSTM's, in φ's dtype and on its device."""
        state = adam_init(coordinates, self.lstm.head.weight)
        for i, (h, c) in enumerate(self.lstm.init_state(coordinates)):
            state[f"h{i}"], state[f"c{i}"] = h, c
        return state

    def forward(self, grad: Tensor, state: OptimizerState) -> tuple[Tensor, OptimizerState]:
        step, direction, new_state = adam_update(grad, state, self.lr, self.betas, self.eps)
        layers = range(len(self.lstm.cells))
        lstm_state = [(state[f"h{i}"], state[f"c{i}"]) for i in layers]
        residual, lstm_state = self.lstm(grad, lstm_state, extra=direction.reshape(-1, 1))
        for i, (h, c) in zip(layers, lstm_state, strict=True):
            new_state[f"h{i}"], new_state[f"c{i}"] = h, c
        return step + residual, new_state


class OneShotStepNet(nn.Module):
    """Δψ = η · d + s · tanh(f_φ([pre(g), d])); f_φ's last layer zero, so one Adam step at φ₀."""

    def __init__(
        self,
        step_size: float = 3e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        hidden_size: int = 32,
        residual_scale: float | None = None,
        preprocess_p: float = 10.0,
    ) -> None:
        super().__init__()
        self.step_size, self.betas, self.eps = step_size, betas, eps
        self.preprocess_p = preprocess_p
        self.residual_scale = step_size if residual_scale is None else residual_scale
        self.body = nn.Sequential(
            nn.Linear(3, hidden_size),
            nn.Tanh(),
            nn.Linear(hidden_size, hidden_size),
            nn.Tanh(),
            nn.Linear(hidden_size, 1),
        )
        nn.init.zeros_(self.body[-1].weight)
        nn.init.zeros_(self.body[-1].bias)

    def init_state(self, coordinates: int) -> OptimizerState:
        """Adam's zero state, in φ's dtype and on its device."""
        return adam_init(coordinates, self.body[-1].weight)

    def forward(self, grad: Tensor, state: OptimizerState) -> tuple[Tensor, OptimizerState]:
        step, direction, new_state = adam_update(grad, state, self.step_size, self.betas, self.eps)
        features = torch.cat(
            [preprocess_gradient(grad.reshape(-1), self.preprocess_p), direction.reshape(-1, 1)],
            dim=1,
        )
        residual = self.residual_scale * torch.tanh(self.body(features).squeeze(-1))
        return step + residual.view_as(step), new_state
