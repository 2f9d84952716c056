"""``bench l2l --grid FILE``: end to end on a tiny slice (table, Pareto plot, JSON, reuse of
finished runs) and the Pareto front's maths; every bad grid is in test_study_grid.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import load_script
from typer.testing import CliRunner

from bilevel.run import load_checkpoint
from cli import app
from problems.adversarial.evaluation.runs import leader_state
from problems.adversarial.study_report import pareto_front, winner

TINY = {
    "base": {"train_size": 32, "eval_size": 16, "gap_size": 0, "batch_size": 32, "epochs": 1,
             "eps": 0.1},
    "seeds": [0, 1],
    "references": ["pgm-2"],
    "configs": {"grad fused": {"follower": "grad", "update": "fused"}},
    "val_examples": 8,
}  # fmt: skip


def run_bench(grid: Path, tmp_path: Path, *extra: str):
    args = ["bench", "l2l", "--grid", str(grid), "--out", str(tmp_path / "runs"), "--results",
            str(tmp_path / "results"), *extra]  # fmt: skip
    return CliRunner().invoke(app, args)


def test_the_study_runs_end_to_end_and_reuses_finished_runs(tmp_path: Path) -> None:
    grid = tmp_path / "tiny.json"
    grid.write_text(json.dumps(TINY))
    result = run_bench(grid, tmp_path)
    assert result.exit_code == 0, result.output
    data = json.loads((tmp_path / "results" / "tiny.json").read_text())
    assert [r["entry"] for r in data["rows"]] == ["pgm-2", "grad fused"]
    assert [r["reference"] for r in data["rows"]] == [True, False]
    assert data["winner"] == "grad fused"  # the only learned entry
    for entry in data["runs"]:
        assert [r["seed"] for r in entry["runs"]] == [0, 1]
        for run in entry["runs"]:
            assert run["val_examples"] == 8
            assert 0.0 <= run["val_apgd_ce_t_acc"] <= run["val_clean_acc"] <= 1.0
            assert run["train_seconds"] > 0
    table = (tmp_path / "results" / "tiny.md").read_text()
    assert "| grad fused | L2L |" in table and "APGD-CE + APGD-T" in table
    assert (tmp_path / "results" / "tiny.png").read_bytes()[:4] == b"\x89PNG"
    checkpoint = tmp_path / "runs" / "grad_fused" / "seed-1" / "last.pt"
    before = checkpoint.stat().st_mtime_ns
    again = run_bench(grid, tmp_path)
    assert again.exit_code == 0, again.output
    assert checkpoint.stat().st_mtime_ns == before  # a finished run is not trained again
    # the same runs judged on more validation digits: trained runs reused, judgements redone
    grid.write_text(json.dumps(TINY | {"val_examples": 12}))
    assert run_bench(grid, tmp_path).exit_code == 0
    assert checkpoint.stat().st_mtime_ns == before
    rows = json.loads((tmp_path / "results" / "tiny.json").read_text())["runs"]
    assert {run["val_examples"] for entry in rows for run in entry["runs"]} == {12}
    # benchmarks/selection_check.py: θ as last trained, judged as the study judged best.pt; a
    # one-epoch run's last epoch is its selected one, so the two figures agree
    check = load_script("benchmarks", "selection_check").last_against_best(checkpoint.parent)
    assert check["best_epoch"] == 1 and check["last"] == check["best"]
    # benchmarks/apgd_share.py: the study's cascade split per attack, adding up to its figure
    share = load_script("benchmarks", "apgd_share").apgd_share(checkpoint.parent)
    judged = json.loads((checkpoint.parent / "study-eval.json").read_text())
    assert share["apgd_ce_t_acc"] == pytest.approx(judged["val_apgd_ce_t_acc"], abs=1e-6)
    assert share["apgd_ce_t_acc"] <= share["apgd_ce_acc"] <= judged["val_clean_acc"]
    assert share["val_examples"] == 12


def test_selection_check_judges_the_average_under_leader_ema(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under --leader-ema best.pt holds θ̄: benchmarks/selection_check.py judges last.pt's θ̄ too
    (its trainer's leader_average), not θ as last trained, which set averaging against the choice
    of epoch (+13.0 points on a one-epoch run whose last epoch is its selected one). Two leader
    steps, so that θ̄ is not θ; the leader the script attacks is caught on its way in."""
    grid = tmp_path / "ema.json"
    ema = {"follower": "fgsm", "leader_ema": 0.9}
    grid.write_text(json.dumps(TINY | {"base": TINY["base"] | {"train_size": 64},
                                       "seeds": [0], "references": ["none"],
                                       "configs": {"ema": ema}}))  # fmt: skip
    assert run_bench(grid, tmp_path).exit_code == 0
    run = tmp_path / "runs" / "ema" / "seed-0"
    script = load_script("benchmarks", "selection_check")
    check = script.last_against_best(run)
    assert check["best_epoch"] == 1 and check["last"] == check["best"]
    judged = []

    def catch(run_dir, cfg, val_examples, checkpoint):
        judged.append(leader_state(load_checkpoint(checkpoint)))
        return {"val_apgd_ce_t_acc": 0.0}

    monkeypatch.setattr(script, "validation_robustness", catch)
    script.last_against_best(run)
    best, raw = (
        load_checkpoint(run / "best.pt")["leader"],
        load_checkpoint(run / "last.pt")["trainer"]["leader"],
    )
    assert best.keys() == judged[0].keys()
    assert all(torch.equal(best[k], judged[0][k]) for k in best)  # θ̄ of the one epoch
    assert not all(torch.equal(raw[k], judged[0][k]) for k in raw)  # θ̄ is not θ here


