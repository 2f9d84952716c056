"""Multi-process data-parallel training under ``torchrun`` (gloo on CPU, nccl on GPU).

The leader θ and a learned follower's g_φ run through ``DistributedDataParallel``: each process
takes its share of every global minibatch, and DDP averages the gradients of θ and φ over the
processes during each backward, so one distributed step equals one single-process step on the
concatenated batch (batch-mean losses, equal shares: the mean of N shares' means is the batch's
mean only when the shares are equal, so ``check_shares`` asks for a --batch-size that N divides;
exact for networks without batch norm, whose statistics are per process as in any DDP run).
Passes that differentiate only with respect to z (the gradient input of g_φ, PGM's steps) fire
none of DDP's gradient hooks and so start no reduction. Logging and checkpoints come from rank 0
only; the training losses it logs are the mean over every process's share
(``mean_over_processes``), and a stop mid-epoch keeps each process's own running sums in rank
0's checkpoint (``gather_values``).

Random draws: the processes start from the same seed, so θ and φ start identical; once the run is
built, ``fit`` calls ``draw_own_noise``, and from then on every process but rank 0 draws from a
stream of its own (the followers' random starts, the carry's restarts, dropout), so the example at
a share's k-th place gets its own noise on every process, as it would in one process on the whole
batch. Rank 0 keeps the stream a single process draws. The data order, the augmentation and AIT's
``--pairing permutation`` come from each epoch's own generator (seeded from the epoch) and stay
the same on every process. Rank 0's checkpoint holds every process's generator states
(``gather_stacked``) and each process resumes with its own, so a resumed run ends as the unbroken
one also where the processes' draws differ in number (an uneven last minibatch);
``bilevel.checkpoint`` says what a resume with another number of processes, or from an older
checkpoint with one state, does.

Where a distributed run is not a single-process run on the concatenated batch:
- the noise differs: one process draws a share's noise from its own stream, not the whole
  batch's from one;
- a share is one process's batch for the problem, so AIT pairs partners within each share
  (``--pairing permutation``: the same pairing of share places on every process, drawn from the
  epoch's generator, which the data order needs shared; one draw of it per share, as per batch
  in one process, so the later batches' crops and flips stay a single process's);
- where the last minibatch does not split evenly, DDP still averages the shares' means with
  equal weight (every other minibatch splits evenly: ``check_shares`` refuses a --batch-size
  that the number of processes does not divide). A share must not be empty (``check_shares``).

The data split: each global minibatch (same order and augmentation on every process, from the
seed) is cut into ``world_size`` shares (``shard``); that is ``DistributedSampler``'s arithmetic
(every ``world_size``-th index of one permutation) applied per batch, which keeps a distributed
run's batches exactly those of a single-process run.
"""

from __future__ import annotations

import contextlib
import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from bilevel.errors import UserError


