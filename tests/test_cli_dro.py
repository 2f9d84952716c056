"""``cli.py solve adversarial-dro`` end to end on a slice of mnist5k: the run folder, exact resume,
and every bad input of the core issue (one sentence, exit code 2, earlier files untouched)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import metrics_without_time
from typer.testing import CliRunner

from cli import app

ROOT = Path(__file__).resolve().parents[1]
SMALL = [
    "--train-size",
    "256",
    "--eval-size",
    "64",
    "--batch-size",
    "32",
    "--epochs",
    "2",
    "--eps",
    "0.1",
    # the paper's learned follower, on which these run-folder tests were written (the mnist5k
    # defaults of the levers are tested in test_levers.py)
    "--update",
    "alternating",
    "--attacker-sign-step",
    "0",
    "--no-attacker-random-start",
]
runner = CliRunner()


def solve(out: Path, *extra: str):
    args = ["solve", "adversarial-dro", *SMALL, "--out", str(out), *extra]
    return runner.invoke(app, args, catch_exceptions=False)


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.is_file()}


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "unbroken"
    result = solve(out, "--follower", "2-step")
    assert result.exit_code == 0, result.output
    return out


def test_run_folder_holds_config_metrics_checkpoints_report_and_plot(unbroken: Path) -> None:
    for name in ("config.json", "metrics.jsonl", "last.pt", "best.pt", "report.md", "curves.png"):
        assert (unbroken / name).is_file(), name
    config = json.loads((unbroken / "config.json").read_text())
    assert (
        config["eps"] == 0.1 and config["model"] == "small-cnn" and config["follower"] == "2-step"
    )
    assert config["device"] in ("cpu", "cuda")  # resolved, not "auto"
    rows = metrics_without_time(unbroken)
    assert [r["epoch"] for r in rows] == [1, 2]
    results = json.loads((unbroken / "results.json").read_text())
    assert 0.0 <= results["test_pgd20_acc"] <= results["test_clean_acc"] <= 1.0
    assert results["test_clean_acc"] > 0.2  # it learned something in 2 small epochs (chance: 0.1)
    assert (unbroken / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_resume_after_an_interrupt_ends_with_the_unbroken_metrics(unbroken: Path, tmp_path) -> None:
    out = tmp_path / "broken"
    first = solve(out, "--follower", "2-step", "--interrupt-after-epoch", "1")
    assert first.exit_code == 0 and "resume" in first.output
    assert len(metrics_without_time(out)) == 1 and not (out / "results.json").exists()
    second = solve(out, "--follower", "2-step", "--resume")
    assert second.exit_code == 0, second.output
    assert metrics_without_time(out) == metrics_without_time(unbroken)
    assert (
        json.loads((out / "results.json").read_text())["test_pgd20_acc"]
        == json.loads((unbroken / "results.json").read_text())["test_pgd20_acc"]
    )


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--follower", "pgd-magic"], "Unknown --follower"),
        (["--dataset", "imagenet"], "Unknown --dataset"),
        (["--model", "vgg"], "Unknown --model"),
        (["--dataset", "cifar10", "--model", "trades-cnn"], "takes 28x28 digits"),
        (["--eps", "0"], "--eps must be in (0, 1]"),
        (["--eps", "1.5"], "--eps must be in (0, 1]"),
        (["--update", "fused", "--follower", "pgm"], "learned follower"),
        (["--dataset", "cifar10", "--data-dir", "/nonexistent/cifar"], "--data-dir"),
        (["--seed", "-1"], "--seed must be between 0 and"),
        (["--milestones", "-3"], "--milestones must lie between 1 and"),
        (["--epochs", "4", "--milestones", "2,9"], "--milestones must lie between 1 and 3"),
        # a drop after the last epoch: no batch would train at the lower rate
        (["--epochs", "4", "--milestones", "4"], "--milestones must lie between 1 and 3"),
        # a drop "after epoch 0" is MultiStepLR's at its construction: all of training at lr / 10
        (["--epochs", "4", "--milestones", "0"], "--milestones must lie between 1 and 3"),
        # a multistep schedule that never stepped, recorded as multistep
        (["--epochs", "4", "--milestones", ""], "--milestones names no epoch"),
        # a g_φ of 1e20 times the paper's channels ended in a traceback from the allocator
        (["--attacker-width", "99999999999999999999"], "--attacker-width must be at most 16"),
        # a PGD of 1e20 steps ran for ever, where evaluate's pgdK stops at 10,000
        (["--select-pgd-steps", "10001"], "--select-pgd-steps takes 1 to 10,000 steps"),
        (["--follower", "pgm", "--pgm-steps", "10001"], "--pgm-steps takes 1 to 10,000 steps"),
        # MultiStepLR drops ×0.1 once for each time an epoch is named: ×0.01 at 2
        (["--epochs", "4", "--milestones", "2,2"], "--milestones names epoch 2 twice"),
        (["--epochs", "4", "--milestones", "2,3,2"], "--milestones names epoch 2 twice"),  # apart
        (["--seed", str(2**32)], "--seed must be between 0 and"),
        (["--weight-decay", "nan"], "--weight-decay must be a finite number"),
        (["--attacker-sign-step", "nan"], "--attacker-sign-step must be a finite number"),
        # a count too large for a float: an OverflowError in PGM's default step 2.5 ε / k
        (["--follower", "pgm", "--pgm-steps", str(10**400)], "--pgm-steps must be a finite"),
        (["--lr", "0"], "--lr must be positive; got 0.0."),
        (["--attacker-lr", "-1e-3"], "--attacker-lr must be positive; got -0.001."),
        (["--momentum", "-0.5"], "--momentum must be at least 0; got -0.5."),
        (["--gap-size", "-1"], "--gap-size must be at least 0; got -1."),
        (["--norm", ""], "Unknown --norm ''"),  # was trained in L∞
        (["--norm", "l2", "--eps", "28.5"], "--eps must be in (0, 28] (the L2 diameter"),
    ],
)
def test_bad_input_gives_one_sentence_and_exit_code_2(tmp_path, args, words) -> None:
    result = solve(tmp_path / "run", *args)
    assert result.exit_code == 2
    assert words in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "run" / "last.pt").exists()


def test_resume_with_another_configuration_is_refused_and_changes_nothing(unbroken: Path) -> None:
    before = _snapshot(unbroken)
    result = solve(unbroken, "--follower", "pgm", "--resume")
    assert result.exit_code == 2 and "another configuration" in result.output
    assert _snapshot(unbroken) == before


def test_a_folder_of_another_command_is_refused_on_resume_and_kept(
    unbroken: Path, tmp_path
) -> None:
    """A folder whose config.json records an option DRO lacks (GAIL's --env) was trained by
    another `solve` command: one sentence naming it, not the first option DRO cannot parse."""
    out = tmp_path / "gail-like"
    out.mkdir()
    for name, data in _snapshot(unbroken).items():
        (out / name).write_bytes(data)
    config = json.loads((out / "config.json").read_text()) | {"env": "Pendulum-v1"}
    (out / "config.json").write_text(json.dumps(config))
    before = _snapshot(out)
    result = solve(out, "--resume")
    assert result.exit_code == 2 and "(env)" in result.output and "another `solve`" in result.output
    assert _snapshot(out) == before


def test_a_new_run_refuses_to_overwrite_a_finished_one(unbroken: Path) -> None:
    before = _snapshot(unbroken)
    result = solve(unbroken, "--follower", "2-step")
    assert result.exit_code == 2 and "--resume" in result.output
    assert _snapshot(unbroken) == before


@pytest.mark.parametrize("garbage", [b"not a checkpoint", b"", b"junk\n"])
def test_corrupt_checkpoint_is_refused_and_other_files_kept(
    unbroken: Path, tmp_path, garbage
) -> None:
    out = tmp_path / "copy"
    out.mkdir()
    for name, data in _snapshot(unbroken).items():
        (out / name).write_bytes(data)
    (out / "last.pt").write_bytes(garbage)
    before = _snapshot(out)
    result = solve(out, "--follower", "2-step", "--resume", "--epochs", "2")
    assert result.exit_code == 2 and "not a readable checkpoint" in result.output
    assert _snapshot(out) == before


def test_foreign_checkpoint_is_refused(unbroken: Path, tmp_path) -> None:
    """A checkpoint of another follower (PGM has no φ) under this run's config."""
    pgm = tmp_path / "pgm"
    assert solve(pgm, "--follower", "pgm", "--epochs", "1").exit_code == 0
    out = tmp_path / "mixed"
    out.mkdir()
    for name, data in _snapshot(unbroken).items():
        (out / name).write_bytes(data)
    (out / "last.pt").write_bytes((pgm / "last.pt").read_bytes())
    result = solve(out, "--follower", "2-step", "--resume")
    assert result.exit_code == 2 and "does not fit" in result.output


def test_nan_loss_stops_with_a_sentence_and_exit_2(tmp_path) -> None:
    result = solve(tmp_path / "nan", "--follower", "fgsm", "--lr", "1e30", "--epochs", "1")
    assert result.exit_code == 2
    assert "NaN" in result.output and "learning rate" in result.output
    assert not (tmp_path / "nan" / "last.pt").exists()


def test_real_process_exit_code_and_no_traceback(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "cli.py",
            "solve",
            "adversarial-dro",
            "--eps",
            "-1",
            "--out",
            str(tmp_path),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--eps" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_the_test_pgd_counts_an_example_robust_only_if_it_is_clean_right_validation_not(
    tmp_path, monkeypatch
) -> None:
    """results.json's test PGD accuracy counts an example robust only if x and x + δ are both
    classified right (``from_clean=True``), as ``evaluate`` and AutoAttack count; validation
    scores x + δ alone (``from_clean=False``), the follower gap's PGD-10 which it may reuse.
    The attacks the run builds are caught on their way out: validation first, the test last."""
    import problems.adversarial.solve as dro_solve

    real, built = dro_solve.pgd_attack, []

    def catch(*args, from_clean, **kwargs):
        built.append(from_clean)
        return real(*args, from_clean=from_clean, **kwargs)

    monkeypatch.setattr(dro_solve, "pgd_attack", catch)
    args = ["solve", "adversarial-dro", "--train-size", "32", "--eval-size", "16",
            "--gap-size", "0", "--batch-size", "32", "--epochs", "2", "--eps", "0.1",
            "--follower", "fgsm", "--out", str(tmp_path / "run")]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert built == [False, False, True]  # validation after epochs 1 and 2, then the test
