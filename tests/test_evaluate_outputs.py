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
