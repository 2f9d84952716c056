"""Truncated CG (Steihaug): the implicit solve where the follower's objective has no strict
maximum along a search direction.

CG minimises m(x) = ½xᵀAx − bᵀx. With A positive definite it returns A⁻¹b. Where a direction p
has pᵀAp ≤ 0, m is unbounded below along p and the step rr/pᵀAp is ±inf, NaN or climbs m; the
solve stops at the minimiser of m over the directions of positive curvature seen so far
(``bilevel.implicit.conjugate_gradient``).
"""

from __future__ import annotations

import pytest
import torch
from test_hypergradients import DT, LinearQuadratic, M, N

from bilevel.hypergradients import Hypergradient, hypergradient
from bilevel.implicit import conjugate_gradient

B = torch.tensor([1.0, 1.0], dtype=DT)


def model(a: torch.Tensor, x: torch.Tensor) -> float:
    """m(x) = ½xᵀAx − bᵀx."""
    return float(0.5 * x @ a @ x - B @ x)


@pytest.mark.parametrize(
    ("a", "expected"),
    [
        # positive definite: A⁻¹b, whatever the scaling of the operator
        (torch.tensor([[2.0, 1.0], [1.0, 3.0]], dtype=DT), torch.tensor([0.4, 0.2], dtype=DT)),
        # A = 0: no curvature at the first direction, x = 0
        (torch.zeros(2, 2, dtype=DT), torch.zeros(2, dtype=DT)),
        # diag(3, −1): b has bᵀAb = 2 > 0, so x₁ = (bᵀb / bᵀAb) b, the minimiser of m along b;
        # the next direction p = (2, 6) has pᵀAp = −24 and the solve stops there
        (torch.diag(torch.tensor([3.0, -1.0], dtype=DT)), torch.tensor([1.0, 1.0], dtype=DT)),
    ],
    ids=["positive-definite", "zero", "indefinite"],
)
@pytest.mark.parametrize("scale", [1.0, 0.1, -2.0])
def test_cg_returns_the_minimiser_over_the_directions_of_positive_curvature(
    a: torch.Tensor, expected: torch.Tensor, scale: float
) -> None:
    x = conjugate_gradient(lambda v: [a @ v[0]], [B], iterations=2, scale=scale)[0]
    torch.testing.assert_close(x, expected, rtol=1e-12, atol=1e-12)
    assert model(a, x) <= 0  # never above m(0): CG's steps descend m


def test_cg_does_not_step_along_negative_curvature() -> None:
    """One direction, b = (2, 1), with bᵀAb = −3 < 0: a step there climbs m (m(0) = 0)."""
    a = torch.diag(torch.tensor([-1.0, 1.0], dtype=DT))
    b = torch.tensor([2.0, 1.0], dtype=DT)
    x = conjugate_gradient(lambda v: [a @ v[0]], [b], iterations=1)[0]
    assert float(0.5 * x @ a @ x - b @ x) <= 0
    assert torch.equal(x, torch.zeros(2, dtype=DT))


def test_implicit_cg_on_an_objective_linear_in_the_decision_is_danskin() -> None:
    """q(λ, w) = wᵀBλ (A = 0) has H = 0: no implicit correction, ∇_λ L at w as Danskin has."""
    g = torch.Generator().manual_seed(0)
    p = LinearQuadratic(
        torch.zeros(N, N, dtype=DT),
        torch.randn(N, M, generator=g, dtype=DT),
        torch.randn(N, generator=g, dtype=DT),
        torch.randn(M, generator=g, dtype=DT),
    )
    w = torch.randn(N, generator=g, dtype=DT)
    _, (implicit,) = hypergradient(p, None, w, Hypergradient("implicit-cg", cg_iterations=N))
    _, (danskin,) = hypergradient(p, None, w, Hypergradient("danskin"))
    assert torch.isfinite(implicit).all()
    torch.testing.assert_close(implicit, danskin)
