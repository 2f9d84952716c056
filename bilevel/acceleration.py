"""Speed levers of the joint training step (paper Table 3's cost), each an option, none changing
the maths: the channels_last memory format, bf16 autocast, and ``torch.compile``.

Measured with ``cli.py bench speed`` (README, "Speed"): channels_last made every method faster on
CPU for PreAct ResNet-18 and the Table 1 attacker; bf16 autocast needs no loss scaling (bf16 has
float32's exponent range), so one code path serves CPU and GPU.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class Acceleration:
    """Which levers are on: ``channels_last`` (NHWC tensors for 4-d activations), ``amp``
    (bf16 autocast around the step) and ``compile`` (``torch.compile`` of the networks)."""

    channels_last: bool = False
    amp: bool = False
    compile: bool = False

    @property
    def memory_format(self) -> torch.memory_format:
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def prepare(self, module: nn.Module, device: torch.device) -> nn.Module:
        """Move ``module`` to ``device`` in the chosen memory format, and compile it in place.

        Only the children are compiled, so that Python attributes read on every forward (the
        attacker's ε, changed by the warm-up schedule) stay outside the compiled graphs and do
        not trigger a recompile per value. ``nn.Module.compile`` keeps the state-dict keys.
        """
        module.to(device, memory_format=self.memory_format)
        if self.compile:
            for child in module.children():
                child.compile()
        return module

    def batch(self, x: Tensor) -> Tensor:
        """An image batch in the chosen memory format (other tensors unchanged)."""
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    @contextlib.contextmanager
    def autocast(self, device: torch.device) -> Iterator[None]:
        """bf16 autocast on ``device`` when ``amp`` is on, else nothing."""
        if not self.amp:
            yield
            return
        with torch.autocast(device.type, dtype=torch.bfloat16):
            yield
