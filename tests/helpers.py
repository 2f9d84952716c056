"""Small building blocks shared by the tests."""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from problems.imitation.experts import Rollout

ROOT = Path(__file__).resolve().parents[1]


def linear_two_class() -> nn.Module:
    """A linear classifier of 4×4 images into two classes: ∇_x CE = (p_1 − [y = 1]) (w_1 − w_0),
    whose sign never changes with δ (closed-form checks of carried followers)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(16, 2))


def load_script(folder: str, name: str):
    """Import ``<folder>/<name>.py`` as a module (examples and benchmarks are scripts, not
    packages)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_example(name: str):
    """Import ``examples/<name>.py`` as a module."""
    return load_script("examples", name)


class TinyConvAttacker(nn.Module):
    """A g_φ with no batch norm: ε · tanh(conv(relu(conv(a)))). For exact-gradient comparisons."""

    def __init__(self, in_channels: int, out_channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.body = nn.Sequential(
            nn.Conv2d(in_channels, 8, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(8, out_channels, 3, padding=1),
        )

    def forward(self, a: Tensor) -> Tensor:
        return self.eps * torch.tanh(self.body(a))


class RecordingAttacker(TinyConvAttacker):
    """A one-output ``TinyConvAttacker`` that keeps the inputs it saw, one per g_φ call."""

    def __init__(self, in_channels: int, eps: float) -> None:
        super().__init__(in_channels, 1, eps)
        self.inputs: list[Tensor] = []

    def forward(self, a: Tensor) -> Tensor:
        self.inputs.append(a.detach().clone())
        return super().forward(a)


def largest_entry_one(g: Tensor) -> Tensor:
    """``g`` scaled per sample so that its largest |entry| is 1: what g_φ sees of ∇ under L∞
    (``--grad-scaling sample``), written out independently of ``bilevel.norms``."""
    return g / g.flatten(1).abs().amax(1).view(-1, *[1] * (g.dim() - 1))


def image_batch(n: int = 8, channels: int = 1, size: int = 28, classes: int = 10):
    x = torch.rand(n, channels, size, size)
    y = torch.randint(0, classes, (n,))
    return x, y


def metrics_without_time(run_dir: Path) -> list[dict]:
    """A run's ``metrics.jsonl`` rows without ``train_seconds``, ``train_cpu_seconds`` and
    ``torch_threads``, the fields allowed to differ between a run and its resumed or repeated
    twin (torchrun's workers, for one, start at one thread)."""
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timers = ("train_seconds", "train_cpu_seconds", "torch_threads")
    return [{k: v for k, v in row.items() if k not in timers} for row in rows]


def tiny_gail_problem(cache_dir: Path, **overrides):
    """A Pendulum-v1 GAIL problem with a small discriminator (8-8) and the initial policy's pairs
    in its buffer; ``overrides`` are ``GAILConfig`` fields."""
    from problems.imitation.config import GAILConfig
    from problems.imitation.solve import build

    options = dict(env="Pendulum-v1", n_envs=1, n_steps=200, disc_hidden=8, disc_batch_size=64)
    cfg = GAILConfig(**options | overrides, cache_dir=str(cache_dir))
    problem, _, _ = build(cfg.resolve())
    problem.collect_initial("Pendulum-v1", episodes=2)
    return problem


def untrained_dro_run(folder: Path, **recorded) -> Path:
    """A DRO run folder without training: the config.json of a PGM run on mnist5k (on the CPU,
    the other options at their defaults) with ``recorded``'s values put in, and a best.pt of an
    untrained small CNN, which ``evaluate`` loads."""
    from problems.adversarial.data import dataset_info
    from problems.adversarial.dro_config import DROConfig
    from problems.adversarial.models import build_model

    folder.mkdir(parents=True)
    config = DROConfig(device="cpu", follower="pgm").resolve().to_dict() | recorded
    (folder / "config.json").write_text(json.dumps(config))
    info = dataset_info("mnist5k")
    model = build_model("small-cnn", info.num_classes, info.in_channels, info.mean, info.std)
    torch.save({"leader": model.state_dict()}, folder / "best.pt")
    return folder


def put_at_once(value, queue) -> None:
    """A child process's target that puts ``value`` and ends at once."""
    queue.put(value)


def sleep_without_putting(seconds: float, queue) -> None:
    """A child process's target that works for ``seconds`` and puts nothing."""
    time.sleep(seconds)


@contextlib.contextmanager
def held_lock(folder: Path) -> Iterator[int]:
    """Another process holding ``folder/.lock`` as a training run does (``RunDir.lock``) while
    the block runs; yields its pid. It is killed afterwards, as a killed run would be."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.write(f'pid {os.getpid()} on a host'); f.flush(); "
         "print('held', flush=True); sys.stdin.read()", str(folder / ".lock")],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.kill()
        holder.wait()


def raw_bytes_digest(demos: Rollout) -> str:
    """A demonstrations digest as 6e679d6 to 6aa05b3 wrote it into GAIL checkpoints: the SHA-256
    of the observations' and actions' raw bytes (no shapes), its first 12 hex digits."""
    raw = hashlib.sha256()
    for array in (demos.observations, demos.actions):
        raw.update(np.ascontiguousarray(array).tobytes())
    return raw.hexdigest()[:12]


def spawn_two(worker, *args) -> None:
    """Run ``worker(rank, port, *args)`` in two spawned processes, ranks 0 and 1, that meet at a
    free local ``port`` (a gloo group of two); returns when both have ended."""
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(worker, args=(port, *args), nprocs=2, join=True)


def join_gloo(rank: int, port: int) -> None:
    """In a ``spawn_two`` worker: one torch thread, and join the group of two at ``port``; a
    collective that waits longer than a minute fails rather than hangs."""
    from datetime import timedelta

    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=timedelta(seconds=60),
    )  # fmt: skip
