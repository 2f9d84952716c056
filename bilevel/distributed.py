"""Multi-process data-parallel training under ``torchrun`` (gloo on CPU, nccl on GPU).

Each process takes its share of every global minibatch; after each backward the gradients of θ
and φ are averaged over the processes with ``all_reduce`` before the optimizers step, so one
distributed step equals one single-process step on the concatenated batch (batch-mean losses,
equal shares). That is the arithmetic of ``DistributedDataParallel``; the module wrapper itself is
not used because its reducer expects exactly one backward over the parameters per forward, while
a follower also runs passes that differentiate only with respect to z (the gradient input of g_φ,
PGM's steps). Logging and checkpoints come from rank 0 only.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1), else a 1-process one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Context(dist.get_rank(), dist.get_world_size())


def active() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def average_gradients(parameters: Iterable[torch.nn.Parameter]) -> None:
    """Replace every ``p.grad`` by its mean over the processes; a no-op in a single process."""
    if not active():
        return
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def shard(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """This process's share of a global minibatch (every ``world_size``-th example)."""
    return tensor[context.rank :: context.world_size]


def barrier() -> None:
    if active():
        dist.barrier()


def restarted_by_torchrun() -> bool:
    """True in a worker that ``torchrun --max-restarts`` started again after a failure."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def average_gradients_before_each_step(optimizer: torch.optim.Optimizer) -> None:
    """Average the gradients of ``optimizer``'s parameters over the processes before each of its
    steps, whichever code path computed them (leader step, fused step, φ's ascent, hypergradients)."""
    params = [p for group in optimizer.param_groups for p in group["params"]]
    optimizer.register_step_pre_hook(lambda *_: average_gradients(params))
