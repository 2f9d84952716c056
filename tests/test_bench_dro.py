"""``bench dro``: every method for every seed, means and standard deviations over seeds, the time
ratio to PGM-10, AutoAttack on the test split, and bad options as one sentence with exit 2."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
import torch
from helpers import held_lock
from typer.testing import CliRunner

from cli import app
from problems.adversarial.bench import evaluate_leader

TINY = ["--epochs", "1", "--train-size", "32", "--eval-size", "8"]


def test_bench_dro_aggregates_seeds_and_evaluates_with_autoattack(tmp_path: Path) -> None:
    out, path = tmp_path / "runs", tmp_path / "bench.json"
    args = ["bench", "dro", *TINY, "--methods", "pgm,grad", "--seeds", "0,1", "--update", "fused",
            "--out", str(out), "--json", str(path)]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert [(r["method"], r["seed"]) for r in data["runs"]] == [
        ("pgm", 0), ("pgm", 1), ("grad (fused)", 0), ("grad (fused)", 1)
    ]  # fmt: skip
    assert [r["update"] for r in data["runs"]] == ["alternating"] * 2 + ["fused"] * 2
    rows = {r["method"]: r for r in data["rows"]}
    assert list(rows) == ["pgm", "grad (fused)"]
    for method, row in rows.items():
        mine = [r for r in data["runs"] if r["method"] == method]
        for key, std in (("clean_acc", "clean_std"), ("autoattack_acc", "autoattack_std"),
                         ("train_seconds", "train_seconds_std")):  # fmt: skip
            values = [r[key] for r in mine]
            assert row[key] == pytest.approx(statistics.fmean(values))
            assert row[std] == pytest.approx(statistics.stdev(values))
        for run in mine:
            assert 0.0 <= run["autoattack_acc"] <= run["pgd40_acc"] + 0.25
            assert run["autoattack_acc"] <= run["clean_acc"]
            # every example the cascade broke is one component's, so the counts add up to the
            # drop from clean accuracy; FAB-T's and Square's part of it is aa_beyond_apgd
            broken = run["broken_by_component"]
            assert list(broken) == ["apgd-ce", "apgd-t", "fab-t", "square"]
            drop = round((run["clean_acc"] - run["autoattack_acc"]) * 8)
            assert sum(broken.values()) == drop
            assert run["aa_beyond_apgd"] == (broken["fab-t"] + broken["square"]) / 8
        beyond = [r["aa_beyond_apgd"] for r in mine]
        assert row["aa_beyond_apgd"] == pytest.approx(statistics.fmean(beyond))
    assert rows["pgm"]["ratio_to_pgm10"] == 1.0
    assert rows["grad (fused)"]["ratio_to_pgm10"] == pytest.approx(
        rows["grad (fused)"]["train_seconds"] / rows["pgm"]["train_seconds"], abs=1e-3
    )
    assert (out / "grad_fused" / "seed-1" / "best.pt").is_file()


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--seeds", "0,x"], "--seeds"),
        (["--seeds", "0,-1"], "--seeds must be between 0 and"),  # numpy's traceback otherwise
        (["--methods", "pgm,magic"], "Unknown --methods"),
        (["--jobs", "0"], "--jobs"),
        (["--no-autoattack", "--aa", "apgd-ce-t"], "--aa chooses the AutoAttack"),  # was ignored
        (["--seeds", "0,0"], "names seed 0 twice"),  # was quietly one seed
        (["--seeds", ""], "at least one seed"),  # was seed 0
        (["--norm", ""], "Unknown --norm"),  # was L∞
        (["--norm", "l2", "--eps", "50"], "L2 diameter"),  # any image: ε > √784 = 28
    ],
)
def test_bad_bench_options_are_one_sentence(tmp_path: Path, args, words) -> None:
    result = CliRunner().invoke(app, ["bench", "dro", *TINY, "--out", str(tmp_path / "r"), *args])
    assert result.exit_code == 2 and words in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("command", [["dro", "--methods", "none"], ["ait", "--methods", "ait",
                                     "--directions", "toward"]])  # fmt: skip
def test_a_finished_run_in_out_is_refused_not_deleted_and_reused_when_asked(
    tmp_path: Path, command: list[str]
) -> None:
    """A bench used to delete a finished run in its folder and train it again: a study's runs,
    when --reuse was forgotten beside the study's --out."""
    args = ["bench", *command, "--no-autoattack", *TINY, "--out", str(tmp_path / "runs")]
    assert CliRunner().invoke(app, args, catch_exceptions=False).exit_code == 0
    run = next((tmp_path / "runs").glob("*/seed-0"))
    (run / "study-eval.json").write_text("{}")  # what a study keeps beside its run
    files = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    again = CliRunner().invoke(app, args)
    assert again.exit_code == 2 and "holds a finished run" in again.output, again.output
    assert "--reuse" in again.output and "Traceback" not in again.output
    reused = CliRunner().invoke(app, [*args, "--reuse"])
    assert reused.exit_code == 0, reused.output
    kept = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    assert {k: kept[k] for k in files} == files  # nothing trained again, nothing deleted
    other = CliRunner().invoke(app, [*args[:-4], "--epochs", "2", *args[-4:]])
    assert other.exit_code == 2 and "other options" in other.output, other.output
    # the value asked beside the recorded one, in words that fit a bench without a grid
    said = " ".join(other.output.split())
    assert "(epochs 1 there, 2 here);" in said and "grid" not in said, said


