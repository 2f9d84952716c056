"""The down-sampling "slim" attacker of Jiang et al. (AISTATS 2021), Appendix B.

Section 5 and footnote 2 of the paper describe an attacker with down-sampling modules that is
faster but less stable, and note that skip connections from the input stabilise it, though its
robustness was "still worse than the proposed architecture" there (on CIFAR). It is the mnist5k
default here because the full-resolution attacker costs more than the small CNN it attacks, and
the study found width 0.0625 as robust as wider ones (README, "Results"). This module follows
the layout of the authors' released version of it:

    Conv 3x3, stride 2 (128) + BN + ReLU                 half resolution
    ResBlock (256), ResBlock (128)                        Appendix B (Miyato et al., 2018)
    ConvTranspose 4x4, stride 2, padding 1 (16) + BN + ReLU   back to full resolution
    Conv 3x3 over concat[features, a] (out_channels)      skip connection from the input
    tanh(s · ·) × ε, s a learnable scalar (init 1)

The released build has four details this diagram leaves out: a batch norm (no affine) before the
transposed convolution, the scale s starting at 5, ε 1e-3 in the batch norms after the stem and the
transposed convolution (the residual blocks' keep 1e-5), and no bias on the last convolution. ``SlimAttacker(reference=True)`` (``--attacker slim-reference``) adds them;
``slim`` (the mnist5k default, chosen by the study) has none of them. Both keep this module's
initialisation (Xavier on every convolution) and bias-free residual blocks (``ResBlock``).

Every hidden channel count is multiplied by ``width``. Any input size, odd or even, returns at the
input's exact size: the stride-2 stem gives ceil(H/2), the transposed convolution doubles that,
and the one extra row/column an odd size produces is cropped.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from learned_optimizers.attacker import BoundedOutput, residual_stack, scaled_channels


class SlimAttacker(BoundedOutput):
    """Appendix B's down-sampling attacker g_φ with a skip connection from its input.

    Args:
        in_channels: channels of the attacker's input (e.g. 2·C for [image, gradient]).
        out_channels: channels of the perturbation (the image's C).
        eps: the bound; outputs are strictly inside the eps-ball. Changeable after construction.
        width: multiplier on every hidden channel count (``max(1, round(c · width))``).
        norm: the ball, "linf" or "l2" (``BoundedOutput``).
        blocks: output channels of the residual blocks (before ``width``), which start from the
            stem's 128 channels; the reference uses (256, 128).
        reference: build it as the authors' released code does (see the module docstring).

    Example:
        >>> g = SlimAttacker(in_channels=2, out_channels=1, eps=0.3, width=0.5)
        >>> delta = g(torch.cat([x, grad], dim=1))  # [B, 1, 28, 28], |delta| < 0.3
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        eps: float,
        width: float = 1.0,
        blocks: tuple[int, ...] = (256, 128),
        norm: str = "linf",
        reference: bool = False,
    ) -> None:
        super().__init__(eps, norm)
        stem = scaled_channels(128, width)
        up = scaled_channels(16, width)
        bn_eps = 1e-3 if reference else 1e-5
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, stem, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(stem, eps=bn_eps),
            nn.ReLU(inplace=True),
        )
        channels = [stem] + [scaled_channels(c, width) for c in blocks]
        self.blocks = residual_stack(channels)
        if reference:
            self.blocks.append(nn.BatchNorm2d(channels[-1], affine=False))
        # (h - 1)·2 - 2 + 4 = 2h: exact for even sizes, one too many for odd ones (cropped).
        self.up = nn.Sequential(
            nn.ConvTranspose2d(channels[-1], up, 4, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(up, eps=bn_eps),
            nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(up + in_channels, out_channels, 3, padding=1, bias=not reference)
        self.scale = nn.Parameter(torch.full((), 5.0 if reference else 1.0))
        for conv in (self.stem[0], self.up[0], self.out):
            nn.init.xavier_uniform_(conv.weight)
        if self.out.bias is not None:
            nn.init.zeros_(self.out.bias)

    @property
    def output_layer(self) -> nn.Conv2d:
        return self.out

    def forward(self, a: Tensor) -> Tensor:
        """``a``: [B, in_channels, H, W] → δ: [B, out_channels, H, W], ‖δ‖ < eps."""
        height, width = a.shape[-2:]
        features = self.up(self.blocks(self.stem(a)))[..., :height, :width]
        return self.bound(self.scale * self.out(torch.cat([features, a], dim=1)))
