"""Hypergradients against closed forms (float64): the linear-quadratic bilevel problem (implicit
by CG and Neumann, unrolled), ridge regression's dw*/dλ, and Danskin on DRO with a linear model."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from bilevel import BilevelProblem, JointTrainer, SignGradientAscent
from bilevel.followers import GradientAscent
from bilevel.hypergradients import Hypergradient, hypergradient
from bilevel.implicit import blocked_mask, conjugate_gradient, implicit_hypergradient
from bilevel.unrolled import ascent, unroll, unrolled_hypergradient
from problems.adversarial.dro import AdversarialDRO

DT = torch.float64
N, M = 5, 3  # dim w, dim λ


class Vector(nn.Module):
    def __init__(self, value: Tensor) -> None:
        super().__init__()
        self.value = nn.Parameter(value.clone())


class LinearQuadratic(BilevelProblem):
    """Inner min_w ½wᵀAw − wᵀBλ (the follower maximises its negative), outer ½‖w − c‖²."""

    zero_sum = False

    def __init__(self, a: Tensor, b: Tensor, c: Tensor, lam: Tensor) -> None:
        self.a, self.b, self.c, self.leader = a, b, c, Vector(lam)

    def init_follower(self, batch, random_start: bool = False) -> Tensor:
        return torch.zeros(N, dtype=DT)

    def project(self, batch, z: Tensor) -> Tensor:
        return z

    def follower_objective(self, batch, w: Tensor) -> Tensor:
        return -(0.5 * w @ self.a @ w - w @ self.b @ self.leader.value)

    def leader_loss(self, batch, w: Tensor) -> Tensor:
        return 0.5 * (w - self.c).pow(2).sum()

    def follower_features(self, batch, w: Tensor) -> Tensor:
        return w

    def optimum(self) -> Tensor:
        return torch.linalg.solve(self.a, self.b @ self.leader.value.detach())


def lq(seed: int = 0) -> LinearQuadratic:
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(N, N, generator=g, dtype=DT)
    a = q @ q.T / N + 0.3 * torch.eye(N, dtype=DT)  # SPD, spread-out spectrum
    b = torch.randn(N, M, generator=g, dtype=DT)
    c = torch.randn(N, generator=g, dtype=DT)
    return LinearQuadratic(a, b, c, torch.randn(M, generator=g, dtype=DT))


def implicit_closed_form(p: LinearQuadratic) -> Tensor:
    """∇λ = Bᵀ A⁻¹ (w* − c)."""
    return p.b.T @ torch.linalg.solve(p.a, p.optimum() - p.c)


@pytest.mark.parametrize("scale", [1.0, 0.1, 7.0])
def test_implicit_cg_is_exact_after_n_iterations_for_any_scaling(scale: float) -> None:
    p = lq()
    _, (grad,) = implicit_hypergradient(p, None, p.optimum(), "cg", iterations=N, scale=scale)
    torch.testing.assert_close(grad, implicit_closed_form(p), rtol=1e-10, atol=1e-12)


def test_cg_with_fewer_iterations_than_n_is_not_yet_exact() -> None:
    """Guards the test above: exactness needs all n Krylov directions on this spectrum."""
    p = lq()
    _, (grad,) = implicit_hypergradient(p, None, p.optimum(), "cg", iterations=2)
    assert (grad - implicit_closed_form(p)).abs().max() > 1e-4


def test_cg_scaling_does_not_change_the_iterates() -> None:
    """Each CG iterate (not only the converged one) is the same for s = 1 and s = 0.1."""
    p = lq(1)
    b = [torch.randn(N, dtype=DT)]
    apply_a = lambda v: [p.a @ v[0]]  # noqa: E731
    for k in range(1, N + 1):
        one = conjugate_gradient(apply_a, b, k, scale=1.0)[0]
        torch.testing.assert_close(conjugate_gradient(apply_a, b, k, scale=0.1)[0], one)
    torch.testing.assert_close(one, torch.linalg.solve(p.a, b[0]), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("tol", [1e-2, 1e-3])
def test_cg_stops_once_the_residual_is_within_tol_of_b(tol: float) -> None:
    """Stops at ‖Ax − b‖ ≤ tol·‖b‖ (not later: before the budget on a spectrum of 1 to 1e4, and
    not earlier: the residual it returns is within tol)."""
    a = torch.logspace(0, 4, 50, dtype=DT)
    b = torch.ones(50, dtype=DT)
    calls = []

    def apply_a(v: list[Tensor]) -> list[Tensor]:
        calls.append(1)
        return [a * v[0]]

    (x,) = conjugate_gradient(apply_a, [b], iterations=200, tol=tol)
    assert (a * x - b).norm() <= tol * b.norm()
    assert len(calls) < 200


@pytest.mark.parametrize("terms", [1, 4, 9])
def test_neumann_with_k_terms_is_the_truncated_series(terms: int) -> None:
    """α Σ_{k<K} (I − αA)^k = (I − (I − αA)^K) A⁻¹: ∇λ = Bᵀ (I − P_K) A⁻¹ (w* − c)."""
    p, alpha = lq(), 0.3
    _, (grad,) = implicit_hypergradient(
        p, None, p.optimum(), "neumann", iterations=terms, step=alpha
    )
    power = torch.linalg.matrix_power(torch.eye(N, dtype=DT) - alpha * p.a, terms)
    expected = p.b.T @ (torch.eye(N, dtype=DT) - power) @ torch.linalg.solve(p.a, p.optimum() - p.c)
    torch.testing.assert_close(grad, expected, rtol=1e-10, atol=1e-12)
    assert (grad - implicit_closed_form(p)).abs().max() > 1e-6  # truncated, not converged


@pytest.mark.parametrize("steps", [1, 3, 12])
def test_unrolled_steps_match_the_closed_form_trajectory_and_gradient(steps: int) -> None:
    """w_T = (I − P) A⁻¹ B λ with P = (I − αA)^T; ∇λ = [(I − P) A⁻¹ B]ᵀ (w_T − c)."""
    p, alpha = lq(), 0.25
    jac = (
        torch.eye(N, dtype=DT)
        - torch.linalg.matrix_power(torch.eye(N, dtype=DT) - alpha * p.a, steps)
    ) @ torch.linalg.solve(p.a, p.b)
    w_t = unroll(p, None, steps, ascent(alpha), create_graph=False)
    torch.testing.assert_close(w_t, jac @ p.leader.value.detach(), rtol=1e-12, atol=1e-12)
    loss, (grad,) = unrolled_hypergradient(p, None, steps, ascent(alpha))
    torch.testing.assert_close(grad, jac.T @ (w_t - p.c), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(loss, p.leader_loss(None, w_t))


def test_first_order_unrolling_drops_the_path_through_w() -> None:
    """L = ½‖w − c‖² has no direct λ term, so the first-order (Danskin-like) gradient is zero."""
    p = lq()
    _, (grad,) = unrolled_hypergradient(p, None, 5, ascent(0.25), first_order=True)
    assert torch.equal(grad, torch.zeros(M, dtype=DT))


def test_implicit_solve_via_the_config_and_the_follower_solution() -> None:
    """The framework's GradientAscent follower solves the inner problem; implicit-neumann with
    many terms then converges to the exact implicit gradient."""
    p = lq()
    w = GradientAscent(steps=2000, step_size=0.3).solve(p, None)
    torch.testing.assert_close(w, p.optimum(), rtol=1e-10, atol=1e-12)
    config = Hypergradient("implicit-neumann", neumann_terms=2000, neumann_step=0.3)
    _, (grad,) = hypergradient(p, None, w, config)
    torch.testing.assert_close(grad, implicit_closed_form(p), rtol=1e-9, atol=1e-10)


# --- ridge regression ---------------------------------------------------------------------------


class Ridge(BilevelProblem):
    """Follower: w* = argmin ½‖Xw − y‖² + ½λ‖w‖². Leader loss ⟨e, w⟩ (batch = e): its gradient
    in λ is eᵀ dw*/dλ, so the basis vectors e_i read off dw*/dλ row by row."""

    zero_sum = False

    def __init__(self, x: Tensor, y: Tensor, lam: float) -> None:
        self.x, self.y, self.leader = x, y, Vector(torch.tensor(lam, dtype=DT))

    def init_follower(self, batch, random_start: bool = False) -> Tensor:
        return torch.zeros(self.x.shape[1], dtype=DT)

    def project(self, batch, w: Tensor) -> Tensor:
        return w

    def follower_objective(self, batch, w: Tensor) -> Tensor:
        lam = self.leader.value
        return -(0.5 * (self.x @ w - self.y).pow(2).sum() + 0.5 * lam * w.pow(2).sum())

    def leader_loss(self, batch: Tensor, w: Tensor) -> Tensor:
        return batch @ w

    def follower_features(self, batch, w: Tensor) -> Tensor:
        return w


def test_ridge_dw_dlambda_is_minus_the_regularised_inverse_times_w() -> None:
    """dw*/dλ = −(XᵀX + λI)⁻¹ w*, with w* found by the framework's follower."""
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(40, 4, generator=g, dtype=DT), torch.randn(40, generator=g, dtype=DT)
    p = Ridge(x, y, lam=2.0)
    reg = x.T @ x + 2.0 * torch.eye(4, dtype=DT)
    w_star = torch.linalg.solve(reg, x.T @ y)
    step = 1.0 / float(torch.linalg.eigvalsh(reg).max())
    w = GradientAscent(steps=3000, step_size=step).solve(p, None)
    torch.testing.assert_close(w, w_star, rtol=1e-10, atol=1e-12)
    rows = [
        implicit_hypergradient(p, e, w, "cg", iterations=4)[1][0] for e in torch.eye(4, dtype=DT)
    ]
    torch.testing.assert_close(
        torch.stack(rows), -torch.linalg.solve(reg, w_star), rtol=1e-8, atol=1e-10
    )


