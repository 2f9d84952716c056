"""An evaluation's files in its run folder: eval.md is never left describing an evaluation other
than the eval.json beside it, whichever of the writes fails; a folder where one of them goes is
refused before the attacks."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from typer.testing import CliRunner

from bilevel.run import RunDir
from cli import app
from problems.adversarial.evaluation import report
from problems.adversarial.models import build_model


def _ev(accuracy: float) -> dict[str, Any]:
    attack = {"name": "fgsm", "white_box": True, "params": {}, "accuracy": accuracy, "seconds": 1}
    return {"run": "r", "checkpoint": "r/best.pt", "dataset": "mnist5k", "n_examples": 8,
            "eps": 0.3, "seed": 0, "clean_acc": accuracy, "worst_case": {"accuracy": accuracy},
            "attacks": [attack]}  # fmt: skip


def _disk_full(*args: object, **kwargs: object) -> None:
    raise OSError("No space left on device")


@pytest.mark.parametrize("failing", ["eval.json", "eval.md"])
def test_a_failed_write_leaves_no_eval_md_of_another_evaluation(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, failing: str
) -> None:
    run = RunDir(tmp_path)
    report.write_outputs(run, _ev(0.25), torch.zeros(0), [], [])
    if failing == "eval.json":
        monkeypatch.setattr(RunDir, "write_json", _disk_full)
    else:
        monkeypatch.setattr(report, "atomic_write_text", _disk_full)
    with pytest.raises(OSError):
        report.write_outputs(run, _ev(0.75), torch.zeros(0), [], [])
    ev = json.loads((tmp_path / "eval.json").read_text())
    md = tmp_path / "eval.md"
    assert not md.exists() or md.read_text() == report.render_markdown(ev, {})


@pytest.mark.parametrize("name", ["eval.json", "eval.md", "eval_examples.png"])
def test_a_folder_where_a_file_goes_is_one_sentence_before_any_attack(tmp_path, name) -> None:
    """A folder named eval.md (or another of the files evaluate writes) in the folder evaluated
    into ended in IsADirectoryError, after the attacks had run."""
    model = build_model("small-cnn", 10, 1, (0.5,), (0.25,))
    torch.save(model.state_dict(), tmp_path / "plain.pt")
    out = tmp_path / "eval"
    (out / name).mkdir(parents=True)
    args = ["evaluate", str(out), "--model", str(tmp_path / "plain.pt"), "--attacks", "fgsm"]
    result = CliRunner().invoke(app, [*args, "--n-examples", "4", "--no-checklist"])
    assert result.exit_code == 2, result.output
    assert f"{out / name} is a folder, where evaluate writes its {name}" in result.output
    assert [p.name for p in out.iterdir()] == [name]  # nothing written beside it


def _full_ev() -> dict[str, Any]:
    """An evaluation with PGD-20 run before the standard AutoAttack cascade."""
    aa = {"name": "autoattack", "white_box": True, "accuracy": 0.30, "seconds": 1,
          "params": {"components": ["apgd-ce", "apgd-t", "fab-t", "square"]}}  # fmt: skip
    pgd = {"name": "pgd20", "white_box": True, "params": {}, "accuracy": 0.50, "seconds": 1}
    return _ev(0.9) | {"attacks": [pgd, aa], "worst_case": {"accuracy": 0.25}}


def test_table_rows_clean_then_autoattack_then_the_rest_and_the_worst_case_last() -> None:
    """Rows: clean, the AutoAttack figure, the other attacks in the order they ran, the
    per-example worst case last, each with that run's own number ("-" where a run lacks it)."""
    other = _ev(0.6) | {"clean_acc": 0.8, "worst_case": {"accuracy": 0.55}}
    rows = report.table_rows({"a": _full_ev(), "b": other})
    assert rows == [
        {"attack": "clean", "a": 0.9, "b": 0.8},
        {"attack": "autoattack", "a": 0.30, "b": "-"},
        {"attack": "pgd20", "a": 0.50, "b": "-"},
        {"attack": "fgsm", "a": "-", "b": 0.6},
        {"attack": "worst case (per example)", "a": 0.25, "b": 0.55},
    ]


def test_eval_md_heads_with_autoattack_and_puts_this_run_first_in_the_table() -> None:
    """The bold line gives AutoAttack's accuracy, the clean one and the worst case; the table's
    first column of numbers is the run evaluated, then the runs compared with it."""
    md = report.render_markdown(_full_ev(), {"other": _ev(0.6)}).splitlines()
    assert (
        "**autoattack: 0.3000** robust accuracy (clean 0.9000); the worst case over every "
        "attack: 0.2500." in md
    )
    header = next(line for line in md if line.startswith("| attack"))
    assert header.replace(" ", "") == "|attack|r|other|"


def test_a_sweep_whose_x_and_accuracies_differ_in_length_is_no_evaluation() -> None:
    """A curve pairs each x with one accuracy: three x and two accuracies is no curve."""
    ev = _ev(0.5) | {"sweeps": {"eps": {"x": [0.1, 0.2, 0.3], "acc": [0.5, 0.4]}}}
    assert report.eval_problem(ev) != ""
    assert report.eval_problem(_ev(0.5) | {"sweeps": {"eps": {"x": [0.1], "acc": [0.5]}}}) == ""
