"""The follower gap (``problems.adversarial.gap``): z = 0 shows the whole gap to PGD-10, PGD-10 as
the follower closes it exactly, and a run writes the gap into metrics.jsonl and its report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import image_batch
from typer.testing import CliRunner

from bilevel import NoFollower
from cli import app
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.gap import follower_gap, reference_followers
from problems.adversarial.models import SmallCNN

EPS = 0.3


def _gap(follower) -> dict[str, float]:
    model = SmallCNN().eval()
    splits = {"probe": image_batch(40), "val": image_batch(30)}
    return follower_gap(model, follower, AdversarialDRO(model, EPS), splits, EPS, seed=3)


def test_a_follower_that_returns_zero_shows_the_full_gap() -> None:
    gap = _gap(NoFollower())
    for split in ("probe", "val"):
        assert gap[f"gap_{split}_follower_loss"] == pytest.approx(gap[f"gap_{split}_clean_loss"])
        assert gap[f"gap_{split}_follower_ratio"] == pytest.approx(0.0, abs=1e-6)
        assert gap[f"gap_{split}_pgd10_loss"] > gap[f"gap_{split}_clean_loss"] + 0.01
        assert 0.0 < gap[f"gap_{split}_fgsm_rs_ratio"] < 1.5


def test_pgd10_as_the_follower_shows_ratio_one() -> None:
    gap = _gap(reference_followers(EPS)["pgd10"])
    for split in ("probe", "val"):
        assert gap[f"gap_{split}_follower_ratio"] == 1.0
        assert gap[f"gap_{split}_follower_acc"] == gap[f"gap_{split}_pgd10_acc"]


def test_the_gap_is_measured_in_eval_mode_and_leaves_no_gradient() -> None:
    model = SmallCNN().train()
    follower_gap(model, NoFollower(), AdversarialDRO(model, EPS), {"v": image_batch(8)}, EPS, 0)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def test_a_run_writes_the_gap_every_epoch_with_the_phi_update_count(tmp_path: Path) -> None:
    torch.set_num_threads(2)
    out = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--train-size", "96", "--eval-size", "32", "--gap-size",
            "32", "--batch-size", "32", "--epochs", "2", "--eps", "0.1", "--follower", "grad",
            "--update", "fused", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["phi_updates"] for r in rows] == [3, 6]  # 96 / 32 batches, one φ step each
    for row in rows:
        for split in ("probe", "val"):
            for name in ("clean", "follower", "pgd10", "fgsm_rs"):
                assert 0.0 <= row[f"gap_{split}_{name}_acc"] <= 1.0
                assert row[f"gap_{split}_{name}_loss"] >= 0.0
            assert row[f"gap_{split}_pgd10_loss"] >= row[f"gap_{split}_clean_loss"]
    report = (out / "report.md").read_text()
    assert "Follower gap at epoch 2 after 6 φ updates" in report
    assert json.loads((out / "config.json").read_text())["gap_size"] == 32
