"""The norm of a follower's ball, ‖z_i‖ ≤ ε per sample: L∞ (the paper's) or L2.

A batched decision z has one sample per row (dimension 0); every operation here is per sample:

- ``steepest(g)``: the unit-norm direction of steepest ascent, argmax_{‖d‖ ≤ 1} ⟨g, d⟩: sign g under
  L∞ (FGSM, PGM; paper Eq. 4) and g / ‖g‖₂ under L2 (PGD-L2; Madry et al. 2018, Section 2.1);
- ``normalise(g)``: g over its own norm, the scale of ∇ that g_φ sees (g / max|g| under L∞);
- ``project(z, ε)``: the nearest point of the ball (a clamp under L∞, a rescale under L2);
- ``sample(like, ε)``: a uniform draw from the ball (the random start of FGSM-RS and PGM).
"""

from __future__ import annotations

from enum import Enum

import torch
from torch import Tensor

TINY = 1e-12  # the floor of ‖z_i‖ in ε / ‖z_i‖, which min(1, ·) saturates (``project``)


class Norm(str, Enum):
    """The threat model's ball: L∞ or L2 (module docstring)."""

    LINF = "linf"
    L2 = "l2"

    @property
    def label(self) -> str:
        """The norm as text writes it: L∞ or L2."""
        return "L∞" if self is Norm.LINF else "L2"

    def of(self, t: Tensor) -> Tensor:
        """‖t_i‖ per sample, shaped to broadcast against ``t`` ([B, 1, ..., 1])."""
        flat = t.flatten(1)
        value = flat.abs().amax(1) if self is Norm.LINF else flat.norm(dim=1)
        return value.view(-1, *([1] * (t.dim() - 1)))

    def normalise(self, g: Tensor) -> Tensor:
        """g / ‖g_i‖ per sample: every non-zero sample's own maximum at ±1 (L∞) or unit length
        (L2), however small its norm; a zero sample stays zero.

        Under L2, g_i / ‖g_i‖₂ = s_i / ‖s_i‖₂ with s_i = g_i / ‖g_i‖_∞: ‖s_i‖₂ ∈ [1, √d] cannot
        underflow, where ‖g_i‖₂ computed directly squares coordinates below ~1e-19 (float32) to
        zero. No norm is floored: a floor would shorten every direction whose norm is below it.
        """
        peak = Norm.LINF.of(g)
        scaled = g / torch.where(peak > 0, peak, 1.0)
        if self is Norm.LINF:
            return scaled
        length = self.of(scaled)
        return scaled / torch.where(length > 0, length, 1.0)

    def steepest(self, g: Tensor) -> Tensor:
        """argmax_{‖d_i‖ ≤ 1} ⟨g_i, d_i⟩: sign g (L∞), g / ‖g_i‖₂ (L2)."""
        return g.sign() if self is Norm.LINF else self.normalise(g)

    def project(self, z: Tensor, eps: float) -> Tensor:
        """Π onto {‖z_i‖ ≤ ε}: a clamp (L∞) or z_i · min(1, ε / ‖z_i‖₂) (L2)."""
        if self is Norm.LINF:
            return z.clamp(-eps, eps)
        return z * (eps / self.of(z).clamp_min(TINY)).clamp(max=1.0)

    def sample(self, like: Tensor, eps: float) -> Tensor:
        """Uniform in the ball: U(−ε, ε) per coordinate (L∞); under L2 a Gaussian direction at
        radius ε·u^{1/d}, u ~ U(0, 1), d the coordinates of one sample (uniform in volume)."""
        if self is Norm.LINF:
            return torch.empty_like(like).uniform_(-eps, eps)
        direction = self.normalise(torch.randn_like(like))
        u = torch.rand(len(like), *([1] * (like.dim() - 1)), device=like.device)
        return direction * eps * u.pow(1.0 / like[0].numel())
