"""Unrolled hypergradients through a ``torch.optim`` optimizer (``higher``'s differentiable
optimizers, ``bilevel.unrolled.optimizer_iterates``), checked on the linear-quadratic problem of
``test_hypergradients`` against the plain-autograd unroll and against finite differences."""

from __future__ import annotations

from functools import partial

import pytest
import torch
from test_hypergradients import lq

from bilevel.hypergradients import Hypergradient, hypergradient
from bilevel.unrolled import ascent, optimizer_iterates, unroll


def _hypergradient(problem, **options) -> torch.Tensor:
    problem.hypergradient = Hypergradient("unrolled", unroll_steps=15, **options)
    _, (grad,) = hypergradient(problem, None, problem.init_follower(None))
    return grad


def test_plain_sgd_through_higher_is_the_autograd_unroll() -> None:
    p = lq()
    z_sgd = optimizer_iterates(p, None, p.init_follower(None), 15, partial(torch.optim.SGD, lr=0.3))
    z_plain = unroll(p, None, 15, ascent(0.3))
    assert torch.allclose(z_sgd, z_plain, atol=1e-12)
    sgd = _hypergradient(p, unroll_optimizer=partial(torch.optim.SGD, lr=0.3))
    plain = _hypergradient(p, unroll_step_size=0.3)
    assert torch.allclose(sgd, plain, atol=1e-10)


@pytest.mark.parametrize(
    "make",
    [partial(torch.optim.SGD, lr=0.2, momentum=0.9), partial(torch.optim.Adam, lr=0.1)],
    ids=["momentum", "adam"],
)
def test_stateful_optimizers_differentiate_their_state_matching_finite_differences(make) -> None:
    p = lq()
    grad = _hypergradient(p, unroll_optimizer=make)
    lam = p.leader.value

    def outer_loss() -> float:
        z = optimizer_iterates(p, None, p.init_follower(None), 15, make, first_order=True)
        return float(p.leader_loss(None, z.detach()))

    numeric = torch.zeros_like(lam)
    h = 1e-6
    with torch.no_grad():
        for i in range(len(lam)):
            lam[i] += h
            up = outer_loss()
            lam[i] -= 2 * h
            down = outer_loss()
            lam[i] += h
            numeric[i] = (up - down) / (2 * h)
    assert torch.allclose(grad, numeric, rtol=1e-5, atol=1e-7)
    # the optimizer's state matters: momentum's (or Adam's) unroll is not plain SGD's
    assert not torch.allclose(grad, _hypergradient(p, unroll_step_size=0.2), atol=1e-4)


@pytest.mark.parametrize(
    "make",
    [partial(torch.optim.SGD, lr=0.2, momentum=0.9), partial(torch.optim.Adam, lr=0.1)],
    ids=["momentum", "adam"],
)
def test_first_order_through_an_optimizer_drops_the_path_through_w(make) -> None:
    """The optimizer path's twin of test_hypergradients' first-order test: L = ½‖w − c‖² has no
    direct λ term, so without the path through the optimizer's iterates the gradient is zero."""
    p = lq()
    grad = _hypergradient(p, unroll_optimizer=make, first_order=True)
    assert torch.equal(grad, torch.zeros_like(grad))
    assert _hypergradient(p, unroll_optimizer=make).abs().max() > 0  # the full one is not
