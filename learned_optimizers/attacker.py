"""The full-resolution CNN attacker g_φ of Jiang et al. (AISTATS 2021), Table 1.

The attacker maps what the follower knows (an image and, for the gradient attackers, the
classifier's gradient, stacked on the channel axis) to a perturbation δ with every entry strictly
inside (−ε, ε):

    Conv 3x3 (64)  + BN + ReLU                      Table 1, row 1
    ResBlock 3x3 (128), ResBlock (256), ResBlock (128)  Table 1, rows 2-4; Appendix B
    BN → Conv 3x3 (out_channels) → tanh → × ε      Table 1, last row (the BN, affine=False,
                                                   is the authors' released WideAttacker's)

The residual block is the generator block of Miyato et al. (2018), "Spectral Normalization for
Generative Adversarial Networks" (as cited in Appendix B), without spectral norm and without
up-sampling. All layers keep the input's spatial size.

``eps`` is a plain float attribute, read on every forward: an ε warm-up schedule assigns
``attacker.eps = new_value`` between steps. It is not a parameter and not in the state dict, nor
is ``norm``, the ball the output lies strictly inside: "linf" (Table 1's ε·tanh per entry) or
"l2" (the same squashing of the radius, ε·tanh(‖a‖₂)·a/‖a‖₂ per sample).
"""

from __future__ import annotations

import math
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor, nn

# 16 times the channels of the paper's Table 1 attacker (width 1), 256 times its parameters: far
# beyond any attacker studied, and below the widths whose layers cannot be allocated at all
MAX_WIDTH = 16.0


def scaled_channels(channels: int, width: float) -> int:
    """``channels`` times the width multiplier (which must be in (0, ``MAX_WIDTH``]), rounded,
    and at least one channel."""
    if not 0 < width <= MAX_WIDTH:
        raise ValueError(f"The attacker's width must be in (0, {MAX_WIDTH:g}], got {width}.")
    return max(1, round(channels * width))


class ResBlock(nn.Module):
    """Pre-activation residual block after Miyato et al. (2018), Appendix B of the paper.

    Residual path: BN(affine=False) → PReLU → conv3x3 → BN(affine=False) → PReLU → conv3x3.
    Shortcut: a 1x1 convolution when the channel count changes, the identity otherwise.
    Convolutions are Xavier-uniform initialised, gain √2 on the 3x3 ones and 1 on the shortcut.

    No convolution has a bias: in train mode the batch norm after the first one, and the next
    block's (or the head's) batch norm after the second, would cancel it, leaving a parameter
    whose gradient is zero up to round-off.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.residual = nn.Sequential(
            nn.BatchNorm2d(in_channels, affine=False),
            nn.PReLU(),
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(out_channels, affine=False),
            nn.PReLU(),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=False),
        )
        self.shortcut: nn.Module
        if in_channels != out_channels:
            self.shortcut = nn.Conv2d(in_channels, out_channels, 1, bias=False)
            nn.init.xavier_uniform_(self.shortcut.weight, gain=1.0)
        else:
            self.shortcut = nn.Identity()
        for layer in self.residual:
            if isinstance(layer, nn.Conv2d):
                nn.init.xavier_uniform_(layer.weight, gain=math.sqrt(2.0))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: [B, in, H, W] → [B, out, H, W]."""
        return self.shortcut(x) + self.residual(x)


def residual_stack(channels: list[int]) -> nn.Sequential:
    """ResBlocks ``channels[0] → channels[1] → ...``, one per consecutive pair."""
    return nn.Sequential(*(ResBlock(c_in, c_out) for c_in, c_out in pairwise(channels)))


NORMS = ("linf", "l2")


