"""An evaluation's files in its run folder: eval.md is never left describing an evaluation other
than the eval.json beside it, whichever of the writes fails."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from bilevel.run import RunDir
from problems.adversarial.evaluation import report


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
