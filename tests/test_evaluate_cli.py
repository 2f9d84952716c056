"""``cli.py evaluate`` end to end on a tiny L2L run: eval.json holds every attack's
hyper-parameters and per-example results, eval.md and plots are written, the run's own learned
attacker is loaded from last.pt, a plain state dict works with --model, and bad inputs are one
sentence with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
TINY = ["--n-examples", "12", "--noise-samples", "3", "--batch-size", "12"]
REQUIRED = {
    "fgsm": {"eps", "steps", "step_size", "random_start", "loss", "restarts"},
    "pgd5": {"eps", "steps", "step_size", "random_start", "loss", "restarts"},
    "pgd5-cw": {"eps", "steps", "step_size", "random_start", "loss", "restarts"},
    "cw-linf": {"eps", "iterations", "lr", "kappa", "optimizer"},
    "noise": {"eps", "samples"},
    "learned": {"eps", "source_run", "checkpoint", "steps", "input_mode", "trained_eps"},
}


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "l2l"
    args = ["solve", "adversarial-dro", "--follower", "2-step", "--train-size", "64"]
    args += ["--eval-size", "16", "--batch-size", "32", "--epochs", "1", "--eps", "0.1"]
    result = runner.invoke(app, [*args, "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return out


def test_eval_json_holds_every_attacks_hyper_parameters(run: Path) -> None:
    attacks = "fgsm,pgd5,pgd5-cw,cw-linf,noise,learned"
    args = ["evaluate", str(run), "--attacks", attacks, *TINY, "--no-checklist"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ev = json.loads((run / "eval.json").read_text())
    assert ev["split"] == "test" and ev["n_examples"] == 12 and ev["eps"] == 0.1
    by_name = {a["name"]: a for a in ev["attacks"]}
    assert set(by_name) == set(REQUIRED)
    for name, keys in REQUIRED.items():
        assert keys <= set(by_name[name]["params"]), name
        assert by_name[name]["params"]["eps"] == 0.1
        assert len(by_name[name]["correct"]) == 12
    assert by_name["pgd5"]["params"]["steps"] == 5 and by_name["pgd5-cw"]["params"]["loss"] == "cw"
    assert by_name["learned"]["params"]["steps"] == 2  # the 2-step RNN of the run's config
    worst = ev["worst_case"]["accuracy"]
    assert worst <= min(a["accuracy"] for a in ev["attacks"]) and worst <= ev["clean_acc"]
    md = (run / "eval.md").read_text()
    assert "worst case (per example)" in md and "pgd5-cw" in md
    for plot in ("eval_examples.png", "training_curves.png"):
        assert (run / plot).is_file() and plot in ev["plots"]


def test_plain_state_dict_with_model_option(run: Path, tmp_path: Path) -> None:
    state = torch.load(run / "best.pt", weights_only=True)["leader"]
    torch.save(state, tmp_path / "plain.pt")
    out = tmp_path / "plain-eval"
    args = ["evaluate", str(out), "--model", str(tmp_path / "plain.pt"), "--attacks", "pgd5"]
    result = runner.invoke(app, [*args, *TINY, "--eps", "0.1", "--no-checklist"])
    assert result.exit_code == 0, result.output
    ev = json.loads((out / "eval.json").read_text())
    assert [a["name"] for a in ev["attacks"]] == ["pgd5"]


def test_a_training_checkpoint_gives_the_leader_as_last_trained(run: Path) -> None:
    """``last.pt`` nests θ under its trainer's state; --model reads it (it used to be refused as
    an architecture mismatch). The run is one epoch, so θ as last trained is best.pt's θ."""
    from problems.adversarial.evaluation.runs import load_classifier

    last = load_classifier(run, model_path=run / "last.pt").model.state_dict()
    best = torch.load(run / "best.pt", weights_only=True)["leader"]
    assert last.keys() == best.keys()
    assert all(torch.equal(last[k], best[k]) for k in best)


