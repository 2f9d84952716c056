"""Expert demonstrations as ``.npz`` files in a cache folder: generated from the expert on
first use, read back afterwards, so nothing is fetched from a hub.

A file holds ``observations`` (N, obs_dim), ``actions`` (N, ...) and ``episode_returns``
(episodes,); its name records the environment, the number of episodes and the seed, and for a PPO
expert trained here (``expert train``) a digest of the expert's file, so a cached file is only
reused for the same request from the same expert: a retrained expert's demonstrations are rolled
out afresh, never read from its predecessor's. Files are written to a temporary name and renamed.
"""

from __future__ import annotations

import hashlib
import io
import zipfile
from pathlib import Path

import numpy as np

from bilevel.errors import UserError
from bilevel.run import atomic_write_bytes
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
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as err:
        raise UserError(
            f"{path} is not a readable demonstrations file ({type(err).__name__}); "
            "delete it and it will be generated again."
        ) from None


def load_demonstrations(
    env_id: str, episodes: int = 20, seed: int = 10_000, cache_dir: str | Path = DEFAULT_CACHE
) -> Rollout:
    """The expert's demonstrations for ``env_id``: read from the cache, or rolled out and cached.

    Demonstration episodes start from ``reset(seed + i)``; the default seed keeps them apart from
    the learner's training and evaluation seeds.
    """
    if episodes < 1:
        raise UserError(f"--demo-episodes must be at least 1; got {episodes}.")
    path = demo_path(env_id, episodes, seed, cache_dir)
    if path.is_file():
        return load_rollout(path)
    demos = rollout(env_id, expert_policy(env_id, cache_dir), episodes, seed)
    save_rollout(path, demos)
    return demos
