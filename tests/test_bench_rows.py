"""``run_bench``'s rows and JSON with training and evaluation replaced (nothing trains): time
ratios to the reference, a reference not among the entries, means and standard deviations over
seeds, the ball an L2 run names, what the JSON records each label trained, and refusals before
anything trains. Also PGD-40's step and an evaluation that depends only on its own seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bilevel.errors import UserError
from problems.adversarial import bench
from problems.adversarial.dro_config import DROConfig

TIMES = {"pgm": (10.0, 20.0), "fgsm": (5.0, 30.0), "none": (3.0, 3.0)}  # wall, CPU seconds
CLEAN = {0: 0.5, 1: 0.7, 2: 0.9}  # by seed


@pytest.fixture
def fake_runs(monkeypatch) -> list[str]:
    """Training returns TIMES of the follower; the test row's clean accuracy is CLEAN of the
    seed. Returns the folders trained, in order."""
    trained: list[str] = []

    def train(cfg: DROConfig, run_dir: Path) -> dict:
        trained.append(str(run_dir))
        wall, cpu = TIMES[cfg.follower]
        return {"train_seconds": wall, "train_cpu_seconds": cpu, "torch_threads": 1}

    def evaluate(options, run_dir, eval_size, autoattack, cw, aa_version) -> dict:
        return {"clean_acc": CLEAN[options["seed"]], "pgd40_acc": 0.25}

    monkeypatch.setattr(bench, "train", train)
    monkeypatch.setattr(bench, "_evaluate_run", evaluate)
    return trained


def _entries(*followers: str, **options) -> dict:
    return {
        f: (lambda seed, f=f: DROConfig(follower=f, seed=seed, epochs=1, train_size=32, **options))
        for f in followers
    }


def test_rows_give_the_time_ratio_to_the_reference_entry(fake_runs, tmp_path) -> None:
    rows = bench.run_bench(_entries("pgm", "fgsm", "none"), [0], tmp_path, autoattack=False)
    ratios = {r["method"]: (r["ratio_to_pgm10"], r["cpu_ratio_to_pgm10"]) for r in rows}
    assert ratios == {"pgm": (1.0, 1.0), "fgsm": (0.5, 1.5), "none": (0.3, 0.15)}
    own = bench.run_bench(
        _entries("fgsm", "none"), [0], tmp_path / "b", autoattack=False,
        reference={"fgsm": "none", "none": "none"}, ratio_name="none",
    )  # fmt: skip
    assert [(r["ratio_to_none"], r["cpu_ratio_to_none"]) for r in own] == [(1.667, 10.0), (1, 1)]


def test_a_reference_that_is_not_an_entry_gives_no_ratio(fake_runs, tmp_path) -> None:
    rows = bench.run_bench(_entries("fgsm", "none"), [0], tmp_path, autoattack=False)
    assert [(r["ratio_to_pgm10"], r["cpu_ratio_to_pgm10"]) for r in rows] == [(None, None)] * 2


def test_rows_are_the_mean_and_sample_deviation_over_seeds(fake_runs, tmp_path) -> None:
    (row,) = bench.run_bench(_entries("fgsm"), [0, 1, 2], tmp_path, autoattack=False)
    assert row["seeds"] == 3 and row["clean_acc"] == pytest.approx(0.7)
    assert row["clean_std"] == pytest.approx(0.2)  # n - 1 in the denominator
    assert row["pgd40_acc"] == 0.25 and row["pgd40_std"] == 0.0
    assert len(fake_runs) == 3 and [Path(p).name for p in fake_runs] == [
        "seed-0",
        "seed-1",
        "seed-2",
    ]
    (one,) = bench.run_bench(_entries("fgsm"), [2], tmp_path / "one", autoattack=False)
    assert one["clean_acc"] == 0.9 and one["clean_std"] == 0.0


def test_only_an_l2_run_names_its_ball(fake_runs, tmp_path) -> None:
    path = tmp_path / "bench.json"
    (linf,) = bench.run_bench(_entries("fgsm"), [0], tmp_path / "a", path, autoattack=False)
    assert "norm" not in linf and "eps" not in linf
    assert not {"norm", "eps"} & set(json.loads(path.read_text())["runs"][0])
    (l2,) = bench.run_bench(
        _entries("fgsm", norm="l2", eps=1.5), [0], tmp_path / "b", path, autoattack=False
    )
    assert (l2["norm"], l2["eps"]) == ("l2", 1.5)
    assert json.loads(path.read_text())["runs"][0]["norm"] == "l2"


def test_the_json_records_what_each_label_trained(fake_runs, tmp_path) -> None:
    path = tmp_path / "bench.json"
    bench.run_bench(_entries("pgm", "none"), [1, 2], tmp_path / "runs", path, autoattack=False)
    saved = json.loads(path.read_text())
    assert saved["seeds"] == [1, 2] and saved["autoattack"] is False
    assert [(r["method"], r["seed"]) for r in saved["runs"]] == [
        ("pgm", 1), ("pgm", 2), ("none", 1), ("none", 2)
    ]  # fmt: skip
    assert list(saved["trained"]) == ["pgm", "none"]
    for label, trained in saved["trained"].items():
        assert trained["follower"] == label and trained["epochs"] == 1
        assert trained["train_size"] == 32 and "seed" not in trained


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"seeds": []}, "--seeds needs at least one seed, like 0,1,2."),
        ({"jobs": 0}, "--jobs must be at least 1; got 0."),
        ({"aa_version": "fab"}, "--aa must be one of: standard, apgd-ce-t; got 'fab'."),
    ],
)
def test_bad_bench_arguments_are_refused_before_anything_trains(
    fake_runs, tmp_path, kwargs, words
) -> None:
    arguments = {"entries": _entries("fgsm"), "seeds": [0], "out": tmp_path} | kwargs
    with pytest.raises(UserError) as err:
        bench.run_bench(**arguments)
    assert str(err.value) == words and fake_runs == []


def test_pgd40_steps_0_01_in_linf_and_madrys_2_5_eps_over_40_in_l2() -> None:
    assert bench.pgd40_step(0.3) == bench.pgd40_step(0.1, "linf") == 0.01
    assert bench.pgd40_step(1.5, "l2") == pytest.approx(2.5 * 1.5 / 40)
    assert bench.pgd40_step(0.5, "l2") == pytest.approx(2.5 * 0.5 / 40)


class _RightAboveItsStart(torch.nn.Module):
    """Right (class 0) where the pixels sum to at least 8, the clean images' sum: a step
    function, so PGD stays at its random start and its accuracy is that start's luck."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        high = (x.flatten(1).sum(1) >= 8.0).float()
        return torch.stack([high, torch.full_like(high, 0.5)], 1) + 0 * x.flatten(1).sum(1, True)


