"""What Square finds after the gradient attacks: a gradient-masking probe of finished runs.

    python benchmarks/square_share.py RUN [RUN ...] [--json FILE]

For each run folder (trained by ``solve adversarial-dro``), attacks its best-on-validation leader
on the whole test split with AutoAttack's APGD-CE, APGD-T and then Square (Andriushchenko et al.
2020, 5000 queries) on what both APGD attacks left: the standard cascade without FAB-T, which
broke at most one digit a run where ``bench dro`` counted it (docs/results.md, "What FAB-T and
Square add").
Prints, per run, the accuracy after APGD-CE + APGD-T and the digits Square broke beyond it:
examples a gradient-free search breaks and a gradient one does not are the mark of gradients that
mislead (Athalye et al. 2018; Croce & Hein 2020).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_folders import probe_run_folders  # noqa: E402
from problems.adversarial.data import load_dataset  # noqa: E402
from problems.adversarial.dro_config import DROConfig  # noqa: E402
from problems.adversarial.evaluation.attacks import run_attack  # noqa: E402
from problems.adversarial.evaluation.autoattack_adapter import AutoAttackAdapter  # noqa: E402
from problems.adversarial.evaluation.runs import load_classifier, read_config  # noqa: E402

CASCADE = ("apgd-ce", "apgd-t", "square")


def square_share(run_dir: Path) -> dict[str, float | int | str]:
    """One run's APGD-CE + APGD-T accuracy, the digits Square broke after them, and the accuracy
    left after all three."""
    cfg = DROConfig.as_trained(read_config(run_dir))
    x, y = load_dataset(cfg.dataset, cfg.data_dir).test
    model = load_classifier(run_dir).model
    attack = AutoAttackAdapter(cfg.eps, CASCADE, seed=cfg.seed, norm=cfg.norm)
    result = run_attack(attack, model, x, y)
    broken = attack.broken_counts()
    after_apgd = result.accuracy + broken["square"] / len(y)
    return {"run": str(run_dir), "apgd_ce_t_acc": after_apgd, "square_broke": broken["square"],
            "apgd_ce_t_square_acc": result.accuracy}  # fmt: skip


def main() -> None:
    probe_run_folders(square_share, lambda row: (
        f"APGD-CE + APGD-T {row['apgd_ce_t_acc']:.3f}, Square broke {row['square_broke']} more"
    ), __doc__)  # fmt: skip


if __name__ == "__main__":
    main()
