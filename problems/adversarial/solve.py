"""``solve adversarial-dro`` and ``solve adversarial-ait``: build the problem (DRO, Eq. 2-3, or AIT,
Eq. 5-6) and its follower from the run's configuration, and hand them to the experiment runner
(``bilevel.run_experiment``): joint training (Algorithm 1, 3 or 4), the best epoch on the
validation split by PGD accuracy, and clean and PGD accuracy on the test split.

The image parts are shared: data, model, ε warm-up, validation with the follower gap, the test
table. The problems differ in their class and their batches (AIT pairs each sample with a partner).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bilevel import distributed
from bilevel.acceleration import keep_freed_memory, resolve_device
from bilevel.averaging import LeaderAverage
from bilevel.carry import CarriedDecisions
from bilevel.experiment import Experiment, run_experiment
from bilevel.followers import Follower
from bilevel.learned_follower import LearnedFollower
from bilevel.loop import JointTrainer
from bilevel.protocol import Batch
from bilevel.recorded import resolve_resumed
from bilevel.run import RunDir
from bilevel.seeding import seed_everything, seeded
from problems.adversarial.ait import AdversarialInterpolation, pair_batch
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.checks import check_warm_start
from problems.adversarial.config import AdversarialConfig
from problems.adversarial.data import (
    DatasetInfo,
    iterate_batches,
    load_dataset,
    num_batches,
    subset,
)
from problems.adversarial.defaults import LEGACY_VALUES, madry_step
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.evaluation.attacks import Clean, pgd_attack, robust_accuracy
from problems.adversarial.followers import build_follower
from problems.adversarial.gap import carried_gap, follower_gap
from problems.adversarial.leader import leader_optimizer, lr_schedule
from problems.adversarial.models import build_model
from problems.adversarial.perturbation import Perturbation
from problems.adversarial.report import gap_notes, panels

MakeBatch = Callable[[Tensor, Tensor, torch.Generator], Batch]


def _dro(cfg: DROConfig, leader: nn.Module, info: DatasetInfo) -> tuple[Perturbation, MakeBatch]:
    """DRO (Eq. 2-3) and its batches, ``(x, y)`` as they come."""
    problem = AdversarialDRO(leader, cfg.eps, cfg.norm, ascent=cfg.ascent_loss)
    return problem, lambda x, y, generator: (x, y)


def _ait(cfg: AITConfig, leader: nn.Module, info: DatasetInfo) -> tuple[Perturbation, MakeBatch]:
    """AIT (Eq. 5-6) and its batches ``(x, y, partner)``, partners drawn from the epoch's
    generator, so a resume is exact."""
    problem = AdversarialInterpolation(
        leader, cfg.eps, info.num_classes, cfg.eps_y, cfg.ait_direction, cfg.norm
    )
    return problem, lambda x, y, generator: pair_batch(x, y, cfg.pairing, generator)


PROBLEMS = {DROConfig: _dro, AITConfig: _ait}


def warmed_up_eps(eps: float, warmup_epochs: int, epoch: int, index: int, per_epoch: int) -> float:
    """ε warm-up: ε grows linearly per batch, from ε/(warmup_epochs · per_epoch) at the
    first batch to ε at the last batch of epoch ``warmup_epochs``.

    Robust training on MNIST at ε = 0.3 from scratch can stay at chance (measured here: PGM-10
    with SGD did for 11 epochs); a ramp of ε is the usual cure (e.g. Gowal et al. 2018, IBP).
    """
    if warmup_epochs <= 0:
        return eps
    return eps * min(1.0, ((epoch - 1) * per_epoch + index + 1) / (warmup_epochs * per_epoch))


def set_eps(problem: Perturbation, follower: Follower, eps: float) -> None:
    """The training ε of the problem's projection and of a learned attacker's bound. During the
    warm-up the hand-designed followers keep the step sizes of the full ε (PGM-k's η, FGSM-RS's
    1.25ε), larger steps in a smaller ball; a learned follower's sign step, a fraction of its
    bound, shrinks with it."""
    problem.eps = eps
    if isinstance(follower, LearnedFollower):
        follower.net.eps = eps


def solve(
    cfg: AdversarialConfig,
    out: str | Path,
    resume: bool = False,
    interrupt_after_epoch: int | None = None,
    show_progress: bool = True,
) -> dict[str, Any] | None:
    """Train one DRO or AIT run (by the type of ``cfg``) into ``out``; return the test results
    (None if interrupted on purpose, and on every process but rank 0 under ``torchrun``)."""
    results = _train(cfg, out, resume, interrupt_after_epoch, show_progress)
    distributed.leave_process_group()  # the DDP wrappers of _train (and any cycle holding one) gone
    return results


def _train(
    cfg: AdversarialConfig,
    out: str | Path,
    resume: bool,
    interrupt_after_epoch: int | None,
    show_progress: bool,
) -> dict[str, Any] | None:
    run = RunDir(out)
    resume = resume or (distributed.restarted_by_torchrun() and run.last_checkpoint.is_file())
    recorded = run.read_recorded() if resume else None  # an unreadable one: refused here
    resolve_resumed(cfg, recorded, run.config_path)
    afresh = not (resume and run.last_checkpoint.is_file())  # else φ comes from last.pt
    if afresh:
        check_warm_start(cfg)
    device = resolve_device(cfg.device)
    context = distributed.init_from_env(device)
    if device.type == "cpu":
        keep_freed_memory()  # no page faults on every step's large tensors (bilevel.acceleration)
    experiment = _experiment(cfg, device, context, warm_start=afresh)
    return run_experiment(
        experiment, run.path, cfg.to_dict(), resume, LEGACY_VALUES, interrupt_after_epoch,
        show_progress, context.is_main,
    )  # fmt: skip


def _experiment(
    cfg: AdversarialConfig,
    device: torch.device,
    context: distributed.Context,
    warm_start: bool = True,
) -> Experiment:
    """The run as the experiment runner sees it (``bilevel.experiment``); ``warm_start``: φ from
    ``--attacker-init``'s run (a resume's comes from its own last.pt)."""
    seed_everything(cfg.seed)  # the same on every process: θ and φ start identical
    with distributed.main_process_first(context):  # rank 0 downloads a missing CIFAR alone
        splits = load_dataset(cfg.dataset, cfg.data_dir)
    info = splits.info
    train = subset(splits.train, cfg.train_size) if cfg.train_size else splits.train
    val = subset(splits.val, cfg.eval_size) if cfg.eval_size else splits.val
    test = subset(splits.test, cfg.eval_size) if cfg.eval_size else splits.test

    speedup = cfg.acceleration()
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.mean, info.std)
    model = speedup.prepare(model, device)
    follower = build_follower(cfg, info, warm_start)
    if isinstance(follower, LearnedFollower):
        follower.to(device)
        speedup.prepare(follower.net, device)
        follower.distribute(lambda net: distributed.data_parallel(net, device))
    # θ through DDP under torchrun; validation and the test table use ``model`` itself
    make_problem = PROBLEMS[type(cfg)]
    problem, make_batch = make_problem(cfg, distributed.data_parallel(model, device), info)
    optimizer = leader_optimizer(cfg, model.parameters())
    average = LeaderAverage(model, cfg.leader_ema) if cfg.leader_ema else None
    trainer = JointTrainer(
        problem, follower, optimizer, cfg.update, cfg.follower_steps, speedup, average
    )
    judged = trainer.selected_leader()  # θ̄ with --leader-ema: validated, selected, tested

    augment = None if cfg.augment == "none" else cfg.augment
    per_epoch = num_batches(len(train[0]), cfg.batch_size)
    distributed.check_shares(len(train[0]), cfg.batch_size, context)
    if device.type == "cuda":  # the split lives on the GPU: no batch waits on a host copy
        train = tuple(t.to(device) for t in train)

    if carried := cfg.carry_decision:
        free_step = getattr(cfg, "carry_free_step", 0.0)  # DRO's option alone
        problem.carried = CarriedDecisions(
            len(train[0]), cfg.carry_restart, cfg.carry_jitter, free_step
        )

    def train_batches(epoch: int) -> Iterator[Batch]:
        generator = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
        for i, (xb, yb, rows) in enumerate(
            iterate_batches(
                *train, cfg.batch_size, shuffle=True, generator=generator, augment=augment,
                with_indices=True,
            )
        ):  # fmt: skip
            set_eps(problem, follower, warmed_up_eps(cfg.eps, cfg.eps_warmup, epoch, i, per_epoch))
            xb, yb = distributed.shard(xb, context), distributed.shard(yb, context)
            if carried:
                problem.carried.select(distributed.shard(rows, context))
            xb = speedup.batch(xb.to(device, non_blocking=True))
            yb = yb.to(device, non_blocking=True)
            yield make_batch(xb, yb, generator)

    val_dev = tuple(t.to(device) for t in val)
    gap_splits = {"probe": tuple(t[: cfg.gap_size].to(device) for t in train), "val": val_dev}
    gap_problem, _ = make_problem(cfg, judged, info)  # the unwrapped leader, for the follower gap
    selection = f"val_pgd{cfg.select_pgd_steps}_acc"

    def gap_batch(x: Tensor, y: Tensor) -> Batch:
        return make_batch(x, y, torch.Generator().manual_seed(cfg.seed))

    def accuracies(
        split: tuple[Tensor, ...], steps: int, step_size: float | None = None, test: bool = False
    ) -> tuple[float, float]:
        """Clean and PGD-k accuracy (PGM-k from a uniform random start, default step 2.5 ε / k),
        with the same PGD starts every time (from ``cfg.seed``). On the test split an example
        counts as robust only if x and x + δ are both classified right, as ``evaluate`` and
        AutoAttack count; validation scores x + δ (the follower gap's PGD-10, which it reuses)."""
        size = step_size or madry_step(cfg.eps, steps)
        attack = pgd_attack(steps, cfg.eps, size, norm=cfg.norm, from_clean=test)
        with seeded(cfg.seed):
            return robust_accuracy(judged, *split, Clean()), robust_accuracy(judged, *split, attack)

    def validate() -> dict[str, float]:
        row: dict[str, float] = {}
        if cfg.gap_size > 0:  # at the full ε: the next batch sets the warm-up's ε again
            set_eps(gap_problem, follower, cfg.eps)
            row = follower_gap(
                judged, follower, gap_problem, gap_splits, cfg.eps, cfg.seed, gap_batch
            )
            if carried and problem.carried.store is not None:
                row |= carried_gap(
                    judged, follower, gap_problem, problem.carried, gap_splits["probe"], row,
                    cfg.seed, gap_batch,
                )  # fmt: skip
        if cfg.select_pgd_steps == 10 and row:  # the gap's PGD-10 is the selection's, same seed
            clean, robust = row["gap_val_clean_acc"], row["gap_val_pgd10_acc"]
        else:
            clean, robust = accuracies(val_dev, cfg.select_pgd_steps)
        row = {"val_clean_acc": clean, selection: robust} | row
        if isinstance(follower, LearnedFollower):
            row["phi_updates"] = follower.updates
        return row

    def test_leader(leader: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, Any]:
        judged.load_state_dict(leader)
        test_dev = tuple(t.to(device) for t in test)
        clean, robust = accuracies(test_dev, cfg.eval_pgd_steps, cfg.eval_step_size, test=True)
        return {"test_clean_acc": clean, f"test_pgd{cfg.eval_pgd_steps}_acc": robust}

    return Experiment(
        trainer, train_batches, per_epoch, cfg.epochs, validate,
        "val_clean_acc" if cfg.follower == "none" else selection, test_leader,
        lr_schedule(cfg, optimizer), panels, gap_notes,
    )  # fmt: skip
