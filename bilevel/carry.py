"""Carried decisions: each training example's follower starts from that example's last decision.

ATTA (Zheng et al. 2020, "Efficient adversarial training with transferable adversarial examples")
found that adversarial perturbations of one epoch transfer to the next: a follower that starts from
the previous epoch's δ_i instead of afresh keeps climbing across epochs, so a few steps per batch
act like many. A problem with per-example decisions (a perturbation δ_i of each x_i) owns one
``CarriedDecisions``; the training loop tells it which examples the next batch holds (``select``),
the problem's ``init_follower`` starts from the carried decisions (``start``) and its ``end_step``
stores the follower's answer (``remember``). The first visit of an example starts as usual.

``restart`` p > 0 starts a random fraction p of each batch's examples afresh all the same, drawn
anew at every visit: a carried δ that only ever climbs the gradient may settle where gradients
look but a gradient-free search does not, and a fresh start now and then makes the follower find
such points again. ``jitter`` α > 0 starts every carried example near its carried δ instead:
δ_i + α·z0_i, where z0 is the fresh start (a uniform draw in the ε-ball under a random start), so
each visit climbs from a slightly different point; the follower projects the sum back into Z.
``free_step`` s > 0 asks the problem to take one more step of s·ε on each stored δ_i, along the
gradient the fused update's backward leaves on it (``BilevelProblem.decision_gradient``; the
perturbation problems do, ``problems.adversarial.perturbation``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from bilevel import distributed


class CarriedDecisions:
    """The last decision z_i of each of ``size`` training examples, for the next visit's start."""

    def __init__(
        self, size: int, restart: float = 0.0, jitter: float = 0.0, free_step: float = 0.0
    ) -> None:
        if size < 1:
            raise ValueError(f"CarriedDecisions needs at least one example; got {size}.")
        if not 0 <= restart <= 1:
            raise ValueError(f"the restarted fraction must be in [0, 1]; got {restart}.")
        if jitter < 0:
            raise ValueError(f"the jitter must be at least 0; got {jitter}.")
        if free_step < 0:
            raise ValueError(f"the free step must be at least 0; got {free_step}.")
        self.size, self.restart, self.jitter, self.free_step = size, restart, jitter, free_step
        self.store: Tensor | None = None  # (size, *z_i.shape), made at the first remember
        self.seen: Tensor | None = None  # (size,) bool: whether z_i was stored yet
        self.indices: Tensor | None = None  # the examples of the current batch

    def select(self, indices: Tensor) -> None:
        """The training examples (rows of the training set) the next batch holds, in its order."""
        self.indices = indices

    def start(self, z0: Tensor) -> Tensor:
        """The follower's start: the carried z_i where example i was seen before (and is not one
        of the ``restart`` fraction drawn afresh this visit), plus ``jitter``·z0_i; else z0_i."""
        if self.indices is None or self.store is None or self.seen is None:
            return z0
        self._follow(z0.device)
        idx = self.indices.to(self.store.device)
        seen = self.seen[idx].to(z0.device)
        if self.restart > 0:  # no draw at 0, so the plain carry's random stream is unchanged
            seen = seen & (torch.rand(len(seen), device=seen.device) >= self.restart)
        seen = seen.view(-1, *([1] * (z0.dim() - 1)))
        carried = self.store[idx].to(z0)
        return torch.where(seen, carried + self.jitter * z0 if self.jitter else carried, z0)

    def remember(self, z: Tensor) -> None:
        """Store the follower's answer z (one row per example of the selected batch; under torchrun,
        every process's rows)."""
        if self.indices is None:
            return
        if len(z) != len(self.indices):
            raise ValueError(f"a batch of {len(self.indices)} examples got {len(z)} decisions")
        # under torchrun every process keeps every example's δ, so rank 0's checkpoint holds them
        indices, z = distributed.gather_rows(self.indices), distributed.gather_rows(z.detach())
        if self.store is None or self.seen is None:
            self.store = z.new_zeros(self.size, *z.shape[1:])
            self.seen = torch.zeros(self.size, dtype=torch.bool, device=z.device)
        self._follow(z.device)
        idx = indices.to(self.store.device)
        self.store[idx] = z.to(self.store)
        # not `seen[idx] = True`, which copies True to the GPU and makes the host wait each batch
        self.seen.index_fill_(0, idx, True)

    def _follow(self, device: torch.device) -> None:
        """Keep the store on the decisions' device: a resumed one arrives on the CPU (checkpoints
        load there), and left there it would cost a host-device copy and wait every batch."""
        if self.store is not None and self.seen is not None and self.store.device != device:
            self.store, self.seen = self.store.to(device), self.seen.to(device)

    def state_dict(self) -> dict[str, Any]:
        return {"store": self.store, "seen": self.seen}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.store, self.seen = state["store"], state["seen"]
