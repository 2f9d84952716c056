"""An option the chosen follower or leader optimizer does not read is refused when it is typed
(it was ignored and recorded in config.json as if used), in one sentence with exit code 2; left
unset, typed "off", forwarded by a bench or a grid's base, or taken from a run folder on
--resume, it passes. Nothing trains here: the run's build is stubbed out, and reaching it means
the options were accepted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import ROOT
from typer.testing import CliRunner

from bilevel.errors import UserError
from cli import app
from problems.adversarial import solve as adversarial_solve
from problems.adversarial.study import load_grid
from problems.imitation import solve as gail_solve

runner = CliRunner()


class Accepted(Exception):
    """Raised where the run would be built: every option passed its checks."""


def _accepted(*_: object, **__: object) -> None:
    raise Accepted


@pytest.fixture(autouse=True)
def nothing_trains(monkeypatch) -> None:
    monkeypatch.setattr(adversarial_solve, "_experiment", _accepted)
    monkeypatch.setattr(gail_solve, "build", _accepted)


def _solve(command: str, tmp_path: Path, *args: str):
    return runner.invoke(app, ["solve", command, "--out", str(tmp_path / "run"), *args])


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (
            ["--follower", "fgsm", "--attacker-sign-step", "0.5"],
            "--attacker-sign-step is an option",
        ),
        (["--follower", "pgm", "--unroll", "3"], "--unroll is an option of the learned"),
        (["--follower", "pgm", "--attacker-memory", "delta"], "--attacker-memory is an option"),
        (["--follower", "none", "--attacker", "cnn"], "--follower none would ignore it"),
        (["--follower", "pgm", "--attacker-random-start"], "--attacker-random-start is an"),
        (["--follower", "pgm", "--attacker-lr", "0.01"], "--attacker-lr is an option"),
        (["--follower", "fgsm", "--follower-steps", "2"], "--follower-steps is an option"),
        # no φ to step: the order was recorded in config.json and never read
        (["--follower", "pgm", "--update", "follower-first"], "--update is an option of the"),
        (["--follower", "none", "--update", "follower-first"], "--follower none would ignore it"),
        (["--follower", "2-step", "--pgm-steps", "5"], "--pgm-steps is PGM-k's"),
        (["--follower", "fgsm", "--pgm-step-size", "0.1"], "--pgm-step-size is PGM-k's"),
        (["--leader-optimizer", "adam", "--momentum", "0.5"], "--momentum is the leader's SGD's"),
        (["--momentum", "5"], "--momentum must be in [0, 1); got 5.0."),
        (["--momentum", "1"], "--momentum must be in [0, 1)"),
        (["--follower", "none", "--ascent-loss", "margin"], "--ascent-loss shapes the follower"),
        (["--follower", "none", "--carry-decision"], "--follower none trains on clean inputs"),
        (["--follower", "none", "--eps-warmup", "3"], "--eps-warmup shapes the follower"),
        (["--schedule", "cosine", "--milestones", "3"], "--schedule cosine would ignore them"),
        (["--schedule", "constant", "--milestones", "3"], "--milestones are the multistep"),
    ],
)
def test_dro_refuses_a_typed_option_its_follower_or_optimizer_does_not_read(
    args, words, tmp_path
) -> None:
    result = _solve("adversarial-dro", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("option", [["--attacker-width", "0.5"], ["--update", "alternating"]])
def test_ait_net_refuses_a_learned_followers_option(option, tmp_path) -> None:
    result = _solve("adversarial-ait", tmp_path, "--follower", "ait", *option)
    assert result.exit_code == 2 and "--follower ait would ignore it" in result.output


@pytest.mark.parametrize("option", [["--pgm-steps", "5"], ["--pgm-step-size", "0.1"]])
def test_ait_leaves_pgm_k_out_of_its_help_and_refuses_it_typed(option, tmp_path) -> None:
    """No AIT follower is PGM-k: its help does not offer PGM-k's options, and one typed anyway
    is one sentence, not recorded as if used."""
    help_text = runner.invoke(app, ["solve", "adversarial-ait", "--help"]).output
    assert option[0] not in help_text and "--eps-y" in help_text
    result = _solve("adversarial-ait", tmp_path, "--follower", "grad", *option)
    assert result.exit_code == 2 and f"{option[0]} is PGM-k's" in result.output


@pytest.mark.parametrize("update", [[], ["--update", "follower-first"]])
def test_ait_net_passes_the_update_it_records_anyway(update, tmp_path) -> None:
    """AIT's default, follower-first, is what the AIT Net records unasked."""
    result = _solve("adversarial-ait", tmp_path, "--follower", "ait", *update)
    assert isinstance(result.exception, Accepted), result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--follower", "pgm"],  # every learned option left unset: filled as before
        # typed "off": what a hand-designed follower does anyway (tests/test_cli_dro.py's SMALL)
        ["--follower", "pgm", "--attacker-sign-step", "0", "--no-attacker-random-start"],
        ["--follower", "fgsm", "--attacker-memory", "none", "--update", "alternating"],
        ["--follower", "pgm", "--pgm-steps", "5", "--momentum", "0"],
        ["--follower", "2-step", "--unroll", "3", "--attacker", "cnn", "--momentum", "0.5"],
        ["--leader-optimizer", "adam"],
        ["--follower", "none", "--ascent-loss", "ce", "--eps-warmup", "0"],  # typed "off"
        ["--follower", "pgm", "--ascent-loss", "margin", "--carry-decision"],
        ["--schedule", "multistep", "--milestones", "3"],
    ],
)
def test_options_a_run_reads_or_leaves_unset_still_pass(args, tmp_path) -> None:
    result = _solve("adversarial-dro", tmp_path, *args)
    assert isinstance(result.exception, Accepted), result.output


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--follower", "adam", "--lstm-steps", "3"], "--lstm-steps is an option of the l2l"),
        (["--follower", "adam", "--meta-objective", "q"], "--meta-objective is an option"),
        (["--follower", "adam", "--meta-steps", "2"], "--follower adam would ignore it"),
        (["--follower", "l2l", "--oneshot-step", "0.01"], "--oneshot-step is an option of the"),
        (["--follower", "oneshot", "--lstm-hidden", "8"], "--follower oneshot would ignore it"),
        (
            ["--follower", "l2l", "--meta-objective", "q", "--target-accuracy", "0.7"],
            "objective q would",
        ),
        (["--follower", "l2l", "--meta-objective", "q", "--meta-penalty", "1"], "--meta-penalty"),
        (
            ["--follower", "l2l", "--lstm-steps", "2", "--disc-steps", "7"],
            "--disc-steps is read by --follower l2l only as the default of --lstm-steps",
        ),
        (
            ["--follower", "oneshot", "--oneshot-step", "0.001", "--disc-lr", "0.5"],
            "--disc-lr is read by --follower oneshot only as the default of --oneshot-step",
        ),
    ],
)
def test_gail_refuses_a_typed_option_its_follower_does_not_read(args, words, tmp_path) -> None:
    result = _solve("gail", tmp_path, *args)
    assert result.exit_code == 2, result.output
    assert words in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "args",
    [
        ["--follower", "adam", "--disc-steps", "5", "--disc-lr", "3e-3"],
        ["--follower", "l2l", "--lstm-steps", "2", "--meta-objective", "q"],
        ["--follower", "oneshot", "--oneshot-step", "0.01", "--target-accuracy", "0.7"],
        ["--follower", "l2l", "--disc-steps", "7", "--disc-lr", "3e-3"],  # K = 7; the LSTM's lr
        ["--follower", "oneshot", "--disc-lr", "0.5"],  # η = 0.5
    ],
)
def test_gail_options_its_follower_reads_pass(args, tmp_path) -> None:
    result = _solve("gail", tmp_path, *args)
    assert isinstance(result.exception, Accepted), result.output


