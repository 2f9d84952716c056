"""Implicit hypergradients: the implicit function theorem at the follower's stationary point.

At an interior maximiser, ∇_z q(θ, z*) = 0. Differentiating in θ gives

    dz*/dθ = −H⁻¹ ∂²q/∂z∂θ,      H = ∂²q/∂z²  (negative definite at a strict maximum),

so the leader's gradient of L(θ, z*(θ)) is

    ∇_θ L + (dz*/dθ)ᵀ ∇_z L = ∇_θ L + ∂/∂θ ⟨∇_z q(θ, z*), v⟩,      v solves (−H) v = ∇_z L.

Everything is Hessian-vector products by double backward through ``follower_objective``: no
matrix is formed, and tensor and parameter-space decisions are the same code (``decisions``).
The linear solve is conjugate gradient (``conjugate_gradient``, exact after n iterations in exact
arithmetic) or the truncated Neumann series (``neumann``).

Constraints. With a projection Π_Z the optimum may sit on the boundary, where ∇_z q ≠ 0. For
coordinate-wise (box) constraints whose bounds do not depend on θ, such as DRO's ε-ball ∩ [0, 1],
a coordinate held at a bound has dz*_i/dθ = 0; the theorem then holds on the free coordinates.
``blocked_mask`` finds the held coordinates (the projection undoes a small step up the gradient)
and the solve runs on the rest. Other constraint sets (a simplex, a norm ball other than L∞) are not
handled: parameterise them (e.g. softmax logits) so the follower's problem is unconstrained.

Modes. q is differentiated with the leader in eval mode, the mode the follower solved in
(``protocol.follower_mode``), so that ∇_z q(θ, z*) = 0 holds for the q differentiated; L keeps the
caller's (train) mode.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from bilevel.decisions import Decision, dot, flatten, grad_or_zeros, leaf
from bilevel.protocol import Batch, BilevelProblem, follower_mode

LinearMap = Callable[[list[Tensor]], list[Tensor]]


def conjugate_gradient(
    apply_a: LinearMap,
    b: Sequence[Tensor],
    iterations: int,
    scale: float = 1.0,
    tol: float = 0.0,
) -> list[Tensor]:
    """x ≈ A⁻¹ b for a symmetric positive (semi)definite A given as v ↦ Av (Hestenes-Stiefel).

    The system solved is (s·A) x = s·b with s = ``scale``: the same scaled product s·Ap is used for
    the step length and for the residual update, so x does not depend on s (betty's CG used the
    scaled product for one and the unscaled for the other, which is wrong for s ≠ 1). Stops early
    when ‖r‖ ≤ tol·‖s·b‖, or when the residual is exactly zero.

    Non-positive curvature (truncated CG; Steihaug 1983, Nocedal & Wright Alg. 7.1). CG minimises
    m(x) = ½xᵀAx − bᵀx over growing Krylov subspaces. If a direction has pᵀAp ≤ 0, m is unbounded
    below along p (A is not positive definite there: a follower objective q that is linear or not
    strictly concave in z), no minimiser exists and the step rr/pᵀAp is ±inf, NaN or climbs m. The
    solve then stops and returns the iterate so far, the minimiser of m over the subspace where
    every direction had positive curvature (A restricted to it is positive definite). At the first
    iteration that is x = 0: the implicit correction vanishes and the hypergradient is Danskin's.
    The scaled-b fallback of truncated Newton is not used: it serves a line search, and a linear
    solve has no length to give it. The test is on pᵀAp's sign, so s < 0 changes nothing.
    """
    x = [torch.zeros_like(t) for t in b]
    r = [scale * t for t in b]
    p = [t.clone() for t in r]
    rr = dot(r, r)
    stop = (tol**2) * rr
    for _ in range(iterations):
        if rr <= stop or rr == 0:
            break
        ap = [scale * t for t in apply_a(p)]
        curvature = dot(p, ap)  # pᵀ(sA)p: its sign times s's is pᵀAp's
        if curvature * scale <= 0:
            break
        step = rr / curvature
        x = [xi + step * pi for xi, pi in zip(x, p, strict=True)]
        r = [ri - step * api for ri, api in zip(r, ap, strict=True)]
        rr_next = dot(r, r)
        p = [ri + (rr_next / rr) * pi for ri, pi in zip(r, p, strict=True)]
        rr = rr_next
    return x


def neumann(apply_a: LinearMap, b: Sequence[Tensor], terms: int, step: float) -> list[Tensor]:
    """x = α Σ_{k=0}^{K−1} (I − αA)^k b with α = ``step``, K = ``terms``.

    Equals (I − (I − αA)^K) A⁻¹ b: A⁻¹ b as K → ∞ when 0 < α < 2/λ_max(A), and exactly the
    hypergradient of K unrolled gradient steps of size α when the follower's objective is quadratic
    (Lorraine et al. 2020, Eq. 5).
    """
    if terms < 1:
        raise ValueError("the Neumann series needs at least one term")
    term = [t.clone() for t in b]
    total = [t.clone() for t in b]
    for _ in range(terms - 1):
        term = [t - step * at for t, at in zip(term, apply_a(term), strict=True)]
        total = [s + t for s, t in zip(total, term, strict=True)]
    return [step * t for t in total]


def blocked_mask(
    problem: BilevelProblem, batch: Batch, z: Decision, grad: Sequence[Tensor], probe: float
) -> list[Tensor]:
    """1 where the projection holds z_i at a bound against the ascent direction, else 0.

    The probe steps each coordinate up the gradient by a step relative to its size,

        p_i = z_i + s_i · sign ∂q/∂z_i,      s_i = τ · max(1, |z_i|)      (τ = ``probe``),

    and z_i is blocked when ∂q/∂z_i ≠ 0 and |Π(p)_i − p_i| > |p_i − z_i| / 2: the projection
    undoes more than half of the step p_i − z_i as rounded in z's dtype. An interior coordinate
    keeps p_i (Π(p)_i = p_i), so unconstrained problems block nothing; one held at a bound goes
    back to it (Π(p)_i = z_i). The step is relative because an absolute τ rounds away once it is
    below half an ulp of z_i (float32, τ = 1e-6: from |z_i| = 32 on), and comparing Π(p) with z
    then called every such free coordinate blocked, which turned the implicit hypergradient into
    Danskin's without a word. With τ = 1e-6 the step is at least 8 ulps of z_i in float32 and
    float64; a τ below the dtype's resolution (float16, bfloat16) leaves p_i = z_i, and the
    coordinate counts as free.
    """
    parts, rebuild = flatten(z)
    with torch.no_grad():
        probed = [
            p + probe * p.abs().clamp(min=1) * g.sign() for p, g in zip(parts, grad, strict=True)
        ]
        moved, _ = flatten(problem.project(batch, rebuild(probed)))
        return [
            ((g != 0) & ((m - q).abs() > (q - p).abs() / 2)).to(p.dtype)
            for p, g, q, m in zip(parts, grad, probed, moved, strict=True)
        ]


def implicit_hypergradient(
    problem: BilevelProblem,
    batch: Batch,
    z: Decision,
    solver: str = "cg",
    iterations: int = 20,
    scale: float = 1.0,
    step: float = 1.0,
    tol: float = 0.0,
    probe: float = 1e-6,
) -> tuple[Tensor, list[Tensor]]:
    """(L(θ, z), ∇_θ L(θ, z*(θ))) at the follower's solution z, by the implicit function theorem.

    ``solver``: "cg" (``iterations`` CG steps, operator scaling ``scale``) or "neumann"
    (``iterations`` terms of step ``step``). Gradients are w.r.t. the leader's parameters that
    require grad, in ``problem.leader.parameters()`` order.
    """
    params = [p for p in problem.leader.parameters() if p.requires_grad]
    zz, zs = leaf(z)
    with torch.enable_grad():
        loss = problem.leader_loss(batch, zz)
        direct = grad_or_zeros(loss, [*params, *zs], retain_graph=False)
        direct_theta, grad_z = direct[: len(params)], direct[len(params) :]
        with follower_mode(problem):  # the q whose maximiser z is: the leader in eval mode
            dq_dz = grad_or_zeros(problem.follower_objective(batch, zz), zs, create_graph=True)
        free = [1 - m for m in blocked_mask(problem, batch, zz, dq_dz, probe)]

        def neg_hessian(v: list[Tensor]) -> list[Tensor]:
            """v ↦ −H v on the free coordinates, the identity on the blocked ones."""
            vm = [f * t for f, t in zip(free, v, strict=True)]
            hv = grad_or_zeros(dq_dz, zs, grad_outputs=vm, retain_graph=True)
            return [f * -h + (1 - f) * t for f, h, t in zip(free, hv, v, strict=True)]

        rhs = [f * g for f, g in zip(free, grad_z, strict=True)]
        if solver == "cg":
            v = conjugate_gradient(neg_hessian, rhs, iterations, scale=scale, tol=tol)
        elif solver == "neumann":
            v = neumann(neg_hessian, rhs, iterations, step)
        else:
            raise ValueError(f"unknown implicit solver {solver!r}: use 'cg' or 'neumann'")
        v = [(f * t).detach() for f, t in zip(free, v, strict=True)]
        correction = grad_or_zeros(dq_dz, params, grad_outputs=v)
    grads = [d + c for d, c in zip(direct_theta, correction, strict=True)]
    return loss.detach(), grads
