"""Multi-process training on CPU with 2 processes (gloo): gradient averaging is exact, runs are
reproducible, ``torchrun --max-restarts 1`` resumes a killed run with no epoch lost or repeated,
and a signal stops every process after the same batch; both resumes are exact although the last
minibatch splits unevenly (each process resumes with its own generator state; the draws
themselves: test_distributed_noise.py). Every torchrun has a deadline."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import TinyConvAttacker, join_gloo, metrics_without_time, spawn_two

from bilevel import JointTrainer, LearnedFollower, distributed
from bilevel.errors import UserError
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
    join_gloo(rank, port)
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
    out = tmp_path / "grads.pt"
    spawn_two(_worker, str(out), update)
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


TORCHRUN_TIMEOUT = 240  # seconds; a run takes 20-40 here on 2 loaded cores


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (torchrun's workers run in sessions of their own)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _run_bounded(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """``args`` with a deadline: a hang fails the test (with every worker's Python stack, dumped
    by faulthandler on SIGABRT) instead of blocking the suite, and leaves no process behind."""
    proc = subprocess.Popen(
        args, cwd=ROOT, env={**env, "PYTHONFAULTHANDLER": "1"}, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=TORCHRUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        workers = _descendants(proc.pid)
        for pid in workers:  # faulthandler prints where each one stands
            os.kill(pid, signal.SIGABRT)
        time.sleep(2)
        for pid in [proc.pid, *_descendants(proc.pid), *workers]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(f"torchrun hung for {TORCHRUN_TIMEOUT} s; its stderr ends:\n{stderr[-6000:]}")
    return subprocess.CompletedProcess(args, proc.returncode, stdout, stderr)


# 4 minibatches of 32 and a last one of 3, split 2 + 1, so the processes draw different numbers
# of random numbers in every epoch's last batch; half of each batch restarts from a random start
# (with mnist5k's carry alone, every start after epoch 1 is a carried δ and the noise is unused)
NOISY_UNEVEN = ("--train-size", "131", "--carry-restart", "0.5")


def _torchrun(
    out: Path,
    launcher: tuple = (),
    script: tuple = (),
    entry: tuple = ("cli.py",),
    env: dict | None = None,
    data: tuple = NOISY_UNEVEN,
) -> subprocess.CompletedProcess:
    args = [TORCHRUN, "--standalone", "--nproc_per_node=2", *launcher, *entry, "solve",
            "adversarial-dro", "--follower", "grad", *data, "--eval-size", "32",
            "--batch-size", "32", "--epochs", "3", "--eps", "0.1", "--out", str(out), *script]  # fmt: skip
    # TMPDIR: torchrun's log folder (torchelastic_*) goes into the test's, not /tmp for good
    base = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(ROOT),
            "TMPDIR": str(out.parent)}  # fmt: skip
    return _run_bounded(args, {**base, **(env or {})})


needs_torchrun = pytest.mark.skipif(TORCHRUN is None, reason="torchrun is not beside this python")


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp") / "unbroken"
    proc = _torchrun(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [row["epoch"] for row in metrics_without_time(out)] == [1, 2, 3]
    return out


@needs_torchrun
def test_two_process_runs_are_reproducible(unbroken, tmp_path) -> None:
    proc = _torchrun(tmp_path / "again")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert metrics_without_time(tmp_path / "again") == metrics_without_time(unbroken)


@needs_torchrun
def test_a_killed_worker_restarts_from_the_last_checkpoint(unbroken, tmp_path) -> None:
    """Rank 0 exits (``os._exit(1)``) before batch 2 of epoch 2 on the first attempt; torchrun
    restarts both workers, which resume from epoch 1's checkpoint. The restarted workers join a
    fresh gloo mesh: without a store prefix per attempt they read the dead attempt's addresses
    from torchrun's store and hang or fail (bilevel.distributed). Each resumes with its own
    generator state: with rank 0's, rank 1 (one odd example fewer in each epoch's last batch)
    drew other random starts than the unbroken run.

    Rank 0 crashes, so that torchrun names this crash: the other rank dies of the broken gloo
    connection within milliseconds (exit 1, or SIGABRT as gloo's threads meet interpreter
    teardown), often before torchrun's next poll; it then reports the failure with the earliest
    timestamp, in whole seconds, and of equal ones the lowest local rank's. A crash of the last
    rank read as -6."""
    killed = tmp_path / "killed"
    entry = ("tests/fault_runner.py", "exit", "7")  # 5 batches an epoch: step 7 is epoch 2's 2nd
    proc = _torchrun(killed, ("--max-restarts", "1"), (), entry, {"FAULT_RANK": "0"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    # the injected crash (rank 0's os._exit(1)) is the failure torchrun saw and restarted from
    assert "failed (exitcode: 1) local_rank: 0 " in proc.stderr
    # no epoch lost or repeated, and the same numbers as the unbroken run
    assert metrics_without_time(killed) == metrics_without_time(unbroken)


@needs_torchrun
def test_a_signal_to_one_worker_stops_all_after_the_same_batch(unbroken, tmp_path) -> None:
    """SIGTERM reaches rank 1 only, during batch 2 of epoch 2: both ranks stop after that batch,
    rank 0 writes last.pt there and says so, both exit 143; torchrun restarts them, and the run
    resumes from the middle of the epoch to the unbroken run's numbers (each process with its
    own generator state, which differ after epoch 1's uneven last batch)."""
    out = tmp_path / "signalled"
    entry = ("tests/fault_runner.py", "SIGTERM", "7")
    proc = _torchrun(out, ("--max-restarts", "1"), (), entry, {"FAULT_RANK": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Stopped by SIGTERM after batch 2 of 5 in epoch 2;" in proc.stderr
    assert "failed (exitcode: 143)" in proc.stderr
    assert metrics_without_time(out) == metrics_without_time(unbroken)


@needs_torchrun
def test_the_logged_training_loss_covers_every_process_share(tmp_path) -> None:
    """No follower (no random start) and even shares: two processes take the steps one process
    takes on the whole batch, so the mean training loss they log must be the one process's,
    not rank 0's share alone (which differed by about a percent)."""
    options = ("--follower", "none", "--epochs", "2", "--gap-size", "0")
    proc = _torchrun(tmp_path / "two", script=options, data=("--train-size", "128"))
    assert proc.returncode == 0, proc.stderr[-3000:]
    args = [sys.executable, "cli.py", "solve", "adversarial-dro", "--train-size", "128",
            "--eval-size", "32", "--batch-size", "32", "--eps", "0.1", *options,
            "--out", str(tmp_path / "one")]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    single = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert single.returncode == 0, single.stderr[-3000:]
    two, one = metrics_without_time(tmp_path / "two"), metrics_without_time(tmp_path / "one")
    for a, b in zip(two, one, strict=True):
        assert a["leader_loss"] == pytest.approx(b["leader_loss"], rel=1e-4)


def test_shard_deals_every_world_size_th_example_to_each_process() -> None:
    """Dealt round the processes, as the docstring says: of 0..7, rank 1 of 2 takes 1, 3, 5, 7 (not
    the block 4..7), and of 3 examples rank 0 takes two and rank 1 one (the uneven last batch)."""
    deal = [distributed.shard(torch.arange(8), distributed.Context(r, 2)) for r in (0, 1)]
    assert [d.tolist() for d in deal] == [[0, 2, 4, 6], [1, 3, 5, 7]]
    thirds = [distributed.shard(torch.arange(6), distributed.Context(r, 3)) for r in range(3)]
    assert [t.tolist() for t in thirds] == [[0, 3], [1, 4], [2, 5]]
    last = [distributed.shard(torch.arange(3), distributed.Context(r, 2)) for r in (0, 1)]
    assert [t.tolist() for t in last] == [[0, 2], [1]]


def test_every_process_must_get_a_share_of_every_minibatch() -> None:
    """``shard`` deals each minibatch out round the processes: a last batch of one example
    leaves the second process nothing, whose NaN loss ended the run with a wrong hint."""
    two = distributed.Context(rank=0, world_size=2)
    distributed.check_shares(34, 32, two)  # a last batch of 2: one example each
    distributed.check_shares(33, 32, distributed.Context())  # one process takes anything
    for examples, batch in ((33, 32), (10, 1)):
        with pytest.raises(UserError, match="2 processes need at least 2 examples"):
            distributed.check_shares(examples, batch, two)


def test_the_batch_size_must_split_evenly_over_the_processes() -> None:
    """Shares of 8 and 7 (--batch-size 15 over 2 processes) in every minibatch: DDP's mean of the
    shares' means weights an example of the 7 by 1/14 and one of the 8 by 1/16, not 1/15, on
    every step, so it is refused; 16 splits 8 + 8, and an uneven last minibatch alone passes."""
    two = distributed.Context(rank=1, world_size=2)
    for examples in (150, 157):  # a last minibatch of 15, or of 7
        with pytest.raises(UserError, match="--batch-size 15 does not split evenly over 2"):
            distributed.check_shares(examples, 15, two)
    distributed.check_shares(160, 16, two)
    distributed.check_shares(163, 16, two)  # a last minibatch of 3: 2 + 1, documented
    distributed.check_shares(150, 15, distributed.Context())  # one process takes anything
    with pytest.raises(UserError, match="--batch-size 64 does not split evenly over 3"):
        distributed.check_shares(5000, 64, distributed.Context(rank=0, world_size=3))


@pytest.mark.parametrize("unset", [("RANK", "MASTER_ADDR", "MASTER_PORT"), ("MASTER_PORT",)])
def test_world_size_without_torchrun_is_a_user_error(monkeypatch, unset) -> None:
    """WORLD_SIZE > 1 left in the environment of a plain ``python cli.py`` made the env://
    rendezvous raise a ValueError, a traceback; the refusal names what torchrun would have set."""
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.setenv(name, {"RANK": "0", "MASTER_ADDR": "127.0.0.1"}.get(name, "29500"))
    for name in unset:
        monkeypatch.delenv(name)
    with pytest.raises(UserError) as err:
        distributed.init_from_env(torch.device("cpu"))
    message = str(err.value)
    assert all(name in message for name in unset) and "torchrun" in message
    assert "unset WORLD_SIZE" in message and "\n" not in message


@pytest.mark.parametrize("value", ["abc", "", "-2", "2.5"])
def test_a_world_size_that_is_not_a_count_is_a_user_error(monkeypatch, value) -> None:
    """int() on a WORLD_SIZE such as "abc" raised a ValueError, a traceback."""
    monkeypatch.setenv("WORLD_SIZE", value)
    with pytest.raises(UserError, match="not a count of processes"):
        distributed.init_from_env(torch.device("cpu"))


@pytest.mark.parametrize("rank", [0, 1])
def test_rank_0_reads_the_data_before_any_other_process(monkeypatch, rank) -> None:
    """Under torchrun every process loads the data set; one that is missing is downloaded, so
    rank 0 must finish its load (and download) before the others start theirs: rank 0 reaches
    the barrier after the block, every other rank before it."""
    events: list[str] = []
    monkeypatch.setattr(distributed, "barrier", lambda: events.append("barrier"))
    with distributed.main_process_first(distributed.Context(rank, 2)):
        events.append("load")
    assert events == (["load", "barrier"] if rank == 0 else ["barrier", "load"])
