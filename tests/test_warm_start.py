"""``--attacker-init``'s folder is read once, when φ first starts from it: a resumed run takes φ
from its own last.pt and a finished run's readers (``evaluate``, a bench's reuse) read no warm
start, so none of them needs that folder to be there still; a run that will start afresh is
refused, before anything is written, where the folder holds no last.pt (a bench's side of it:
tests/test_bench_run_folders.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from helpers import metrics_without_time
from typer.testing import CliRunner

from cli import app
from problems.adversarial.evaluation.runs import load_learned_attacker

TINY = ["solve", "adversarial-dro", "--follower", "grad", "--train-size", "32", "--eval-size"]
TINY += ["16", "--batch-size", "16", "--eps", "0.1", "--gap-size", "0"]


def solve(out: Path, *args: str) -> None:
    result = CliRunner().invoke(app, [*TINY, "--out", str(out), *args])
    assert result.exit_code == 0, result.output


def test_a_run_resumes_and_is_evaluated_after_its_warm_start_folder_is_gone(tmp_path) -> None:
    """The resume ends as the unbroken warm-started run does: φ is last.pt's either way."""
    source, run, unbroken = tmp_path / "source", tmp_path / "run", tmp_path / "unbroken"
    solve(source, "--epochs", "1")
    warm = ["--epochs", "2", "--attacker-init", str(source)]
    solve(unbroken, *warm)
    solve(run, *warm, "--interrupt-after-epoch", "1")
    shutil.rmtree(source)
    solve(run, "--resume")
    assert metrics_without_time(run) == metrics_without_time(unbroken)
    assert json.loads((run / "config.json").read_text())["attacker_init"] == str(source)
    assert (run / "results.json").is_file()
    assert load_learned_attacker(run).steps == 1  # evaluate's g_φ: the run's own
