"""Scripted experts reach their stated returns in real rollouts on gymnasium 1.4, and
demonstrations are cached as ``.npz`` on first use and read back afterwards."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import problems.imitation.demonstrations as demonstrations
from bilevel.errors import UserError
from problems.imitation.demonstrations import demo_path, load_demonstrations, save_rollout
from problems.imitation.experts import SCRIPTED, Rollout, random_policy, rollout
from problems.imitation.ppo_expert import ppo_expert_path, train_expert
from problems.imitation.solve import VAL_SEED, evaluate, expert_reference

# env -> (episodes, lowest acceptable mean return, highest acceptable mean return)
STATED = {
    "CartPole-v1": (3, 500.0, 500.0),  # 500 ± 0
    "Pendulum-v1": (30, -175.0, -135.0),  # about −154
    "Acrobot-v1": (10, -110.0, -65.0),  # about −84
    "MountainCarContinuous-v0": (3, 85.0, 95.0),  # about 89
}


@pytest.mark.parametrize("env_id", sorted(STATED))
def test_scripted_expert_reaches_its_stated_return(env_id: str) -> None:
    episodes, low, high = STATED[env_id]
    returns = rollout(env_id, SCRIPTED[env_id], episodes, seed=1000).episode_returns
    assert len(returns) == episodes
    assert low <= returns.mean() <= high, returns


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Pendulum-v1"])
def test_expert_beats_random_by_far(env_id: str) -> None:
    expert = rollout(env_id, SCRIPTED[env_id], 3, seed=0).episode_returns.mean()
    rand = rollout(env_id, random_policy(env_id, 0), 3, seed=0).episode_returns.mean()
    assert expert > rand + 100  # random: about 20 on CartPole, about −1200 on Pendulum


def test_demonstrations_are_cached_on_first_use_and_read_back(tmp_path, monkeypatch) -> None:
    first = load_demonstrations("CartPole-v1", episodes=2, seed=5, cache_dir=tmp_path)
    path = demo_path("CartPole-v1", 2, 5, tmp_path)
    assert path.is_file() and path.suffix == ".npz"
    assert first.observations.shape == (1000, 4) and first.actions.shape == (1000,)
    assert first.episode_returns.tolist() == [500.0, 500.0]
    with np.load(path) as data:
        assert sorted(data.files) == ["actions", "episode_returns", "observations"]

    def no_rollout(*args, **kwargs):
        raise AssertionError("a cached file must be read, not rolled out again")

    monkeypatch.setattr(demonstrations, "rollout", no_rollout)
    again = load_demonstrations("CartPole-v1", episodes=2, seed=5, cache_dir=tmp_path)
    np.testing.assert_array_equal(again.observations, first.observations)
    np.testing.assert_array_equal(again.actions, first.actions)


def test_bad_requests_are_one_sentence_user_errors(tmp_path) -> None:
    path = demo_path("CartPole-v1", 1, 0, tmp_path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"not a zip")
    with pytest.raises(UserError, match="not a readable demonstrations file"):
        load_demonstrations("CartPole-v1", episodes=1, seed=0, cache_dir=tmp_path)
    with pytest.raises(UserError, match="Unknown environment"):
        load_demonstrations("NoSuchEnv-v9", cache_dir=tmp_path)
    with pytest.raises(UserError, match="expert train"):  # builds, but has no scripted expert
        load_demonstrations("MountainCar-v0", cache_dir=tmp_path)
    with pytest.raises(UserError, match="vector of observations"):  # a Discrete observation
        load_demonstrations("FrozenLake-v1", cache_dir=tmp_path)
    with pytest.raises(UserError, match="has a scripted expert"):  # an expert never used
        train_expert("Pendulum-v1", steps=64, cache_dir=tmp_path)
    assert not ppo_expert_path("Pendulum-v1", tmp_path).exists()


def _empty(path, cartpole, pendulum) -> None:
    path.write_bytes(b"")


def _another_environment_s(path, cartpole, pendulum) -> None:
    save_rollout(path, pendulum)  # Pendulum's 2 episodes under CartPole's name


def _fewer_episodes(path, cartpole, pendulum) -> None:
    episodes = len(cartpole.episode_returns) - 1  # the first episode alone
    steps = len(cartpole.observations) // 2
    save_rollout(
        path,
        Rollout(
            cartpole.observations[:steps],
            cartpole.actions[:steps],
            cartpole.episode_returns[:episodes],
        ),
    )


def _fewer_steps_than_episodes(path: Path, cartpole: Rollout, pendulum: Rollout) -> None:
    save_rollout(  # shapes that agree, but 1 step cannot hold 2 episodes
        path, Rollout(cartpole.observations[:1], cartpole.actions[:1], cartpole.episode_returns)
    )


def _a_nan_observation(path: Path, cartpole: Rollout, pendulum: Rollout) -> None:
    observations = cartpole.observations.copy()
    observations[7, 2] = np.nan
    save_rollout(path, Rollout(observations, cartpole.actions, cartpole.episode_returns))


def _text_actions(path: Path, cartpole: Rollout, pendulum: Rollout) -> None:
    actions = cartpole.actions.astype("U1")  # "0" and "1": the right shape, not numbers
    save_rollout(path, Rollout(cartpole.observations, actions, cartpole.episode_returns))


def _an_action_cartpole_lacks(path: Path, cartpole: Rollout, pendulum: Rollout) -> None:
    actions = np.full_like(cartpole.actions, 2)  # CartPole's actions are 0 and 1
    save_rollout(path, Rollout(cartpole.observations, actions, cartpole.episode_returns))


def _a_fractional_action(path: Path, cartpole: Rollout, pendulum: Rollout) -> None:
    actions = cartpole.actions.astype(np.float64)
    actions[3] = 0.7  # was read as action 0 by the discriminator's one-hot
    save_rollout(path, Rollout(cartpole.observations, actions, cartpole.episode_returns))


@pytest.mark.parametrize(
    "make, words",
    [
        (_empty, "is not a readable demonstrations file (EOFError)"),
        (_another_environment_s, "its observations are 400×3, where 400×4 was expected"),
        (_fewer_episodes, "its episode_returns are 1 value, where 2 values was expected"),
        (_fewer_steps_than_episodes, "(it has fewer steps than episodes)"),
        (_a_nan_observation, "(it has NaN or infinite values)"),
        (_text_actions, "its actions are <U1 1000 values, where 1000 values was expected"),
        (_an_action_cartpole_lacks, "its actions are not all among CartPole-v1's 0 to 1"),
        (_a_fractional_action, "its actions are not all among CartPole-v1's 0 to 1"),
    ],
)
def test_a_cached_file_that_is_not_what_its_name_promises_is_one_sentence_and_kept(
    make, words, tmp_path
) -> None:
    """Was: an empty file "Aborted." (exit 1), another task's a RuntimeError deep in training,
    one with fewer episodes than its name says imitated silently. A NaN would be imitated (or
    end the run), text actions fail deep inside numpy."""
    cartpole = load_demonstrations("CartPole-v1", episodes=2, seed=0, cache_dir=tmp_path)
    pendulum = rollout("Pendulum-v1", SCRIPTED["Pendulum-v1"], 2, seed=0)
    path = demo_path("CartPole-v1", 2, 0, tmp_path)
    make(path, cartpole, pendulum)
    before = path.read_bytes()
    with pytest.raises(UserError, match="delete it and it will be generated again") as err:
        load_demonstrations("CartPole-v1", episodes=2, seed=0, cache_dir=tmp_path)
    assert str(err.value).startswith(f"{path} ") and words in str(err.value)
    assert path.read_bytes() == before


@pytest.mark.parametrize("seed", [-1, 2**32, 99_999_999_999])
def test_expert_train_takes_the_seeds_every_command_takes(tmp_path, seed: int) -> None:
    """SB3 refused -1 and numpy 2**32 and above, each with a traceback."""
    with pytest.raises(UserError, match=r"--seed must be between 0 and 4294967295"):
        train_expert("MountainCar-v0", steps=64, cache_dir=tmp_path, seed=seed)
    assert not ppo_expert_path("MountainCar-v0", tmp_path).exists()


def _garbage(path) -> None:
    path.write_bytes(b"not a zip")


def _zip_without_a_model(path) -> None:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "no model here")


def _cartpole_model(path) -> None:
    from stable_baselines3 import PPO

    PPO("MlpPolicy", "CartPole-v1", device="cpu").save(path)  # untrained: instant


@pytest.mark.parametrize(
    ("write", "words"),
    [
        (_garbage, "is not a readable PPO expert (ValueError)"),  # SB3's ValueError before
        (_zip_without_a_model, "is not a readable PPO expert (AssertionError)"),  # SB3's assert
        (_cartpole_model, "holds a PPO model of another environment"),  # fails at its 1st step
    ],
)
def test_a_bad_ppo_expert_file_is_one_sentence_naming_it(tmp_path, write, words: str) -> None:
    from problems.imitation.ppo_expert import expert_policy

    path = ppo_expert_path("MountainCar-v0", tmp_path)
    path.parent.mkdir(parents=True)
    write(path)
    with pytest.raises(UserError, match="expert train --env MountainCar-v0") as caught:
        expert_policy("MountainCar-v0", tmp_path)
    assert str(path) in str(caught.value) and words in str(caught.value)


def test_demonstrations_follow_the_ppo_expert_they_came_from(tmp_path, monkeypatch) -> None:
    """Rerunning ``expert train`` replaces the expert's file; the demonstrations cached from the
    old expert kept being read (same environment, episodes and seed), so GAIL imitated an expert
    that no longer existed. A new expert's demonstrations are rolled out afresh."""
    from stable_baselines3 import PPO

    expert = ppo_expert_path("MountainCar-v0", tmp_path)
    expert.parent.mkdir(parents=True)
    rollouts = []
    real_rollout = demonstrations.rollout
    monkeypatch.setattr(
        demonstrations, "rollout", lambda *args: rollouts.append(args) or real_rollout(*args)
    )

    def demos():
        return load_demonstrations("MountainCar-v0", episodes=1, seed=0, cache_dir=tmp_path)

    PPO("MlpPolicy", "MountainCar-v0", seed=0, device="cpu").save(expert)  # untrained: instant
    demos()
    demos()  # the same expert: read back
    assert len(rollouts) == 1
    PPO("MlpPolicy", "MountainCar-v0", seed=1, device="cpu").save(expert)  # as expert train does
    demos()
    assert len(rollouts) == 2
    assert len(list(tmp_path.glob("MountainCar-v0-1ep-seed0*.npz"))) == 2


