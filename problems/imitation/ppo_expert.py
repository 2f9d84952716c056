"""Experts for environments without a scripted one: SB3 PPO trained here on the true reward
(``cli.py expert train --env ID``) and saved next to the demonstrations, then used like a scripted
expert. ``expert_policy`` picks the scripted expert when there is one.
"""

from __future__ import annotations

import functools
import re
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import gymnasium as gym
import numpy as np

from bilevel.errors import UserError
from bilevel.options import check_seeds
from bilevel.seeding import untouched
from problems.imitation.config import VAL_SEED
from problems.imitation.experts import SCRIPTED, Policy, single_thread

if TYPE_CHECKING:  # SB3 is imported where it runs, so that the commands' --help stays fast
    from stable_baselines3.common.logger import Logger


@functools.cache  # once an id: a run checks it in resolve, and again where it reads its expert
def check_env_id(env_id: str) -> bool:
    """A ``UserError`` naming the fix when gymnasium does not know ``env_id``, cannot build it, or
    builds one this GAIL cannot learn (its D and policy take a vector of observations, and Box or
    Discrete actions); returns whether the actions are discrete."""
    try:
        gym.spec(env_id)
    except gym.error.DeprecatedEnv as err:  # gymnasium names the version it has now
        newer = re.search(r"use `([^`]+)`", str(err))
        advice = f"use {newer[1]} instead" if newer else str(err).rstrip(".")
        raise UserError(
            f"{env_id} is an old version gymnasium no longer provides; {advice}."
        ) from None
    except gym.error.Error:
        raise UserError(
            f"Unknown environment {env_id!r}; use a gymnasium id such as Pendulum-v1, "
            f"CartPole-v1, Acrobot-v1 or MountainCarContinuous-v0."
        ) from None
    try:
        env = gym.make(env_id)
    except (gym.error.Error, ImportError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise UserError(
            f"{env_id} cannot be built here ({reason}); choose another environment."
        ) from None
    observations, actions = env.observation_space, env.action_space
    env.close()
    vector = isinstance(observations, gym.spaces.Box) and len(observations.shape) == 1
    if not vector or not isinstance(actions, (gym.spaces.Box, gym.spaces.Discrete)):
        raise UserError(
            f"{env_id} has {observations} observations and {actions} actions; GAIL here needs a "
            "vector of observations (a 1-d Box) and Box or Discrete actions."
        )
    return isinstance(actions, gym.spaces.Discrete)


def folderless_logger(verbose: int = 0) -> Logger:
    """An SB3 logger with no folder, for ``model.set_logger``: SB3's own, made at every
    ``learn()`` call (once a GAIL round), creates an empty ``/tmp/SB3-<time>`` folder each time.
    Prints SB3's progress table when ``verbose``, else nothing."""
    from stable_baselines3.common.logger import HumanOutputFormat, Logger

    return Logger(folder=None, output_formats=[HumanOutputFormat(sys.stdout)] if verbose else [])


def ppo_expert_path(env_id: str, cache_dir: str | Path) -> Path:
    """Where the PPO expert trained here for ``env_id`` is saved (SB3's zip)."""
    return Path(cache_dir) / "experts" / f"{env_id}-ppo.zip"


def train_expert(
    env_id: str, steps: int, cache_dir: str | Path, seed: int = 0, verbose: int = 0
) -> tuple[Path, float, int]:
    """Train SB3 PPO (default hyper-parameters, 4 envs) on the true reward for at least ``steps``
    environment steps: SB3 trains whole rollouts of n_steps × n_envs = 2,048 × 4 = 8,192 steps, so
    ``steps`` is rounded up to a multiple of 8,192 (1 trains 8,192; 200,000 trains 204,800).
    Save it atomically; return the path, its mean return over 10 deterministic episodes and the
    steps it really trained (``num_timesteps``, which the saved file keeps too)."""
    from stable_baselines3 import PPO
    from stable_baselines3.common.env_util import make_vec_env

    from problems.imitation.experts import rollout

    check_env_id(env_id)
    if env_id in SCRIPTED:
        raise UserError(
            f"{env_id} has a scripted expert, which GAIL uses; expert train is for ids without one."
        )
    if steps < 1:
        raise UserError(f"--steps must be at least 1; got {steps}.")
    check_seeds([seed], "--seed")  # the range every command takes, numpy's and SB3's
    path = ppo_expert_path(env_id, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    with single_thread():  # small MLPs: more threads only add contention
        venv = make_vec_env(env_id, n_envs=4, seed=seed)
        model = PPO("MlpPolicy", venv, seed=seed, verbose=verbose, device="cpu")
        model.set_logger(folderless_logger(verbose))
        model.learn(total_timesteps=steps)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            model.save(Path(tmp) / "model.zip")
            (Path(tmp) / "model.zip").replace(path)
        returns = rollout(env_id, _wrap(model), 10, seed=VAL_SEED).episode_returns
    return path, float(returns.mean()), int(model.num_timesteps)


def _wrap(model) -> Policy:
    return lambda obs: np.asarray(model.predict(obs, deterministic=True)[0])


def expert_policy(env_id: str, cache_dir: str | Path) -> Policy:
    """The scripted expert of ``env_id``, else the PPO expert trained by ``expert train``."""
    check_env_id(env_id)
    if env_id in SCRIPTED:
        return SCRIPTED[env_id]
    path = ppo_expert_path(env_id, cache_dir)
    if not path.is_file():
        raise UserError(
            f"{env_id} has no scripted expert and none was trained; run "
            f"`python cli.py expert train --env {env_id}` first."
        )
    return _wrap(load_ppo_expert(env_id, path))


def load_ppo_expert(env_id: str, path: Path) -> Any:
    """SB3's PPO saved at ``path`` for ``env_id``; a file SB3 cannot load (not a zip, a zip that
    is no model: SB3 raises whatever its bytes lead to) or a model of another environment's
    observations or actions is one sentence naming the file and the way to a good one."""
    from stable_baselines3 import PPO

    retrain = f"retrain it with `python cli.py expert train --env {env_id}`"
    try:
        with untouched():  # SB3 reseeds every generator with the expert's training seed
            model = PPO.load(path, device="cpu")
    except Exception as err:  # whatever its bytes lead to: ValueError, AssertionError, ...
        raise UserError(
            f"{path} is not a readable PPO expert ({type(err).__name__}); {retrain}."
        ) from None
    env = gym.make(env_id)
    wanted, got = _spaces(env), _spaces(model)
    env.close()
    if got != wanted:
        raise UserError(
            f"{path} holds a PPO model of another environment ({got}; {env_id} has {wanted}); "
            f"{retrain}."
        )
    return model


def _spaces(owner: Any) -> str:
    """The shapes of an environment's (or a model's) observations and actions, in words."""
    actions = owner.action_space
    kind = actions if isinstance(actions, gym.spaces.Discrete) else f"shape {actions.shape}"
    return f"observations of shape {owner.observation_space.shape}, actions {kind}"
