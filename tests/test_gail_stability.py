"""``cli.py gail-stability`` end to end for a tiny budget (two followers, two seeds, parallel jobs,
finished runs reused on a re-run), and bad inputs: one sentence, exit code 2, earlier files
unchanged and no run started."""

from __future__ import annotations

import json
import shutil
import signal
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from helpers import raw_bytes_digest
from typer.testing import CliRunner

from bilevel.fit import _Loop
from bilevel.run import atomic_torch_save, load_checkpoint
from bilevel.stopping import Interrupted
from cli import app
from problems.imitation import stability_runs
from problems.imitation.config import GAILConfig
from problems.imitation.demonstrations import load_rollout, save_rollout
from problems.imitation.reliability import final_performance, iqr, permutation_test
from problems.imitation.variants import parse_variant

TINY = ":n_envs=1:n_steps=100:eval_episodes=1:test_episodes=1"
runner = CliRunner()


def stability(out: Path, cache: Path, *extra: str):
    args = ["gail-stability", "--steps", "300", "--out", str(out), "--cache-dir", str(cache)]
    return runner.invoke(app, [*args, *extra], catch_exceptions=False)


def _returns(runs: list[Path]) -> np.ndarray:
    """The validation normalised return curve of each run folder, one row per run."""
    metrics = [(run / "metrics.jsonl").read_text().splitlines() for run in runs]
    return np.array([[json.loads(row)["val_normalised_return"] for row in run] for run in metrics])


def test_two_followers_two_seeds_in_parallel_then_reused(tmp_path) -> None:
    out, cache = tmp_path / "study", tmp_path / "demos"
    followers = ["--followers", f"adam{TINY},oneshot{TINY}", "--seeds", "2"]
    result = stability(out, cache, *followers, "--jobs", "2")
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "stability.json").read_text())
    assert [row["seeds"] for row in summary["rows"]] == [2, 2]
    assert [row["env_steps"] for row in summary["rows"]] == [300, 300]
    assert summary["rows"][0]["method"].startswith("GAIL")
    # each row's figures come from its own follower's runs, every seed once: recomputed here from
    # the runs' metrics.jsonl with the reliability functions
    finals = [
        final_performance(_returns(sorted(out.glob(f"{name}_*-seed*"))))
        for name in ("adam", "oneshot")
    ]
    for row, final in zip(summary["rows"], finals, strict=True):
        assert row["final_median"] == float(np.median(final))
        assert row["final_iqr"] == float(iqr(final)) > 0  # two different seeds
    p_value = summary["rows"][1]["p_value_vs_first"]
    assert 0 <= p_value <= 1 and p_value == permutation_test(finals[1], finals[0])
    assert "Target (each learned follower against the first):" in (out / "stability.md").read_text()
    assert (out / "stability.png").read_bytes()[:4] == b"\x89PNG"
    finished = sorted(out.glob("*-seed*/results.json"))
    assert len(finished) == 4
    stamps = [p.stat().st_mtime_ns for p in finished]
    again = stability(out, cache, *followers, "--jobs", "1")  # every run is reused
    assert again.exit_code == 0, again.output
    assert [p.stat().st_mtime_ns for p in finished] == stamps
    assert json.loads((out / "stability.json").read_text()) == summary


