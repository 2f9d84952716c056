"""Each process's own random draws under torchrun (2 processes, gloo, through ``fit``): the
processes start from one seed, yet draw different random starts at the same share place, and
rank 0's checkpoint keeps every process's generator state, so that a resume is exact also where
the last minibatch splits unevenly. A single process draws and writes as before."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
from helpers import join_gloo, linear_two_class, spawn_two

from bilevel import JointTrainer, NoFollower, distributed
from bilevel.checkpoint import State, position_state, restore_generators
from bilevel.fit import fit
from bilevel.followers import SignGradientAscent
from bilevel.run import RunDir
from bilevel.seeding import seeded
from problems.adversarial.dro import AdversarialDRO

EPS = 0.3


def _noisy_fit(
    folder: Path, context, epochs: int, resume: bool = False, stop_after: int | None = None
):
    """A tiny DRO run through ``fit``: FGSM-RS (a random start per example) against a linear
    classifier under DDP, 7 examples in minibatches of 4, so two processes' last shares are 2
    and 1 examples. Returns every random start this process drew, and θ at the end."""
    torch.manual_seed(0)  # the same θ everywhere, as seed_everything leaves it
    leader = distributed.data_parallel(linear_two_class(), torch.device("cpu"))
    problem = AdversarialDRO(leader, EPS)
    starts: list[torch.Tensor] = []
    init = problem.init_follower

    def recorded_init(batch, random_start: bool = False):
        z0 = init(batch, random_start)
        starts.append(z0.clone())
        return z0

    problem.init_follower = recorded_init
    optimizer = torch.optim.SGD(leader.parameters(), lr=0.5)
    trainer = JointTrainer(problem, SignGradientAscent(1, 1.25 * EPS, random_start=True), optimizer)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.rand(7, 1, 4, 4, generator=gen), torch.randint(0, 2, (7,), generator=gen)

    def batches(epoch: int):
        for i in range(0, 7, 4):
            yield distributed.shard(x[i : i + 4], context), distributed.shard(y[i : i + 4], context)

    folder.mkdir(exist_ok=True)
    fit(trainer, None, batches, 2, lambda: {"val": 0.0}, RunDir(folder), epochs, "val",
        resume=resume, interrupt_after_epoch=stop_after, show_progress=False,
        is_main=context.is_main)  # fmt: skip
    return starts, distributed.unwrap(leader)[1].weight.detach().clone()


def _noise_worker(rank: int, port: int, out: str) -> None:
    join_gloo(rank, port)
    context, root = distributed.Context(rank, 2), Path(out)
    unbroken_starts, unbroken = _noisy_fit(root / "unbroken", context, 2)
    _noisy_fit(root / "stopped", context, 2, stop_after=1)
    resumed_starts, resumed = _noisy_fit(root / "stopped", context, 2, resume=True)
    saved = {"unbroken_starts": unbroken_starts, "unbroken": unbroken}
    torch.save(
        saved | {"resumed_starts": resumed_starts, "resumed": resumed}, root / f"rank{rank}.pt"
    )
    dist.barrier()
    distributed.shutdown()
    os._exit(0)


@pytest.fixture(scope="module")
def noisy_ranks(tmp_path_factory) -> list[dict]:
    """Each rank's random starts and final θ: a 2-epoch run, and one stopped after epoch 1 and
    resumed."""
    out = tmp_path_factory.mktemp("noise")
    spawn_two(_noise_worker, str(out))
    return [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]


def test_each_process_draws_its_own_random_starts(noisy_ranks) -> None:
    """The processes start from one seed (θ identical), yet the example at a share's k-th place
    must get its own random start on each process, as in one process on the whole batch (they
    were the same tensor on both: the same noise at every share place)."""
    first = [ranks["unbroken_starts"][0] for ranks in noisy_ranks]
    assert first[0].shape == first[1].shape == (2, 1, 4, 4)
    assert not torch.equal(first[0], first[1])
    assert all(start.abs().max() > 0 for start in first)


def test_a_resume_with_an_uneven_last_share_ends_as_the_unbroken_run(noisy_ranks) -> None:
    """The last minibatch splits 2 + 1, so the processes draw different numbers of random
    starts; each resumes with its own generator state from rank 0's checkpoint and draws epoch
    2's starts as the unbroken run did (with rank 0's state, rank 1 drew other ones), so θ ends
    bit for bit the same."""
    for ranks in noisy_ranks:
        epoch_two = ranks["unbroken_starts"][2:]
        assert len(epoch_two) == len(ranks["resumed_starts"]) == 2
        for unbroken, resumed in zip(epoch_two, ranks["resumed_starts"], strict=True):
            assert torch.equal(unbroken, resumed)
        assert torch.equal(ranks["resumed"], ranks["unbroken"])


def _checkpoint_rows(rows: int) -> dict:
    """A checkpoint's generator keys, as ``rows`` processes write them (one state for one)."""
    states = []
    for seed in range(rows):
        torch.manual_seed(seed)
        states.append(torch.get_rng_state())
    checkpoint = {"rng": states[0]}
    if rows > 1:
        checkpoint["rng_by_rank"] = {"cpu": torch.stack(states)}
    return checkpoint


def test_a_resume_gives_each_process_its_own_generator_state(monkeypatch) -> None:
    """Rank r takes its row; a rank the checkpoint has no row for (from one process's, or an
    older one, every rank but 0; more processes on resume) takes rank 0's state and draws its
    own stream from it, unlike any other rank's (from one state, every rank took that one and
    drew the same noise); rank 0 keeps the state it takes."""
    two, one = _checkpoint_rows(2), _checkpoint_rows(1)
    with seeded(None):  # draw_own_noise reseeds the generators: leave them as they were
        monkeypatch.setattr(distributed, "rank", lambda: 1)
        restore_generators(two)
        assert torch.equal(torch.get_rng_state(), two["rng_by_rank"]["cpu"][1])
        restore_generators(one)
        own = torch.get_rng_state()
        assert not torch.equal(own, one["rng"])
        restore_generators(one)
        assert torch.equal(torch.get_rng_state(), own)  # the same stream on every resume
        monkeypatch.setattr(distributed, "rank", lambda: 0)
        restore_generators(one)
        assert torch.equal(torch.get_rng_state(), one["rng"])
        monkeypatch.setattr(distributed, "rank", lambda: 2)
        restore_generators(two)
        third = torch.get_rng_state()
        assert not any(torch.equal(third, row) for row in two["rng_by_rank"]["cpu"])
        restore_generators(two)
        assert torch.equal(torch.get_rng_state(), third)  # the same stream on every resume


def test_a_single_process_checkpoint_holds_one_generator_state(tmp_path) -> None:
    """One process draws as before and writes what it always did: no per-rank states."""
    torch.manual_seed(3)
    expected = torch.get_rng_state()
    distributed.draw_own_noise()  # a no-op in one process
    assert torch.equal(torch.get_rng_state(), expected)
    problem = AdversarialDRO(linear_two_class(), EPS)
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.5)
    checkpoint = position_state(JointTrainer(problem, NoFollower(), optimizer), None, State(), None)
    assert "rng_by_rank" not in checkpoint and torch.equal(checkpoint["rng"], torch.get_rng_state())