class BoundedOutput(nn.Module):
    """Base class owning the ε bound shared by every attacker.

    Subclasses compute a pre-activation ``z`` and return ``self.bound(z)``: ε · tanh(z) per entry
    (L∞) or ε · tanh(‖z‖₂) · z / ‖z‖₂ per sample (L2), tanh clipped below 1 (one float step under
    L∞, 1e-5 under L2, computed in float32 at least) so the output is *strictly* inside the ball
    even where tanh rounds to 1 in floating point.
    """

    def __init__(self, eps: float, norm: str = "linf") -> None:
        super().__init__()
        if norm not in NORMS:
            raise ValueError(f"Unknown attacker norm {norm!r}; choose one of: {', '.join(NORMS)}.")
        self.eps, self.norm = eps, norm

    @property
    def eps(self) -> float:
        """The perturbation bound ε (pixel units); assign a new value to change it."""
        return self._eps

    @eps.setter
    def eps(self, value: float) -> None:
        value = float(value)
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"The attacker's eps must be a finite number >= 0, got {value}.")
        self._eps = value

    def compile(self, *args: Any, **kwargs: Any) -> None:
        """``nn.Module.compile``, with ``bound`` kept out of the graph: ε changes between steps (the
        warm-up), and a compiled bound would recompile at least once and then trace ε as a symbolic
        float. Done here rather than with a ``torch.compiler.disable`` decorator, which imports
        ``torch._dynamo`` (about 1.5 s) into every process that imports an attacker, compiled or
        not."""
        self.bound = torch.compiler.disable(self.bound)  # the instance's bound, outside the graph
        super().compile(*args, **kwargs)

    def __getstate__(self) -> dict[str, Any]:
        """As ``nn.Module``'s (a copy is not compiled), less the compiled instance's own ``bound``,
        which is bound to the original: a copy's ε would otherwise be the original's."""
        state = super().__getstate__()
        state.pop("bound", None)
        return state

    def bound(self, z: Tensor) -> Tensor:
        """z squashed strictly inside the ε-ball of ``norm`` (for ε > 0)."""
        below_one = 1.0 - torch.finfo(z.dtype).eps / 2  # the largest float under 1
        if self.norm == "linf":
            return torch.tanh(z).clamp(-below_one, below_one) * self.eps
        # in float32 at least: 1 − 1e-5 rounds to 1 in bfloat16 (an --amp output past the ball)
        wide = z.float() if torch.finfo(z.dtype).eps > torch.finfo(torch.float32).eps else z
        radius = wide.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, *([1] * (z.dim() - 1)))
        # the output's norm is recomputed with a sum over every entry, whose rounding (~√d float
        # steps) a one-step margin does not cover: keep 1e-5 of ε to spare
        return wide * (torch.tanh(radius).clamp(max=1.0 - 1e-5) * self.eps / radius)

    @property
    def output_layer(self) -> nn.Conv2d:
        """The last convolution, before the bound (``start_at_zero`` zeroes it)."""
        raise NotImplementedError

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}" + ("" if self.norm == "linf" else f", norm={self.norm}")


def start_at_zero(net: BoundedOutput) -> BoundedOutput:
    """Zero the last convolution's weight and bias, so g_φ₀ ≡ 0 and a follower built around it
    (``LearnedFollower(sign_step=s)``) starts as the hand-designed PGM it corrects. The layer's
    weights still get gradient (its inputs are not zero), so φ moves from the first step on: the
    zero-initialised residual branch of Goyal et al. (2017) and Zhang et al. (2019, Fixup)."""
    layer = net.output_layer
    with torch.no_grad():
        layer.weight.zero_()
        if layer.bias is not None:
            layer.bias.zero_()
    return net


class CNNAttacker(BoundedOutput):
    """The attacker network g_φ of Table 1 (Jiang et al., 2021), at full resolution.

    Args:
        in_channels: channels of the attacker's input (e.g. 2·C for [image, gradient]).
        out_channels: channels of the perturbation (the image's C).
        eps: the bound; outputs are strictly inside the eps-ball. Changeable after construction.
        width: multiplier on every hidden channel count (``max(1, round(c · width))``); parameter
            count falls roughly as ``width**2``.
        norm: the ball, "linf" (Table 1) or "l2".
        blocks: output channels of the residual blocks before the width multiplier. Table 1 has
            (128, 256, 128); the reference code's "WideAttacker" uses (128, 256, 128, 64).

    Example:
        >>> g = CNNAttacker(in_channels=6, out_channels=3, eps=8 / 255, width=0.25)
        >>> delta = g(torch.cat([x, grad], dim=1))  # [B, 3, H, W], |delta| < 8/255
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        eps: float,
        width: float = 1.0,
        blocks: tuple[int, ...] = (128, 256, 128),
        norm: str = "linf",
    ) -> None:
        super().__init__(eps, norm)
        stem = scaled_channels(64, width)  # checks the width first
        if not blocks:
            raise ValueError("The attacker needs at least one residual block.")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, padding=1, bias=False),
            nn.BatchNorm2d(stem, eps=1e-3),
            nn.ReLU(inplace=True),
        )
        nn.init.xavier_uniform_(self.stem[0].weight)
        channels = [stem] + [scaled_channels(c, width) for c in blocks]
        self.blocks = residual_stack(channels)
        self.head = nn.Sequential(
            nn.BatchNorm2d(channels[-1], affine=False),
            nn.Conv2d(channels[-1], out_channels, 3, padding=1),
        )
        nn.init.xavier_uniform_(self.head[1].weight)
        nn.init.zeros_(self.head[1].bias)

    @property
    def output_layer(self) -> nn.Conv2d:
        return self.head[1]

    def forward(self, a: Tensor) -> Tensor:
        """``a``: [B, in_channels, H, W] → δ: [B, out_channels, H, W], ‖δ‖ < eps."""
        return self.bound(self.head(self.blocks(self.stem(a))))