def test_a_run_trained_on_other_demonstrations_is_neither_reused_nor_resumed(tmp_path) -> None:
    """A finished run was reused on its options alone: demonstrations changed under the same
    options (an expert retrained, a cache replaced) left its seeds in the table beside seeds
    trained on the new ones. An unfinished one was refused by its own resume only after the
    runs before it had trained. The same demonstrations under the older raw-bytes digest are
    still reused."""
    out, cache = tmp_path / "study", tmp_path / "demos"
    followers = ["--followers", f"adam{TINY}", "--seeds", "2"]
    assert stability(out, cache, *followers).exit_code == 0
    (demos,) = cache.glob("*.npz")
    original = load_rollout(demos)
    save_rollout(demos, replace(original, observations=original.observations + 0.01))
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    again = stability(out, cache, *followers)
    assert again.exit_code == 2, again.output
    assert "finished run trained on other demonstrations" in again.output
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == stamps
    (seed0,) = out.glob("*-seed0")
    (seed1,) = out.glob("*-seed1")
    shutil.rmtree(seed0)  # would train first
    (seed1 / "results.json").unlink()  # would be resumed
    unfinished = stability(out, cache, *followers)
    assert unfinished.exit_code == 2 and "unfinished run trained on other" in unfinished.output
    assert not seed0.exists()
    # the first demonstrations back, the runs' last.pt recording them by their raw bytes
    save_rollout(demos, original)
    assert stability(out, cache, *followers).exit_code == 0  # seed 0 trained, seed 1 resumed
    for run in (seed0, seed1):
        checkpoint = load_checkpoint(run / "last.pt")
        checkpoint["trainer"]["problem"]["demos_digest"] = raw_bytes_digest(original)
        atomic_torch_save(checkpoint, run / "last.pt")
    stamps = {p: p.stat().st_mtime_ns for p in out.glob("*-seed*/results.json")}
    reused = stability(out, cache, *followers)
    assert reused.exit_code == 0, reused.output
    assert {p: p.stat().st_mtime_ns for p in out.glob("*-seed*/results.json")} == stamps


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--seeds", "1"], "--seeds must be at least 2"),
        # 1e20 configs were resolved, in memory, before the first run trained
        (["--seeds", "99999999999999999999"], "--seeds takes at most 4,294,967,296"),
        (["--followers", "adam,sgd"], "Unknown follower 'sgd'"),
        (["--followers", "adam:no_such_option=1"], "is not field=value"),
        (["--followers", "adam:disc_steps=many"], "is not a valid int"),
        # an override's refusal names it as written: gail-stability has no --meta-objective
        (
            ["--followers", "l2l:meta_objective=accuracy"],
            "'l2l:meta_objective=accuracy' in --followers: Unknown meta_objective 'accuracy'",
        ),
        (
            ["--followers", "adam,adam-gp:disc_lr=-1"],
            "'adam-gp:disc_lr=-1' in --followers: disc_lr must be positive; got -1.0.",
        ),
        (["--env", "MountainCar-v0"], "has no scripted expert and none was trained"),
        (["--jobs", "0"], "--jobs must be at least 1"),
    ],
)
def test_bad_inputs_are_one_sentence_exit_2_and_touch_nothing(extra, message, tmp_path) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "stability.json").write_text('{"rows": "earlier"}\n')
    result = stability(out, tmp_path / "demos", *extra)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert (out / "stability.json").read_text() == '{"rows": "earlier"}\n'
    assert [p.name for p in out.iterdir()] == ["stability.json"]  # no run was started


def test_a_stop_says_to_rerun_this_command_which_then_goes_on(tmp_path, monkeypatch) -> None:
    """gail-stability has no --resume: a stop's advice is its own command, which resumes."""
    out, cache = tmp_path / "study", tmp_path / "demos"

    def stop_now(loop: _Loop) -> bool:  # as if Ctrl-C came during the first batch
        loop.signum = signal.SIGINT
        return True

    with monkeypatch.context() as patch:
        patch.setattr(_Loop, "_agreed_stop", stop_now)
        result = stability(out, cache, "--followers", f"adam{TINY}", "--seeds", "2")
    assert result.exit_code == 130, result.output
    assert "rerun the same gail-stability command" in result.output
    assert "--resume" not in result.output and "Traceback" not in result.output
    assert len(list(out.glob("*-seed0/last.pt"))) == 1
    again = stability(out, cache, "--followers", f"adam{TINY}", "--seeds", "2")
    assert again.exit_code == 0, again.output
    assert len(list(out.glob("*-seed*/results.json"))) == 2


