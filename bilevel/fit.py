"""The epoch loop around ``JointTrainer``: progress bar, validation, model selection on the
validation split, checkpoints every epoch and ``--resume`` (DESIGN.md, "Conventions").

Resume is exact: the last checkpoint holds θ, φ, both optimizers, the learning-rate schedule, the
global torch RNG state and the metric rows so far; data order is drawn from a generator seeded by
(seed, epoch), so a resumed run ends with the metrics of the unbroken run.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from bilevel.errors import UserError
from bilevel.loop import JointTrainer
from bilevel.protocol import Batch
from bilevel.run import RunDir, atomic_torch_save, load_checkpoint


@dataclass
class FitResult:
    history: list[dict[str, Any]]
    interrupted: bool
    train_seconds: float


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[bold]epoch {task.fields[epoch]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        disable=not enabled,
    )


def fit(
    trainer: JointTrainer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    train_batches: Callable[[int], Iterable[Batch]],
    batches_per_epoch: int,
    validate: Callable[[], dict[str, float]],
    run: RunDir,
    epochs: int,
    select_key: str,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
    is_main: bool = True,
) -> FitResult:
    """Train for ``epochs``; keep ``best.pt`` (leader only) at the highest ``validate()[select_key]``.

    ``train_batches(epoch)`` yields that epoch's minibatches. ``interrupt_after_epoch`` stops the
    run as a kill would, right after that epoch's checkpoint (used to test ``--resume``). Only the
    main process (``is_main``, rank 0 under torchrun) writes files and shows progress.
    """
    history: list[dict[str, Any]] = []
    start_epoch, best, train_seconds = 1, -math.inf, 0.0
    if resume:
        state = load_checkpoint(run.last_checkpoint)
        try:
            trainer.load_state_dict(state["trainer"])
            scheduler.load_state_dict(state["scheduler"])
        except (KeyError, RuntimeError, ValueError) as err:
            raise UserError(
                f"{run.last_checkpoint} does not fit this model and follower ({type(err).__name__});"
                " resume with the options it was trained with."
            ) from None
        torch.set_rng_state(state["rng"])
        history, best = list(state["history"]), float(state["best"])
        start_epoch, train_seconds = int(state["epoch"]) + 1, float(state["train_seconds"])
        if is_main:
            run.write_metrics(history)  # drop any row written after the checkpoint

    with _progress(show_progress and is_main) as progress:
        for epoch in range(start_epoch, epochs + 1):
            task = progress.add_task("", total=batches_per_epoch, epoch=epoch, stats="")
            sums: dict[str, torch.Tensor] = {}
            count, tic = 0, time.perf_counter()
            for batch in train_batches(epoch):
                out = trainer.step(batch)
                for key, value in out.items():
                    sums[key] = sums.get(key, 0.0) + value
                count += 1
                if count % 10 == 0 or count == batches_per_epoch:  # one host sync per 10 batches
                    stats = "  ".join(f"{k} {float(v) / count:.3f}" for k, v in sums.items())
                    progress.update(task, completed=count, stats=stats)
            scheduler.step()
            train_seconds += time.perf_counter() - tic
            means = {key: float(value) / max(count, 1) for key, value in sums.items()}
            if not all(math.isfinite(v) for v in means.values()):
                raise UserError(
                    f"The training loss became NaN or infinite in epoch {epoch}; lower the "
                    f"learning rate or ε and start again (the last good checkpoint is kept in "
                    f"{run.path})."
                )
            row = {"epoch": epoch, **means, **validate(), "train_seconds": round(train_seconds, 3)}
            history.append(row)
            state = trainer.state_dict()
            if row[select_key] > best:
                best = row[select_key]
                if is_main:
                    atomic_torch_save(
                        {"epoch": epoch, "leader": state["leader"]}, run.best_checkpoint
                    )
            checkpoint = {
                "epoch": epoch,
                "trainer": state,
                "scheduler": scheduler.state_dict(),
                "rng": torch.get_rng_state(),
                "best": best,
                "history": history,
                "train_seconds": train_seconds,
            }
            if is_main:
                atomic_torch_save(checkpoint, run.last_checkpoint)
                run.write_metrics(history)
            shown = "  ".join(f"{k} {v:.3f}" for k, v in row.items() if k.startswith("val_"))
            progress.update(task, stats=shown)
            if interrupt_after_epoch is not None and epoch == interrupt_after_epoch < epochs:
                return FitResult(history, True, train_seconds)
    return FitResult(history, False, train_seconds)
