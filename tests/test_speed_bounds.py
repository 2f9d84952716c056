"""``bench speed``: the largest batch and PGM-K it takes are accepted (the limits are inclusive),
and a timed step of a learned method is one leader step with one φ step, as ``solve`` takes."""

from __future__ import annotations

import torch
from test_speed import _queued_work_bench

from problems.adversarial import speed
from problems.adversarial.defaults import MAX_PGD_STEPS


def test_the_largest_batch_and_pgm_k_are_accepted(monkeypatch) -> None:
    """MNIST's whole training set is a batch, and pgm-K takes K up to evaluate's PGD limit; one
    past either is refused (test_speed.py)."""
    big = f"pgm-{MAX_PGD_STEPS}"
    assert speed.step_options(big, speed.SpeedConfig()).pgm_steps == MAX_PGD_STEPS
    cfg = speed.SpeedConfig(batch_size=speed.MAX_BATCH_SIZE, batches=1, rounds=1,
                            methods=("plain", big))  # fmt: skip
    rows, _ = _queued_work_bench(monkeypatch, cfg, {"plain": 1.0, big: 2.0})
    assert rows[big]["ratio_to_plain"] == 2.0


def test_a_timed_learned_step_takes_one_phi_step() -> None:
    """2-Step fused: one leader pass at z0's gradient input, one at z1's, one fused pass for θ
    and φ, and the attacker's two unrolled steps (test_speed.py's pass count of the same
    trainer); a second φ step per batch would add a fresh solve and time a method solve does not
    train."""
    cfg = speed.SpeedConfig(model="small-cnn", batch_size=2, methods=("2-step-fused",))
    trainer, batch = speed.make_trainer("2-step-fused", cfg, torch.device("cpu"))
    counts = {"leader": 0, "attacker": 0}
    trainer.problem.leader.register_forward_hook(
        lambda *_: counts.__setitem__("leader", counts["leader"] + 1)
    )
    trainer.follower.net.register_forward_hook(
        lambda *_: counts.__setitem__("attacker", counts["attacker"] + 1)
    )
    trainer.step(batch)
    assert counts == {"leader": 3, "attacker": 2}
