"""A ``VecEnvWrapper`` that replaces the environment's reward with the discriminator's reward
r(s_t, a_t) from the current ψ, so SB3's PPO improves π_θ on the GAIL objective unchanged.

s_t is the observation the policy acted on (the one returned by the previous ``reset`` or
``step_wait``), a_t the action SB3 sent (already clipped to the action bounds). The true reward is
kept in ``info["env_reward"]`` for logging only; the policy never sees it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvStepReturn

RewardFn = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (obs, actions) -> rewards (n_envs,)


class DiscriminatorReward(VecEnvWrapper):
    """r_t = reward_fn(s_t, a_t) in place of the environment's reward."""

    def __init__(self, venv: VecEnv, reward_fn: RewardFn) -> None:
        super().__init__(venv)
        self.reward_fn = reward_fn
        self._obs: np.ndarray | None = None
        self._actions: np.ndarray | None = None

    def reset(self) -> np.ndarray:
        self._obs = self.venv.reset()
        return self._obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = np.asarray(actions)
        self.venv.step_async(actions)

    def step_wait(self) -> VecEnvStepReturn:
        obs, env_rewards, dones, infos = self.venv.step_wait()
        if self._obs is None:
            raise RuntimeError("DiscriminatorReward: step before reset")
        rewards = np.asarray(self.reward_fn(self._obs, self._actions), dtype=np.float32)
        for info, env_reward in zip(infos, env_rewards, strict=True):
            info["env_reward"] = float(env_reward)
        self._obs = obs
        return obs, rewards.reshape(env_rewards.shape), dones, infos