def test_a_leaders_test_row_depends_on_its_seed_not_on_what_ran_before() -> None:
    test = (torch.full((64, 1, 4, 4), 0.5), torch.zeros(64, dtype=torch.long))
    rows = []
    for before in (1, 2):
        torch.manual_seed(before)
        torch.rand(100)  # the state another evaluation left behind
        rows.append(bench.evaluate_leader(_RightAboveItsStart(), 0.3, test, 0, autoattack=False))
    assert rows[0] == rows[1] and rows[0]["clean_acc"] == 1.0
    assert 0.2 < rows[0]["pgd40_acc"] < 0.8  # a random start's luck, so the seed matters


class _FakeAutoAttack:
    """AutoAttack's adapter as the bench uses it: the counts each component broke."""

    def __init__(self, eps, version, seed, norm) -> None:
        self.version = version

    def broken_counts(self) -> dict[str, int]:
        return {"apgd-ce": 1, "apgd-t": 0, "fab-t": 2, "square": 1}


def test_aa_beyond_apgd_is_what_fab_t_and_square_broke_after_the_gradient_attacks(
    monkeypatch,
) -> None:
    from types import SimpleNamespace

    monkeypatch.setattr(bench, "AutoAttackAdapter", _FakeAutoAttack)
    monkeypatch.setattr(bench, "run_attack", lambda *a: SimpleNamespace(accuracy=0.25))
    monkeypatch.setattr(bench, "robust_accuracy", lambda *a: 0.75)
    test = (torch.zeros(8, 1, 2, 2), torch.zeros(8, dtype=torch.long))
    row = bench.evaluate_leader(None, 0.3, test, 0, autoattack=True)
    assert row["autoattack_acc"] == 0.25 and row["aa_beyond_apgd"] == 3 / 8
    gradient_only = bench.evaluate_leader(None, 0.3, test, 0, True, aa_version="apgd-ce-t")
    assert gradient_only["apgd_ce_t_acc"] == 0.25 and "aa_beyond_apgd" not in gradient_only


@pytest.mark.parametrize("option", [["--eps", "0.5"], ["--norm", "l2"]])
def test_bench_dro_with_a_grid_refuses_an_eps_or_norm_of_its_own(tmp_path, option) -> None:
    """A grid's entries set their ball ("norm" and "eps" in its "base"): a bench --eps or --norm
    beside it would be ignored."""
    from typer.testing import CliRunner

    from cli import app

    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"configs": {"x": {"follower": "fgsm"}}, "references": []}))
    args = ["bench", "dro", "--grid", str(grid), *option, "--out", str(tmp_path / "r")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--norm and --eps apply without --grid" in result.output
    assert not (tmp_path / "r").exists()


def test_bench_dro_of_no_methods_is_refused_not_an_empty_table(fake_runs, tmp_path) -> None:
    with pytest.raises(UserError, match=r"Unknown --methods \[\]; choose from: "):
        bench.bench_dro([], 1, [0], None, tmp_path)
    assert fake_runs == []