IN_USE = [
    (["bench", "dro", "--methods", "none", "--no-autoattack", *TINY], "none"),
    (["bench", "ait", "--methods", "ait", "--directions", "toward", "--no-autoattack", *TINY],
     "AIT_toward"),
    (["bench", "l2l", "--grid", "{grid}", "--results", "{tmp}/results"], "none"),
]  # fmt: skip


@pytest.mark.parametrize(("command", "entry"), IN_USE)
def test_a_bench_refuses_a_run_folder_in_use_and_deletes_nothing(tmp_path, command, entry) -> None:
    """A bench starts each run afresh, but only in a folder no other process is training in:
    it used to delete the folder before the lock was asked for, and train beside the other run."""
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"base": {"train_size": 32, "eval_size": 8, "epochs": 1},
                                "seeds": [0], "references": ["none"],
                                "configs": {"fgsm": {"follower": "fgsm"}}}))  # fmt: skip
    run = tmp_path / "runs" / entry / "seed-0"
    run.mkdir(parents=True)
    (run / "notes.txt").write_text("the other run's\n")
    args = [a.replace("{grid}", str(grid)).replace("{tmp}", str(tmp_path)) for a in command]
    with held_lock(run) as pid:
        result = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "runs")])
    assert result.exit_code == 2, result.output
    assert f"{run} is in use by pid {pid}" in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert sorted(p.name for p in run.iterdir()) == [".lock", "notes.txt"]
    assert not (tmp_path / "results").exists()


