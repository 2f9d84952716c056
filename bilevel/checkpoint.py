"""What ``last.pt`` holds, and the words for it.

Keys: ``epoch`` (epochs completed), ``trainer`` (θ, φ, both optimizers and the problem's own
state, if any), ``scheduler`` (None for a run without a learning-rate schedule), ``rng``
(the CPU generator) and ``cuda_rng`` (every GPU's, when CUDA is in use), ``rng_by_rank``
(only when several processes wrote it: each process's generator states, ``{"cpu": one row per
rank, "cuda": one row per rank, its own GPU's, under nccl}``; ``rng`` and ``cuda_rng`` are then
rank 0's), ``best`` (the best selection value so far), ``history`` (one metrics row per
completed epoch), ``train_seconds``, and ``partial``: None at an epoch's end, else where a stop
request caught the next epoch — ``{"epoch", "batches" (done), "sums" (the running sums of the
step outputs), "sums_by_rank" (every process's, under torchrun), "seconds", "cpu_seconds"}``.
Checkpoints written before ``partial`` existed load as epoch-end ones.

On resume each process takes its own row of ``rng_by_rank``. A process the checkpoint holds no
row for takes rank 0's state and then draws its own stream (``distributed.draw_own_noise``): each
process beyond those that wrote it, in a resume by more processes, and every process but rank 0
of a torchrun resume from a checkpoint with one state (a single process's, or one written before
``rng_by_rank`` existed). By fewer processes, the rows beyond go unused. Either way the run goes
on with each process's noise its own, but not as the unbroken run would: the shares, or the
streams, differ from those the checkpoint's run drew.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from bilevel import distributed
from bilevel.errors import UserError
from bilevel.loop import JointTrainer
from bilevel.run import RunDir, atomic_torch_save, load_checkpoint


@dataclass
class State:
    """Where a run stands: what ``last.pt`` restores and the loop carries on."""

    epoch: int = 0  # epochs completed
    history: list[dict[str, Any]] = field(default_factory=list)
    best: float = -math.inf
    train_seconds: float = 0.0  # of the completed epochs
    train_cpu_seconds: float = 0.0  # the same in CPU time (0 in checkpoints older than it)
    partial: dict[str, Any] | None = None  # the position in epoch ``epoch + 1``, if stopped there


@dataclass(frozen=True)
class Saved:
    """What the last checkpoint written holds, for the sentences a stop prints."""

    epochs: int
    partial: tuple[int, int] | None  # (epoch, batches done) of a mid-epoch checkpoint

    @classmethod
    def from_checkpoint(cls, checkpoint: dict[str, Any]) -> Saved:
        partial = checkpoint.get("partial")
        where = (int(partial["epoch"]), int(partial["batches"])) if partial else None
        return cls(int(checkpoint["epoch"]), where)

    @classmethod
    def from_state(cls, state: State) -> Saved:
        return cls.from_checkpoint({"epoch": state.epoch, "partial": state.partial})

    def describe(self, best: bool = True) -> str:
        """What the folder keeps, in words; ``best``: whether ``best.pt`` is there (a write of it
        that failed at epoch 1, after ``last.pt``'s, leaves none)."""
        if self.partial:
            epoch, batches = self.partial
            last = f"last.pt (after batch {batches} of epoch {epoch})"
        else:
            last = f"last.pt (end of epoch {self.epochs})"
        if not self.epochs:
            return last
        epochs = "epoch 1" if self.epochs == 1 else f"epochs 1-{self.epochs}"
        return f"{last}, metrics.jsonl ({epochs})" + (" and best.pt" if best else "")


Scheduler = torch.optim.lr_scheduler.LRScheduler


def position_state(
    trainer: JointTrainer,
    scheduler: Scheduler | None,
    state: State,
    partial: dict[str, Any] | None,
) -> dict[str, Any]:
    """The checkpoint of ``state`` now: at an epoch's end (``partial`` None) or inside the next."""
    if partial is not None:
        sums = {k: torch.as_tensor(v).detach().cpu() for k, v in partial["sums"].items()}
        partial = {**partial, "sums": sums, "seconds": float(partial["seconds"]),
                   "cpu_seconds": float(partial.get("cpu_seconds", 0.0))}  # fmt: skip
    checkpoint = {
        "epoch": state.epoch,
        "trainer": trainer.state_dict(),
        "scheduler": None if scheduler is None else scheduler.state_dict(),
        "rng": torch.get_rng_state(),
        "best": state.best,
        "history": list(state.history),
        "train_seconds": state.train_seconds,
        "train_cpu_seconds": state.train_cpu_seconds,
        "partial": partial,
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        checkpoint["cuda_rng"] = torch.cuda.get_rng_state_all()
    if distributed.active():  # a single process's checkpoint holds what it always did
        checkpoint["rng_by_rank"] = _generators_by_rank()
    return checkpoint


def _generators_by_rank() -> dict[str, torch.Tensor]:
    """Every process's generator states, one row per rank (a collective: every process calls
    it): the CPU's and, under nccl, that of the GPU the process draws on."""
    states = {"cpu": torch.get_rng_state()}
    if distributed.nccl_processes():
        states["cuda"] = torch.cuda.get_rng_state()  # the current GPU's, LOCAL_RANK's
    return {key: distributed.gather_stacked(state) for key, state in states.items()}


def restore_generators(checkpoint: dict[str, Any]) -> None:
    """Set this process's generators to the states ``checkpoint`` holds for it (module
    docstring): its own row of ``rng_by_rank``, else rank 0's state and a stream of its own."""
    torch.set_rng_state(checkpoint["rng"])
    if checkpoint.get("cuda_rng") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["cuda_rng"])
    by_rank = checkpoint.get("rng_by_rank")
    rank = distributed.rank()
    if by_rank is None or rank >= len(by_rank["cpu"]):  # no row for this process
        distributed.draw_own_noise()  # nothing drawn on rank 0 and in a single process
        return
    # a copy: set_rng_state reads a row of the stack (a view at an offset) wrongly, and the CPU's
    # crashed the process here (SIGSEGV, torch 2.14)
    torch.set_rng_state(by_rank["cpu"][rank].clone())
    if "cuda" in by_rank and torch.cuda.is_available():
        torch.cuda.set_rng_state(by_rank["cuda"][rank].clone())


def write_state(run: RunDir, checkpoint: dict[str, Any]) -> None:
    """``last.pt``, then (at an epoch's end) ``metrics.jsonl`` from the same rows."""
    atomic_torch_save(checkpoint, run.last_checkpoint)
    if checkpoint["partial"] is None:
        run.write_metrics(checkpoint["history"])


def load_state(run: RunDir, trainer: JointTrainer, scheduler: Scheduler | None) -> State:
    """Restore ``trainer``, ``scheduler`` and the RNGs from ``last.pt``; return the run's state."""
    checkpoint = load_checkpoint(run.last_checkpoint)
    try:
        trainer.load_state_dict(checkpoint["trainer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        restore_generators(checkpoint)
        return State(
            epoch=int(checkpoint["epoch"]),
            history=list(checkpoint["history"]),
            best=float(checkpoint["best"]),
            train_seconds=float(checkpoint["train_seconds"]),
            train_cpu_seconds=float(checkpoint.get("train_cpu_seconds", 0.0)),
            partial=checkpoint.get("partial"),
        )
    except UserError:  # the problem's own sentence (GAIL: other demonstrations)
        raise
    except (KeyError, RuntimeError, ValueError, TypeError) as err:
        raise UserError(
            f"{run.last_checkpoint} does not fit this model and follower ({type(err).__name__});"
            " resume with the options it was trained with."
        ) from None
