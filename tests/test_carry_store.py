"""The carry's store across visits and resumes (``bilevel.carry``): the restarted examples are
drawn anew each visit, the plain carry draws no random numbers, and a resumed store keeps the
examples never visited starting afresh."""

from __future__ import annotations

import pytest
import torch

from bilevel.carry import CarriedDecisions


def test_the_restarted_examples_are_drawn_anew_at_every_visit() -> None:
    """--carry-restart 0.5 over 4,000 seen examples: two visits restart about half each, and the
    two halves are independent draws, so about a quarter (not a half) restart both times."""
    torch.manual_seed(0)
    carried = CarriedDecisions(4000, restart=0.5)
    carried.select(torch.arange(4000))
    carried.remember(torch.full((4000, 1), 0.2))
    first = carried.start(torch.zeros(4000, 1)) == 0
    second = carried.start(torch.zeros(4000, 1)) == 0
    assert abs(first.float().mean().item() - 0.5) < 0.03
    assert abs((first & second).float().mean().item() - 0.25) < 0.03  # sd 0.007


def test_the_plain_carry_leaves_the_random_stream_alone() -> None:
    """restart 0, no jitter: the start is the carried δ with no draw, so a run's random stream
    (its random starts, its batches) is the same with the carry as before it."""
    carried = CarriedDecisions(3)
    carried.select(torch.tensor([0, 2]))
    carried.remember(torch.tensor([[0.1], [0.2]]))
    carried.select(torch.tensor([2, 1]))
    torch.manual_seed(7)
    start = carried.start(torch.tensor([[0.5], [0.5]]))
    after = torch.rand(1)
    torch.manual_seed(7)
    assert torch.equal(after, torch.rand(1))
    assert torch.equal(start, torch.tensor([[0.2], [0.5]]))


def test_a_resumed_store_starts_the_examples_never_visited_afresh() -> None:
    """A run stopped before every example was visited: after state_dict → load_state_dict the
    visited examples start at their δ and the others at z0, not at the store's zero rows."""
    carried = CarriedDecisions(4)
    carried.select(torch.tensor([3, 1]))
    carried.remember(torch.tensor([[0.3], [-0.2]]))
    resumed = CarriedDecisions(4)
    resumed.load_state_dict(carried.state_dict())
    resumed.select(torch.arange(4))
    z0 = torch.full((4, 1), 0.05)
    assert torch.equal(resumed.start(z0), torch.tensor([[0.05], [-0.2], [0.05], [0.3]]))


def test_the_store_holds_the_decision_without_its_graph() -> None:
    """A δ handed over with its graph to φ (the learned follower's unroll) is stored as a
    constant: the next visit's start needs no gradient, so no batch's graph outlives its step."""
    phi = torch.tensor(2.0, requires_grad=True)
    carried = CarriedDecisions(2)
    carried.select(torch.tensor([1]))
    carried.remember(phi * torch.tensor([[0.1]]))
    start = carried.start(torch.zeros(1, 1))
    assert not carried.store.requires_grad and not start.requires_grad
    assert torch.equal(start, torch.tensor([[0.2]]))


def test_a_negative_free_step_is_refused() -> None:
    """A free step below 0 would step each carried δ down the gradient (towards the clean point)."""
    with pytest.raises(ValueError, match="free step"):
        CarriedDecisions(4, free_step=-0.1)
