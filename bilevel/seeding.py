"""The seeds of a run (docs/architecture.md, "Conventions"): ``seed_everything`` once per run, from
``--seed``; ``seeded`` around every measurement that must draw the same randomness each time
(validation, the follower gap, the test attacks) without moving training's stream; ``untouched``
around a library call that reseeds the global generators itself."""

from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators: once per run, from ``--seed``
    (docs/architecture.md, "Conventions")."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@contextlib.contextmanager
def seeded(seed: int | None) -> Iterator[None]:
    """Run the block on torch's global generators seeded from ``seed`` (None: as they are), and
    leave them afterwards as they were before it: the CPU's and, once CUDA is in use, the current
    GPU's. A validation or an attack inside it draws the same randomness every time and takes
    none from training's stream. (``fork_rng(devices=[])`` alone restores the CPU's generator
    only, while ``manual_seed`` reseeds the GPU's too: every epoch's training draws on the GPU
    would then repeat the last epoch's.)"""
    devices = [torch.cuda.current_device()] if torch.cuda.is_initialized() else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def untouched() -> Iterator[None]:
    """Leave Python's, numpy's and torch's global generators as they were before the block, for
    a library call that reseeds them itself (SB3's ``PPO.load`` seeds all three with the seed its
    model was trained with): the run's own stream, from its ``--seed``, goes on as if the call
    had not been made."""
    python, numpy = random.getstate(), np.random.get_state()
    try:
        with seeded(None):
            yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy)
