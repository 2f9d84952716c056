"""Does choosing the epoch by PGD-10 on validation cost a run under APGD? For each study run folder
(written by ``bench l2l``), the study's judgement of its selected leader (``best.pt``, from
``study-eval.json``) beside the same judgement of θ as last trained (``last.pt``): APGD-CE +
APGD-T on the same validation digits, with the same attack seed. The test split is not read.
Under ``--leader-ema`` both are θ̄, the moving average that ``best.pt`` holds (``last.pt``'s
``leader_average``), so the two differ only in the epoch, not in whether θ is averaged.

    python benchmarks/selection_check.py RUN [RUN ...]

If the last epoch were robuster under APGD than the epoch PGD-10 chose, selecting on PGD-10 would
flatter a defence that PGD overrates; the last line is the mean over the runs given.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_folders import over_run_folders  # noqa: E402
from bilevel.errors import UserError  # noqa: E402
from bilevel.run import RunDir  # noqa: E402
from problems.adversarial.dro_config import DROConfig  # noqa: E402
from problems.adversarial.evaluation.runs import read_config  # noqa: E402
from problems.adversarial.study import validation_robustness  # noqa: E402


def last_against_best(run: Path) -> dict[str, float]:
    """The study's validation figures of ``run``'s best.pt and, computed here, of its last.pt's
    leader (θ̄ under ``--leader-ema``, as best.pt holds)."""
    best = json.loads((RunDir(run).path / "study-eval.json").read_text())
    cfg = DROConfig(**read_config(run)).resolve()
    # last.pt's leader as best.pt holds it (``leader_state``): θ̄ under --leader-ema, since judging
    # raw θ beside best.pt's θ̄ measured averaging as much as the epoch (+13.0 points on a
    # one-epoch run)
    last = validation_robustness(run, cfg, best["val_examples"], RunDir(run).last_checkpoint)
    return {
        "best_epoch": best["best_epoch"],
        "best": best["val_apgd_ce_t_acc"],
        "last": last["val_apgd_ce_t_acc"],
    }


def main(runs: list[str]) -> None:
    torch.set_num_threads(1)
    print(
        "| run | selected epoch | selected: val APGD-CE + APGD-T | last epoch | last − selected |"
    )
    print("|---|---|---|---|---|")
    for run in runs:  # every folder checked before the first attack
        if not (Path(run) / "study-eval.json").is_file():
            raise UserError(f"{run} has no study-eval.json; pass run folders of `bench l2l`.")
    found = [last_against_best(Path(run)) for run in runs]
    for run, f in zip(runs, found, strict=True):
        diff = 100 * (f["last"] - f["best"])
        print(f"| {run} | {f['best_epoch']} | {f['best']:.3f} | {f['last']:.3f} | {diff:+.1f} |")
    means = {k: sum(f[k] for f in found) / len(found) for k in ("best", "last")}
    diff = 100 * (means["last"] - means["best"])
    print(f"| mean of {len(found)} | | {means['best']:.3f} | {means['last']:.3f} | {diff:+.1f} |")


if __name__ == "__main__":
    over_run_folders(main, __doc__)
