"""A follower's decision z as a flat list of tensors, whatever its shape in the problem.

Per-sample followers (DRO's δ) have z = one Tensor; parameter-space followers (a discriminator's ψ)
have z = a list or tuple of tensors, or a dict name → tensor that the problem feeds to
``torch.func.functional_call``. Hypergradients treat every case as a list of tensors and hand the
problem back its own shape (``rebuild``).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from bilevel.protocol import Decision


def flatten(z: Decision) -> tuple[list[Tensor], Callable[[Sequence[Tensor]], Decision]]:
    """(parts, rebuild): the tensors of z in a fixed order, and the inverse map."""
    if isinstance(z, Tensor):
        return [z], lambda parts: parts[0]
    if isinstance(z, Mapping):
        keys = list(z.keys())
        return [z[k] for k in keys], lambda parts: dict(zip(keys, parts, strict=True))
    if isinstance(z, Sequence):
        kind = type(z) if isinstance(z, tuple) else list
        return list(z), lambda parts: kind(parts)
    raise TypeError(f"a follower decision must be a Tensor, a sequence or a dict, not {type(z)}")


def detach(z: Decision) -> Decision:
    """z with every tensor cut from its graph."""
    parts, rebuild = flatten(z)
    return rebuild([p.detach() for p in parts])


def leaf(z: Decision) -> tuple[Decision, list[Tensor]]:
    """A detached copy of z whose tensors require grad (a fresh leaf to differentiate at)."""
    parts, rebuild = flatten(z)
    leaves = [p.detach().requires_grad_(True) for p in parts]
    return rebuild(leaves), leaves


def dot(a: Sequence[Tensor], b: Sequence[Tensor]) -> Tensor:
    """⟨a, b⟩ summed over every part."""
    return sum((x * y).sum() for x, y in zip(a, b, strict=True))


def grad_or_zeros(
    output: Tensor | Sequence[Tensor],
    inputs: Sequence[Tensor],
    grad_outputs: Sequence[Tensor] | None = None,
    create_graph: bool = False,
    retain_graph: bool | None = None,
) -> list[Tensor]:
    """torch.autograd.grad with zeros where an input is unused (or nothing needs a gradient)."""
    outputs = [output] if isinstance(output, Tensor) else list(output)
    keep = [i for i, o in enumerate(outputs) if o.requires_grad]
    if not keep:
        return [torch.zeros_like(x) for x in inputs]
    grads = torch.autograd.grad(
        [outputs[i] for i in keep],
        list(inputs),
        grad_outputs=None if grad_outputs is None else [grad_outputs[i] for i in keep],
        create_graph=create_graph,
        retain_graph=retain_graph,
        allow_unused=True,
    )
    return [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads, strict=True)]
