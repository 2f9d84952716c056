"""``--levers`` of ``bench ait`` and ``bench speed``, and the benches' other options: a lever of
what the command sets itself for every row is refused (it would train a row other than its label
and folder say, or be ignored), and every option and lever is checked before anything trains or
is built, whatever ``--methods`` names. Training and building are stubbed out: reaching them
fails the test."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from problems.adversarial import bench, speed

runner = CliRunner()


def _no_training(*_: object, **__: object) -> None:
    raise AssertionError("the bench trained or built a run it should have refused")


@pytest.fixture(autouse=True)
def nothing_trains(monkeypatch) -> None:
    monkeypatch.setattr(bench, "train", _no_training)
    monkeypatch.setattr(speed, "build_model", _no_training)


def _bench_ait(tmp_path: Path, *args: str):
    return runner.invoke(app, ["bench", "ait", "--out", str(tmp_path / "runs"), *args])


def _bench_speed(*args: str):
    return runner.invoke(app, ["bench", "speed", "--model", "small-cnn", *args])


def _refused(result, words: str) -> None:
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "lever",
    [
        '{"seed": 4}',  # was trained into the folder seed-0
        '{"follower": "ait"}',  # was AIT trained under the label "L2L-AIT (grad)"
        '{"ait_direction": "away"}',
        '{"epochs": 3}',
        '{"eval_size": 10}',
        '{"dataset": "cifar10"}',
        '{"model": "trades-cnn"}',
        '{"device": "cpu"}',
        # the problem itself: the AIT rows would solve another one than the L2L rows
        '{"eps_y": 0.0}',
        '{"pairing": "permutation"}',
        '{"eps_warmup": 0}',
    ],
)
def test_bench_ait_refuses_a_lever_of_what_it_sets_for_every_row(lever, tmp_path) -> None:
    result = _bench_ait(tmp_path, "--methods", "grad", "--levers", lever)
    _refused(result, "cannot be set by a lever: bench ait sets them itself")
    assert not (tmp_path / "runs").exists()


def test_bench_ait_refuses_a_start_its_rows_would_ignore(tmp_path) -> None:
    """AIT starts δ uniformly in the ball whatever is asked: a lever saying otherwise was recorded
    false and ignored, as a typed --no-attacker-random-start was."""
    result = _bench_ait(
        tmp_path, "--methods", "grad", "--levers", '{"attacker_random_start": false}'
    )
    _refused(result, "AIT always starts δ uniformly in the ε-ball")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize(
    "lever",
    [
        '{"model": "wrn-34-10"}',  # was ignored: --model's network was timed
        '{"device": "cuda"}',  # was ignored: --device's
        '{"batch_size": 8}',  # was ignored: --batch-size's
        '{"attacker": "cnn"}',  # would time another attacker than the table's title names
        '{"update": "alternating"}',  # the method's name says its update
        '{"epochs": 3}',  # a timed step has no epochs
    ],
)
def test_bench_speed_refuses_a_lever_it_sets_itself_or_does_not_use(lever) -> None:
    result = _bench_speed("--methods", "grad-fused", "--levers", lever)
    _refused(result, "cannot be set by a lever: bench speed sets them itself")
    assert "its levers are attacker_lr" in result.output


def test_the_levers_of_the_scripts_are_still_levers() -> None:
    """The levers benchmarks/gpu_*.sh and the README pass reach the learned followers."""
    cfg = speed.SpeedConfig(methods=("2-step-fused",), levers=speed.mnist5k_step_levers())
    options = speed.step_options("2-step-fused", cfg)
    assert options.attacker_sign_step == 0.625 and options.truncated_unroll


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--methods", "none", "--update", "foo"], "Unknown --update 'foo'"),  # was exit 0
        (["--methods", "none,pgm", "--update", "fused"], "--update sets the update mode of"),
    ],
)
def test_bench_dro_checks_update_whatever_the_methods(args, words, tmp_path) -> None:
    result = runner.invoke(app, ["bench", "dro", "--out", str(tmp_path / "runs"), *args])
    _refused(result, words)


@pytest.mark.parametrize(
    "option",
    [["--update", "fused"], ["--methods", "bogus"], ["--epochs", "99"], ["--train-size", "7"],
     ["--eval-size", "5"]],
)  # fmt: skip
def test_bench_dro_refuses_what_a_grid_sets_beside_the_grid(option, tmp_path) -> None:
    """Each would be ignored: the grid's entries set them."""
    grid = tmp_path / "g.json"
    grid.write_text('{"configs": {"x": {"follower": "grad"}}, "references": []}')
    args = ["bench", "dro", "--grid", str(grid), *option, "--out", str(tmp_path / "r")]
    _refused(runner.invoke(app, args), f"{option[0]} apply without --grid; a grid sets them")


@pytest.mark.parametrize(
    ("lever", "words"),
    [
        ('{"attacker_sign_step": NaN}', "attacker_sign_step must be a finite number; got NaN"),
        (
            '{"attacker_betas": [0.5, Infinity]}',
            "attacker_betas must be finite numbers; got [0.5, Infinity]",
        ),
        # too large for a float: an OverflowError where the first row used it
        (f'{{"attacker_sign_step": {10**400}}}', "attacker_sign_step must be a finite number"),
        ('{"attacker_sign_step": 0.5}', "--levers shape the learned followers only"),
    ],
)
def test_levers_are_checked_whatever_the_methods(lever, words, tmp_path) -> None:
    """Python's JSON reads NaN, and with AIT or plain alone no row ever resolved the levers."""
    _refused(_bench_ait(tmp_path, "--methods", "ait", "--levers", lever), words)
    _refused(_bench_speed("--methods", "plain,pgm-10", "--levers", lever), words)


@pytest.mark.parametrize(
    ("lever", "words"),
    [
        ('{"attacker_sign_step": -1}', "--levers: attacker_sign_step must be >= 0; got -1"),
        ('{"attacker_lr": 0}', "--levers: attacker_lr must be positive"),
    ],
)
def test_a_lever_a_row_refuses_is_named_as_written(lever, words, tmp_path) -> None:
    """Neither bench has an --attacker-sign-step: the sentence names the lever as given."""
    _refused(_bench_ait(tmp_path, "--methods", "ait,grad", "--levers", lever), words)
    _refused(_bench_speed("--methods", "grad-fused", "--levers", lever), words)


def test_a_bench_option_s_refusal_is_not_blamed_on_the_levers(tmp_path) -> None:
    result = _bench_ait(
        tmp_path, "--methods", "grad", "--train-size", "0", "--levers", '{"lr": 0.1}'
    )
    _refused(result, "--train-size must be at least 1")
    assert "--levers" not in result.output


def test_bench_speed_checks_every_method_before_it_builds_one() -> None:
    result = _bench_speed(
        "--methods", "plain,2-step-fused", "--levers", '{"attacker_betas": [2, 3]}'
    )
    _refused(result, "--levers: attacker_betas takes two numbers in [0, 1)")
