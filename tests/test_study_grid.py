"""``bench l2l --grid FILE`` and ``bench dro --grid FILE``: every bad grid, grid path or study
option is one sentence with exit 2, before anything trains or is written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_study import TINY, run_bench
from typer.testing import CliRunner

from cli import app


@pytest.mark.parametrize(
    ("content", "words"),
    [
        ("{not json", "not valid JSON"),
        (json.dumps({"configs": {}}), "non-empty"),
        (json.dumps({"configs": {"x": {"follower": "grad"}}, "epochs": 3}), "unknown key"),
        (json.dumps({"configs": {"x": {"attacker_magic": 1}}}), "unknown lever"),
        # named as the grid writes it: bench l2l has no --grad-scaling flag
        (json.dumps({"configs": {"x": {"grad_scaling": "max"}}}), "Unknown grad_scaling 'max'"),
        (json.dumps({"configs": {"x": {"epochs": "ten"}}}), "epochs must be a whole number"),
        (json.dumps({"configs": {"x": {"epochs": 1.5}}}), "epochs must be a whole number"),
        # JSON's string "false" is truthy and "5,7" not a list: both would be misread silently
        (json.dumps({"configs": {"x": {"truncated_unroll": "false"}}}), "true or false"),
        (json.dumps({"configs": {"x": {"milestones": "5,7"}}}), "a list of whole numbers"),
        (json.dumps({"configs": {"x": {"momentum": -1}}}), "'x': momentum must be at least 0"),
        # every option in the grid's spelling, also one the entry does not set (unroll)
        (json.dumps({"configs": {"x": {"plain_steps": 5}}}), "below unroll (2)"),
        (json.dumps({"configs": {"x": {"seed": 3}}}), "cannot be set by a lever: the study sets"),
        (json.dumps({"configs": {"x": {}}, "seeds": []}), "seeds"),
        (json.dumps({"configs": {"x": {}}, "seeds": 5}), "seeds"),
        (json.dumps({"configs": {"x": {}}, "references": ["pgd-7"]}), "Unknown reference"),
        (json.dumps({"configs": {"x": {}}, "references": "pgm-10"}), '"references" must be'),
        (json.dumps({"configs": {"x": {}}, "references": [5]}), '"references" must be'),
        # two names, one folder: the second run would delete the first's
        (json.dumps({"configs": {"x y": {}, "x_y": {"pgm_steps": 2}}}), "the same folder"),
        (json.dumps({"configs": {"..": {}}}), "no folder name"),  # outside --out otherwise
        # a config named as a reference would be trained and reported as that reference
        (
            json.dumps({"configs": {"pgm-10": {"follower": "fgsm"}}, "references": ["pgm-10"]}),
            "the same folder",
        ),
        (json.dumps({"configs": {"x": {}}, "seeds": [2**32]}), "seeds"),  # numpy's limit
        # counted twice in mean ± std with one job, trained twice at once with two
        (json.dumps({"configs": {"x": {}}, "seeds": [0, 0]}), "names seed 0 twice"),
        # 0 judged every validation digit (``subset`` of 0 is falsy), not none
        (json.dumps({"configs": {"x": {}}, "val_examples": 0}), '"val_examples" must be'),
        ('{"configs": {"x": {"weight_decay": NaN}}}', "finite number"),  # Python's JSON reads NaN
    ],
)
def test_a_bad_grid_is_one_sentence_and_exit_2(tmp_path: Path, content: str, words: str) -> None:
    grid = tmp_path / "bad.json"
    grid.write_text(content)
    result = run_bench(grid, tmp_path)
    assert result.exit_code == 2
    assert words in result.output and "Traceback" not in result.output
    assert not (tmp_path / "results").exists() and not (tmp_path / "runs").exists()


@pytest.mark.parametrize("command", ["l2l", "dro"])
def test_a_grid_that_is_not_utf8_is_one_sentence(tmp_path: Path, command: str) -> None:
    grid = tmp_path / "bin.json"
    grid.write_bytes(b'{"configs": {"\xff\xfe": {}}}')  # bytes no UTF-8 text holds
    args = ["bench", command, "--grid", str(grid), "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "is not UTF-8 text" in result.output, result.output
    assert "Traceback" not in result.output and not (tmp_path / "runs").exists()


def test_zero_jobs_is_one_sentence_before_any_training(tmp_path: Path) -> None:
    grid = tmp_path / "tiny.json"
    grid.write_text(json.dumps(TINY))
    result = run_bench(grid, tmp_path, "--jobs", "0")
    assert result.exit_code == 2 and "--jobs must be at least 1" in result.output
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_an_unwritable_results_folder_is_refused_before_any_training(tmp_path: Path) -> None:
    grid = tmp_path / "tiny.json"
    grid.write_text(json.dumps(TINY))
    (tmp_path / "a-file").write_text("mine\n")
    args = ["bench", "l2l", "--grid", str(grid), "--out", str(tmp_path / "runs"), "--results",
            str(tmp_path / "a-file" / "results")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and "--results" in result.output, result.output
    assert not (tmp_path / "runs").exists()


def test_a_missing_grid_file_is_one_sentence(tmp_path: Path) -> None:
    result = run_bench(tmp_path / "nowhere.json", tmp_path)
    assert result.exit_code == 2 and "cannot be read" in result.output


@pytest.mark.parametrize("command", ["l2l", "dro"])
@pytest.mark.parametrize(
    ("grid", "words"),
    [("", "--grid is empty; give a file name."), (".", "is a folder; give a JSON grid file.")],
)
def test_an_empty_grid_path_or_a_folder_is_one_sentence(tmp_path, command, grid, words) -> None:
    """'' was Path('') = the current folder, refused as "--grid . cannot be read (Is a
    directory)", a path the user never typed."""
    args = ["bench", command, "--grid", grid, "--out", str(tmp_path / "runs")]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 2 and words in result.output, result.output
    assert not (tmp_path / "runs").exists()
