"""Expert demonstrations as ``.npz`` files in a cache folder: generated from the expert on
first use, read back afterwards, so nothing is fetched from a hub.

A file holds ``observations`` (N, obs_dim), ``actions`` (N, ...) and ``episode_returns``
(episodes,); its name records the environment, the number of episodes and the seed, and for a PPO
expert trained here (``expert train``) a digest of the expert's file, so a cached file is only
reused for the same request from the same expert: a retrained expert's demonstrations are rolled
out afresh, never read from its predecessor's. A cached file is read only if it holds what its name
promises, that many episodes of that environment's observations and actions; else one sentence
says to delete it. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import gymnasium as gym
import numpy as np

from bilevel.errors import UserError
from bilevel.run import atomic_write_bytes
from problems.imitation.config import DEMO_SEED
from problems.imitation.experts import SCRIPTED, Rollout, rollout
from problems.imitation.ppo_expert import expert_policy, ppo_expert_path

DEFAULT_CACHE = Path("data/demos")


def demo_path(env_id: str, episodes: int, seed: int, cache_dir: str | Path = DEFAULT_CACHE) -> Path:
    """Where the cached demonstrations of ``episodes`` expert episodes from ``seed`` live; for a
    PPO expert trained here, the name ends in the first 12 hex digits of its file's SHA-256."""
    name = f"{env_id}-{episodes}ep-seed{seed}"
    expert = ppo_expert_path(env_id, cache_dir)
    if env_id not in SCRIPTED and expert.is_file():  # a scripted expert is code: no file
        name += f"-expert{hashlib.sha256(expert.read_bytes()).hexdigest()[:12]}"
    return Path(cache_dir) / f"{name}.npz"


def save_rollout(path: Path, demos: Rollout) -> None:
    """Write demonstrations as ``.npz`` (written whole, then renamed into place)."""
    buffer = io.BytesIO()
    np.savez(
        buffer,
        observations=demos.observations,
        actions=demos.actions,
        episode_returns=demos.episode_returns,
    )
    atomic_write_bytes(path, buffer.getvalue())


def load_rollout(path: Path) -> Rollout:
    """Read a demonstrations file; a corrupt or foreign one is a ``UserError``."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return Rollout(data["observations"], data["actions"], data["episode_returns"])
    except (OSError, EOFError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(
            f"{path} is not a readable demonstrations file ({type(err).__name__}); "
            "delete it and it will be generated again."
        ) from None


def check_demonstrations(path: Path, demos: Rollout, env_id: str, episodes: int) -> None:
    """One sentence unless the file ``path`` read as ``demos`` holds what its name promises:
    ``episodes`` episodes of ``env_id`` (another task's file under this name, or one cut to
    fewer episodes, would be imitated, or fail deep inside training)."""
    env = gym.make(env_id)
    obs_shape, space = env.observation_space.shape, env.action_space
    env.close()
    steps = len(demos.observations)
    expected = {
        "observations": (steps, *obs_shape),
        "actions": (steps, *space.shape),
        "episode_returns": (episodes,),
    }
    for name, shape in expected.items():
        array = getattr(demos, name)
        if array.shape != shape or not np.issubdtype(array.dtype, np.number):
            kind = "" if np.issubdtype(array.dtype, np.number) else f"{array.dtype} "
            raise UserError(
                f"{path} does not hold {episodes} episodes of {env_id} demonstrations (its "
                f"{name} are {kind}{_shape(array.shape)}, where {_shape(shape)} was expected); "
                "delete it and it will be generated again."
            )
    if steps < episodes or not all(np.isfinite(getattr(demos, name)).all() for name in expected):
        raise UserError(
            f"{path} does not hold {episodes} episodes of {env_id} demonstrations (it has "
            f"{'fewer steps than episodes' if steps < episodes else 'NaN or infinite values'}); "
            "delete it and it will be generated again."
        )
    actions = demos.actions
    if isinstance(space, gym.spaces.Discrete) and not (
        np.all(actions == np.round(actions)) and np.all((0 <= actions) & (actions < space.n))
    ):  # the discriminator one-hot encodes them: 2 crashed it, 0.7 was read as 0
        raise UserError(
            f"{path} does not hold {episodes} episodes of {env_id} demonstrations (its actions "
            f"are not all among {env_id}'s 0 to {space.n - 1}); delete it and it will be "
            "generated again."
        )


def _shape(shape: tuple[int, ...]) -> str:
    """An array's shape in words: "4000×3", "20 values", "a single value"."""
    if len(shape) > 1:
        return "×".join(map(str, shape))
    return f"{shape[0]} value{'s' * (shape[0] != 1)}" if shape else "a single value"


def load_demonstrations(
    env_id: str, episodes: int = 20, seed: int = DEMO_SEED, cache_dir: str | Path = DEFAULT_CACHE
) -> Rollout:
    """The expert's demonstrations for ``env_id``: read from the cache, or rolled out and cached.

    Demonstration episodes start from ``reset(seed + i)``; the default seed keeps them apart from
    the learner's training and evaluation seeds.
    """
    if episodes < 1:
        raise UserError(f"--demo-episodes must be at least 1; got {episodes}.")
    path = demo_path(env_id, episodes, seed, cache_dir)
    if path.is_file():
        demos = load_rollout(path)
        check_demonstrations(path, demos, env_id, episodes)
        return demos
    demos = rollout(env_id, expert_policy(env_id, cache_dir), episodes, seed)
    save_rollout(path, demos)
    return demos
