"""No dead-end folders, and no lost ones: a folder without ``last.pt`` is started over only if
it holds nothing but what a run that stopped before its first checkpoint leaves; a finished run
whose ``last.pt`` was deleted, a ``config.json`` that is no run's, or a file of the user's is one
sentence, exit code 2, and nothing in the folder changes."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from test_stop_resume import solve  # the stop and resume tests' tiny run


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "finished"
    assert solve(out).exit_code == 0
    return out


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir()}


def refused(result, out: Path) -> str:
    """The one line of a run refused in ``out``, which held no last.pt."""
    assert result.exit_code == 2, result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    line = result.output.strip()
    assert line.startswith(f"error: {out} holds ") and "but no last.pt" in line, line
    return line


@pytest.mark.parametrize("resume", [False, True])
def test_a_finished_run_whose_last_pt_is_gone_is_refused_and_kept(
    finished, tmp_path, resume
) -> None:
    """No last.pt does not make a folder one that stopped before its first checkpoint: a plain
    rerun (or --resume) used to start over in a finished, evaluated run whose last.pt a user
    deleted, dropping best.pt and metrics.jsonl and overwriting the rest, with exit code 0."""
    out = tmp_path / "finished"
    shutil.copytree(finished, out)
    (out / "last.pt").unlink()
    (out / "eval.json").write_text('{"rows": []}\n')
    before = snapshot(out)
    line = refused(solve(out, *["--resume"] * resume), out)
    assert all(name in line for name in ("eval.json", "metrics.jsonl", " more but")), line
    assert snapshot(out) == before


@pytest.mark.parametrize(
    "text",
    [
        '{"my":"precious settings"}',
        json.dumps({"my": "precious settings"}, indent=2, sort_keys=True) + "\n",  # no option
        "not JSON\n",
        # an option's key (seed), but not as a run writes config.json (indented, keys sorted)
        '{"seed": 7, "note": "my own settings"}',
    ],
)
def test_a_config_json_that_is_no_runs_is_refused_and_kept(tmp_path, text) -> None:
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text(text)
    line = refused(solve(out), out)
    assert "holds config.json (not a run configuration) but no last.pt" in line
    assert snapshot(out) == {"config.json": text.encode()}


def test_only_what_an_early_stop_leaves_is_started_over(tmp_path) -> None:
    """The folder of a run killed in epoch 1 between best.pt and last.pt (as older runs wrote
    them) starts over; best.pt of a later epoch, or a file of the user's beside the config, means
    more was there, and is kept."""
    out = tmp_path / "early"
    assert solve(out, "--epochs", "1").exit_code == 0
    for name in ("last.pt", "metrics.jsonl", "results.json", "report.md", "curves.png"):
        (out / name).unlink()
    best = torch.load(out / "best.pt", weights_only=True)
    torch.save(best | {"epoch": 2}, out / "best.pt")
    assert "holds best.pt but no last.pt" in refused(solve(out, "--epochs", "1"), out)
    torch.save(best, out / "best.pt")
    (out / "notes.txt").write_text("mine\n")
    before = snapshot(out)
    assert "holds notes.txt but no last.pt" in refused(solve(out, "--epochs", "1"), out)
    assert snapshot(out) == before
    (out / "notes.txt").unlink()
    assert solve(out, "--epochs", "1").exit_code == 0  # config.json, best.pt of epoch 1, .lock


def test_a_users_file_named_like_a_cut_short_write_is_refused_and_kept(tmp_path) -> None:
    """A write of ours cut short is .<name>.<random>.partial (bilevel.files), which a start over
    drops; draft.partial, without the leading dot, is the user's and is refused like notes.txt."""
    out = tmp_path / "mine"
    out.mkdir()
    (out / "draft.partial").write_text("mine\n")
    assert "holds draft.partial but no last.pt" in refused(solve(out), out)
    assert snapshot(out) == {"draft.partial": b"mine\n"}


def test_a_users_folder_named_like_a_cut_short_write_survives_a_resume(finished, tmp_path) -> None:
    """Every start drops the hidden .*.partial files a kill left; a folder of that name is the
    user's: the resume ended in IsADirectoryError from unlink, and a start over is refused."""
    out = tmp_path / "finished"
    shutil.copytree(finished, out)
    (out / ".notes.partial").mkdir()
    (out / ".notes.partial" / "n.txt").write_text("mine\n")
    (out / ".last.pt.abc12345.partial").write_bytes(b"cut")  # ours: dropped
    assert solve(out, "--resume").exit_code == 0
    assert (out / ".notes.partial" / "n.txt").read_text() == "mine\n"
    assert not (out / ".last.pt.abc12345.partial").exists()
    (out / "last.pt").unlink()
    for name in ("best.pt", "results.json", "report.md", "curves.png", "metrics.jsonl"):
        (out / name).unlink()
    assert "holds .notes.partial/ but no last.pt" in refused(solve(out), out)


@pytest.mark.parametrize("config", [None, "not JSON\n", "[1, 2]\n"])
@pytest.mark.parametrize("resume", [False, True])
def test_a_checkpoint_without_a_readable_config_json_points_only_to_another_out(
    finished, tmp_path, config, resume
) -> None:
    """--resume said to drop --resume, and without it the folder was said to need --resume: the
    advice looped. Neither can go on without the options the run trained with."""
    out = tmp_path / "finished"
    shutil.copytree(finished, out)
    if config is None:
        (out / "config.json").unlink()
    else:
        (out / "config.json").write_text(config)
    before = snapshot(out)
    result = solve(out, *["--resume"] * resume)
    assert result.exit_code == 2, result.output
    line = result.output.strip()
    assert len(line.splitlines()) == 1, line
    assert "holds a checkpoint (last.pt) without a readable config.json" in line, line
    assert "choose another --out" in line and "--resume" not in line, line
    assert snapshot(out) == before
