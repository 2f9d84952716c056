"""The threat model through evaluation: ``evaluate`` attacks a run in the ball it was trained
against (an L2 run with PGD-L2, the fast gradient method, L2 noise, g_φ, transfer and AutoAttack's
L2 components), a plain model file in the ``--norm`` given, a contradicting ``--norm`` is one
sentence, and ``bench dro --norm l2`` trains and attacks every method in the L2 ball."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from evaluate_helpers import digits_head, train_mlp
from typer.testing import CliRunner

from cli import app
from problems.adversarial.bench import evaluate_leader
from problems.adversarial.evaluation.attacks import run_attack
from problems.adversarial.evaluation.autoattack_adapter import STANDARD, AutoAttackAdapter
from problems.adversarial.evaluation.suite import SuiteOptions, build_attack

runner = CliRunner()
EPS = 1.5  # mnist5k's L2 radius, solve's default under --norm l2
SLACK = 1e-5  # float rounding on ‖x_adv − x‖₂ ≤ ε
TINY = [
    "--train-size", "64", "--eval-size", "16", "--batch-size", "32", "--epochs", "1",
    "--gap-size", "0", "--follower", "grad",
]  # fmt: skip
EVAL = ["--n-examples", "8", "--noise-samples", "3", "--batch-size", "8"]


def one_sentence(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    assert words in result.output, result.output


@pytest.fixture(scope="module")
def l2_run(tmp_path_factory) -> Path:
    """A tiny L2L run trained with --norm l2, then resumed without --norm."""
    out = tmp_path_factory.mktemp("runs") / "l2"
    result = runner.invoke(app, ["solve", "adversarial-dro", *TINY, "--norm", "l2", "--out", out])
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    assert config["norm"] == "l2" and config["eps"] == EPS
    assert config["pgm_step_size"] == pytest.approx(2.5 * EPS / 10)  # PGM-10's, recorded
    results = json.loads((out / "results.json").read_text())
    assert 0 <= results["test_pgd20_acc"] <= results["test_clean_acc"] + 1 / 16
    again = runner.invoke(app, ["solve", "adversarial-dro", *TINY, "--out", out, "--resume"])
    assert again.exit_code == 0, again.output
    assert json.loads((out / "config.json").read_text())["norm"] == "l2"  # the folder's ball
    return out


def test_evaluate_attacks_an_l2_run_in_its_own_ball(l2_run: Path) -> None:
    args = ["evaluate", str(l2_run), "--surrogate", str(l2_run), *EVAL]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "L2 ε = 1.5" in result.output
    ev = json.loads((l2_run / "eval.json").read_text())
    assert ev["norm"] == "l2" and ev["eps"] == EPS
    by_name = {a["name"]: a for a in ev["attacks"]}
    assert set(by_name) == {
        "autoattack(apgd-ce,apgd-t)",
        "fgsm",
        "pgd20",
        "pgd100",
        "pgd20-cw",
        "pgd100-cw",
        "noise",
        "learned",
        "transfer",
    }  # fmt: skip  (CW-L∞ has no L2 version: not in an L2 suite)
    for name, attack in by_name.items():
        largest = attack["max_perturbation"]
        assert largest["l2"] <= EPS + SLACK, name  # every x_adv in the L2 ball ...
        assert str(attack["params"]["norm"]).lower() == "l2", name  # ... and recorded as such
    # the steps are L2 ones: PGD-L2 reaches the sphere, at 2.5 ε / k, and beyond the L∞ bound ε/√d
    assert by_name["pgd20"]["max_perturbation"]["l2"] > 0.9 * EPS
    assert by_name["pgd20"]["params"]["step_size"] == pytest.approx(2.5 * EPS / 20)
    assert by_name["fgsm"]["params"]["step_size"] == EPS  # the fast gradient method's one step
    assert by_name["pgd20"]["max_perturbation"]["linf"] > EPS / 28
    # the checklist's ε sweep is in the L2 ball too, up to the L2 large ε
    assert ev["sweeps"]["eps"]["params"]["norm"] == "l2" and ev["sweeps"]["large_eps"] == 5.0
    assert "L2 ε = 1.5" in (l2_run / "eval.md").read_text()


def test_fab_t_and_square_of_the_full_autoattack_stay_in_the_l2_ball() -> None:
    full = build_attack("autoattack", SuiteOptions(eps=1.0, cifar=False, norm="l2"))
    assert isinstance(full, AutoAttackAdapter) and full.components == STANDARD
    assert full.params()["norm"] == "L2"
    model = train_mlp(seed=0)
    x, y = digits_head(24)
    clean = (model(x).argmax(1) == y).float().mean().item()
    # FAB-T and Square alone, as the cascade runs them on what APGD left (Square shortened)
    attack = AutoAttackAdapter(1.0, ("fab-t", "square"), square_queries=100, norm="l2")
    result = run_attack(attack, model, x, y)
    assert result.max_perturbation["l2"] <= 1.0 + SLACK
    assert result.max_perturbation["linf"] > 1.0 / 28  # not confined to an L∞ ball of ε/√d
    assert result.accuracy < clean and "fab-t" in attack.broken_by


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--norm", "linf"], "trained in the l2 ball"),
        (["--attacks", "cw-linf"], "L∞ ball only"),
        (["--norm", "l1"], "Unknown --norm 'l1'"),
    ],
)
def test_a_norm_that_contradicts_the_run_is_one_sentence(l2_run: Path, extra, words) -> None:
    before = {p.name: p.read_bytes() for p in l2_run.iterdir() if p.is_file()}
    one_sentence(runner.invoke(app, ["evaluate", str(l2_run), *EVAL, *extra]), words)
    assert {p.name: p.read_bytes() for p in l2_run.iterdir() if p.is_file()} == before


def test_a_plain_model_file_is_attacked_in_the_norm_given(l2_run: Path, tmp_path: Path) -> None:
    plain = tmp_path / "plain.pt"
    torch.save(torch.load(l2_run / "best.pt", weights_only=True)["leader"], plain)
    args = ["evaluate", "--model", str(plain), "--attacks", "pgd5,noise", *EVAL, "--no-checklist"]
    for norm, eps, bound in (("l2", EPS, "l2"), (None, 0.3, "linf")):
        out = tmp_path / f"eval-{norm}"
        given = ["--norm", norm] if norm else []
        result = runner.invoke(app, [*args, str(out), *given], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        ev = json.loads((out / "eval.json").read_text())
        assert ev["norm"] == bound and ev["eps"] == eps  # the data set's ε for that norm
        assert all(a["max_perturbation"][bound] <= eps + SLACK for a in ev["attacks"])
    assert ev["attacks"][0]["max_perturbation"]["l2"] > EPS  # L∞ at 0.3 is far outside


def test_bench_pgd40_and_apgd_attack_in_the_ball_asked_for() -> None:
    model = train_mlp(seed=0)
    test = digits_head(48)
    l2 = evaluate_leader(model, 1.0, test, 0, True, aa_version="apgd-ce-t", norm="l2")
    linf = evaluate_leader(model, 1.0, test, 0, True, aa_version="apgd-ce-t")
    assert linf["pgd40_acc"] == 0.0 and linf["apgd_ce_t_acc"] == 0.0  # L∞ ε = 1: any image
    assert l2["pgd40_acc"] > 0.1 and l2["apgd_ce_t_acc"] <= l2["pgd40_acc"] + 1 / 48


def test_bench_dro_norm_l2_trains_and_attacks_every_method_in_the_l2_ball(tmp_path: Path) -> None:
    out, path = tmp_path / "runs", tmp_path / "bench.json"
    args = ["bench", "dro", "--norm", "l2", "--methods", "pgm,grad", "--epochs", "1",
            "--train-size", "32", "--eval-size", "8", "--aa", "apgd-ce-t", "--out", str(out),
            "--json", str(path)]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "L2 ε = 1.5" in result.output
    data = json.loads(path.read_text())
    assert [(r["method"], r["norm"], r["eps"]) for r in data["rows"]] == [
        ("pgm", "l2", EPS), ("grad (fused)", "l2", EPS)
    ]  # fmt: skip
    for run, folder in zip(data["runs"], ("pgm", "grad_fused"), strict=True):
        assert run["norm"] == "l2" and run["eps"] == EPS
        config = json.loads((out / folder / "seed-0" / "config.json").read_text())
        assert config["norm"] == "l2" and config["eps"] == EPS  # trained in the L2 ball
    # and attacked there: at L2 ε = 0.3 a plainly trained model keeps most of its accuracy under
    # PGD-40, where in the L∞ ball of 0.3 (a third of the pixel range) it keeps none
    args = ["bench", "dro", "--norm", "l2", "--eps", "0.3", "--methods", "none", "--epochs", "1",
            "--train-size", "2048", "--eval-size", "32", "--no-autoattack", "--out", str(out),
            "--json", str(path)]  # fmt: skip
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = json.loads(path.read_text())["rows"]
    assert row["norm"] == "l2" and row["eps"] == 0.3
    assert 0.5 * row["clean_acc"] <= row["pgd40_acc"] <= row["clean_acc"] and row["clean_acc"] > 0.3
    grid = tmp_path / "g.json"
    grid.write_text(json.dumps({"configs": {"grad": {"follower": "grad"}}}))
    bad = ["bench", "dro", "--grid", str(grid), "--norm", "l2", "--out", str(tmp_path / "g")]
    one_sentence(runner.invoke(app, bad), "apply without --grid")
