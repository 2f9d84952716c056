"""Robust fit against robust generalisation, read from finished runs' follower-gap metrics.

    python benchmarks/robust_generalisation.py RUN [RUN ...]

For each run folder (trained by ``solve adversarial-dro``), at the epoch the run selected on
validation (``best_epoch`` of ``results.json``), prints the accuracy under PGD-10 on the
follower gap's probe of training examples and on the validation split, and their difference: the
robust generalisation gap (Rice et al. 2020, "Overfitting in adversarially robust deep
learning"). A stronger training adversary that lifts the first figure but not the second is
spent on the training examples. The last line is the mean over the runs given. Nothing is
recomputed: the figures are those every epoch of a run writes into ``metrics.jsonl``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.run_folders import over_run_folders  # noqa: E402
from bilevel.run import RunDir  # noqa: E402

COLUMNS = ("gap_probe_clean_acc", "gap_probe_pgd10_acc", "val_clean_acc", "val_pgd10_acc")


def selected_row(run: Path, columns: tuple[str, ...]) -> dict[str, float]:
    """``columns`` of ``metrics.jsonl`` at the epoch ``run`` selected on validation, and that
    ``epoch``."""
    best = json.loads((run / "results.json").read_text())["best_epoch"]
    row = next(r for r in RunDir(run).read_metrics() if r["epoch"] == best)
    missing = [c for c in columns if c not in row]
    if missing:
        raise SystemExit(f"{run} has no {', '.join(missing)} in metrics.jsonl (no --gap-size?).")
    return {"epoch": best} | {c: row[c] for c in columns}


def selected_epoch(run: Path) -> dict[str, float]:
    """The ``COLUMNS`` of ``run``'s selected epoch, and ``robust_gap`` (probe minus validation
    accuracy under PGD-10)."""
    row = selected_row(run, COLUMNS)
    return row | {"robust_gap": row["gap_probe_pgd10_acc"] - row["val_pgd10_acc"]}


def main(runs: list[str]) -> None:
    if not runs:
        raise SystemExit(__doc__.split("\n\n")[1].strip())
    keys = (*COLUMNS, "robust_gap")
    print("| run | epoch | probe clean | probe PGD-10 | val clean | val PGD-10 | PGD-10 gap |")
    print("|---|---|---|---|---|---|---|")
    found = [selected_epoch(Path(run)) for run in runs]
    for run, f in zip(runs, found, strict=True):
        print(f"| {run} | {f['epoch']} | " + " | ".join(f"{f[k]:.3f}" for k in keys) + " |")
    means = [sum(f[k] for f in found) / len(found) for k in keys]
    print(f"| mean of {len(found)} | | " + " | ".join(f"{m:.3f}" for m in means) + " |")


if __name__ == "__main__":
    over_run_folders(main, __doc__)
