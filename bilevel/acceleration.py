"""Speed levers of the joint training step (paper Table 3's cost), each an option, none changing
the maths: the channels_last memory format, bf16 autocast, and ``torch.compile``.

Measured with ``cli.py bench speed`` (docs/results.md, "Cost per training step"): channels_last
made every method faster on CPU for PreAct ResNet-18 and the Table 1 attacker; bf16 autocast needs no loss scaling (bf16 has
float32's exponent range), so one code path serves CPU and GPU.

On CPU one lever is below PyTorch: glibc serves every block above 32 MiB (a batch-128 activation
of the attacker is 33.5 MiB) with a fresh ``mmap`` and unmaps it on free, so each step page-faults
and zeroes its largest tensors again. ``keep_freed_memory`` makes glibc reuse them instead (the
``MALLOC_MMAP_MAX_=0`` setting, applied at run time); measured in docs/results.md.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bilevel.errors import UserError


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
        """Move ``module`` to ``device`` in the chosen memory format, and compile it in place
        (``nn.Module.compile`` keeps the state-dict keys). Attributes that change between steps
        must stay outside the compiled graph, or each new value recompiles it: the attackers'
        ε bound is left out when they are compiled (``BoundedOutput.compile``)."""
        module.to(device, memory_format=self.memory_format)
        if self.compile:
            module.compile()
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


def resolve_device(name: str) -> torch.device:
    """``--device``: auto (a CUDA GPU where one is visible, else the CPU), cpu, cuda or cuda:N
    (refused in one sentence where no such GPU is visible, as is any other name)."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in ("cpu", "cuda"):
        raise UserError(f"Unknown --device {name!r}; choose auto, cpu, cuda or cuda:N.")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(
            f"--device {name} was asked for but no CUDA GPU is visible; use --device cpu."
        )
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UserError(
            f"--device {name}: only {count} CUDA GPU(s) are visible (cuda:0 to cuda:{count - 1})."
        )
    return device


_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4  # mallopt parameters, <malloc.h>


def keep_freed_memory() -> bool:
    """Have glibc serve large blocks from its heap and keep freed memory for reuse, instead of a
    fresh ``mmap`` per allocation (page faults on every step). Returns whether it took effect
    (False off Linux or without glibc). Peak memory is unchanged; freed memory is not returned
    to the system until the process ends."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl has no mallopt)
        return False
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))
