"""``problems.imitation.ppo_expert`` beside test_experts.py: which environments GAIL here takes,
where a trained expert is kept, the return ``expert train`` reports, that the expert acts
deterministically, and a saved expert of other actions. Small environments registered here
stand in for ones that cannot be built or take other spaces; PPO never learns (instant)."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from bilevel.errors import UserError
from problems.imitation.config import VAL_SEED
from problems.imitation.experts import rollout
from problems.imitation.ppo_expert import (
    check_env_id,
    expert_policy,
    folderless_logger,
    load_ppo_expert,
    ppo_expert_path,
    train_expert,
)


class _Guess(gym.Env):
    """Five steps of guessing a coin shown in the observation: 1 for each right guess, plus the
    random number shown beside the coin, so that each episode's return is its own."""

    metadata = {"render_modes": ["rgb_array"]}  # what SB3 asks for; never rendered
    observation_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def _obs(self) -> np.ndarray:
        self.coin, self.bonus = int(self.np_random.integers(2)), self.np_random.uniform(-1, 1)
        return np.array([2 * self.coin - 1, self.bonus], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = float(int(action) == self.coin) + self.bonus
        self.t += 1
        return self._obs(), reward, False, self.t >= 5, {}


class _Image(_Guess):
    observation_space = gym.spaces.Box(0.0, 1.0, (2, 2), np.float32)


class _Buttons(_Guess):
    action_space = gym.spaces.MultiDiscrete([2, 2])


def _unbuildable():
    raise ImportError("no module named fancy_physics\nmore lines of the traceback")


for _id, _entry in [("TestGuess-v0", _Guess), ("TestImage-v0", _Image),
                    ("TestButtons-v0", _Buttons), ("TestUnbuildable-v0", _unbuildable)]:  # fmt: skip
    if _id not in gym.registry:
        gym.register(_id, entry_point=_entry)


def test_only_environments_of_vector_observations_and_box_or_discrete_actions_are_taken():
    assert check_env_id("TestGuess-v0") is True and check_env_id("CartPole-v1") is True
    assert check_env_id("Pendulum-v1") is False  # Box actions
    for env_id in ("TestImage-v0", "TestButtons-v0"):
        with pytest.raises(UserError, match="needs a vector of observations \\(a 1-d Box\\)"):
            check_env_id(env_id)


def test_an_environment_that_cannot_be_built_here_is_one_sentence():
    with pytest.raises(UserError) as err:
        check_env_id("TestUnbuildable-v0")
    assert str(err.value) == (
        "TestUnbuildable-v0 cannot be built here (no module named fancy_physics); "
        "choose another environment."
    )


def test_a_trained_expert_is_kept_under_the_cache_s_experts_folder(tmp_path):
    """Where earlier versions saved it: a new name would leave every trained expert unfound."""
    assert ppo_expert_path("MountainCar-v0", tmp_path) == (
        tmp_path / "experts" / "MountainCar-v0-ppo.zip"
    )
    assert ppo_expert_path("MountainCar-v0", str(tmp_path)) == ppo_expert_path(
        "MountainCar-v0", tmp_path
    )


@pytest.fixture
def untrained_expert(tmp_path, monkeypatch) -> tuple[Path, float, int]:
    """``train_expert`` on TestGuess-v0 with PPO's learning skipped: its saved, untrained model."""
    from stable_baselines3 import PPO

    monkeypatch.setattr(PPO, "learn", lambda self, total_timesteps: self)
    return train_expert("TestGuess-v0", steps=1, cache_dir=tmp_path, seed=3)


def test_expert_train_reports_the_mean_return_of_10_deterministic_validation_episodes(
    untrained_expert, tmp_path
):
    from stable_baselines3 import PPO

    path, mean_return, steps = untrained_expert
    assert path == ppo_expert_path("TestGuess-v0", tmp_path) and path.is_file()
    assert steps == 0  # learn() skipped: the count is the model's own
    model = PPO.load(path, device="cpu")
    returns = rollout(
        "TestGuess-v0",
        lambda obs: np.asarray(model.predict(obs, deterministic=True)[0]),
        10,
        seed=VAL_SEED,
    ).episode_returns
    assert mean_return == pytest.approx(float(returns.mean()))
    assert len(set(returns.tolist())) > 1  # a mean over other episodes would read otherwise


def test_a_ppo_expert_acts_deterministically(untrained_expert, tmp_path):
    """The demonstrations are the expert's best actions, not draws from its policy."""
    from stable_baselines3 import PPO

    policy = expert_policy("TestGuess-v0", tmp_path)
    model = PPO.load(untrained_expert[0], device="cpu")
    rng = np.random.default_rng(0)
    for obs in rng.uniform(-1, 1, (20, 2)).astype(np.float32):
        best = model.predict(obs, deterministic=True)[0]
        assert [int(policy(obs)) for _ in range(10)] == [int(best)] * 10


def test_an_expert_of_another_number_of_discrete_actions_is_refused(tmp_path):
    """TestGuess-v0's observations are MountainCar-v0's shape (2,), its actions 2, not 3."""
    from stable_baselines3 import PPO

    path = tmp_path / "guess.zip"
    PPO("MlpPolicy", "TestGuess-v0", device="cpu").save(path)
    with pytest.raises(UserError, match="holds a PPO model of another environment") as err:
        load_ppo_expert("MountainCar-v0", path)
    assert "actions Discrete(2); MountainCar-v0 has" in str(err.value)
    assert "actions Discrete(3)" in str(err.value)


def test_the_folderless_logger_prints_only_when_verbose(capsys):
    quiet, loud = folderless_logger(0), folderless_logger(1)
    assert quiet.get_dir() is None and loud.get_dir() is None  # no /tmp/SB3-<time> folder
    for logger in (quiet, loud):
        logger.record("train/loss", 0.5)
        logger.dump(1)
    out = capsys.readouterr().out
    assert out.count("loss") == 1 and out.count("0.5") == 1


def test_expert_train_leaves_no_sb3_folder_in_the_temporary_directory(tmp_path, monkeypatch):
    """SB3's own logger, set up at every learn(), makes an empty /tmp/SB3-<time> folder. Learning
    is cut to that set-up (SB3's ``_setup_learn``), where the folder was made."""
    import tempfile

    from stable_baselines3 import PPO

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    monkeypatch.setattr(PPO, "learn", lambda self, total_timesteps: self._setup_learn(1) and self)
    path, _, _ = train_expert("TestGuess-v0", steps=1, cache_dir=tmp_path / "cache")
    assert path.is_file() and list(tmp_path.glob("SB3-*")) == []
