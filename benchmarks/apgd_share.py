"""Where the validation robustness goes between PGD-10, APGD-CE and APGD-T, for finished runs.

    python benchmarks/apgd_share.py RUN [RUN ...] [--json FILE]

For each run folder (trained by ``solve adversarial-dro``), reads the validation PGD-10 accuracy
of its selected epoch from ``metrics.jsonl`` and attacks its best-on-validation leader on the
validation split as the study judges it (``study.validation_robustness``: the first
``val_examples`` digits of ``study-eval.json``, APGD-CE then APGD-T on what APGD-CE left, the
run's seed), counting what each component breaks. The accuracy after both equals the study's
``val_apgd_ce_t_acc``; the script checks it. The split says which attack a training adversary's robustness does not reach:
APGD-CE (Croce & Hein 2020) climbs the same cross-entropy as PGD with an adaptive step and
momentum, APGD-T climbs the margin to each of the nine runner-up classes in turn.
The test split is not read.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.robust_generalisation import selected_row  # noqa: E402
from benchmarks.run_folders import probe_run_folders  # noqa: E402
from problems.adversarial.dro_config import DROConfig  # noqa: E402
from problems.adversarial.evaluation.runs import read_config  # noqa: E402
from problems.adversarial.study import validation_robustness  # noqa: E402

COLUMNS = ("val_pgd10_acc", "apgd_ce_acc", "apgd_ce_t_acc")


def apgd_share(run_dir: Path) -> dict[str, float | int | str]:
    """One run's validation accuracy under PGD-10 (as trained), after APGD-CE, and after APGD-T."""
    cfg = DROConfig.as_trained(read_config(run_dir))
    judged = json.loads((run_dir / "study-eval.json").read_text())
    mine = validation_robustness(run_dir, cfg, judged["val_examples"], by_component=True)
    final = mine["val_apgd_ce_t_acc"]
    if abs(final - judged["val_apgd_ce_t_acc"]) > 1e-6:
        raise SystemExit(
            f"{run_dir}: APGD-CE + APGD-T gives {final:.4f} here, {judged['val_apgd_ce_t_acc']:.4f}"
            " in study-eval.json; the run was judged differently."
        )
    n = mine["val_examples"]
    return {
        "run": str(run_dir),
        "val_pgd10_acc": selected_row(run_dir, ("val_pgd10_acc",))["val_pgd10_acc"],
        "apgd_ce_acc": final + mine["val_broken_by"]["apgd-t"] / n,
        "apgd_ce_t_acc": final,
        "val_examples": n,
    }


def main() -> None:
    rows = probe_run_folders(apgd_share, lambda row: (
        f"PGD-10 {row['val_pgd10_acc']:.3f}, APGD-CE {row['apgd_ce_acc']:.3f}, "
        f"+ APGD-T {row['apgd_ce_t_acc']:.3f}"), __doc__)  # fmt: skip
    for entry in dict.fromkeys(Path(r["run"]).parent for r in rows):  # a study entry's seeds
        mine = [r for r in rows if Path(r["run"]).parent == entry]
        means = {k: sum(r[k] for r in mine) / len(mine) for k in COLUMNS}
        print(f"{entry} ({len(mine)} runs): " + ", ".join(f"{k} {v:.4f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
