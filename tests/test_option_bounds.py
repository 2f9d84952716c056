"""The bounds of the adversarial options' checks (``problems.adversarial.checks``), each at its
edge: the value the help names as allowed resolves, one past it is one sentence. A bound moved
by one (a ``<`` for a ``<=``) would refuse a documented value or let a run record one it cannot
use. Nothing trains: only ``resolve`` runs."""

from __future__ import annotations

import pytest

from bilevel.errors import UserError
from problems.adversarial.dro_config import DROConfig


@pytest.mark.parametrize(
    "options",
    [
        # β1 = 0 is Adam without momentum (RMSprop-like): [0, 1) is closed at 0
        dict(follower="2-step", attacker_betas=[0.0, 0.999]),
        # "1 to 10,000 steps": 10,000 itself, as evaluate's pgd10000
        dict(follower="pgm", pgm_steps=10_000, select_pgd_steps=10_000, eval_pgd_steps=10_000),
        dict(follower="2-step", attacker_width=16.0),  # "at most 16"
        dict(follower="grad", epochs=4, milestones=[1, 3]),  # "between 1 and --epochs − 1"
    ],
    ids=["beta-zero", "pgd-steps", "width", "milestones"],
)
def test_a_value_at_the_edge_of_its_bound_resolves(options) -> None:
    cfg = DROConfig(**options)
    cfg.given = frozenset(options)
    resolved = cfg.resolve()
    assert all(getattr(resolved, k) == v for k, v in options.items())


@pytest.mark.parametrize(
    ("options", "sentence"),
    [
        (dict(eval_pgd_steps=10_001), "--eval-pgd-steps takes 1 to 10,000 steps; got 10,001."),
        (dict(attacker_width=16.5), "--attacker-width must be at most 16 ("),
        # a hand-designed follower has no unroll to take plain steps from, whatever their sign
        (dict(follower="pgm", plain_steps=-1), "--plain-steps needs a learned follower"),
        (dict(carry_jitter=-0.5), "--carry-jitter must be at least 0; got -0.5."),
    ],
)
def test_a_value_just_past_its_bound_is_refused_in_one_sentence(options, sentence) -> None:
    cfg = DROConfig(**options)
    cfg.given = frozenset(options)
    with pytest.raises(UserError) as err:
        cfg.resolve()
    assert sentence in str(err.value)


def test_a_milestone_at_the_last_epoch_is_refused_typed_and_kept_recorded() -> None:
    """Typed, a drop after the last epoch is never trained at; recorded by a folder (the 1-epoch
    default [1] was one), it resumes as it began; past --epochs it is refused either way."""
    typed = DROConfig(epochs=4, milestones=[4])
    typed.given = frozenset({"milestones"})
    with pytest.raises(UserError, match=r"between 1 and 3 .*; got \[4\]\.$"):
        typed.resolve()
    assert DROConfig(epochs=4, milestones=[4]).resolve().milestones == [4]
    assert DROConfig(epochs=1).resolve().milestones == [1]
    with pytest.raises(UserError, match=r"between 1 and 4 .*; got \[5\]\.$"):
        DROConfig(epochs=4, milestones=[5]).resolve()
