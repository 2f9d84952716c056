"""Test-split PGD of finished runs scored both ways: x + δ alone (the definition before 46eedaf)
and the worst of x and x + δ (the one since), with the run's own attack seed; a reading that the
change moved no recorded figure (docs/results.md, the opening paragraph).

    python benchmarks/rescore_pgd.py runs/l2l-budget/pgm-10/seed-{0,1,2}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.run_folders import not_a_run_exits_2  # noqa: E402
from bilevel.run import RunDir  # noqa: E402
from bilevel.seeding import seeded  # noqa: E402
from problems.adversarial.bench import pgd40_step  # noqa: E402
from problems.adversarial.data import load_dataset, subset  # noqa: E402
from problems.adversarial.evaluation.attacks import pgd_attack, robust_accuracy  # noqa: E402
from problems.adversarial.evaluation.runs import load_classifier  # noqa: E402


def rescore(run_dir: Path) -> dict[str, float]:
    """PGD-40 (bench dro's step) and PGD-20 (the run's own test step) on the test examples the
    run scored (its ``eval_size`` first ones, else all), both ways."""
    cfg = RunDir(run_dir).read_config()
    model = load_classifier(run_dir).model
    test = load_dataset(cfg["dataset"], cfg["data_dir"]).test
    test = subset(test, cfg["eval_size"]) if cfg.get("eval_size") else test
    out = {}
    for steps, step in ((40, pgd40_step(cfg["eps"], cfg["norm"])), (20, cfg["eval_step_size"])):
        for from_clean, label in ((False, "x+δ"), (True, "worst")):
            attack = pgd_attack(steps, cfg["eps"], step, norm=cfg["norm"], from_clean=from_clean)
            with seeded(cfg["seed"]):
                out[f"pgd{steps} {label}"] = robust_accuracy(model, *test, attack)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path)
    torch.set_num_threads(1)
    for run in parser.parse_args().runs:
        with not_a_run_exits_2():
            scores = rescore(run)
        print(run, "  ".join(f"{k} {v:.3f}" for k, v in scores.items()), flush=True)


if __name__ == "__main__":
    main()