@pytest.mark.parametrize(
    "args, words",
    [
        (["evaluate", "/nonexistent/run"], "not a folder"),
        (["evaluate", "{run}", "--attacks", "pgd5,bogus"], "Unknown attack"),
        (["evaluate", "{run}", "--eps", "3"], "--eps"),
        (["evaluate", "{run}", "--eps", "0"], "--eps must be in (0, 1]"),  # was attacked at 0.3
        (["evaluate", "{run}", "--attacks", "transfer"], "--surrogate"),
        (["evaluate", "{run}", "--aa-margin", "-1"], "--aa-margin must be at least 0"),
        (["evaluate", "{run}", "--device", "cuda:7"], "--device"),
        (["evaluate", "{run}", "--attacks", "pgd99999999999999999999"], "PGD takes 1 to 10,000"),
    ],
)
def test_bad_inputs_are_one_sentence_and_exit_2(run: Path, args, words) -> None:
    before = (run / "eval.json").read_bytes() if (run / "eval.json").exists() else None
    result = runner.invoke(app, [a.replace("{run}", str(run)) for a in args])
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    after = (run / "eval.json").read_bytes() if (run / "eval.json").exists() else None
    assert before == after  # nothing already written is lost


def test_a_folder_without_config_is_one_sentence(tmp_path: Path) -> None:
    result = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert result.exit_code == 2 and "not a run folder" in result.output


def test_one_pgd_spelled_two_ways_is_one_column() -> None:
    """pgd020 is PGD-20: it ran twice, under one name, in two rows of eval.md's settings."""
    from problems.adversarial.evaluation.suite import SuiteOptions, attack_names

    names = attack_names("pgd20,pgd020,pgd05-cw", SuiteOptions(eps=0.1, cifar=False))
    assert names == ["pgd20", "pgd5-cw"]


def test_a_rerun_leaves_no_plot_of_the_earlier_evaluation(run: Path, tmp_path: Path) -> None:
    """eval_sweeps.png and eval_examples.png of an evaluation with the checklist were left
    beside a later eval.json that has no sweeps and names no such plot."""
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy)
    (copy / "eval_sweeps.png").write_bytes(b"an earlier evaluation's")
    (copy / "eval_examples.png").write_bytes(b"an earlier evaluation's")
    args = ["evaluate", str(copy), "--attacks", "noise", "--no-checklist", "--n-examples", "8"]
    assert runner.invoke(app, args).exit_code == 0
    listed = set(json.loads((copy / "eval.json").read_text())["plots"])
    present = {p.name for p in copy.iterdir() if p.name.startswith("eval_")}
    assert present <= listed  # every plot in the folder is one this eval.json describes


def test_default_attacks_include_apgd_and_full_the_standard_autoattack() -> None:
    from problems.adversarial.evaluation.suite import SuiteOptions, attack_names

    default = attack_names("default", SuiteOptions(eps=0.1, cifar=False))
    full = attack_names("full", SuiteOptions(eps=0.1, cifar=False))
    assert default[0] == "apgd-ce-t" and "autoattack" not in default
    assert full[0] == "autoattack" and "apgd-ce-t" not in full  # its cascade starts with both
    assert set(full) - {"autoattack"} == set(default) - {"apgd-ce-t"}


@pytest.mark.parametrize("eps", [0.031, 16 / 255, 2 / 255])
def test_the_pgd_steps_cover_the_same_share_of_the_ball_at_any_eps(eps: float) -> None:
    """CIFAR L∞ trains PGM-10 and tests PGD-20 with the paper's steps (0.007, 0.003 at ε = 0.031),
    scaled with ε, in ``solve`` and ``evaluate`` alike; the digits and L2 take 2.5 ε / k."""
    from problems.adversarial.dro_config import DROConfig
    from problems.adversarial.evaluation.suite import SuiteOptions

    cifar = DROConfig(dataset="cifar10", eps=eps).resolve()
    assert cifar.pgm_step_size == pytest.approx(0.007 * eps / 0.031, rel=1e-12)
    assert cifar.eval_step_size == pytest.approx(0.003 * eps / 0.031, rel=1e-12)
    assert SuiteOptions(eps=eps, cifar=True).pgd_step(20) == cifar.eval_step_size
    if eps == 0.031:  # the paper's numbers exactly, as config.json records them
        assert (cifar.pgm_step_size, cifar.eval_step_size) == (0.007, 0.003)
    digits = DROConfig(eps=eps).resolve()
    assert digits.pgm_step_size == pytest.approx(2.5 * eps / digits.pgm_steps)
    assert SuiteOptions(eps=eps, cifar=False).pgd_step(20) == pytest.approx(2.5 * eps / 20)
    assert SuiteOptions(eps=eps, cifar=True, norm="l2").pgd_step(20) == pytest.approx(eps / 8)


