"""``solve adversarial-dro``: build the DRO problem and its follower from a ``DROConfig``, train
them jointly (Algorithm 1 or 3), select the best epoch on the validation split, and report clean
and PGD accuracy on the test split.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bilevel import distributed
from bilevel.acceleration import keep_freed_memory
from bilevel.fit import fit
from bilevel.followers import LearnedFollower, SignGradientAscent
from bilevel.loop import JointTrainer
from bilevel.protocol import Batch
from bilevel.run import RunDir, load_checkpoint
from problems.adversarial.config import LEGACY_VALUES, DROConfig, resolve_device
from problems.adversarial.data import iterate_batches, load_dataset, num_batches, subset
from problems.adversarial.dro import accuracy, robust_accuracy
from problems.adversarial.gap import follower_gap
from problems.adversarial.models import build_model
from problems.adversarial.report import write_report


def seed_everything(seed: int) -> None:
    """Seeds are set once, from ``--seed`` (docs/architecture.md, "Conventions")."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pgd(steps: int, eps: float, step_size: float | None = None) -> SignGradientAscent:
    """PGD-k for evaluation: PGM-k with a uniform random start; default step 2.5 ε / k."""
    return SignGradientAscent(steps, step_size or 2.5 * eps / steps, random_start=True)


def warmed_up_eps(eps: float, warmup_epochs: int, epoch: int, index: int, per_epoch: int) -> float:
    """ε warm-up: ε grows linearly per batch from ε/steps to ε over the first ``warmup_epochs``.

    Robust training on MNIST at ε = 0.3 from scratch can stay at chance (measured here: PGM-10
    with SGD did for 11 epochs); a ramp of ε is the usual cure (e.g. Gowal et al. 2018, IBP).
    """
    if warmup_epochs <= 0:
        return eps
    return eps * min(1.0, ((epoch - 1) * per_epoch + index + 1) / (warmup_epochs * per_epoch))


def set_eps(problem: Any, follower: Any, eps: float) -> None:
    """The training ε of the problem's projection and of a learned attacker's tanh·ε output."""
    problem.eps = eps
    net = getattr(follower, "net", None)
    if net is not None and hasattr(net, "eps"):
        net.eps = eps


def _crash_once(context: distributed.Context) -> None:
    """Kill the last process mid-epoch on the first attempt only: tests that
    ``torchrun --max-restarts 1`` resumes from the last checkpoint with no epoch lost or repeated."""
    if context.rank == context.world_size - 1 and not distributed.restarted_by_torchrun():
        os._exit(1)


def solve_dro(
    cfg: DROConfig,
    out: str | Path,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
    crash_after_epoch: int | None = None,
) -> dict[str, Any] | None:
    """Train one DRO run into ``out``; return the test results (None if interrupted on purpose,
    and on every process but rank 0 under ``torchrun``).

    A ``DROConfig`` subclass (e.g. ``AITConfig``) trains its own problem, follower and batches
    here with the same selection, checkpoints, resume, test table and report.
    """
    results = _train_and_report(cfg, out, resume, interrupt_after_epoch, show_progress, crash_after_epoch)  # fmt: skip
    distributed.shutdown()  # after the DDP wrappers above are gone
    return results