def _grid(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "grid.json"
    path.write_text(json.dumps(data))
    return path


def test_a_grid_entry_of_a_hand_designed_follower_may_not_set_a_learned_option(tmp_path) -> None:
    entry = {"follower": "pgm", "attacker_sign_step": 0.5}
    # named as the grid writes it: bench l2l has no --attacker-sign-step flag
    with pytest.raises(UserError, match="entry 'x': attacker_sign_step is an option"):
        load_grid(_grid(tmp_path, {"configs": {"x": entry}, "references": []}))


def test_a_grid_base_reaches_the_references_as_before(tmp_path) -> None:
    """The base is every entry's, references too: a learned option there is not refused."""
    base = {"attacker_width": 0.125, "attacker_sign_step": 0.5, "attacker_memory": "delta"}
    grid = {"base": base, "configs": {"x": {"follower": "grad"}}, "references": ["fgsm", "pgm-3"]}
    assert list(load_grid(_grid(tmp_path, grid)).entries()) == ["fgsm", "pgm-3", "x"]


def test_every_grid_of_the_study_still_loads(tmp_path, monkeypatch) -> None:
    """load_grid resolves every entry of every grid in benchmarks/l2l, references included."""
    monkeypatch.chdir(tmp_path)  # screen7 warm-starts φ from a run of the study: a stand-in
    warm = tmp_path / "runs/l2l-final/default_batch_64/seed-0"
    warm.mkdir(parents=True)
    (warm / "last.pt").write_bytes(b"")
    grids = sorted((ROOT / "benchmarks/l2l").glob("*.json"))
    assert len(grids) > 50
    for path in grids:
        load_grid(path)


def test_a_gail_stability_override_its_follower_does_not_read_is_refused() -> None:
    from problems.imitation.config import GAILConfig
    from problems.imitation.variants import parse_variant

    # named as typed in gail-stability's --followers, not as solve gail's --lstm-steps
    with pytest.raises(UserError, match="'lstm_steps=3' in --followers sets an option the adam"):
        parse_variant("adam:lstm_steps=3", GAILConfig())
    with pytest.raises(UserError, match="'disc_steps=7' in --followers sets an option the l2l"):
        parse_variant("l2l:lstm_steps=2:disc_steps=7", GAILConfig())
    with pytest.raises(
        UserError, match="'disc_lr=0.5' in --followers sets an option the oneshot run"
    ):
        parse_variant("oneshot:oneshot_step=0.001:disc_lr=0.5", GAILConfig())
    label, _, cfg = parse_variant("l2l:meta_objective=q:trust_radius=0", GAILConfig())
    assert cfg.meta_objective == "q" and label == "L2L-GAIL, meta_objective=q, trust_radius=0"


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("adam:disc_steps=1:disc_steps=5", "sets disc_steps a second time"),
        ("adam:follower=l2l", "sets follower that the adam preset sets"),
        ("adam-1step:disc_steps=3", "sets disc_steps that the adam-1step preset sets"),
    ],
)
def test_a_gail_stability_variant_that_would_be_misnamed_is_refused(spec, words) -> None:
    """The table labels a run by its preset and overrides: a key given twice (the last won) or
    one the preset sets (adam:follower=l2l ran L2L-GAIL labelled GAIL) would misname it."""
    from problems.imitation.config import GAILConfig
    from problems.imitation.variants import parse_variant

    with pytest.raises(UserError, match=words):
        parse_variant(spec, GAILConfig())


@pytest.mark.parametrize(
    ("follower", "typed"),
    [("l2l", ["--disc-steps", "3"]), ("oneshot", ["--disc-lr", "0.001"])],
)
def test_a_gail_resume_may_restate_the_default_only_option(follower, typed, tmp_path) -> None:
    """On --resume, --lstm-steps / --oneshot-step hold the folder's values, not typed ones: the
    option they default to, typed with its recorded value, is not blamed on them."""
    from problems.imitation.config import GAILConfig

    run = tmp_path / "run"
    run.mkdir()
    recorded = GAILConfig(follower=follower).resolve().to_dict()
    (run / "config.json").write_text(json.dumps(recorded))
    (run / "last.pt").write_bytes(b"")
    result = _solve("gail", tmp_path, "--resume", *typed)
    assert isinstance(result.exception, Accepted), result.output
