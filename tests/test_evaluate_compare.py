"""``evaluate RUN --compare OTHER`` reads OTHER's eval.json for the table and the plots: one that
is valid JSON but no evaluation (``[]``, ``{}``) is one sentence with exit code 2 before any
attack runs (it used to crash with an AttributeError or, after the whole evaluation, a KeyError),
and a real one is shown beside."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import untrained_dro_run
from typer.testing import CliRunner

from cli import app

runner = CliRunner()
QUICK = ["--attacks", "fgsm", "--n-examples", "4", "--no-checklist", "--device", "cpu"]
NOT_EVALS = [
    [],
    {},
    {"attacks": 5, "clean_acc": 0.5, "worst_case": {"accuracy": 0.1}},
    {"attacks": [{"name": "fgsm", "accuracy": 0.2}], "clean_acc": "high", "worst_case": {}},
    {"attacks": [], "clean_acc": 0.5, "worst_case": {"accuracy": 0.1}, "norm": ["l2"]},
    {"attacks": [], "clean_acc": 0.5, "worst_case": {"accuracy": 0.1}, "sweeps": {"eps": 3}},
]


@pytest.mark.parametrize("content", NOT_EVALS)
def test_a_compared_file_that_is_no_evaluation_is_refused_before_attacking(
    tmp_path: Path, content
) -> None:
    run, other = untrained_dro_run(tmp_path / "run"), tmp_path / "other"
    other.mkdir()
    (other / "eval.json").write_text(json.dumps(content))
    result = runner.invoke(app, ["evaluate", str(run), "--compare", str(other), *QUICK])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output  # no attack announced
    assert f"{other / 'eval.json'} is not an evaluation written by `evaluate`" in result.output
    assert not (run / "eval.json").exists()


def test_a_real_evaluation_is_shown_beside(tmp_path: Path) -> None:
    run, other = untrained_dro_run(tmp_path / "run"), untrained_dro_run(tmp_path / "other")
    assert runner.invoke(app, ["evaluate", str(other), *QUICK]).exit_code == 0
    result = runner.invoke(app, ["evaluate", str(run), "--compare", str(other), *QUICK])
    assert result.exit_code == 0, result.output
    assert str(other) in (run / "eval.md").read_text()


@pytest.mark.parametrize(
    ("theirs", "this"),
    [
        ({"eps": 0.1}, "eps 0.3"),
        ({"n_examples": 6}, "n_examples 4"),
        ({"dataset": "cifar10", "eps": 0.031}, "dataset mnist5k and eps 0.3"),
    ],
)
def test_an_evaluation_of_other_examples_or_eps_is_refused_not_put_under_this_title(
    tmp_path: Path, theirs: dict, this: str
) -> None:
    """eval.md's title (data set, first N examples, ε) is every column's: a compared eval.json
    measured otherwise is one sentence naming what differs, and nothing is written."""
    run, other = untrained_dro_run(tmp_path / "run"), untrained_dro_run(tmp_path / "other")
    for folder in (run, other):
        assert runner.invoke(app, ["evaluate", str(folder), *QUICK]).exit_code == 0
    ev = json.loads((other / "eval.json").read_text()) | theirs
    (other / "eval.json").write_text(json.dumps(ev))
    before = {p: p.read_bytes() for f in (run, other) for p in sorted(f.iterdir())}
    result = runner.invoke(app, ["evaluate", str(run), "--compare", str(other), *QUICK])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output  # no attack announced
    them = " and ".join(f"{k} {v}" for k, v in theirs.items())
    assert f"was evaluated with {them} and this evaluation with {this};" in result.output
    assert {p: p.read_bytes() for f in (run, other) for p in sorted(f.iterdir())} == before
