"""A run folder's ``config.json`` damaged or edited by hand: ``--resume`` and ``evaluate`` read
its values, so a value of the wrong type (``eps: "abc"``) is one sentence naming the file and the
key, and a value of the right type that an option's check refuses (``norm: "l7"``) is said to come
from the file, not from an option the user never typed; exit code 2, never a traceback. Nothing
trains: every refusal comes before the first batch."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import untrained_dro_run
from typer.testing import CliRunner

from bilevel.errors import UserError
from bilevel.recorded import blame_recorded, check_recorded
from cli import app
from problems.adversarial.dro_config import DROConfig
from problems.imitation.config import GAILConfig

runner = CliRunner()
WRONG_TYPES = [  # key, value: each crashed with a TypeError or ValueError before
    ("eps", "abc"),
    ("milestones", "1,2"),
    ("attacker_betas", 5),
    ("eval_size", "x"),
    ("attacker_width", "w"),
]


def one_sentence(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1, result.output
    for word in words:
        assert word in result.output, result.output


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES)
def test_resume_names_the_file_and_the_key_of_a_wrong_type(tmp_path: Path, key, value) -> None:
    run = untrained_dro_run(tmp_path / "run", **{key: value})
    result = runner.invoke(app, ["solve", "adversarial-dro", "--out", str(run), "--resume"])
    one_sentence(result, f"{run / 'config.json'}: {key} must be", json.dumps(value))


@pytest.mark.parametrize(("key", "value"), WRONG_TYPES)
def test_evaluate_names_the_file_and_the_key_of_a_wrong_type(tmp_path: Path, key, value) -> None:
    run = untrained_dro_run(tmp_path / "run", **{key: value})
    result = runner.invoke(app, ["evaluate", str(run), "--attacks", "fgsm", "--no-checklist"])
    one_sentence(result, f"{run / 'config.json'}: {key} must be", json.dumps(value))


# a whole number too large for a float is as unusable as NaN: it crashed with an OverflowError
NOT_FINITE = [("eps", float("nan")), ("eps", 10**400), ("attacker_betas", [0.9, -(10**400)])]


@pytest.mark.parametrize(("key", "value"), NOT_FINITE, ids=["nan", "huge", "huge-in-a-list"])
def test_evaluate_and_resume_name_the_file_and_the_key_of_a_number_no_float_holds(
    tmp_path: Path, key, value
) -> None:
    run = untrained_dro_run(tmp_path / "run", **{key: value})
    for args in (
        ["evaluate", str(run), "--attacks", "fgsm", "--no-checklist"],
        ["solve", "adversarial-dro", "--out", str(run), "--resume"],
    ):
        result = runner.invoke(app, args)
        one_sentence(result, f"{run / 'config.json'}: {key} must be", "finite", json.dumps(value))


# JSON's true is Python's True, an int: taken as a number it was silently 1 (ε = 1, the whole
# pixel range; seed 1); null is None, which only an option whose default is None may record
@pytest.mark.parametrize(
    ("key", "value", "kind"),
    [("eps", True, "a number"), ("seed", True, "a whole number"), ("seed", None, "a whole number")],
)
def test_evaluate_refuses_true_or_null_for_a_number_in_the_file(
    tmp_path: Path, key, value, kind
) -> None:
    run = untrained_dro_run(tmp_path / "run", **{key: value})
    result = runner.invoke(app, ["evaluate", str(run), "--attacks", "fgsm", "--no-checklist"])
    one_sentence(result, f"{run / 'config.json'}: {key} must be {kind}; got {json.dumps(value)}")


def test_resume_says_a_refused_value_comes_from_the_file(tmp_path: Path) -> None:
    run = untrained_dro_run(tmp_path / "run", norm="l7")
    result = runner.invoke(app, ["solve", "adversarial-dro", "--out", str(run), "--resume"])
    one_sentence(result, "'l7'", f"comes from {run / 'config.json'}, where norm is")


def test_a_refused_value_typed_on_the_command_line_is_not_blamed_on_the_file(
    tmp_path: Path,
) -> None:
    run = untrained_dro_run(tmp_path / "run", norm="l7")
    args = ["solve", "adversarial-dro", "--out", str(run), "--resume", "--norm", "l7"]
    result = runner.invoke(app, args)
    one_sentence(result, "Unknown --norm 'l7'")
    assert "config.json" not in result.output


@pytest.mark.parametrize(("key", "value"), [("norm", "l7"), ("eps", -1)])
def test_evaluate_says_a_refused_value_comes_from_the_file(tmp_path: Path, key, value) -> None:
    run = untrained_dro_run(tmp_path / "run", **{key: value})
    result = runner.invoke(app, ["evaluate", str(run), "--attacks", "fgsm", "--no-checklist"])
    one_sentence(result, f"comes from {run / 'config.json'}, where {key} is {json.dumps(value)}")


@pytest.mark.parametrize(("value", "words"), [("big", "disc_hidden must be"), (0, "where disc")])
def test_gail_resume_names_the_file_and_the_key(tmp_path: Path, value, words: str) -> None:
    run = tmp_path / "gail"
    run.mkdir()
    config = GAILConfig().resolve().to_dict() | {"disc_hidden": value}
    (run / "config.json").write_text(json.dumps(config))
    result = runner.invoke(app, ["solve", "gail", "--out", str(run), "--resume"])
    one_sentence(result, str(run / "config.json"), words)


def test_check_recorded_leaves_other_keys_to_the_caller() -> None:
    check_recorded(DROConfig, {"eps": 0.1, "not_an_option": "x"}, "config.json")
    with pytest.raises(UserError, match=r"config.json: seed must be a whole number; got 1.5"):
        check_recorded(DROConfig, {"seed": 1.5}, "config.json")


def test_blame_recorded_passes_errors_about_typed_options_unchanged() -> None:
    with pytest.raises(UserError, match=r"^--a must be at least 1; got 0\.$"):
        with blame_recorded({"b": 0}, "config.json"):
            raise UserError("--a must be at least 1; got 0.")
    with pytest.raises(UserError, match=r"^--a and --b clash\.$"):  # one of them typed
        with blame_recorded({"b": 0}, "config.json"):
            raise UserError("--a and --b clash.")
    with pytest.raises(UserError, match=r"comes from config.json, where b is 0,"):
        with blame_recorded({"b": 0}, "config.json"):
            raise UserError("--b must be at least 1; got 0.")


@pytest.mark.parametrize(
    ("recorded", "typed", "named"),
    [
        ({"norm": "l2", "eps": 1.5}, ["--norm", "linf"], "--norm typed for this resume differ"),
        ({}, ["--dataset", "cifar10"], "--dataset typed for this resume differ"),
    ],
)
def test_a_typed_option_that_clashes_with_the_recorded_ones_is_not_blamed_on_the_file(
    tmp_path: Path, recorded, typed, named
) -> None:
    """An L2 run resumed with --norm linf fails ε's check on the recorded 1.5, a digits run
    resumed with --dataset cifar10 the model's input size: the typed option, not the file, is
    the cause, and the sentence must not send the user to edit a sound config.json."""
    run = untrained_dro_run(tmp_path / "run", **recorded)
    args = ["solve", "adversarial-dro", "--out", str(run), "--resume", *typed]
    result = runner.invoke(app, args)
    one_sentence(result, named, "resume without")
    assert "fix it there" not in result.output


@pytest.mark.parametrize("typed", [["--seed", "3"], ["--seed", "3", "--eps", "0.2"]])
def test_a_bad_recorded_value_is_the_file_s_whatever_else_was_typed(tmp_path: Path, typed) -> None:
    """Any typed option that differs from the record used to blame every refusal on the mixture,
    sending the user to drop --seed for a norm the file got wrong."""
    run = untrained_dro_run(tmp_path / "run", norm="l7")
    result = runner.invoke(app, ["solve", "adversarial-dro", "--out", str(run), "--resume", *typed])
    one_sentence(result, "'l7'", f"comes from {run / 'config.json'}, where norm is")
    assert "typed for this resume differ" not in result.output


def test_an_ait_run_as_the_learned_attacker_says_it_has_none(tmp_path: Path) -> None:
    from problems.adversarial.ait_config import AITConfig

    run = untrained_dro_run(tmp_path / "run")
    ait = tmp_path / "ait"
    ait.mkdir()
    recorded = AITConfig(device="cpu", follower="ait").resolve().to_dict()
    (ait / "config.json").write_text(json.dumps(recorded))
    args = ["evaluate", str(run), "--attacks", "fgsm", "--no-checklist", "--attacker-from"]
    result = runner.invoke(app, [*args, str(ait)])
    one_sentence(result, "was trained with --follower ait, which has no learned attacker")


def _without(run: Path, key: str) -> Path:
    config = json.loads((run / "config.json").read_text())
    del config[key]
    (run / "config.json").write_text(json.dumps(config))
    return run


@pytest.mark.parametrize("key", ["eps", "eps_warmup", "follower"])
def test_resume_refuses_a_config_json_that_lost_an_option_every_run_records(
    tmp_path: Path, key: str, monkeypatch
) -> None:
    """Resumed, the lost option took today's default (ε 0.3 for a run trained at 0.1)."""
    from problems.adversarial import solve as adversarial_solve

    def built(*_: object) -> None:
        raise AssertionError("the run was built")

    monkeypatch.setattr(adversarial_solve, "_experiment", built)
    run = _without(untrained_dro_run(tmp_path / "run", eps=0.1), key)
    (run / "last.pt").write_bytes(b"")
    result = runner.invoke(app, ["solve", "adversarial-dro", "--out", str(run), "--resume"])
    one_sentence(result, str(run / "config.json"), f"lacks {key}", "edited or damaged", "--out")


