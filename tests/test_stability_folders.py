"""``stability_runs.check_folder`` on run folders written by hand (nothing trains): what it
accepts beside what test_gail_stability.py refuses end to end. An unfinished run is resumed
whatever its metrics so far, a run older than the demonstrations' digest is still accepted, and a
finished run's metrics.jsonl must hold exactly its epochs' whole rows."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from bilevel.errors import UserError
from problems.imitation.config import GAILConfig
from problems.imitation.stability_runs import RETURN, check_folder

DIGEST = "demos-of-today"


@pytest.fixture(scope="module")
def cfg() -> GAILConfig:
    return GAILConfig(steps=300, n_envs=1, n_steps=100, cache_dir="unused").resolve()


def _row(epoch: int) -> dict:
    return {RETURN: 0.5, "env_steps": 100 * epoch, "val_action_agreement": 0.75}


def _run(
    folder: Path, cfg: GAILConfig, *, finished: bool = True, rows: list | None = None,
    checkpoint: dict | None = None,
) -> str:  # fmt: skip
    """A run folder of ``cfg``: config.json, metrics.jsonl (one whole row an epoch unless
    ``rows``), last.pt recording ``checkpoint`` (today's digest unless given), results.json."""
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps(cfg.to_dict()))
    rows = [_row(e) for e in range(1, cfg.epochs + 1)] if rows is None else rows
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "metrics.jsonl").write_text("".join(f"{line}\n" for line in lines))
    state = {"trainer": {"problem": {"demos_digest": DIGEST}}} if checkpoint is None else checkpoint
    torch.save(state, folder / "last.pt")
    if finished:
        (folder / "results.json").write_text("{}")
    return str(folder)


def _refused(cfg: GAILConfig, out: str, words: str) -> None:
    with pytest.raises(UserError) as err:
        check_folder(cfg, out, frozenset({DIGEST}))
    assert words in str(err.value) and str(err.value).startswith(f"{out} holds"), err.value


def test_a_whole_finished_run_of_the_same_options_is_accepted(cfg, tmp_path) -> None:
    assert cfg.epochs == 3
    check_folder(cfg, _run(tmp_path / "run", cfg), frozenset({DIGEST}))
    check_folder(cfg, str(tmp_path / "empty"), frozenset({DIGEST}))  # trained afresh


def test_an_unfinished_run_is_resumed_whatever_its_metrics_so_far(cfg, tmp_path) -> None:
    """A run stopped after its first epoch has one row of three, the last maybe cut short: its
    resume writes the rest, so only a finished run's metrics are judged."""
    out = _run(tmp_path / "run", cfg, finished=False, rows=[_row(1), '{"val_norm'])
    check_folder(cfg, out, frozenset({DIGEST}))


def test_a_run_older_than_the_demonstrations_digest_is_accepted(cfg, tmp_path) -> None:
    """Its last.pt records no digest, so nothing says it trained on other demonstrations."""
    for finished in (True, False):
        out = _run(tmp_path / f"run-{finished}", cfg, finished=finished,
                   checkpoint={"trainer": {"problem": {}}})  # fmt: skip
        check_folder(cfg, out, frozenset({DIGEST}))
    out = _run(tmp_path / "other", cfg, checkpoint={"trainer": {"problem": {"demos_digest": "x"}}})
    _refused(cfg, out, "finished run trained on other demonstrations (digest x;")


@pytest.mark.parametrize(
    "rows, words",
    [
        ([_row(1), _row(2), _row(3), _row(4)], "a metrics.jsonl of 4 rows for its 3 epochs"),
        ([_row(1), {RETURN: 0.5, "val_action_agreement": 0.75}, _row(3)], "line 2 is not a whole"),
        ([_row(1), _row(2), _row(3) | {RETURN: "high"}], "line 3 is not a whole row"),
        ([{RETURN: 0.5, "env_steps": 100}, _row(2), _row(3)], "line 1 is not a whole row"),
    ],
    ids=["an-extra-row", "no-env-steps", "a-text-return", "no-fidelity"],
)
def test_a_finished_run_whose_metrics_are_not_its_epochs_whole_rows_is_refused(
    cfg, tmp_path, rows, words
) -> None:
    out = _run(tmp_path / "run", cfg, rows=rows)
    _refused(cfg, out, words)


def test_a_continuous_run_s_rows_carry_the_action_error_instead(cfg, tmp_path) -> None:
    rows = [{RETURN: 0.5, "env_steps": 100 * e, "val_action_error": 0.2, "val_action_agreement":
             None} for e in (1, 2, 3)]  # fmt: skip
    check_folder(cfg, _run(tmp_path / "run", cfg, rows=rows), frozenset({DIGEST}))


def test_a_metrics_file_that_is_not_text_is_refused(cfg, tmp_path) -> None:
    out = _run(tmp_path / "run", cfg)
    (Path(out) / "metrics.jsonl").write_bytes(b"\xff\xfe\x00 not utf-8\n")
    _refused(cfg, out, "a finished run with an unreadable metrics.jsonl")


def test_other_options_are_named_up_to_four(cfg, tmp_path) -> None:
    """Five options differ: the sentence names four, by name, each value there and here."""
    out = _run(tmp_path / "run", cfg)
    here = replace(cfg, seed=7, disc_lr=0.5, ppo_lr=0.25, gamma=0.5, ent_coef=0.125)
    with pytest.raises(UserError, match="other options") as err:
        check_folder(here, out, frozenset({DIGEST}))
    said = str(err.value)
    assert said.count(" there, ") == 4 and "\n" not in said, said
    assert f"(disc_lr {cfg.disc_lr!r} there, 0.5 here, ent_coef" in said


def test_a_run_from_before_round_seeds_is_not_taken_for_todays_seeds(cfg, tmp_path) -> None:
    """A config.json without round_seeds is a run whose rounds' environments overlapped (its
    legacy value), not one of today's disjoint seeds: reusing it would mix the two."""
    out = _run(tmp_path / "run", cfg)
    recorded = json.loads((Path(out) / "config.json").read_text())
    del recorded["round_seeds"]
    (Path(out) / "config.json").write_text(json.dumps(recorded))
    _refused(cfg, out, "other options (round_seeds 'overlapping' there, 'disjoint' here)")


def test_a_finished_run_whose_last_checkpoint_is_unreadable_is_still_reused(cfg, tmp_path) -> None:
    """Its results and metrics are what a reuse reads; nothing tells its demonstrations apart."""
    out = _run(tmp_path / "run", cfg)
    (Path(out) / "last.pt").write_bytes(b"not a checkpoint")
    check_folder(cfg, out, frozenset({DIGEST}))