@dataclass(frozen=True)
class Context:
    """This process's place among ``world_size`` processes (one process: rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        """Whether this process logs and writes the run folder (rank 0)."""
        return self.rank == 0


def check_shares(examples: int, batch_size: int, context: Context) -> None:
    """One sentence unless every process gets at least one example of every minibatch, the last
    one included (``shard``), and every minibatch but the last splits into equal shares.

    An empty share has no loss to average, and the run would end in a NaN that names the learning
    rate. Unequal shares (B = 15 over 2 processes: 8 and 7) break the step itself: DDP averages
    the shares' means with equal weight, (1/N) Σ_k (1/B_k) Σ_{i∈k} ℓ_i, which is the batch mean
    (1/B) Σ_i ℓ_i only when every B_k = B/N, so every step would weight some examples more than
    others (a relative difference of 7.5e-2 in one step's Δθ at B = 15 over 2, 1.8e-7 at B = 16).
    A last minibatch that splits unevenly (``examples`` not a multiple of B) is let through: one
    step an epoch, documented in the module docstring."""
    last = examples % batch_size or batch_size
    if context.world_size > 1 and min(batch_size, last) < context.world_size:
        raise UserError(
            f"{context.world_size} processes need at least {context.world_size} examples in every "
            f"minibatch; --batch-size {batch_size} over {examples} examples leaves {last} in the "
            "last one: choose a --batch-size or --train-size that avoids it."
        )
    if batch_size % context.world_size:
        raise UserError(
            f"--batch-size {batch_size} does not split evenly over {context.world_size} "
            "processes, and DDP's equal-weight average of unequal shares' means is not the "
            f"minibatch's mean: choose a multiple of {context.world_size}."
        )


_TORCHRUN_VARIABLES = ("RANK", "MASTER_ADDR", "MASTER_PORT")  # what env:// reads beside WORLD_SIZE


def init_from_env(device: torch.device) -> Context:
    """Join the process group that ``torchrun`` describes (WORLD_SIZE > 1), else a 1-process one."""
    text = os.environ.get("WORLD_SIZE", "1")
    if not text.strip().isdigit():
        raise UserError(
            f"WORLD_SIZE is {text!r}, not a count of processes: launch with torchrun, or unset "
            "WORLD_SIZE to run one process."
        )
    world_size = int(text)
    if world_size <= 1:
        return Context()
    if not dist.is_initialized():
        missing = [name for name in _TORCHRUN_VARIABLES if not os.environ.get(name)]
        if missing:
            raise UserError(
                f"WORLD_SIZE is {world_size} but {', '.join(missing)} "
                f"{'is' if len(missing) == 1 else 'are'} not set: launch with torchrun, or "
                "unset WORLD_SIZE to run one process."
            )
        # torchrun's store outlives a restart; without a prefix per attempt, a restarted process
        # can read the dead one's gloo address and fail to connect (measured here: most restarts)
        store, rank, world_size = next(dist.rendezvous("env://"))
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=dist.PrefixStore(f"bilevel/attempt-{_restart_count()}", store),
            rank=rank,
            world_size=world_size,
        )
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    return Context(dist.get_rank(), dist.get_world_size())


def active() -> bool:
    """Whether several processes run in one process group (torchrun with more than one)."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def data_parallel(module: nn.Module, device: torch.device) -> nn.Module:
    """``DistributedDataParallel(module)`` when several processes run, else ``module`` itself."""
    if not active():
        return module
    device_ids = [torch.cuda.current_device()] if device.type == "cuda" else None  # LOCAL_RANK's
    return DistributedDataParallel(module, device_ids=device_ids)


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` wrapper (itself otherwise)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def shard(tensor: torch.Tensor, context: Context) -> torch.Tensor:
    """This process's share of a global minibatch (every ``world_size``-th example)."""
    return tensor[context.rank :: context.world_size]


def shutdown() -> None:
    """Leave the process group, once every DDP wrapper of this process is gone; leaving it to
    interpreter exit can abort the process in gloo's teardown."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def leave_process_group() -> None:
    """``shutdown`` at the end of a run, or after an error or a stop: collect the DDP wrappers
    that frames or reference cycles still hold first (a no-op when no process group was joined)."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        shutdown()


def average(tensors: list[torch.Tensor]) -> None:
    """Replace each tensor, in place, by its mean over the processes (a no-op in one process)."""
    if active():
        for t in tensors:
            dist.all_reduce(t)
            t /= dist.get_world_size()


def gather_rows(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` concatenated along dim 0, in rank order (the tensor itself in
    one process); the processes' row counts may differ, as ``shard``'s do."""
    if not active():
        return tensor
    world = dist.get_world_size()
    count = torch.tensor([len(tensor)], device=tensor.device)
    counts = [torch.zeros_like(count) for _ in range(world)]
    dist.all_gather(counts, count)
    most = int(max(c.item() for c in counts))
    padded = tensor.new_zeros(most, *tensor.shape[1:])
    padded[: len(tensor)] = tensor
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return torch.cat([p[: int(c.item())] for p, c in zip(parts, counts, strict=True)])


def barrier() -> None:
    """Wait for every process (nothing to wait for in a single process)."""
    if active():
        dist.barrier()


@contextlib.contextmanager
def main_process_first(context: Context) -> Iterator[None]:
    """Rank 0 runs the block before any other process starts it, so that what it writes there (a
    data set it downloads into --data-dir) is whole when the others read it, and no two processes
    download into the same archive at once. One process: the block alone."""
    if not context.is_main:
        barrier()  # wait for rank 0 to finish the block
    yield
    if context.is_main:
        barrier()  # let the others start it


def agree_on_signal(signum: int | None) -> int | None:
    """The stop signal any process has received (the largest number), the same on every
    process, so that all stop after the same batch; ``signum`` itself in a single process."""
    if not active():
        return signum
    flag = torch.tensor([signum or 0], device=_collective_device())
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return int(flag.item()) or None


def mean_over_processes(sums: dict[str, Any]) -> dict[str, Any]:
    """Each value's mean over the processes (``sums`` itself in one process): the training
    figures each process summed over its own share of the batches, so that what rank 0 logs
    covers every share. The keys are the same on every process (one ``JointTrainer.step``'s)."""
    if not active() or not sums:
        return sums
    keys = sorted(sums)
    device = _collective_device()
    stacked = torch.stack([torch.as_tensor(sums[k], dtype=torch.float64).to(device) for k in keys])
    average([stacked])
    return dict(zip(keys, stacked.cpu().unbind(), strict=True))


def rank() -> int:
    """This process's rank (0 in a single process)."""
    return dist.get_rank() if active() else 0


def world_size() -> int:
    """How many processes run (1 in a single process)."""
    return dist.get_world_size() if active() else 1


def gather_values(values: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Every process's ``values``, key by key, as a tensor of one entry per rank in rank order
    and in each value's own dtype (for rank 0's checkpoint, so that each process resumes with
    its own); the values themselves as one-entry tensors in a single process."""
    return {key: gather_stacked(torch.as_tensor(values[key]).reshape(())) for key in sorted(values)}


def gather_stacked(tensor: torch.Tensor) -> torch.Tensor:
    """Every process's ``tensor`` (the same shape on each) stacked along a new first dimension
    in rank order, on the CPU: for rank 0's checkpoint, e.g. each process's generator state; the
    tensor itself with one row in a single process."""
    device = _collective_device() if active() else tensor.device
    return gather_rows(tensor.unsqueeze(0).to(device)).cpu()


def draw_own_noise() -> None:
    """Give this process a stream of training draws of its own: every process but rank 0
    reseeds torch's generators (the CPU's and every GPU's) from its rank and one draw of the
    stream it holds now. Called where the processes' streams are still the same (a fresh run,
    once θ and φ are drawn), the draw is the same on every process and the rank makes the seeds
    differ; rank 0, and a single process, keep their stream untouched."""
    if rank() > 0:
        draw = int(torch.randint(2**32, ()))  # the shared stream's next number
        torch.manual_seed(rank() << 32 | draw)  # never a --seed (those are below 2**32)


def nccl_processes() -> bool:
    """Whether several processes run on GPUs (nccl), each drawing on its own GPU's generator."""
    return active() and dist.get_backend() == "nccl"


def _collective_device() -> torch.device:
    """Where a collective's tensor must live: the current GPU under nccl, else the CPU (gloo)."""
    on_gpu = nccl_processes()
    return torch.device("cuda", torch.cuda.current_device()) if on_gpu else torch.device("cpu")


def _restart_count() -> int:
    """How many times ``torchrun --max-restarts`` has restarted this worker's group (0: never)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0"))


def restarted_by_torchrun() -> bool:
    """True in a worker that ``torchrun --max-restarts`` started again after a failure."""
    return _restart_count() > 0