# --- zero-sum: Danskin on DRO with a linear model -----------------------------------------------


class LinearScore(nn.Module):
    """Two-class logits (−s/2, s/2) with s = wᵀx, so CE = log(1 + exp(−ỹ wᵀx)), ỹ = 2y − 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(dim, dtype=DT))

    def forward(self, x: Tensor) -> Tensor:
        s = x.flatten(1) @ self.w
        return torch.stack([-s / 2, s / 2], dim=1)


def _dro(eps: float = 0.1):
    torch.manual_seed(0)
    problem = AdversarialDRO(LinearScore(6), eps)
    x = 0.3 + 0.4 * torch.rand(16, 1, 2, 3, dtype=DT)  # the [0, 1] box never binds for ε = 0.1
    return problem, (x, torch.randint(0, 2, (16,)))


def test_dro_linear_follower_optimum_is_the_closed_form_vertex() -> None:
    problem, (x, y) = _dro()
    delta = SignGradientAscent(steps=3, step_size=0.1).solve(problem, (x, y))
    sign_y = (2 * y - 1).to(DT).view(-1, 1, 1, 1)
    expected = -0.1 * sign_y * torch.sign(problem.leader.w.detach()).view(1, 1, 2, 3)
    torch.testing.assert_close(delta, expected, rtol=0, atol=1e-15)


def test_danskin_and_implicit_cg_agree_on_linear_dro_and_equal_the_robust_gradient() -> None:
    """At δ* every coordinate sits on the L∞ ball's face, so dδ*/dw = 0: the implicit correction
    vanishes and both equal ∇_w mean log(1 + exp(−ỹ wᵀx + ε‖w‖₁))."""
    problem, (x, y) = _dro()
    delta = SignGradientAscent(steps=3, step_size=0.1).solve(problem, (x, y))
    _, (danskin,) = hypergradient(problem, (x, y), delta, Hypergradient("danskin"))
    _, (implicit,) = hypergradient(problem, (x, y), delta, Hypergradient("implicit-cg"))
    w = problem.leader.w.detach().requires_grad_(True)
    sign_y = (2 * y - 1).to(DT)
    robust = nn.functional.softplus(-sign_y * (x.flatten(1) @ w) + 0.1 * w.abs().sum()).mean()
    (closed,) = torch.autograd.grad(robust, w)
    torch.testing.assert_close(danskin, closed, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(implicit, danskin, rtol=1e-12, atol=1e-14)


def test_first_order_unrolling_is_danskin_at_z_t_where_the_leader_loss_depends_on_theta() -> None:
    """On linear DRO L depends on w directly, so the first-order gradient is not zero: it is
    ∇_w L(w, z_T) with z_T held fixed (Danskin's gradient at the same z_T), and it differs from
    the full unrolled gradient, whose path through z_T is not zero here."""
    problem, batch = _dro()
    config = Hypergradient("unrolled", unroll_steps=3, unroll_step_size=1.0, first_order=True)
    _, (first_order,) = hypergradient(problem, batch, None, config)
    z_t = unroll(problem, batch, 3, ascent(1.0), create_graph=False)
    assert 0 < z_t.abs().max() and (z_t.abs() < 0.1).any()  # moved, not all on the ball's faces
    _, (danskin,) = hypergradient(problem, batch, z_t, Hypergradient("danskin"))
    assert first_order.abs().max() > 0.05  # ‖∇‖ ≈ 0.23, largest entry ≈ 0.14
    torch.testing.assert_close(first_order, danskin, rtol=1e-12, atol=1e-14)
    _, (full,) = hypergradient(problem, batch, None, replace(config, first_order=False))
    assert (full - first_order).abs().max() > 1e-2  # the dropped path mattered


def test_joint_trainer_steps_dro_identically_with_danskin_and_implicit_cg() -> None:
    thetas = {}
    for method in ("danskin", "implicit-cg"):
        problem, batch = _dro()
        problem.hypergradient = method
        opt = torch.optim.SGD(problem.leader.parameters(), lr=0.5)
        trainer = JointTrainer(problem, SignGradientAscent(steps=2, step_size=0.1), opt)
        for _ in range(3):
            trainer.step(batch)
        thetas[method] = problem.leader.w.detach().clone()
    torch.testing.assert_close(thetas["implicit-cg"], thetas["danskin"], rtol=1e-12, atol=1e-14)


# --- a box constraint with some coordinates held at a bound ------------------------------------


class BoxedQuadratic(BilevelProblem):
    """Follower: max_{z ∈ [lo, hi]^n} −½‖z − Mθ‖², so z* = clamp(Mθ, lo, hi) and
    dz*/dθ = diag(lo < Mθ < hi) M. Leader: ½‖z − c‖². The box is [−1, 1] unless given."""

    zero_sum = False

    def __init__(
        self, m: Tensor, c: Tensor, theta: Tensor, lo: float = -1.0, hi: float = 1.0
    ) -> None:
        self.m, self.c, self.leader, self.lo, self.hi = m, c, Vector(theta), lo, hi

    def init_follower(self, batch, random_start: bool = False) -> Tensor:
        return torch.zeros(len(self.c), dtype=DT)

    def project(self, batch, z: Tensor) -> Tensor:
        return z.clamp(self.lo, self.hi)

    def follower_objective(self, batch, z: Tensor) -> Tensor:
        return -0.5 * (z - self.m @ self.leader.value).pow(2).sum()

    def leader_loss(self, batch, z: Tensor) -> Tensor:
        return 0.5 * (z - self.c).pow(2).sum()

    def follower_features(self, batch, z: Tensor) -> Tensor:
        return z


@pytest.mark.parametrize("method", ["implicit-cg", "implicit-neumann"])
def test_implicit_gradient_on_a_box_uses_only_the_free_coordinates(method: str) -> None:
    g = torch.Generator().manual_seed(4)
    m = 1.5 * torch.randn(8, 3, generator=g, dtype=DT)
    p = BoxedQuadratic(
        m, torch.randn(8, generator=g, dtype=DT), torch.randn(3, generator=g, dtype=DT)
    )
    target = m @ p.leader.value.detach()
    free = target.abs() < 1
    assert 0 < int(free.sum()) < 8  # both kinds of coordinates are present
    z = GradientAscent(steps=3, step_size=1.0).solve(p, None)
    torch.testing.assert_close(z, target.clamp(-1, 1), rtol=0, atol=1e-15)
    config = Hypergradient(method, cg_iterations=8, neumann_terms=3, neumann_step=1.0)
    _, (grad,) = hypergradient(p, None, z, config)
    torch.testing.assert_close(grad, m.T @ (free.to(DT) * (z - p.c)), rtol=1e-12, atol=1e-14)


def test_a_coordinate_held_at_the_bound_zero_is_blocked() -> None:
    """In the box [0, 1], z = (0, 0.5, 1) with ∇q = (−1, −1, +1): the first and last are held
    at their bound against the ascent, the middle one is free. The probe's step must not vanish
    at z_i = 0 (a step of τ·|z_i| would leave 0 unmoved and call it free)."""
    p = BoxedQuadratic(
        torch.zeros(3, 1, dtype=DT), torch.zeros(3, dtype=DT), torch.zeros(1, dtype=DT), 0.0, 1.0
    )
    z = torch.tensor([0.0, 0.5, 1.0], dtype=DT)
    grad = torch.tensor([-1.0, -1.0, 1.0], dtype=DT)
    (mask,) = blocked_mask(p, None, z, [grad], 1e-6)
    assert mask.tolist() == [1.0, 0.0, 1.0]


def test_implicit_cg_on_the_unit_box_with_coordinates_held_at_zero_is_the_closed_form() -> None:
    """z* = clamp(Mθ, 0, 1): the coordinates where Mθ < 0 sit at exactly 0 and have dz*/dθ = 0,
    so ∇θ = Mᵀ (free · (z − c)) with free = (0 < Mθ < 1)."""
    g = torch.Generator().manual_seed(4)
    m = torch.randn(8, 3, generator=g, dtype=DT)
    p = BoxedQuadratic(
        m, torch.randn(8, generator=g, dtype=DT), torch.randn(3, generator=g, dtype=DT), 0.0, 1.0
    )
    target = m @ p.leader.value.detach()
    free = (target > 0) & (target < 1)
    assert int((target < 0).sum()) >= 2 and int(free.sum()) >= 2  # held at 0, and free
    z = GradientAscent(steps=3, step_size=1.0).solve(p, None)
    assert torch.equal(z[target < 0], torch.zeros(int((target < 0).sum()), dtype=DT))
    _, (grad,) = hypergradient(p, None, z, Hypergradient("implicit-cg", cg_iterations=8))
    torch.testing.assert_close(grad, m.T @ (free.to(DT) * (z - p.c)), rtol=1e-12, atol=1e-14)
