"""``bench l2l --grid``: what the study judges and how it labels entries, with training and the
attack faked: the run's own ball, seed and whole validation split; an entry's options over the
base's; which rows are references; seed-major order of the runs."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from bilevel.norms import Norm
from problems.adversarial import study, study_report
from problems.adversarial.data import Splits
from problems.adversarial.dro_config import DROConfig


def test_an_l2_run_is_judged_in_its_own_ball_with_its_seed_on_the_whole_validation_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """APGD-CE + APGD-T of an L2 run at ε = 1.5 must attack the L2 ball: in the L∞ ball of 1.5
    (the whole box) every robust figure is 0. Its randomness is the run's seed (3), and without
    val_examples the whole validation split (6 digits, labels 1) is attacked and recorded."""

    def pair(label: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((n, 1, 2, 2), float(label)), torch.full((n,), label)

    splits = Splits(pair(0, 10), pair(1, 6), pair(2, 8), None)
    monkeypatch.setattr(study, "load_dataset", lambda *a, **k: splits)
    monkeypatch.setattr(study, "load_classifier", lambda *a, **k: SimpleNamespace(model=None))
    monkeypatch.setattr(study, "predict", lambda model, x: x[:, 0, 0, 0].long())
    attacked = []

    def attack(adapter, model, x, y):
        attacked.append((adapter, y))
        return SimpleNamespace(accuracy=0.5)

    monkeypatch.setattr(study, "run_attack", attack)
    cfg = DROConfig(train_size=32, eval_size=16, epochs=1, norm="l2", eps=1.5, seed=3).resolve()
    judged = study.validation_robustness(tmp_path, cfg, val_examples=None)
    ((adapter, y),) = attacked
    assert adapter.norm is Norm.L2 and adapter.eps == 1.5 and adapter.seed == 3
    assert adapter.components == study.VAL_ATTACK
    assert y.tolist() == [1] * 6 and judged["val_examples"] == 6


def _grid(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(data))
    return path


def test_a_references_own_options_and_an_entrys_own_options_win_over_the_base(tmp_path) -> None:
    """The base is shared, each entry's options are its own: pgm-3 takes 3 steps and FGSM-RS stays
    FGSM-RS under a base that names another follower and PGM step count; an entry's lr wins."""
    base = {"follower": "grad", "pgm_steps": 7, "lr": 0.05}
    grid = study.load_grid(
        _grid(
            tmp_path,
            {"base": base, "references": ["fgsm", "pgm-3"], "configs": {"x": {"lr": 0.02}}},
        )
    )
    entries = grid.entries()
    assert entries["fgsm"]["follower"] == "fgsm"
    assert entries["pgm-3"]["follower"] == "pgm" and entries["pgm-3"]["pgm_steps"] == 3
    assert entries["x"]["lr"] == 0.02 and entries["x"]["follower"] == "grad"


def test_rows_mark_references_by_follower_and_runs_go_seed_major(tmp_path, monkeypatch) -> None:
    """A config that sets no follower trains solve's default, 2-Step, a learned follower: its row
    is no reference (the winner is picked among the learned rows). The runs go seed by seed over
    every entry, so a study stopped early leaves each entry with its first seeds."""
    order = []

    def fake_map(fn, tasks, jobs):
        out = []
        for _options, seed, run_dir, _ in tasks:
            order.append((run_dir.parent.name, seed))
            results = {"train_seconds": 1.0, "train_cpu_seconds": 1.0}
            out.append((results, {"val_apgd_ce_t_acc": 0.5, "val_clean_acc": 0.9}))
        return out

    monkeypatch.setattr(study, "map_tasks", fake_map)
    monkeypatch.setattr(study, "check_run_folders", lambda tasks: None)
    monkeypatch.setattr(study_report, "write_study", lambda *args: None)
    configs = {"default": {"lr": 0.02}, "fast": {"follower": "fgsm"}}
    grid = study.Grid("g", {}, configs, seeds=[0, 1], references=["pgm-10"])
    rows = {r["entry"]: r for r in study.run_study(grid, tmp_path / "runs", tmp_path / "out")}
    assert {name: row["reference"] for name, row in rows.items()} == {
        "pgm-10": True, "default": False, "fast": True,
    }  # fmt: skip
    assert order == [("pgm-10", 0), ("default", 0), ("fast", 0),
                     ("pgm-10", 1), ("default", 1), ("fast", 1)]  # fmt: skip
