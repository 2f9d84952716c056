"""What last.pt holds, read back (bilevel/checkpoint.py): the position inside an epoch, the
best, both clocks and the generator state; and a checkpoint older than the position and the CPU
clock."""

from __future__ import annotations

import torch
from helpers import linear_two_class

from bilevel import NoFollower
from bilevel.checkpoint import Saved, State, load_state, position_state, write_state
from bilevel.loop import JointTrainer
from bilevel.run import RunDir
from bilevel.seeding import seeded
from problems.adversarial.dro import AdversarialDRO


def _trainer() -> JointTrainer:
    problem = AdversarialDRO(linear_two_class(), 0.1)
    optimizer = torch.optim.SGD(problem.leader.parameters(), lr=0.5)
    return JointTrainer(problem, NoFollower(), optimizer)


def test_last_pt_gives_back_the_position_inside_an_epoch(tmp_path) -> None:
    """A stop in batch 2 of epoch 4 (3 epochs done) writes last.pt and leaves metrics.jsonl
    alone; reading it back gives each number as it was: the epochs done, the history, the best,
    both clocks, the position with its running sums and its own wall and CPU seconds, and the
    generator state."""
    run = RunDir(tmp_path)
    history = [{"epoch": 1}, {"epoch": 2}, {"epoch": 3}]
    state = State(3, history, best=0.7, train_seconds=12.5, train_cpu_seconds=20.25)
    sums = {"loss": torch.tensor(1.5)}
    partial = {"epoch": 4, "batches": 2, "sums": sums, "seconds": 3.0, "cpu_seconds": 5.0}
    trainer, fresh = _trainer(), _trainer()
    with seeded(7):
        expected = torch.get_rng_state()
        write_state(run, position_state(trainer, None, state, partial))
        assert not run.metrics_path.exists()  # only an epoch's end rewrites it
        torch.rand(5)  # the generator moves on after the write
        loaded = load_state(run, fresh, None)
        assert torch.equal(torch.get_rng_state(), expected)
    assert (loaded.epoch, loaded.history, loaded.best) == (3, history, 0.7)
    assert (loaded.train_seconds, loaded.train_cpu_seconds) == (12.5, 20.25)
    assert loaded.partial is not None
    assert (loaded.partial["epoch"], loaded.partial["batches"]) == (4, 2)
    assert (loaded.partial["seconds"], loaded.partial["cpu_seconds"]) == (3.0, 5.0)
    assert torch.equal(loaded.partial["sums"]["loss"], torch.tensor(1.5))
    assert Saved.from_state(loaded).describe() == (
        "last.pt (after batch 2 of epoch 4), metrics.jsonl (epochs 1-3) and best.pt"
    )


def test_a_checkpoint_from_before_partial_and_cpu_time_resumes_at_the_epoch_end(tmp_path) -> None:
    """last.pt written before "partial" and "train_cpu_seconds" existed: an epoch-end
    checkpoint with no CPU time recorded, not a checkpoint that does not fit."""
    run = RunDir(tmp_path)
    state = State(2, [{"epoch": 1}, {"epoch": 2}], best=0.5, train_seconds=8.0)
    checkpoint = position_state(_trainer(), None, state, None)
    del checkpoint["partial"], checkpoint["train_cpu_seconds"]
    torch.save(checkpoint, run.last_checkpoint)
    loaded = load_state(run, _trainer(), None)
    assert (loaded.epoch, loaded.partial, loaded.train_seconds) == (2, None, 8.0)
    assert loaded.train_cpu_seconds == 0.0
    assert Saved.from_checkpoint(checkpoint).describe(best=False) == (
        "last.pt (end of epoch 2), metrics.jsonl (epochs 1-2)"
    )