def test_a_changed_entry_is_refused_and_its_finished_run_kept(tmp_path: Path) -> None:
    """A grid entry changed since its runs finished (same --out) is one sentence naming the
    folder and the options that differ, before anything trains: the study used to delete the
    finished run and train the entry again, as gail-stability refuses to."""
    grid, small = tmp_path / "g.json", TINY | {"seeds": [0], "references": ["none"]}
    grid.write_text(json.dumps(small | {"configs": {"fast": {"follower": "fgsm"}}}))
    assert run_bench(grid, tmp_path).exit_code == 0
    before = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()}
    results = (tmp_path / "results" / "g.json").read_bytes()
    grid.write_text(json.dumps(small | {"configs": {"fast": {"follower": "fgsm", "lr": 0.02}}}))
    result = run_bench(grid, tmp_path)
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    run = tmp_path / "runs" / "fast" / "seed-0"
    assert f"{run} holds a finished run with other options (lr 0.05 there, 0.02 here);" in " ".join(
        result.output.split()
    )
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before
    assert (tmp_path / "results" / "g.json").read_bytes() == results
    # bench dro --reuse judges the same folders on the test split: the same refusal
    args = ["bench", "dro", "--grid", str(grid), "--reuse", "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, [*args, "--no-autoattack"])
    assert result.exit_code == 2 and "holds a finished run with other options" in result.output
    assert {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*") if p.is_file()} == before


def test_parallel_jobs_train_the_same_runs_as_one_process(tmp_path: Path) -> None:
    """--jobs 2 trains and attacks each run in a worker process; every figure but the clocks
    is the same as when one process does it all, run for run."""
    grid = tmp_path / "tiny.json"
    grid.write_text(json.dumps(TINY))
    figures = ("seed", "val_apgd_ce_t_acc", "val_clean_acc", "best_epoch")
    found = []
    for jobs in ("1", "2"):
        result = run_bench(grid, tmp_path / f"jobs-{jobs}", "--jobs", jobs)
        assert result.exit_code == 0, result.output
        data = json.loads((tmp_path / f"jobs-{jobs}" / "results" / "tiny.json").read_text())
        found.append([[{k: r[k] for k in figures} for r in e["runs"]] for e in data["runs"]])
        metrics = tmp_path / f"jobs-{jobs}" / "runs" / "grad_fused" / "seed-1" / "metrics.jsonl"
        losses = [json.loads(line)["leader_loss"] for line in metrics.read_text().splitlines()]
        found[-1].append(losses)
    assert found[0] == found[1]


def test_pareto_front_and_winner() -> None:
    rows = [
        {"entry": "a", "reference": True, "train_seconds": 10.0, "val_apgd_ce_t_acc": 0.5},
        {"entry": "b", "reference": False, "train_seconds": 20.0, "val_apgd_ce_t_acc": 0.7},
        {"entry": "c", "reference": False, "train_seconds": 30.0, "val_apgd_ce_t_acc": 0.6},
        {"entry": "d", "reference": True, "train_seconds": 40.0, "val_apgd_ce_t_acc": 0.8},
        {"entry": "e", "reference": False, "train_seconds": 10.0, "val_apgd_ce_t_acc": 0.4},
    ]
    assert pareto_front(rows, cost="train_seconds") == ["a", "b", "d"]  # c beaten by b, e by a
    assert winner(rows) == "b"  # the best learned entry, references aside
    rows.append({"entry": "f", "reference": True, "train_seconds": None, "val_apgd_ce_t_acc": 0.9})
    assert pareto_front(rows, cost="train_seconds") == ["a", "b", "d"]  # f has no cost to place


def test_the_table_says_when_a_cost_mean_covers_fewer_seeds(tmp_path: Path) -> None:
    """Runs trained before the study recorded CPU time have none: the mean over the others must
    not pass for a mean over every seed."""
    from types import SimpleNamespace

    from problems.adversarial.study_report import write_study

    def row(entry: str, cpu_seeds: int) -> dict:
        return {"entry": entry, "reference": entry == "pgm-10", "val_apgd_ce_t_acc": 0.8,
                "val_apgd_ce_t_std": 0.01, "val_clean_acc": 0.95, "val_clean_std": 0.01,
                "train_cpu_seconds": 100.0, "train_cpu_seconds_std": 1.0,
                "train_cpu_seconds_seeds": cpu_seeds, "train_seconds": 50.0,
                "train_seconds_std": 1.0, "train_seconds_seeds": 3, "cpu_vs_pgm10": 1.0,
                "seconds_vs_pgm10": 1.0}  # fmt: skip

    grid = SimpleNamespace(name="g", seeds=[0, 1, 2], val_examples=None)
    write_study(grid, [row("pgm-10", 2), row("x", 3)], [], tmp_path)
    lines = (tmp_path / "g.md").read_text().splitlines()
    pgm, learned = (next(line for line in lines if line.startswith(f"| {e} |")) for e in ("pgm-10", "x"))  # fmt: skip
    assert "100.0 ± 1.0 (over 2)" in pgm and "(over" not in learned


def test_a_pareto_front_of_one_point_is_drawn(monkeypatch, tmp_path) -> None:
    """Joined by a step line only, a front of one entry drew nothing while its legend said it
    was there: the front's points are marked."""
    from problems.adversarial import study_report

    figures = []
    monkeypatch.setattr(study_report, "atomic_write_figure", lambda fig, path: figures.append(fig))
    row = {"reference": False, "train_cpu_seconds": 10.0, "train_cpu_seconds_std": 1.0}
    rows = [
        row | {"entry": "only", "val_apgd_ce_t_acc": 0.7, "val_apgd_ce_t_std": 0.01},
        row | {"entry": "worse", "val_apgd_ce_t_acc": 0.6, "val_apgd_ce_t_std": 0.01},
    ]
    assert pareto_front(rows) == ["only"]
    study_report.plot_pareto(rows, "t", tmp_path / "p.png")
    (front,) = [line for line in figures[0].axes[0].lines if line.get_label() == "Pareto front"]
    assert front.get_marker() not in (None, "None", "", " ")
    assert list(front.get_xdata()) == [10.0] and list(front.get_ydata()) == [0.7]


def test_validation_robustness_attacks_the_validation_split_never_the_test_split(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The study picks its winner from these figures: they must come from the validation split
    (its first ``val_examples``), never from the test split. Splits told apart by their labels."""
    from types import SimpleNamespace

    from problems.adversarial import study
    from problems.adversarial.data import Splits
    from problems.adversarial.dro_config import DROConfig

    def pair(label: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.full((n, 1, 2, 2), float(label)), torch.full((n,), label)

    splits = Splits(pair(0, 10), pair(1, 6), pair(2, 8), None)
    monkeypatch.setattr(study, "load_dataset", lambda *a, **k: splits)
    monkeypatch.setattr(study, "load_classifier", lambda *a, **k: SimpleNamespace(model=None))
    attacked = []

    def attack(adapter, model, x, y):
        attacked.append(y)
        return SimpleNamespace(accuracy=0.25)

    monkeypatch.setattr(study, "run_attack", attack)
    monkeypatch.setattr(study, "predict", lambda model, x: x[:, 0, 0, 0].long())  # the label
    cfg = DROConfig(train_size=32, eval_size=16, epochs=1).resolve()
    judged = study.validation_robustness(tmp_path, cfg, val_examples=4)
    assert [y.tolist() for y in attacked] == [[1, 1, 1, 1]]  # the first 4 validation labels
    assert judged["val_examples"] == 4
    assert judged["val_apgd_ce_t_acc"] == 0.25 and judged["val_clean_acc"] == 1.0


def test_the_study_rows_cost_ratios_and_seed_counts_from_faked_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A row's cost against PGM-10 is its own seconds over PGM-10's (2 = twice as slow), and its
    ``*_seeds`` count the seeds that recorded the value: a run trained before CPU time was
    recorded has none, and the mean is over the others. Training and judging are faked."""
    from problems.adversarial import study, study_report

    seconds = {("pgm-10", 0): (10.0, 20.0), ("pgm-10", 1): (10.0, 20.0),
               ("x", 0): (30.0, 40.0), ("x", 1): (50.0, None)}  # fmt: skip

    def fake_map(fn, tasks, jobs):
        out = []
        for _options, seed, run_dir, _ in tasks:
            wall, cpu = seconds[run_dir.parent.name, seed]
            results = {"train_seconds": wall, "train_cpu_seconds": cpu}
            out.append((results, {"val_apgd_ce_t_acc": 0.5, "val_clean_acc": 0.9}))
        return out

    monkeypatch.setattr(study, "map_tasks", fake_map)
    monkeypatch.setattr(study, "check_run_folders", lambda tasks: None)
    written = []
    monkeypatch.setattr(study_report, "write_study", lambda *args: written.append(args))
    grid = study.Grid("g", {}, {"x": {"follower": "fgsm"}}, seeds=[0, 1], references=["pgm-10"])
    rows = {r["entry"]: r for r in study.run_study(grid, tmp_path / "runs", tmp_path / "out")}
    assert rows["x"]["train_seconds"] == 40.0 and rows["x"]["seconds_vs_pgm10"] == 4.0
    assert rows["x"]["train_cpu_seconds"] == 40.0 and rows["x"]["cpu_vs_pgm10"] == 2.0
    assert rows["pgm-10"]["seconds_vs_pgm10"] == rows["pgm-10"]["cpu_vs_pgm10"] == 1.0
    assert rows["x"]["train_cpu_seconds_seeds"] == 1  # seed 1 recorded no CPU time
    assert rows["x"]["train_seconds_seeds"] == rows["pgm-10"]["train_cpu_seconds_seeds"] == 2
    assert len(written) == 1


def test_the_table_gives_each_accuracy_its_own_standard_deviation(tmp_path: Path) -> None:
    """The "val APGD-CE+T" cell's ± is the robust accuracy's std, the "val clean" cell's the
    clean accuracy's: rows whose two stds differ tell them apart."""
    from types import SimpleNamespace

    from problems.adversarial.study_report import write_study

    row = {"entry": "x", "reference": False, "val_apgd_ce_t_acc": 0.8, "val_apgd_ce_t_std": 0.012,
           "val_clean_acc": 0.95, "val_clean_std": 0.034, "train_cpu_seconds": 100.0,
           "train_cpu_seconds_std": 1.0, "train_cpu_seconds_seeds": 3, "train_seconds": 50.0,
           "train_seconds_std": 1.0, "train_seconds_seeds": 3, "cpu_vs_pgm10": None,
           "seconds_vs_pgm10": None}  # fmt: skip
    write_study(SimpleNamespace(name="g", seeds=[0, 1, 2], val_examples=None), [row], [], tmp_path)
    line = next(x for x in (tmp_path / "g.md").read_text().splitlines() if x.startswith("| x |"))
    assert "| 0.800 ± 0.012 | 0.950 ± 0.034 |" in line, line


def test_the_table_marks_the_pareto_entries_and_only_them(tmp_path: Path) -> None:
    """ "fast" costs less and scores more than "slow": only "fast" is on the front, in the JSON
    and in the table's Pareto column."""
    from types import SimpleNamespace

    from problems.adversarial.study_report import write_study

    def row(entry: str, cpu: float, acc: float) -> dict:
        return {"entry": entry, "reference": False, "val_apgd_ce_t_acc": acc,
                "val_apgd_ce_t_std": 0.01, "val_clean_acc": 0.95, "val_clean_std": 0.01,
                "train_cpu_seconds": cpu, "train_cpu_seconds_std": 1.0,
                "train_cpu_seconds_seeds": 1, "train_seconds": cpu, "train_seconds_std": 1.0,
                "train_seconds_seeds": 1, "cpu_vs_pgm10": None, "seconds_vs_pgm10": None}  # fmt: skip

    grid = SimpleNamespace(name="g", seeds=[0], val_examples=None)
    write_study(grid, [row("fast", 50.0, 0.8), row("slow", 100.0, 0.7)], [], tmp_path)
    assert json.loads((tmp_path / "g.json").read_text())["pareto_front"] == ["fast"]
    lines = (tmp_path / "g.md").read_text().splitlines()
    fast, slow = (next(x for x in lines if x.startswith(f"| {e} |")) for e in ("fast", "slow"))
    assert fast.endswith("| yes |") and "yes" not in slow
