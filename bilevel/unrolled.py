"""Unrolled hypergradients: differentiate through T steps of the follower's inner optimizer.

    z_0 = Π(init),    z_{t+1} = Π(z_t + u(z_t, ∇_z q(θ, z_t))),    ∇_θ L(θ, z_T(θ)) by backprop,

where the update u is gradient ascent α·∇_z q by default, or any differentiable rule: a learned
step size η (a tensor that requires grad), or a learned optimizer g_φ (Andrychowicz et al. 2016).
Gradients reach θ and every tensor the rule uses.

Choice: plain ``torch.autograd.grad(..., create_graph=True)`` on the problem's own
``follower_objective``, not ``higher`` and not ``torch.func`` transforms. The follower's decision
is already an explicit list of tensors (``decisions``), so there is no module to monkey-patch
(``higher``'s job; it is unmaintained since 2021 and lacks AdamW) and no need to make the problem
a pure function (``torch.func.grad`` would ask every problem to be written functionally). One code
path serves per-sample δ and parameter-space ψ; a parameter-space problem evaluates ψ with
``torch.func.functional_call``. ``first_order=True`` drops the second-order terms (the gradient of
each step is a constant), as first-order MAML does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch import Tensor

from bilevel.decisions import Decision, detach, flatten, grad_or_zeros
from bilevel.protocol import Batch, BilevelProblem

UpdateRule = Callable[[list[Tensor], list[Tensor]], list[Tensor]]  # (z_t, ∇_z q) -> step


def ascent(step_size: float | Tensor) -> UpdateRule:
    """u(z, g) = α·g: gradient ascent on q (α may be a tensor that requires grad)."""
    return lambda z, g: [step_size * gi for gi in g]


def iterates(
    problem: BilevelProblem,
    batch: Batch,
    z0: Decision,
    steps: int,
    update: UpdateRule,
    create_graph: bool = True,
    first_order: bool = False,
) -> Iterator[Decision]:
    """Yield z_1, …, z_T of projected ascent with the rule ``update`` from z_0 = Π(z0).

    With ``create_graph`` each z_t keeps its graph to θ, to the rule's tensors and to z0; without
    it every iterate is detached (a plain solve).
    """
    z = problem.project(batch, z0)
    for _ in range(steps):
        parts, rebuild = flatten(z)
        parts = [p if p.requires_grad else p.detach().requires_grad_(True) for p in parts]
        with torch.enable_grad():
            q = problem.follower_objective(batch, rebuild(parts))
            grad = grad_or_zeros(q, parts, create_graph=create_graph and not first_order)
            if not (create_graph and not first_order):
                grad = [g.detach() for g in grad]
            moved = [p + u for p, u in zip(parts, update(parts, grad), strict=True)]
            z = problem.project(batch, rebuild(moved))
        if not create_graph:
            z = detach(z)
        yield z


def unroll(
    problem: BilevelProblem,
    batch: Batch,
    steps: int,
    update: UpdateRule,
    z0: Decision | None = None,
    create_graph: bool = True,
    first_order: bool = False,
) -> Decision:
    """z_T from ``iterates``; z0 defaults to ``problem.init_follower(batch)``."""
    start = problem.init_follower(batch) if z0 is None else z0
    z_t = problem.project(batch, start)  # z_0, returned when steps = 0
    for z_t in iterates(problem, batch, start, steps, update, create_graph, first_order):  # noqa: B007
        pass
    return z_t


def unrolled_hypergradient(
    problem: BilevelProblem,
    batch: Batch,
    steps: int,
    update: UpdateRule,
    first_order: bool = False,
) -> tuple[Tensor, list[Tensor]]:
    """(L(θ, z_T), ∇_θ L(θ, z_T(θ))) through T steps of the rule ``update`` (e.g. ``ascent(α)``)
    from ``init_follower``."""
    params = [p for p in problem.leader.parameters() if p.requires_grad]
    with torch.enable_grad():
        z_t = unroll(problem, batch, steps, update, first_order=first_order)
        loss = problem.leader_loss(batch, z_t)
        grads = grad_or_zeros(loss, params)
    return loss.detach(), grads


class GradientAscent:
    """Projected ascent on q, z ← Π(z + u(z, ∇_z q)), ``steps`` times from ``init_follower``.

    u is α·∇_z q (α = ``step_size``) unless another ``update`` rule is given (e.g. a mirror step
    on softmax logits). The follower whose trajectory the "unrolled" hypergradient differentiates;
    for a concave q it converges to z* and so also serves the implicit hypergradients. Stateless:
    ``learn`` does nothing.
    """

    learnable = False

    def __init__(
        self, steps: int, step_size: float = 0.1, update: UpdateRule | None = None
    ) -> None:
        if steps < 1:
            raise ValueError("GradientAscent needs at least one step")
        self.steps = steps
        self.step_size = step_size if update is None else None  # a given rule has its own steps
        self.update = ascent(step_size) if update is None else update

    def solve(self, problem: BilevelProblem, batch: Batch) -> Decision:
        return unroll(problem, batch, self.steps, self.update, create_graph=False)

    def learn(self, problem: BilevelProblem, batch: Batch) -> None:
        return None

    def __repr__(self) -> str:
        rule = "update=custom" if self.step_size is None else f"step_size={self.step_size:g}"
        return f"GradientAscent(steps={self.steps}, {rule})"
