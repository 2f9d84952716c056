"""What a resume compares with its folder's ``config.json`` and whom a refusal blames
(``bilevel.recorded``): the options that must match (an option newer than the folder by its
legacy value, a path to read data from and the device not at all), which lost keys a refusal
lists, and the sentence a refusal of a value from the file, or of a mixture of typed and recorded
options, ends with. Nothing trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import untrained_dro_run
from typer.testing import CliRunner

from bilevel.errors import UserError
from bilevel.recorded import blame_recorded, check_recorded, resolve_resumed
from bilevel.run import RunDir
from cli import app
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.dro_config import DROConfig

runner = CliRunner()


def _resume(folder: Path, recorded: dict, config: dict, legacy: dict | None = None) -> None:
    """``RunDir.prepare`` of a resume of a folder (with a last.pt) that recorded ``recorded``."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(recorded))
    (folder / "last.pt").write_bytes(b"")
    run = RunDir(folder)
    run.prepare(config, resume=True, legacy=legacy)
    run.release()


def test_a_resume_with_another_value_of_an_option_is_refused_naming_it(tmp_path: Path) -> None:
    recorded = {"seed": 0, "eps": 0.3, "lr": 0.1}
    _resume(tmp_path / "same", recorded, dict(recorded))
    with pytest.raises(UserError) as err:
        _resume(tmp_path / "other", recorded, recorded | {"lr": 0.2, "seed": 1})
    assert "trained with another configuration (lr (0.1 vs 0.2), seed (0 vs 1))" in str(err.value)


@pytest.mark.parametrize("key", ["out", "resume", "device", "data_dir", "cache_dir"])
def test_where_a_run_is_written_or_read_from_or_computed_may_differ_on_resume(
    tmp_path: Path, key: str
) -> None:
    """The same run seen from another working folder, moved, or resumed on another device."""
    _resume(tmp_path / "run", {"seed": 0, key: "recorded"}, {"seed": 0, key: "typed"})


def test_an_option_newer_than_the_folder_is_compared_by_its_legacy_value(tmp_path: Path) -> None:
    """The folder lacks ``new``: it ran as the legacy value 0 says, and a value the folder
    records beats the legacy one; a legacy option the command does not have is not compared."""
    legacy = {"new": 0, "gone": 5}
    _resume(tmp_path / "legacy", {"seed": 0}, {"seed": 0, "new": 0}, legacy)
    _resume(tmp_path / "recorded", {"seed": 0, "new": 1}, {"seed": 0, "new": 1}, legacy)
    with pytest.raises(UserError, match=r"another configuration \(new \(0 vs 1\)\)"):
        _resume(tmp_path / "changed", {"seed": 0}, {"seed": 0, "new": 1}, legacy)


def _lacking(tmp_path: Path, *keys: str) -> str:
    recorded = DROConfig(device="cpu", follower="pgm").resolve().to_dict()
    with pytest.raises(UserError) as err:
        resolve_resumed(DROConfig(), {k: v for k, v in recorded.items() if k not in keys}, tmp_path)
    return str(err.value)


def test_a_config_json_that_lost_options_names_three_of_them_then_dots(tmp_path: Path) -> None:
    three = _lacking(tmp_path, "seed", "eps", "follower")
    assert "lacks follower, eps, seed, which every run records" in three  # the fields' order
    four = _lacking(tmp_path, "seed", "eps", "follower", "batch_size")
    assert "lacks follower, eps, batch_size, ..., which every run records" in four


def test_a_value_of_an_ait_option_in_an_evaluated_folder_has_its_type_checked() -> None:
    """``evaluate`` reads a folder of either kind: eps_y is AIT's alone."""
    with pytest.raises(UserError, match=r"^config.json: eps_y must be a number; got \"x\""):
        check_recorded((DROConfig, AITConfig), {"eps_y": "x"}, "config.json")


def test_a_typed_option_the_folder_never_recorded_is_not_called_a_difference(
    tmp_path: Path,
) -> None:
    """A folder from before --attacker-sign-step resumed with a bad one: the value is the typed
    one's fault, not a clash with what the file records (it records none)."""
    recorded = DROConfig(device="cpu", follower="grad").resolve().to_dict()
    del recorded["attacker_sign_step"]
    cfg = DROConfig(follower="grad", attacker_sign_step=-1.0)
    cfg.given = frozenset({"attacker_sign_step"})
    with pytest.raises(UserError, match=r"^--attacker-sign-step must be >= 0; got -1\.0\.$"):
        resolve_resumed(cfg, recorded, tmp_path / "config.json")


def test_the_file_is_blamed_for_the_first_option_a_sentence_names_without_a_double_stop() -> None:
    with pytest.raises(UserError) as err:
        with blame_recorded({"a": 1, "b": 2}, "config.json", "fix it there"):
            raise UserError("--a and --b clash.")
    assert str(err.value) == (
        "--a and --b clash; that value comes from config.json, where a is 1, not from the "
        "command line, so fix it there."
    )


def test_a_refusal_naming_no_option_during_a_changed_resume_is_the_mixtures() -> None:
    with pytest.raises(UserError, match=r"^The model is too wide; --seed typed for this resume"):
        with blame_recorded({}, "config.json", changed=["seed"]):
            raise UserError("The model is too wide.")


def test_evaluate_sends_the_user_to_the_file_not_to_a_new_run(tmp_path: Path) -> None:
    """``evaluate`` trains nothing: "start the run anew" (the resume's remedy) is no advice."""
    run = untrained_dro_run(tmp_path / "run", norm="l7")
    result = runner.invoke(app, ["evaluate", str(run), "--attacks", "fgsm", "--no-checklist"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().endswith("not from the command line, so fix it there.")
    resumed = runner.invoke(app, ["solve", "adversarial-dro", "--out", str(run), "--resume"])
    assert resumed.output.strip().endswith("so fix it there or start the run anew.")
