"""The implicit hypergradient in float32 far from the origin: ``blocked_mask`` must still tell a
free coordinate (|z_i| ≈ 64, where z_i + 1e-6 rounds back to z_i) from one held at a bound.

The follower maximises q = −½ zᵀAz + zᵀ(Bθ + c) over a box Z, the leader's loss is ½‖z − t‖².
With H the coordinates held at a bound (independent of θ) and F the free ones, the KKT point
has A_FF z_F = (Bθ + c)_F − A_FH z_H and z_H constant, so by the implicit function theorem

    dz_F/dθ = A_FF⁻¹ B_F,      dF/dθ = B_Fᵀ A_FF⁻¹ (z_F − t_F)      (H = ∅: Bᵀ A⁻¹ (z − t)).

The problem is built backwards from a chosen z*: c = A z* + λ − Bθ with λ_F = 0 (stationary)
and λ_H > 0 (q still climbs against the bound), so z* is exact in float32.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from bilevel import BilevelProblem
from bilevel.decisions import grad_or_zeros, leaf
from bilevel.hypergradients import Hypergradient, hypergradient
from bilevel.implicit import blocked_mask

N, M = 4, 3
F64 = torch.float64


class Theta(nn.Module):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = nn.Parameter(value.clone())


class BoxQuadratic(BilevelProblem):
    """max_{lo ≤ z ≤ hi} −½ zᵀAz + zᵀ(Bθ + c); L = ½‖z − t‖²; all in float32."""

    def __init__(self, a, b, c, t, theta, lo, hi) -> None:
        self.a, self.b, self.c, self.t, self.lo, self.hi = a, b, c, t, lo, hi
        self.leader = Theta(theta)

    def project(self, batch, z: Tensor) -> Tensor:
        return torch.minimum(torch.maximum(z, self.lo), self.hi)

    def follower_objective(self, batch, z: Tensor) -> Tensor:
        return -0.5 * z @ self.a @ z + z @ (self.b @ self.leader.value + self.c)

    def leader_loss(self, batch, z: Tensor) -> Tensor:
        return 0.5 * (z - self.t).pow(2).sum()


def _problem(held: list[int]) -> tuple[BoxQuadratic, Tensor, Tensor]:
    """(problem, z* in float32, dF/dθ in float64) with the coordinates ``held`` at their upper
    bound 70 and the others free near 64."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(N, N, generator=g, dtype=F64)
    a = q @ q.T + N * torch.eye(N, dtype=F64)
    b, t = torch.randn(N, M, generator=g, dtype=F64), torch.randn(N, generator=g, dtype=F64)
    theta = torch.randn(M, generator=g, dtype=F64)
    z = (64 + torch.rand(N, generator=g, dtype=F64)).float().double()  # exact in float32
    hi = torch.full((N,), 1000.0, dtype=F64)
    lam = torch.zeros(N, dtype=F64)
    z[held], hi[held], lam[held] = 70.0, 70.0, 5.0
    c = a @ z + lam - b @ theta
    free = [i for i in range(N) if i not in held]
    aff = a[free][:, free]
    expected = b[free].T @ torch.linalg.solve(aff, z[free] - t[free])
    f32 = [x.float() for x in (a, b, c, t, theta, -hi, hi)]
    return BoxQuadratic(*f32), z.float(), expected


@pytest.mark.parametrize("held", [[], [1]], ids=["unconstrained", "one-held-at-70"])
def test_implicit_cg_matches_the_closed_form_far_from_the_origin_in_float32(held) -> None:
    problem, z, expected = _problem(held)
    zz, zs = leaf(z)
    with torch.enable_grad():
        dq_dz = grad_or_zeros(problem.follower_objective(None, zz), zs)
    (mask,) = blocked_mask(problem, None, zz, dq_dz, 1e-6)
    assert mask.tolist() == [float(i in held) for i in range(N)]
    _, (grad,) = hypergradient(problem, None, z, Hypergradient("implicit-cg", cg_iterations=N))
    assert expected.norm() > 1  # L has no direct θ term: Danskin's gradient would be 0
    torch.testing.assert_close(grad.double(), expected, rtol=1e-4, atol=1e-5)
