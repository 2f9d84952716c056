"""``bench ait``: the AIT issue's benchmark. AIT Net (one signed step) and L2L-AIT (the grad
attacker, Algorithm 4) train on mnist5k with the small CNN, ε = 0.3, ε_y = 0.5, the same epochs and
seed (ε ramped up over the first third of the epochs, the mnist5k default), one after another in
this process, with the follower pulling features ``toward`` the partner's and, as a second pair of
rows, pushing them ``away`` (Eq. 6 as printed). Each best-on-validation model is attacked on the test split with PGD-40 (step 0.01, uniform random
start) on the cross-entropy and on the CW margin loss (the evaluation package's ``pgd_attack``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from bilevel.errors import UserError
from bilevel.run import atomic_write_text
from problems.adversarial.ait import Direction
from problems.adversarial.bench import BENCH_EPS, train_and_evaluate
from problems.adversarial.data import load_dataset, subset
from problems.adversarial.evaluation.attacks import pgd_attack, run_attack
from problems.adversarial.solve_ait import AIT_FOLLOWERS, AITConfig


def bench_ait(
    methods: list[str],
    directions: list[str],
    epochs: int,
    seed: int,
    out: Path,
    json_path: Path | None = None,
    train_size: int | None = None,
    eval_size: int | None = None,
) -> list[dict[str, Any]]:
    """Train each follower in ``methods`` for each direction; return rows of clean, PGD-40 and
    CW-PGD-40 test accuracy and training seconds."""
    unknown = [m for m in methods if m not in AIT_FOLLOWERS]
    if unknown or not methods:
        raise UserError(f"Unknown --methods {unknown}; choose from: {', '.join(AIT_FOLLOWERS)}.")
    known = {d.value for d in Direction}
    if not directions or any(d not in known for d in directions):
        raise UserError(f"--directions takes {', '.join(sorted(known))}; got {directions}.")
    configs = {
        (direction, method): AITConfig(
            follower=method, ait_direction=direction, epochs=epochs, eps=BENCH_EPS, seed=seed,
            train_size=train_size, eval_size=eval_size,
        ).resolve()  # every bad option stops the bench before it reads or trains anything
        for direction in directions
        for method in methods
    }  # fmt: skip
    test = load_dataset("mnist5k").test
    test = subset(test, eval_size) if eval_size else test
    rows = []
    for (direction, method), cfg in configs.items():
        model, row = train_and_evaluate(cfg, Path(out) / f"{method}-{direction}", test, seed)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            cw = run_attack(pgd_attack(40, BENCH_EPS, 0.01, loss="cw"), model, *test)
        name = "AIT" if method == "ait" else f"L2L-AIT ({method})"
        seconds = row.pop("train_seconds")
        row |= {"cw_pgd40_acc": round(cw.accuracy, 4), "train_seconds": seconds}
        rows.append({"method": f"{name}, {direction}", **row})
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(rows, indent=2) + "\n")
    return rows
