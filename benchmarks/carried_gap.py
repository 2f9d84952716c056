"""The follower gap of finished runs at their last epoch, fresh and carried, on the training probe.

    python benchmarks/carried_gap.py RUN [RUN ...]

For each run folder (trained by ``solve adversarial-dro``), rebuilds the last epoch's leader and
follower (``last.pt``) and prints, on the first ``--gap-size`` training examples at the full ε:
the loss under PGD-10, the run's follower started afresh, and, when the run carried δ
(``--carry-decision``), the follower started from each example's carried δ, with their ratios to
PGD-10's loss increase (``problems.adversarial.gap``). The leader is the one ``solve`` measures the
gap on (θ̄ under ``--leader-ema``, else θ) and the carried store starts δ with the run's
``--carry-restart``, ``--carry-jitter`` and ``--carry-free-step``, so a run's last line is the last
row of its metrics.jsonl; runs trained before the carried gap was part of every epoch's metrics
get the same figure this way.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_folders import over_run_folders  # noqa: E402
from bilevel.averaging import LeaderAverage  # noqa: E402
from bilevel.carry import CarriedDecisions  # noqa: E402
from bilevel.run import RunDir, load_checkpoint  # noqa: E402
from problems.adversarial.data import load_dataset, subset  # noqa: E402
from problems.adversarial.dro import AdversarialDRO  # noqa: E402
from problems.adversarial.dro_config import DROConfig  # noqa: E402
from problems.adversarial.followers import build_follower  # noqa: E402
from problems.adversarial.gap import carried_gap, follower_gap  # noqa: E402
from problems.adversarial.models import build_model  # noqa: E402


def last_epoch_gap(run: Path) -> dict[str, float]:
    """``gap_probe_*`` of ``run``'s last checkpoint, with ``gap_probe_carried_*`` if it carried."""
    cfg = DROConfig.as_trained(RunDir(run).read_config())
    splits = load_dataset(cfg.dataset, cfg.data_dir)
    info, train = splits.info, splits.train
    train = subset(train, cfg.train_size) if cfg.train_size else train
    state = load_checkpoint(RunDir(run).last_checkpoint)["trainer"]
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.mean, info.std)
    model.load_state_dict(state["leader"])
    if "leader_average" in state:  # --leader-ema: solve measures the gap on θ̄, as it selects
        average = LeaderAverage(model, cfg.leader_ema)
        average.load_state_dict(state["leader_average"])
        model = average.module.eval()
    follower = build_follower(cfg, info, warm_start=False)
    if "follower" in state:
        follower.load_state_dict(state["follower"])
    problem = AdversarialDRO(model, cfg.eps, cfg.norm, ascent=cfg.ascent_loss)
    if hasattr(follower, "net"):
        follower.net.eps = cfg.eps
    probe = tuple(t[: cfg.gap_size] for t in train)
    gap = follower_gap(model, follower, problem, {"probe": probe}, cfg.eps, cfg.seed)
    if "problem" in state:
        # as solve builds it: --carry-restart and --carry-jitter change each carried start
        carried = CarriedDecisions(
            len(train[0]), cfg.carry_restart, cfg.carry_jitter, cfg.carry_free_step
        )
        carried.load_state_dict(state["problem"]["carried"])
        gap |= carried_gap(model, follower, problem, carried, probe, gap, cfg.seed)
    return gap


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    print("| run | PGD-10 loss | fresh follower loss (ratio) | carried follower loss (ratio) |")
    print("|---|---|---|---|")
    for run in runs:
        g = last_epoch_gap(Path(run))
        fresh = f"{g['gap_probe_follower_loss']:.3f} ({g['gap_probe_follower_ratio']:.2f})"
        carried = "-"
        if "gap_probe_carried_loss" in g:
            carried = f"{g['gap_probe_carried_loss']:.3f} ({g['gap_probe_carried_ratio']:.2f})"
        print(f"| {run} | {g['gap_probe_pgd10_loss']:.3f} | {fresh} | {carried} |")


if __name__ == "__main__":
    over_run_folders(main, __doc__)