def test_gail_resume_refuses_a_config_json_that_lost_an_option_every_run_records(
    tmp_path: Path, monkeypatch
) -> None:
    """Refused before the run is built (which reads or rolls out the demonstrations)."""
    from problems.imitation import solve as gail_solve

    def built(*_: object) -> None:
        raise AssertionError("the run was built")

    monkeypatch.setattr(gail_solve, "build", built)
    run = tmp_path / "gail"
    run.mkdir()
    config = GAILConfig(disc_lr=3e-3).resolve().to_dict()
    del config["disc_lr"]
    (run / "config.json").write_text(json.dumps(config))
    (run / "last.pt").write_bytes(b"")
    result = runner.invoke(app, ["solve", "gail", "--out", str(run), "--resume"])
    one_sentence(result, str(run / "config.json"), "lacks disc_lr", "edited or damaged")


def test_options_older_folders_lack_still_resume(tmp_path: Path) -> None:
    """A folder older than the options with a legacy value (or none needed) resolves as before."""
    from bilevel.recorded import resolve_resumed
    from problems.adversarial.ait_config import AITConfig
    from problems.adversarial.defaults import LEGACY_VALUES
    from problems.imitation.config import LEGACY_VALUES as GAIL_LEGACY

    no_legacy_value = {"gap_size", "unroll", "amp", "compile", "channels_last", "device"}
    old = set(LEGACY_VALUES) | no_legacy_value
    for kind in (DROConfig, AITConfig):
        full = kind(device="cpu").resolve().to_dict()
        resolve_resumed(kind(), {k: v for k, v in full.items() if k not in old}, tmp_path)
    full = GAILConfig().resolve().to_dict()
    recorded = {k: v for k, v in full.items() if k not in GAIL_LEGACY}
    resolve_resumed(GAILConfig(), recorded, tmp_path)