def test_bench_dro_runs_a_study_grid_on_the_test_split(tmp_path: Path) -> None:
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({
        "base": {"train_size": 32, "eval_size": 8, "gap_size": 0, "batch_size": 32, "epochs": 1},
        "seeds": [0], "references": ["pgm-10"],
        "configs": {"grad, sign step": {"follower": "grad", "attacker_sign_step": 1.0}},
    }))  # fmt: skip
    path = tmp_path / "bench.json"
    args = ["bench", "dro", "--grid", str(grid), "--no-autoattack", "--seeds", "3", "--out",
            str(tmp_path / "runs"), "--json", str(path)]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    data = json.loads(path.read_text())
    assert [(r["method"], r["seed"]) for r in data["runs"]] == [
        ("pgm-10", 3),
        ("grad, sign step", 3),
    ]
    assert data["rows"][0]["ratio_to_pgm10"] == 1.0
    config = json.loads(
        (tmp_path / "runs" / "grad_sign_step" / "seed-3" / "config.json").read_text()
    )
    assert config["attacker_sign_step"] == 1.0 and config["eval_size"] == 8
    # --reuse evaluates the finished runs as they are: nothing is trained again
    best = tmp_path / "runs" / "grad_sign_step" / "seed-3" / "best.pt"
    stamp = best.stat().st_mtime_ns
    result = CliRunner().invoke(app, [*args, "--reuse"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    again = json.loads(path.read_text())
    assert best.stat().st_mtime_ns == stamp
    assert [r["train_cpu_seconds"] for r in again["runs"]] == [
        r["train_cpu_seconds"] for r in data["runs"]
    ]
    # and keeps each run's test row, so a stopped bench evaluates only what is missing
    kept = best.parent / "bench-eval.json"
    row = json.loads(kept.read_text())
    row["row"]["clean_acc"] = 0.123
    kept.write_text(json.dumps(row))
    CliRunner().invoke(app, [*args, "--reuse"], catch_exceptions=False)
    assert json.loads(path.read_text())["runs"][1]["clean_acc"] == 0.123
    # --aa apgd-ce-t: the two gradient components of AutoAttack, named as such in the rows
    args = [a for a in args if a != "--no-autoattack"]
    result = CliRunner().invoke(app, [*args, "--reuse", "--aa", "apgd-ce-t"])
    assert result.exit_code == 0, result.output
    rows = json.loads(path.read_text())["rows"]
    assert all("autoattack_acc" not in r and r["apgd_ce_t_acc"] <= r["clean_acc"] for r in rows)
    result = CliRunner().invoke(app, [*args, "--reuse", "--aa", "fab"])
    assert result.exit_code == 2 and "--aa must be one of" in result.output


class _RightOnlyWhenPerturbed(torch.nn.Module):
    """Class 0 wherever some pixel lies strictly between 0 and 1, class 1 on binary images; a step
    function, so PGD's gradient is zero and its iterate stays at the random start."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        fractional = ((x > 0) & (x < 1)).flatten(1).any(1).float()
        logits = torch.stack([fractional, torch.full_like(fractional, 0.5)], dim=1)
        return logits + 0 * x.flatten(1).sum(1, keepdim=True)  # a zero gradient, not none


def test_bench_pgd_counts_an_example_robust_only_if_clean_and_attacked_are_both_right() -> None:
    """A leader wrong on every clean digit and right at every x + δ of PGD's random start is not
    robust: bench dro's PGD-40 takes the worst of x and x + δ, as AutoAttack does."""
    x = torch.zeros(16, 1, 4, 4)
    test = (x, torch.zeros(16, dtype=torch.long))
    row = evaluate_leader(_RightOnlyWhenPerturbed(), 0.3, test, 0, autoattack=False)
    assert row["clean_acc"] == 0.0
    assert row["pgd40_acc"] == 0.0


def test_a_bench_runs_test_row_is_scored_on_the_test_split_never_validation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bench's test accuracy is the leader's on ``subset(test, eval_size)``: scored on the
    validation split it would be the split the leader was selected on. Splits told apart by
    their labels."""
    from types import SimpleNamespace

    from problems.adversarial import bench
    from problems.adversarial.data import Splits
    from problems.adversarial.dro_config import DROConfig

    def pair(label: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((n, 1, 2, 2), float(label)), torch.full((n,), label)

    monkeypatch.setattr(bench, "load_dataset", lambda *a, **k: Splits(pair(0, 9), pair(1, 7), pair(2, 8), None))  # fmt: skip
    monkeypatch.setattr(bench, "load_classifier", lambda *a, **k: SimpleNamespace(model=None))
    scored = []

    def evaluate(model, eps, test, *rest):
        scored.append(test[1].tolist())
        return {"test_clean_acc": 1.0}

    monkeypatch.setattr(bench, "evaluate_leader", evaluate)
    options = DROConfig(train_size=32, eval_size=16, epochs=1).resolve().to_dict()
    row = bench._evaluate_run(options, str(tmp_path), 5, False, False, "standard")
    assert scored == [[2] * 5]  # the first 5 test labels
    assert row == {"test_clean_acc": 1.0}


def test_a_bench_row_counts_seeds_only_where_some_runs_lack_the_value() -> None:
    """A ``*_seeds`` key marks a mean over fewer seeds than the row's "seeds" (older runs lack
    CPU time): runs that all recorded a value give none, a value no run recorded gives none."""
    from problems.adversarial.bench import _summary

    complete = [{"clean_acc": 0.9, "pgd40_acc": 0.5, "train_seconds": 10.0,
                 "train_cpu_seconds": 20.0} for _ in range(3)]  # fmt: skip
    row = _summary("m", complete)
    assert row["seeds"] == 3 and row["train_cpu_seconds"] == 20.0
    assert not [k for k in row if k.endswith("_seeds")], row
    partial = complete[:2] + [complete[2] | {"train_cpu_seconds": None}]
    assert _summary("m", partial)["train_cpu_seconds_seeds"] == 2
