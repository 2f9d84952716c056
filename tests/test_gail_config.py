"""GAILConfig.resolve: each limit's boundary, and the defaults that follow the env and follower."""

from __future__ import annotations

import pytest

from bilevel.errors import UserError
from problems.imitation.config import GAILConfig

CARTPOLE = dict(env="CartPole-v1", steps=2_000)


def resolve(**options) -> GAILConfig:
    return GAILConfig(**CARTPOLE | options, cache_dir="unused").resolve()


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (dict(n_envs=257, n_steps=16), "--n-envs must be at most 256"),
        (dict(n_envs=4, n_steps=250_001), "--n-steps × --n-envs, at most 1,000,000 steps"),
        (dict(disc_hidden=4_097), "--disc-hidden must be at most 4,096"),
        (dict(target_accuracy=0.49), "--target-accuracy must be in [0.5, 1]; got 0.49."),
        (dict(target_accuracy=1.01), "--target-accuracy must be in [0.5, 1]; got 1.01."),
        (dict(gamma=0.0), "--gamma must be in (0, 1] and --gae-lambda in [0, 1]."),
        (dict(gae_lambda=1.01), "--gamma must be in (0, 1] and --gae-lambda in [0, 1]."),
        (dict(meta_penalty=-1.0), "--meta-penalty and --trust-radius must be at least 0."),
        (dict(follower="l2l", residual_scale=-1e-3), "--residual-scale must be positive"),
        (dict(rounds_per_epoch=0), "--rounds-per-epoch must be at least 1"),
    ],
)
def test_a_value_past_a_limit_is_refused_in_one_sentence(options: dict, words: str) -> None:
    with pytest.raises(UserError) as error:
        resolve(**options)
    assert words in str(error.value)


@pytest.mark.parametrize(
    "options",
    [
        dict(n_envs=256, n_steps=16),  # the most environments
        dict(n_envs=4, n_steps=250_000),  # a round of exactly 1,000,000 steps
        dict(disc_hidden=4_096),
        dict(n_envs=2, n_steps=1),  # 2 steps a round: the size PPO needs is the round's
        dict(target_accuracy=0.5),  # chance: the least a* the target objective may ask
        dict(target_accuracy=1.0),
        dict(gamma=1.0, gae_lambda=0.0),
        dict(gae_lambda=1.0),
    ],
)
def test_a_value_at_a_limit_is_accepted(options: dict) -> None:
    resolve(**options)


def test_the_learned_followers_defaults_are_the_adam_followers_step_and_steps() -> None:
    """K = --disc-steps (L2L-GAIL at φ₀ is GAIL), s = the Adam step size, and a trust region of
    0.05 for the one-shot follower only; its step η = --disc-lr, and s = η."""
    l2l = resolve(follower="l2l", disc_steps=5, disc_lr=2e-3)
    assert (l2l.lstm_steps, l2l.residual_scale, l2l.trust_radius) == (5, 2e-3, 0.0)
    assert resolve(follower="adam").trust_radius == 0.0
    oneshot = resolve(follower="oneshot", disc_lr=2e-3)
    assert (oneshot.oneshot_step, oneshot.residual_scale, oneshot.trust_radius) == (
        2e-3,
        2e-3,
        0.05,
    )
    assert resolve(follower="oneshot", oneshot_step=0.01).residual_scale == 0.01


def test_pendulum_takes_the_rl_zoo_discount_and_other_envs_the_generic_one() -> None:
    assert GAILConfig(env="Pendulum-v1", cache_dir="unused").resolve().gamma == 0.9
    assert resolve().gamma == 0.99


def test_the_epochs_cover_the_steps_rounded_up() -> None:
    """3 rounds of 300 steps do not cover 1,000 steps; 4 do."""
    assert resolve(steps=1_000, n_envs=1, n_steps=300).epochs == 4
    assert resolve(steps=1_000, n_envs=1, n_steps=250, rounds_per_epoch=2).epochs == 2
