"""benchmarks/rescore_pgd.py: the run's test PGD-20 rescored on the examples the run scored."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import load_script
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[1]


def test_the_worst_case_pgd20_reproduces_the_runs_recorded_figure(tmp_path: Path) -> None:
    """Scored as solve scores it (the worst of x and x + δ, the run's seed, its step) on its
    --eval-size test examples, PGD-20 gives results.json's figure; on the whole test split (as
    the script did) it would not be the same statistic."""
    torch.set_num_threads(1)
    run = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--follower", "pgm", "--pgm-steps", "2", "--train-size",
            "512", "--eval-size", "64", "--batch-size", "64", "--epochs", "2", "--gap-size", "0",
            "--eps", "0.05", "--out", str(run)]  # fmt: skip
    assert CliRunner().invoke(app, args).exit_code == 0
    recorded = json.loads((run / "results.json").read_text())["test_pgd20_acc"]
    assert 0 < recorded < 1  # a figure an attack can move
    scores = load_script("benchmarks", "rescore_pgd").rescore(run)
    assert scores["pgd20 worst"] == pytest.approx(recorded, abs=1e-6)


@pytest.mark.parametrize(
    "command",
    [["rescore_pgd.py", "NONE"], ["dispatch_count.py", "--methods", "plain", "--batch-size", "0"]],
)
def test_a_bad_folder_or_count_is_one_line_and_exit_2(tmp_path: Path, command) -> None:
    args = [a.replace("NONE", str(tmp_path / "none")) for a in command]
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / args[0]), *args[1:]],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and "error:" in done.stderr