def test_the_default_evaluation_puts_autoattack_first(run: Path) -> None:
    args = ["evaluate", str(run), "--n-examples", "6", "--noise-samples", "2", "--no-checklist"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    ev = json.loads((run / "eval.json").read_text())
    apgd = next(a for a in ev["attacks"] if a["name"] == "autoattack(apgd-ce,apgd-t)")
    assert apgd["params"]["components"] == ["apgd-ce", "apgd-t"]
    md = (run / "eval.md").read_text().splitlines()
    headline = next(i for i, line in enumerate(md) if line.startswith("**autoattack"))
    table = next(i for i, line in enumerate(md) if line.startswith("| attack"))
    assert headline < table  # the AutoAttack figure is the first number a reader meets
    assert md[table + 2].startswith("| clean") and md[table + 3].startswith("| autoattack")


def _aa(components: list[str], accuracy: float) -> dict:
    """An AutoAttack entry of eval.json as the adapter names and records it."""
    name = "autoattack" if len(components) == 4 else f"autoattack({','.join(components)})"
    params = {"components": components, "eps": 0.3}
    return {"name": name, "white_box": components != ["square"], "params": params,
            "accuracy": accuracy, "seconds": 1.0}  # fmt: skip


@pytest.mark.parametrize(
    ("attacks", "figure"),
    [
        (["square", "apgd-ce-t", "pgd20"], "autoattack(apgd-ce,apgd-t)"),
        (["square", "apgd-ce-t", "autoattack"], "autoattack"),
        (["square", "pgd20"], None),
    ],
)
def test_the_autoattack_figure_is_the_cascade_or_apgd_never_square_alone(attacks, figure) -> None:
    """eval.md's bold line and the table's first attack row are the standard cascade if it ran,
    else APGD-CE + APGD-T; a Square-only run listed first is neither."""
    from problems.adversarial.evaluation.report import render_markdown

    made = {
        "square": _aa(["square"], 0.9),
        "apgd-ce-t": _aa(["apgd-ce", "apgd-t"], 0.4),
        "autoattack": _aa(["apgd-ce", "apgd-t", "fab-t", "square"], 0.35),
        "pgd20": {"name": "pgd20", "white_box": True, "params": {}, "accuracy": 0.5, "seconds": 1},
    }
    ev = {"run": "r", "checkpoint": "r/best.pt", "dataset": "mnist5k", "n_examples": 20,
          "eps": 0.3, "seed": 0, "clean_acc": 0.95, "worst_case": {"accuracy": 0.3},
          "attacks": [made[a] for a in attacks]}  # fmt: skip
    md = render_markdown(ev, {}).splitlines()
    bold = [line for line in md if line.startswith("**")]
    table = next(i for i, line in enumerate(md) if line.startswith("| attack"))
    if figure is None:
        assert bold == [] and md[table + 3].startswith("| autoattack(square)")
    else:
        accuracy = made["autoattack" if figure == "autoattack" else "apgd-ce-t"]["accuracy"]
        assert bold[0].startswith(f"**{figure}: {accuracy:.4f}**")
        assert md[table + 3].startswith(f"| {figure} |")


def test_the_run_s_eval_size_is_the_default_and_the_work_is_announced(run: Path) -> None:
    args = ["evaluate", str(run), "--attacks", "fgsm", "--noise-samples", "1", "--no-checklist"]
    result = runner.invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads((run / "eval.json").read_text())["n_examples"] == 16  # --eval-size 16
    assert "evaluate: 16 test examples (the run's --eval-size), 1 attack;" in result.output
    assert "  fgsm at ε 0.1: accuracy" in result.output


def _foreign(path: Path) -> Path:
    """A checkpoint of a model no --arch builds: it fits none."""
    torch.save({"leader": torch.nn.Linear(3, 2).state_dict()}, path)
    return path


@pytest.mark.parametrize(
    ("where", "remedy"),
    [
        ("best.pt", "the run folder may be damaged: retrain the run"),  # --arch would not help
        ("--model, config.json", "--arch and --dataset apply only where no config.json is"),
        ("--model", "pass the right --arch and --dataset"),  # as before: the remedy there
    ],
)
def test_a_checkpoint_that_does_not_fit_names_the_true_remedy(
    tmp_path: Path, where: str, remedy: str
) -> None:
    """--arch and --dataset choose the model for a --model file only where no config.json is; a
    run folder's own model comes from its config.json, so "pass the right --arch" misled."""
    from helpers import untrained_dro_run

    if where == "--model":
        folder, extra = tmp_path / "bare", ["--model", str(_foreign(tmp_path / "m.pt"))]
    else:
        folder = untrained_dro_run(tmp_path / "run")
        model = _foreign(folder / "best.pt" if where == "best.pt" else tmp_path / "m.pt")
        extra = [] if where == "best.pt" else ["--model", str(model)]
    args = ["evaluate", str(folder), *extra, "--attacks", "fgsm", "--no-checklist"]
    bare = ["--arch", "small-cnn"] if where == "--model" else []  # refused beside a config.json
    result = runner.invoke(app, [*args, *bare])
    assert result.exit_code == 2, result.output
    assert "does not fit the model" in result.output and remedy in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("typed", [["--arch", "trades-cnn"], ["--dataset", "cifar10"]])
def test_arch_and_dataset_beside_a_config_json_are_refused_not_ignored(
    tmp_path: Path, typed: list[str]
) -> None:
    """A run folder's model comes from its config.json: --arch or --dataset there used to be
    ignored, and the run's own model evaluated as if they had been read."""
    from helpers import untrained_dro_run

    folder = untrained_dro_run(tmp_path / "run")
    result = runner.invoke(app, ["evaluate", str(folder), "--attacks", "fgsm", *typed])
    assert result.exit_code == 2, result.output
    assert "apply only where no config.json is" in result.output
    assert not (folder / "eval.json").exists()


def test_a_gail_run_is_named_as_one(tmp_path: Path) -> None:
    """evaluate attacks adversarial runs; a GAIL run's folder was "not a bilevel-l2l run
    configuration", which it is."""
    from problems.imitation.config import GAILConfig

    run = tmp_path / "gail"
    run.mkdir()
    (run / "config.json").write_text(json.dumps(GAILConfig().resolve().to_dict()))
    result = runner.invoke(app, ["evaluate", str(run)])
    assert result.exit_code == 2, result.output
    assert (
        f"{run} is a GAIL run (solve gail), and evaluate attacks adversarial runs" in result.output
    )
    assert len(result.output.strip().splitlines()) == 1


def test_data_dir_reads_the_test_split_from_the_folder_given(run: Path, tmp_path, monkeypatch):
    """A run records its --data-dir as typed, so a relative CIFAR folder is read from wherever
    evaluate runs: --data-dir names the folder instead (mnist5k, embedded, ignores it)."""
    import importlib

    module = importlib.import_module("problems.adversarial.evaluation.evaluate")
    asked = []
    real = module.load_dataset
    monkeypatch.setattr(module, "load_dataset", lambda name, d: asked.append(d) or real(name, d))
    args = ["evaluate", str(run), "--attacks", "fgsm", "--n-examples", "4", "--no-checklist"]
    assert runner.invoke(app, args).exit_code == 0
    assert runner.invoke(app, [*args, "--data-dir", str(tmp_path)]).exit_code == 0
    recorded = json.loads((run / "config.json").read_text())["data_dir"]
    assert [str(d) for d in asked] == [str(recorded), str(tmp_path)]
    a_file = tmp_path / "file"
    a_file.write_text("")
    refused = runner.invoke(app, [*args, "--data-dir", str(a_file)])
    assert refused.exit_code == 2 and "--data-dir" in refused.output
