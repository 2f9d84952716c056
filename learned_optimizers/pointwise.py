"""A coordinate-wise attacker: one small network applied at every pixel on its own.

The learned optimizers of Andrychowicz et al. (2016) and the learned inner maximiser of adversarial
training of Xiong & Hsieh (ECCV 2020) are coordinate-wise: each coordinate of the decision is
updated from its own gradient and memory by the same small recurrent network. Here that network
has no memory: a two-hidden-layer perceptron over the attacker's input channels at one pixel,
written as 1x1 convolutions so it takes the same [B, C, H, W] input as the Table 1 and Appendix B
attackers:

    Conv 1x1 (256·width) + ReLU, Conv 1x1 (256·width) + ReLU, Conv 1x1 (out_channels)
    tanh(s · ·) × ε, s a learnable scalar (init 1)

It sees no neighbouring pixel, so any spatial structure in δ comes from the gradient it is fed.
It has no batch normalisation: under L∞ each pixel's step depends only on that pixel's input,
as a hand-designed sign step does; under L2 the bound divides by each sample's norm, which couples
the pixels as the L2 steepest step g / ‖g‖₂ does. Its cost is a few operators a call, where the convolutional attackers
launch dozens (``benchmarks/dispatch_count.py``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learned_optimizers.attacker import BoundedOutput, scaled_channels


class PointwiseAttacker(BoundedOutput):
    """g_φ as the same perceptron at every pixel (1x1 convolutions), bounded in the ε-ball.

    Args:
        in_channels: channels of the attacker's input (e.g. 2·C for [image, gradient]).
        out_channels: channels of the perturbation (the image's C).
        eps: the bound; outputs are strictly inside the eps-ball. Changeable after construction.
        width: multiplier on the hidden channel count 256 (``max(1, round(256 · width))``).
        norm: the ball, "linf" or "l2" (``BoundedOutput``).

    Example:
        >>> g = PointwiseAttacker(in_channels=2, out_channels=1, eps=0.3, width=0.0625)
        >>> delta = g(torch.cat([x, grad], dim=1))  # [B, 1, 28, 28], |delta| < 0.3
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        eps: float,
        width: float = 1.0,
        norm: str = "linf",
    ) -> None:
        super().__init__(eps, norm)
        hidden = scaled_channels(256, width)
        self.hidden = nn.Sequential(
            nn.Conv2d(in_channels, hidden, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, hidden, 1),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(hidden, out_channels, 1)
        self.scale = nn.Parameter(torch.ones(()))
        for layer in (*self.hidden, self.out):
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_uniform_(layer.weight, nonlinearity="relu")
                nn.init.zeros_(layer.bias)

    @property
    def output_layer(self) -> nn.Conv2d:
        return self.out

    def forward(self, a: Tensor) -> Tensor:
        """``a``: [B, in_channels, H, W] → δ: [B, out_channels, H, W], ‖δ‖ < eps."""
        return self.bound(self.scale * self.out(self.hidden(a)))