def _train_and_report(
    cfg: DROConfig,
    out: str | Path,
    resume: bool,
    interrupt_after_epoch: int | None,
    show_progress: bool,
    crash_after_epoch: int | None,
) -> dict[str, Any] | None:
    run = RunDir(out)
    resume = resume or (distributed.restarted_by_torchrun() and run.last_checkpoint.is_file())
    if resume and run.config_path.is_file():
        cfg.inherit_unset(run.read_config())
    cfg.resolve()
    device = resolve_device(cfg.device)
    context = distributed.init_from_env(device)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on every step's large tensors (bilevel.acceleration)
    seed_everything(cfg.seed)  # the same on every process: θ and φ start identical
    splits = load_dataset(cfg.dataset, cfg.data_dir)
    info = splits.info
    train = subset(splits.train, cfg.train_size) if cfg.train_size else splits.train
    val = subset(splits.val, cfg.eval_size) if cfg.eval_size else splits.val
    test = subset(splits.test, cfg.eval_size) if cfg.eval_size else splits.test

    speedup = cfg.acceleration()
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.mean, info.std)
    model = speedup.prepare(model, device)
    follower = cfg.make_follower(info)
    if isinstance(follower, torch.nn.Module):
        follower.to(device)
        speedup.prepare(follower.net, device)
        follower.distribute(lambda net: distributed.data_parallel(net, device))
    # θ through DDP under torchrun; validation and the test table use ``model`` itself
    problem = cfg.build_problem(distributed.data_parallel(model, device), info)
    optimizer = cfg.leader_optimizer_for(model.parameters())
    scheduler = cfg.lr_schedule(optimizer)
    trainer = JointTrainer(problem, follower, optimizer, cfg.update, cfg.follower_steps, speedup)
    if context.is_main:
        run.prepare(cfg.to_dict(), resume, LEGACY_VALUES)
    distributed.barrier()

    augment = None if cfg.augment == "none" else cfg.augment

    per_epoch = num_batches(len(train[0]), cfg.batch_size)
    if device.type == "cuda":  # the split lives on the GPU: no batch waits on a host copy
        train = tuple(t.to(device) for t in train)

    def train_batches(epoch: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        for i, (xb, yb) in enumerate(
            iterate_batches(
                *train, cfg.batch_size, shuffle=True, generator=generator, augment=augment
            )
        ):
            set_eps(problem, follower, warmed_up_eps(cfg.eps, cfg.eps_warmup, epoch, i, per_epoch))
            if crash_after_epoch is not None and epoch == crash_after_epoch + 1 and i == 1:
                _crash_once(context)
            xb, yb = distributed.shard(xb, context), distributed.shard(yb, context)
            xb = speedup.batch(xb.to(device, non_blocking=True))
            yb = yb.to(device, non_blocking=True)
            yield cfg.training_batch(xb, yb, generator)

    val_dev = tuple(t.to(device) for t in val)
    selection_attack = pgd(cfg.select_pgd_steps, cfg.eps)
    gap_splits = {"probe": tuple(t[: cfg.gap_size].to(device) for t in train), "val": val_dev}
    gap_problem = cfg.build_problem(model, info)  # the unwrapped leader, for the follower gap

    def gap_batch(x: torch.Tensor, y: torch.Tensor) -> Batch:
        return cfg.training_batch(x, y, torch.Generator().manual_seed(cfg.seed))

    def validate() -> dict[str, float]:
        row: dict[str, float] = {}
        if cfg.gap_size > 0:  # at the full ε: the next batch sets the warm-up's ε again
            set_eps(gap_problem, follower, cfg.eps)
            row = follower_gap(
                model, follower, gap_problem, gap_splits, cfg.eps, cfg.seed, gap_batch
            )
        selection = f"val_pgd{cfg.select_pgd_steps}_acc"
        if cfg.select_pgd_steps == 10 and row:  # the gap's PGD-10 is the selection's, same seed
            row = {
                "val_clean_acc": row["gap_val_clean_acc"],
                selection: row["gap_val_pgd10_acc"],
            } | row
        else:
            with torch.random.fork_rng(devices=[]):  # the same PGD starts every epoch
                torch.manual_seed(cfg.seed)
                row = {
                    "val_clean_acc": accuracy(model, *val_dev),
                    selection: robust_accuracy(model, *val_dev, selection_attack, cfg.eps),
                } | row
        if isinstance(follower, LearnedFollower):
            row["phi_updates"] = follower.updates
        return row

    select_key = "val_clean_acc" if cfg.follower == "none" else f"val_pgd{cfg.select_pgd_steps}_acc"
    result = fit(
        trainer,
        scheduler,
        train_batches,
        per_epoch,
        validate,
        run,
        cfg.epochs,
        select_key,
        resume=resume,
        interrupt_after_epoch=interrupt_after_epoch,
        show_progress=show_progress,
        is_main=context.is_main,
    )
    distributed.barrier()  # best.pt is written
    if result.interrupted or not context.is_main:
        return None

    best = load_checkpoint(run.best_checkpoint)
    model.load_state_dict(best["leader"])
    test_dev = tuple(t.to(device) for t in test)
    tic = time.perf_counter()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        results: dict[str, Any] = {
            "best_epoch": int(best["epoch"]),
            "test_clean_acc": accuracy(model, *test_dev),
            f"test_pgd{cfg.eval_pgd_steps}_acc": robust_accuracy(
                model, *test_dev, pgd(cfg.eval_pgd_steps, cfg.eps, cfg.eval_step_size), cfg.eps
            ),
        }
    results["train_seconds"] = round(result.train_seconds, 2)
    results["train_cpu_seconds"] = round(result.train_cpu_seconds, 2)
    results["eval_seconds"] = round(time.perf_counter() - tic, 2)
    run.write_json("results.json", results)
    write_report(run, cfg.to_dict(), result.history, results)
    return results
