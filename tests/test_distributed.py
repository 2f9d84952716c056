"""Multi-process training on CPU with 2 processes (gloo): gradient averaging is exact, runs are
reproducible, and ``torchrun --max-restarts 1`` resumes a killed run with no epoch lost or repeated."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import TinyConvAttacker, metrics_without_time

from bilevel import JointTrainer, LearnedFollower, distributed
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import SmallCNN

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = shutil.which("torchrun", path=str(Path(sys.executable).parent))
EPS = 0.3


def _trainer_and_batch():
    torch.manual_seed(0)
    problem = AdversarialDRO(SmallCNN(), EPS)
    follower = LearnedFollower(TinyConvAttacker(2, 1, EPS), steps=2, lr=0.0, weight_decay=0.0)
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.0)
    gen = torch.Generator().manual_seed(1)
    batch = (torch.rand(16, 1, 28, 28, generator=gen), torch.randint(0, 10, (16,), generator=gen))
    return problem, follower, optimizer, batch


def _gradients(problem, follower) -> dict[str, torch.Tensor]:
    leader = distributed.unwrap(problem.leader)
    named = [*leader.named_parameters(), *follower.net.named_parameters(prefix="phi")]
    return {name: p.grad.clone() for name, p in named}


def _worker(rank: int, port: int, out: str, update: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    problem, follower, optimizer, (x, y) = _trainer_and_batch()
    problem.leader = distributed.data_parallel(problem.leader, torch.device("cpu"))
    follower.distribute(lambda net: distributed.data_parallel(net, torch.device("cpu")))
    context = distributed.Context(rank, 2)
    batch = (distributed.shard(x, context), distributed.shard(y, context))
    for _ in range(2):  # a second step: DDP's reducer is ready again after the first
        JointTrainer(problem, follower, optimizer, update).step(batch)
    if rank == 0:
        torch.save(_gradients(problem, follower), out)
    del problem, follower  # the DDP wrappers go before their process group does
    dist.barrier()
    distributed.shutdown()
    # the result is saved: skip interpreter teardown, where gloo's threads have aborted workers
    # here ("terminate called without an active exception", SIGABRT)
    os._exit(0)


@pytest.mark.parametrize("update", ["alternating", "fused"])
def test_one_distributed_step_averages_to_the_single_process_gradient(tmp_path, update) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "grads.pt"
    mp.spawn(_worker, args=(port, str(out), update), nprocs=2, join=True)
    two_process = torch.load(out, weights_only=True)

    problem, follower, optimizer, batch = _trainer_and_batch()
    for _ in range(2):
        JointTrainer(problem, follower, optimizer, update).step(batch)
    one_process = _gradients(problem, follower)
    assert two_process.keys() == one_process.keys()
    for name, grad in one_process.items():
        assert grad.abs().max() > 0, name
        # float32 sums in another order: agreement to a relative 1e-4
        torch.testing.assert_close(two_process[name], grad, rtol=1e-4, atol=1e-6)


def _torchrun(out: Path, launcher: tuple = (), script: tuple = ()) -> subprocess.CompletedProcess:
    args = [TORCHRUN, "--standalone", "--nproc_per_node=2", *launcher, "cli.py", "solve",
            "adversarial-dro", "--follower", "grad", "--train-size", "128", "--eval-size", "32",
            "--batch-size", "32", "--epochs", "3", "--eps", "0.1", "--out", str(out), *script]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    return subprocess.run(args, cwd=ROOT, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed beside this python")
def test_two_process_runs_are_reproducible(tmp_path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    for out in (first, second):
        proc = _torchrun(out)
        assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics_without_time(first) == metrics_without_time(second)
    assert [row["epoch"] for row in metrics_without_time(first)] == [1, 2, 3]


@pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not installed beside this python")
def test_a_killed_worker_restarts_from_the_last_checkpoint(tmp_path) -> None:
    unbroken, killed = tmp_path / "unbroken", tmp_path / "killed"
    assert _torchrun(unbroken).returncode == 0
    proc = _torchrun(killed, ("--max-restarts", "1"), ("--crash-after-epoch", "1"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "failed (exitcode: 1)" in proc.stderr  # a worker really died and was restarted
    # no epoch lost or repeated, and the same numbers as the unbroken run
    assert metrics_without_time(killed) == metrics_without_time(unbroken)
