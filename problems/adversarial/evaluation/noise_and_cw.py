"""Evaluation attacks that are not followers of a DRO problem (the rest: ``evaluation.attacks``).

- random noise: N uniform samples in the ε-ball; an example is broken if any sample breaks it.
- CW-L∞ (Carlini & Wagner 2017, Section V, "L∞ attack", L∞ only): Adam on the margin objective in
  tanh space. Its τ-search stops at τ = ε, where the penalty Σ max(|δ_i| − τ, 0) vanishes inside
  the ball, so what remains is the change of variables onto the feasible box and Adam on f.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from bilevel.errors import UserError
from bilevel.norms import Norm
from problems.adversarial.dro import cw_margin
from problems.adversarial.evaluation.attacks import Attack, keep_first_break


class RandomNoise(Attack):
    """``samples`` draws of δ uniform in the ε-ball per example (clipped to the box); broken if
    any draw is misclassified. Draws stop for an example once it is broken."""

    name = "noise"
    white_box = False

    def __init__(self, eps: float, samples: int = 100, norm: Norm | str = Norm.LINF) -> None:
        if samples < 1:
            raise UserError(f"--noise-samples must be at least 1; got {samples}.")
        self.eps, self.samples, self.norm = eps, samples, Norm(norm)

    def params(self) -> dict[str, Any]:
        distribution = {"distribution": "uniform in the ε-ball"}
        return {"eps": self.eps, "samples": self.samples, **distribution, **self.norm_params()}

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_adv, broken = x.clone(), torch.zeros_like(y, dtype=torch.bool)
        for _ in range(self.samples):
            left = ~broken
            if not left.any():
                break
            xs = x[left]
            draw = (xs + self.norm.sample(xs, self.eps)).clamp(0, 1)
            sub, hit = keep_first_break(model, x_adv[left], draw, y[left], broken[left])
            x_adv[left], broken[left] = sub, hit
        return x_adv


class CarliniWagnerLinf(Attack):
    """CW-L∞ at τ = ε: x_adv = lo + (hi − lo)(tanh w + 1)/2 over the feasible box
        [max(x − ε, 0), min(x + ε, 1)], Adam on the margin max(Z_y − max_{j≠y} Z_j, −κ) for
        ``iterations`` steps; an example is broken if any iterate (the start and each step's point,
    the last included) is misclassified."""

    name = "cw-linf"

    def __init__(
        self, eps: float, iterations: int = 100, lr: float = 0.1, kappa: float = 0.0
    ) -> None:
        if iterations < 1:
            raise UserError(f"CW needs at least one iteration; got {iterations}.")
        self.eps, self.iterations, self.lr, self.kappa = eps, iterations, lr, kappa

    def params(self) -> dict[str, Any]:
        return {
            "eps": self.eps,
            "iterations": self.iterations,
            "optimizer": "Adam",
            "lr": self.lr,
            "kappa": self.kappa,
            "tau": self.eps,
            "start": "x, pulled 5% inside the tanh range",
        }

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        lo, hi = (x - self.eps).clamp(0, 1), (x + self.eps).clamp(0, 1)
        width = (hi - lo).clamp_min(1e-12)
        start = ((x - lo) / width * 2 - 1).clamp(-0.9, 0.9)  # tanh saturates at ±1: no gradient
        w = torch.atanh(start).requires_grad_(True)
        optimizer = torch.optim.Adam([w], lr=self.lr)
        x_adv, broken = x.clone(), torch.zeros_like(y, dtype=torch.bool)
        for _ in range(self.iterations):
            with torch.enable_grad():  # also where the caller runs under no_grad
                candidate = lo + width * (torch.tanh(w) + 1) / 2
                loss = (-cw_margin(model(candidate), y)).clamp_min(-self.kappa).sum()
                (w.grad,) = torch.autograd.grad(loss, w)  # the model's .grad stays untouched
            x_adv, broken = keep_first_break(model, x_adv, candidate.detach(), y, broken)
            if broken.all():
                return x_adv
            optimizer.step()
        last = (lo + width * (torch.tanh(w) + 1) / 2).detach()  # the last step's point, scored too
        return keep_first_break(model, x_adv, last, y, broken)[0]
