"""``bench dro``: the core issue's benchmark. Every method trains on mnist5k with the small CNN,
ε = 0.3, the same epochs and seed, one after another in this process; each best-on-validation model
is then attacked with PGD-40 (step 0.01, uniform random start) on the test split.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bilevel.errors import UserError
from bilevel.run import atomic_write_text, load_checkpoint
from problems.adversarial.config import FOLLOWERS, DROConfig
from problems.adversarial.data import dataset_info, load_dataset, subset
from problems.adversarial.dro import accuracy, robust_accuracy
from problems.adversarial.models import build_model
from problems.adversarial.solve import pgd, solve_dro

BENCH_EPS = 0.3


def train_and_evaluate(
    cfg: DROConfig, run_dir: Path, test: tuple[torch.Tensor, torch.Tensor], seed: int
) -> tuple[nn.Module, dict[str, Any]]:
    """Train ``cfg`` afresh into ``run_dir`` (any ``DROConfig`` subclass, e.g. AIT's); return its
    best-on-validation leader and a row: clean and PGD-40 (step 0.01) test accuracy, seconds."""
    cfg.resolve()  # a bad option stops the bench here, before an earlier run is deleted
    shutil.rmtree(run_dir, ignore_errors=True)  # a benchmark always starts afresh
    results = solve_dro(cfg, run_dir, show_progress=False)
    info = dataset_info(cfg.dataset)
    model = build_model(cfg.model, info.num_classes, info.in_channels, info.mean, info.std)
    model.load_state_dict(load_checkpoint(run_dir / "best.pt")["leader"])
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        pgd40 = robust_accuracy(model, *test, pgd(40, cfg.eps, 0.01), cfg.eps)
    row = {"clean_acc": accuracy(model, *test), "pgd40_acc": pgd40}
    return model, row | {"train_seconds": results["train_seconds"]}


def bench_dro(
    methods: list[str],
    epochs: int,
    seed: int,
    update: str,
    out: Path,
    json_path: Path | None = None,
    train_size: int | None = None,
    eval_size: int | None = None,
) -> list[dict[str, Any]]:
    """Train each follower in ``methods``; return rows of clean and PGD-40 accuracy and seconds."""
    unknown = [m for m in methods if m not in FOLLOWERS]
    if unknown or not methods:
        raise UserError(f"Unknown --methods {unknown}; choose from: {', '.join(FOLLOWERS)}.")
    configs = {
        method: DROConfig(
            follower=method, epochs=epochs, eps=BENCH_EPS, seed=seed, train_size=train_size,
            update=update if method not in ("none", "fgsm", "pgm") else "alternating",
            eval_size=eval_size,
        ).resolve()  # every bad option stops the bench before it reads or trains anything
        for method in methods
    }  # fmt: skip
    test = load_dataset("mnist5k").test
    test = subset(test, eval_size) if eval_size else test
    rows = []
    for method, cfg in configs.items():
        _, row = train_and_evaluate(cfg, Path(out) / method, test, seed)
        name = method if method in ("none", "fgsm", "pgm") else f"{method} ({update})"
        rows.append({"method": name, **row})
    pgm_seconds = next((r["train_seconds"] for r in rows if r["method"] == "pgm"), None)
    for row in rows:
        row["ratio_to_pgm10"] = (
            round(row["train_seconds"] / pgm_seconds, 3) if pgm_seconds else None
        )
    if json_path is not None:
        atomic_write_text(Path(json_path), json.dumps(rows, indent=2) + "\n")
    return rows