def test_loading_a_ppo_expert_leaves_the_runs_random_streams_alone(tmp_path) -> None:
    """SB3's PPO.load reseeds Python's, numpy's and torch's generators with the expert's training
    seed, so every --seed went on from the same noise after it (and ψ0 depended on whether the
    demonstrations were cached); the run's streams must go on as if it had not been loaded."""
    import random

    import numpy as np
    import torch
    from stable_baselines3 import PPO

    from problems.imitation.ppo_expert import load_ppo_expert

    path = tmp_path / "MountainCar-v0-ppo.zip"
    PPO("MlpPolicy", "MountainCar-v0", seed=0, device="cpu").save(path)  # untrained: instant
    draws = []
    for loaded in (False, True):
        random.seed(5), np.random.seed(5), torch.manual_seed(5)
        if loaded:
            load_ppo_expert("MountainCar-v0", path)
        draws.append((random.random(), np.random.rand(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_a_learner_acting_as_the_expert_scores_the_recorded_expert_reference() -> None:
    """The scale's 1 is the demonstrations' mean; on the scored episodes (other start states) the
    expert itself reads another value, and that value is what results.json records as the
    ceiling: a learner whose every action is the expert's scores exactly it."""
    env = "Acrobot-v1"
    expert = SCRIPTED[env]
    r_expert = float(rollout(env, expert, 4, seed=10_000).episode_returns.mean())
    r_random = float(rollout(env, random_policy(env, 0), 2, seed=30_000).episode_returns.mean())
    model = SimpleNamespace(predict=lambda obs, deterministic=True: (expert(obs), None))
    learner = SimpleNamespace(model=model, disc=SimpleNamespace(discrete=True))
    scored = evaluate(learner, env, expert, 3, VAL_SEED, r_random, r_expert)
    reference = expert_reference(env, expert, 3, VAL_SEED, r_random, r_expert)
    assert scored["normalised_return"] == pytest.approx(reference)
    assert scored["action_agreement"] == 1.0
    assert reference != pytest.approx(1.0, abs=1e-3)  # other start states, another return


def test_expert_train_reports_the_steps_it_really_trained(tmp_path) -> None:
    """SB3 trains whole rollouts of 2,048 steps × 4 envs: ``--steps 1`` trained 8,192 steps while
    the help said "PPO environment steps" and the saved line gave no count (about 5 s)."""
    from stable_baselines3 import PPO
    from typer.testing import CliRunner

    from cli import app

    args = ["expert", "train", "--env", "MountainCar-v0", "--steps", "1"]
    result = CliRunner().invoke(app, [*args, "--cache-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    words = " ".join(result.output.split())  # rich wraps the line at the terminal's width
    assert "after 8,192 environment steps (--steps 1 rounded up" in words
    path = ppo_expert_path("MountainCar-v0", tmp_path)
    assert PPO.load(path, device="cpu").num_timesteps == 8192  # what the line says is the file's