def test_a_stop_outside_a_training_loop_says_the_same(tmp_path, monkeypatch) -> None:
    def interrupted(*_: object, **__: object) -> None:
        raise Interrupted(signal.SIGTERM)

    monkeypatch.setattr(stability_runs, "solve_gail", interrupted)
    result = stability(tmp_path / "study", tmp_path / "demos", "--followers", f"adam{TINY}")
    assert result.exit_code == 143, result.output
    assert "rerun the same gail-stability command" in result.output
    assert "--resume" not in result.output


def test_a_later_seed_s_folder_of_other_options_is_refused_before_any_run_trains(
    tmp_path,
) -> None:
    out, cache = tmp_path / "study", tmp_path / "demos"
    _, folder, cfg = parse_variant(f"adam{TINY}", GAILConfig(steps=5000, cache_dir=str(cache)))
    seed1 = out / f"{folder}-seed1"  # an unfinished run of --steps 5000
    seed1.mkdir(parents=True)
    (seed1 / "config.json").write_text(json.dumps(replace(cfg, seed=1).resolve().to_dict()))
    (seed1 / "last.pt").write_bytes(b"a checkpoint")
    result = stability(out, cache, "--followers", f"adam{TINY}", "--seeds", "2")
    assert result.exit_code == 2, result.output
    assert sorted(p.name for p in out.iterdir()) == [seed1.name]  # seed 0 was not trained
    assert sorted(p.name for p in seed1.iterdir()) == ["config.json", "last.pt"]
    assert "holds an unfinished run with other options (steps 5000 there, 300 here)" in (
        result.output
    )


@pytest.fixture(scope="module")
def finished_study(tmp_path_factory) -> tuple[Path, Path]:
    """A finished tiny study (one follower, two seeds of 3 epochs), to copy and damage."""
    root = tmp_path_factory.mktemp("finished")
    result = stability(root / "study", root / "demos", "--followers", f"adam{TINY}", "--seeds", "2")
    assert result.exit_code == 0, result.output
    return root / "study", root / "demos"


def _cut_config(run: Path) -> None:
    (run / "config.json").write_text((run / "config.json").read_text()[:17])


def _cut_last_metrics_line(run: Path) -> None:
    (run / "metrics.jsonl").write_text((run / "metrics.jsonl").read_text()[:-40])


def _drop_last_metrics_row(run: Path) -> None:
    lines = (run / "metrics.jsonl").read_text().splitlines(keepends=True)
    (run / "metrics.jsonl").write_text("".join(lines[:-1]))


@pytest.mark.parametrize(
    "damage, words",
    [
        (_cut_config, "finished run whose config.json is missing or unreadable"),
        (lambda run: (run / "config.json").unlink(), "whose config.json is missing or unreadable"),
        (lambda run: (run / "metrics.jsonl").unlink(), "finished run with no metrics.jsonl"),
        (_cut_last_metrics_line, "metrics.jsonl whose line 3 is not a whole row"),
        (_drop_last_metrics_row, "a metrics.jsonl of 2 rows for its 3 epochs"),
    ],
)
def test_a_damaged_finished_run_is_one_sentence_and_nothing_changes(
    damage, words, finished_study, tmp_path
) -> None:
    """Reused only if its config.json reads and metrics.jsonl holds every epoch's whole row:
    else the summary is a traceback, or silently cut to the shortest run."""
    out, cache = tmp_path / "study", finished_study[1]
    shutil.copytree(finished_study[0], out)
    seed1 = next(out.glob("*-seed1"))
    damage(seed1)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    result = stability(out, cache, "--followers", f"adam{TINY}", "--seeds", "2")
    assert result.exit_code == 2, result.output
    assert f"{seed1} holds a " in result.output and words in result.output
    assert "delete that folder to train that seed again" in result.output
    assert "Traceback" not in result.output
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
