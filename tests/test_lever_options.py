"""The learned follower's levers as options: their resolved values in ``config.json``, their
defaults by data set and follower, bad values (one sentence, exit 2), and resuming folders from
before a lever existed or its default changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bilevel.errors import UserError
from cli import app
from problems.adversarial.ait_config import AITConfig
from problems.adversarial.dro_config import DROConfig
from problems.adversarial.solve import warmed_up_eps


def test_resolved_levers_are_written_to_config_json(tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = ["solve", "adversarial-dro", "--train-size", "32", "--eval-size", "16", "--gap-size",
            "0", "--batch-size", "32", "--epochs", "1", "--follower", "2-step",
            "--attacker-sign-step", "0.25", "--grad-scaling", "batch", "--attacker-betas",
            "0.5,0.99", "--out", str(out)]  # fmt: skip
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    config = json.loads((out / "config.json").read_text())
    expected = {"unroll": 2, "leader_optimizer": "sgd", "schedule": "multistep", "lr": 0.05,
                "attacker_betas": [0.5, 0.99], "grad_scaling": "batch",
                "attacker_sign_step": 0.25, "attacker_random_start": True,
                "attacker_memory": "none", "attacker_init": None, "update": "fused",
                "carry_decision": True, "plain_steps": 0, "truncated_unroll": True}  # fmt: skip
    assert {k: config[k] for k in expected} == expected


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--grad-scaling", "max"], "--grad-scaling"),
        (["--attacker-memory", "lstm"], "--attacker-memory"),
        (["--leader-optimizer", "rmsprop"], "--leader-optimizer"),
        (["--schedule", "linear"], "--schedule"),
        (["--attacker-betas", "0.9"], "--attacker-betas"),
        (["--attacker-betas", "a,b"], "--attacker-betas"),
        # torch's Adam refuses β = 1 with a traceback once the run is built
        (["--attacker-betas", "0.9,1"], "--attacker-betas takes two numbers in [0, 1)"),
        # Adam reads two: a third was recorded in config.json and never used
        (["--attacker-betas", "0.9,0.99,0.5"], "--attacker-betas takes two numbers in [0, 1)"),
        (["--attacker-sign-step", "-1"], "--attacker-sign-step"),
        (["--unroll", "0"], "--unroll"),
        (["--attacker-init", "/nonexistent/run"], "--attacker-init"),
        (["--gap-size", "-1"], "--gap-size"),
        (["--plain-steps", "2"], "--plain-steps"),
        (["--plain-steps", "-1"], "--plain-steps"),
        (["--plain-steps", "1", "--attacker-sign-step", "0"], "--plain-steps"),
        (["--plain-steps", "1", "--follower", "pgm"], "--plain-steps"),
        (["--truncated-unroll", "--plain-steps", "1"], "--truncated-unroll"),  # one g_φ call
        (["--truncated-unroll", "--follower", "pgm"], "--truncated-unroll"),
    ],
)
def test_a_bad_lever_is_one_sentence_and_exit_2(tmp_path: Path, args, words) -> None:
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["solve", "adversarial-dro", "--out", str(out), *args])
    assert result.exit_code == 2
    assert words in result.output and "Traceback" not in result.output
    assert not out.exists()


def test_a_run_folder_from_before_the_levers_resumes(tmp_path: Path) -> None:
    out = tmp_path / "old"
    args = ["solve", "adversarial-dro", "--train-size", "32", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "2", "--follower", "grad", "--out", str(out)]  # fmt: skip
    first = CliRunner().invoke(app, [*args, "--interrupt-after-epoch", "1"])
    assert first.exit_code == 0, first.output
    config = json.loads((out / "config.json").read_text())
    newer = ("leader_optimizer", "schedule", "attacker_betas", "unroll", "grad_scaling",
             "attacker_random_start", "attacker_memory", "attacker_sign_step", "attacker_init",
             "gap_size")  # fmt: skip
    (out / "config.json").write_text(
        json.dumps({k: v for k, v in config.items() if k not in newer})
    )
    resumed = CliRunner().invoke(app, [*args, "--resume"])
    assert resumed.exit_code == 0, resumed.output
    changed = CliRunner().invoke(app, [*args, "--resume", "--leader-optimizer", "adam"])
    assert changed.exit_code == 2 and "leader_optimizer" in changed.output
    # the missing keys are the values the old run trained with (no sign step), not today's
    # defaults (0.625): typing today's default is another configuration, typing the old one is not
    today = CliRunner().invoke(app, [*args, "--resume", "--attacker-sign-step", "0.625"])
    assert today.exit_code == 2 and "attacker_sign_step" in today.output
    legacy = CliRunner().invoke(app, [*args, "--resume", "--attacker-sign-step", "0"])
    assert legacy.exit_code == 0, legacy.output


def _levers(cfg: DROConfig | AITConfig) -> tuple:
    cfg.resolve()
    levers = cfg.update, cfg.attacker_random_start, cfg.attacker_sign_step, cfg.carry_decision
    return (*levers, cfg.plain_steps, cfg.truncated_unroll)


def test_the_data_set_defaults_of_the_levers_apply_to_learned_followers_only() -> None:
    assert _levers(DROConfig(follower="2-step")) == ("fused", True, 0.625, True, 0, True)
    hand_designed = ("alternating", False, 0.0, False, 0, False)
    assert _levers(DROConfig(follower="pgm")) == hand_designed
    assert _levers(DROConfig(follower="fgsm")) == hand_designed
    paper = hand_designed  # CIFAR: the paper's follower, afresh
    assert _levers(DROConfig(follower="2-step", dataset="cifar10")) == paper
    # AIT starts uniformly in the ball whatever is asked (AIT.init_follower): recorded as such
    assert _levers(AITConfig(follower="2-step")) == ("follower-first", True, *hand_designed[2:])
    # the truncation gives way where one g_φ call is all there is: one step, or a plain step
    assert _levers(DROConfig(follower="grad"))[5] is False
    assert _levers(DROConfig(follower="2-step", plain_steps=1))[5] is False
    assert _levers(DROConfig(follower="2-step", unroll=3, plain_steps=1))[5] is True
    # an asked augmentation turns the carry default off; an asked carry refuses it
    assert _levers(DROConfig(follower="2-step", augment="crop-flip"))[3] is False
    with pytest.raises(UserError, match="--augment none"):
        DROConfig(follower="2-step", augment="crop-flip", carry_decision=True).resolve()


def test_resume_keeps_the_recorded_value_of_an_option_whose_default_changed(tmp_path: Path) -> None:
    out = tmp_path / "paper"
    args = ["solve", "adversarial-dro", "--train-size", "32", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "2", "--gap-size", "0", "--follower", "2-step", "--out", str(out)]  # fmt: skip
    paper = ["--update", "alternating", "--attacker-sign-step", "0", "--no-attacker-random-start"]
    first = CliRunner().invoke(app, [*args, *paper, "--interrupt-after-epoch", "1"])
    assert first.exit_code == 0, first.output
    resumed = CliRunner().invoke(app, [*args, "--resume"])  # the levers left to their defaults
    assert resumed.exit_code == 0, resumed.output
    config = json.loads((out / "config.json").read_text())
    assert (config["update"], config["attacker_sign_step"]) == ("alternating", 0.0)
    clash = CliRunner().invoke(app, [*args, "--resume", "--attacker-sign-step", "0.5"])
    assert clash.exit_code == 2 and "attacker_sign_step" in clash.output


def test_the_batch_size_default_is_64_for_dro_on_mnist5k_and_128_elsewhere() -> None:
    assert DROConfig(follower="pgm").resolve().batch_size == 64  # the study's choice, every method
    assert DROConfig(follower="2-step").resolve().batch_size == 64
    assert DROConfig(follower="2-step", dataset="cifar10").resolve().batch_size == 128
    assert AITConfig().resolve().batch_size == 128  # bench ait's figures were measured at 128
    assert DROConfig(batch_size=32).resolve().batch_size == 32
    with pytest.raises(UserError, match="--batch-size"):
        DROConfig(batch_size=0).resolve()


def test_resuming_a_default_l2l_run_as_pgm_is_refused_as_another_configuration(
    tmp_path: Path,
) -> None:
    """The learned follower's levers (fused, truncated unroll) are not inherited by PGM on
    --resume, where they would not fit it: the refusal names the real cause."""
    out = tmp_path / "l2l"
    args = ["solve", "adversarial-dro", "--train-size", "32", "--eval-size", "16", "--batch-size",
            "32", "--epochs", "2", "--gap-size", "0", "--out", str(out)]  # fmt: skip
    first = CliRunner().invoke(app, [*args, "--interrupt-after-epoch", "1"])
    assert first.exit_code == 0, first.output
    assert json.loads((out / "config.json").read_text())["truncated_unroll"] is True
    resumed = CliRunner().invoke(app, [*args, "--follower", "pgm", "--resume"])
    assert resumed.exit_code == 2 and "another configuration" in resumed.output


def test_the_eps_warmup_ramps_per_batch_from_eps_over_n_to_eps_then_holds_eps() -> None:
    """--eps-warmup W with P batches an epoch: batch k (1-based, counted over the epochs) trains at
    ε·k/(W·P); the first at ε/(W·P), not 0; the last batch of epoch W at ε exactly; then ε."""
    eps, warmup, per_epoch = 0.3, 2, 4
    ramp = [warmed_up_eps(eps, warmup, e, i, per_epoch) for e in (1, 2) for i in range(per_epoch)]
    assert ramp == pytest.approx([eps * k / (warmup * per_epoch) for k in range(1, 9)], rel=1e-12)
    assert ramp[0] == pytest.approx(eps / 8) and ramp[-1] == eps
    after = [warmed_up_eps(eps, warmup, e, i, per_epoch) for e in (3, 4) for i in range(per_epoch)]
    assert after == [eps] * 8  # held at ε, never past it
    assert warmed_up_eps(eps, 0, 1, 0, per_epoch) == eps  # no warm-up: ε from the first batch


def test_the_eps_warmup_defaults_to_a_third_of_the_epochs_on_mnist5k_and_to_none_on_cifar() -> None:
    assert DROConfig(epochs=6).resolve().eps_warmup == 2
    assert DROConfig(epochs=8).resolve().eps_warmup == 2  # rounded down
    assert AITConfig(epochs=9).resolve().eps_warmup == 3
    assert DROConfig(epochs=6, dataset="cifar10").resolve().eps_warmup == 0
    assert DROConfig(epochs=6, eps_warmup=5).resolve().eps_warmup == 5  # an asked value is kept
