"""Scripted experts for the GAIL control tasks and the
rollout helper every part of ``problems.imitation`` shares.

Nothing is downloaded: each expert is a few lines of control theory, and its return is measured
here on gymnasium 1.4 by ``tests/test_experts.py``:

- CartPole-v1: push right iff θ + 0.5 θ̇ > 0 (a PD rule on the pole angle): 500 ± 0.
- Pendulum-v1: energy-pumping swing-up to the upright energy E₀ = m g l / 2, then PD control
  (k_p = 10, k_d = 2) near the top (Åström & Furuta 2000): about −150.
- Acrobot-v1: torque −sign(θ̇₁) on the second joint, pumping energy into the swing: about −85.
- MountainCarContinuous-v0: full throttle along the velocity (bang-bang energy pumping): about 90.

Any other environment gets a PPO expert from ``cli.py expert train --env ID`` (``ppo_expert.py``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import gymnasium as gym
import numpy as np
import torch

Policy = Callable[[np.ndarray], np.ndarray]  # one observation -> one action


def cartpole_expert(obs: np.ndarray) -> np.ndarray:
    """Push right (1) iff θ + 0.5 θ̇ > 0, else left (0)."""
    return np.asarray(int(obs[2] + 0.5 * obs[3] > 0))


PENDULUM_M, PENDULUM_L, PENDULUM_G = 1.0, 1.0, 10.0
PENDULUM_E0 = PENDULUM_M * PENDULUM_G * PENDULUM_L / 2  # energy at rest upright (θ = 0 is up)


def pendulum_expert(obs: np.ndarray, kp: float = 10.0, kd: float = 2.0) -> np.ndarray:
    """Energy swing-up, then PD near the top.

    Gymnasium's pendulum is a rod (inertia m l² / 3) with θ = 0 upright, so its energy is
    E = (m l² / 6) θ̇² + (m g l / 2) cos θ, and E₀ = m g l / 2 upright at rest. Far from the top the
    torque pumps energy, u = 2 · sign((E₀ − E) θ̇); near it (cos θ > 0.8) PD: u = −k_p θ − k_d θ̇.
    """
    cos, sin, theta_dot = (float(v) for v in obs)
    theta = np.arctan2(sin, cos)
    if cos > 0.8:
        u = -kp * theta - kd * theta_dot
    else:
        energy = PENDULUM_M * PENDULUM_L**2 / 6 * theta_dot**2 + PENDULUM_E0 * cos
        direction = np.sign((PENDULUM_E0 - energy) * theta_dot) or 1.0
        u = 2.0 * direction
    return np.asarray([np.clip(u, -2.0, 2.0)], dtype=np.float32)


def acrobot_expert(obs: np.ndarray) -> np.ndarray:
    """Torque −sign(θ̇₁) on the second joint; actions 0, 1, 2 are torques −1, 0, +1."""
    return np.asarray(int(-np.sign(obs[4]) + 1))


def mountain_car_expert(obs: np.ndarray) -> np.ndarray:
    """Full throttle in the direction of the velocity (+1 when at rest)."""
    return np.asarray([1.0 if obs[1] >= 0 else -1.0], dtype=np.float32)


SCRIPTED: dict[str, Policy] = {
    "CartPole-v1": cartpole_expert,
    "Pendulum-v1": pendulum_expert,
    "Acrobot-v1": acrobot_expert,
    "MountainCarContinuous-v0": mountain_car_expert,
}


@dataclass
class Rollout:
    """Transitions of whole episodes: observations (N, obs_dim), actions (N, ...), and the
    undiscounted environment return of each episode."""

    observations: np.ndarray
    actions: np.ndarray
    episode_returns: np.ndarray


def rollout(env_id: str, policy: Policy, episodes: int, seed: int) -> Rollout:
    """Run ``policy`` for ``episodes`` whole episodes; episode i starts from ``reset(seed+i)``."""
    env = gym.make(env_id)
    observations, actions, returns = [], [], []
    try:
        for i in range(episodes):
            obs, _ = env.reset(seed=seed + i)
            total, done = 0.0, False
            while not done:
                action = policy(obs)
                observations.append(np.asarray(obs, dtype=np.float32))
                actions.append(action)
                obs, reward, terminated, truncated, _ = env.step(action)
                total += float(reward)
                done = terminated or truncated
            returns.append(total)
    finally:
        env.close()
    return Rollout(np.stack(observations), np.stack(actions), np.asarray(returns))


def random_policy(env_id: str, seed: int) -> Policy:
    """Uniform random actions (the R_random of the normalised return)."""
    space = gym.make(env_id).action_space
    space.seed(seed)
    return lambda obs: np.asarray(space.sample())


@contextmanager
def single_thread() -> Iterator[None]:
    """One torch thread inside, the previous count restored after: the policies and
    discriminators here are small MLPs, and more threads only add contention on a shared CPU."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
