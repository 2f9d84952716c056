"""Unrolled hypergradients: differentiate through T steps of the follower's inner optimizer.

    z_0 = Π(init),    z_{t+1} = Π(z_t + u(z_t, ∇_z q(θ, z_t))),    ∇_θ L(θ, z_T(θ)) by backprop,

where the update u is gradient ascent α·∇_z q by default, or any differentiable rule: a learned
step size η (a tensor that requires grad), or a learned optimizer g_φ (Andrychowicz et al. 2016).
Gradients reach θ and every tensor the rule uses. ``first_order=True`` drops the second-order
terms (the gradient of each step is a constant), as first-order MAML does.

Two code paths, one per kind of rule:
- a rule u(z, g) (``ascent``, a mirror step, g_φ): plain ``torch.autograd.grad(...,
  create_graph=True)`` on the problem's own ``follower_objective``. The decision is already an
  explicit list of tensors (``decisions``), so no problem has to be written functionally; a
  parameter-space problem evaluates ψ with ``torch.func.functional_call``.
- a ``torch.optim`` optimizer (SGD with momentum, Adam, ...; ``optimizer_iterates``): its update
  has state (momentum, Adam's moments) that z_T depends on too, and ``higher``'s differentiable
  versions of the optimizers (Grefenstette et al. 2019) carry that state through the graph.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import higher
import torch
from torch import Tensor

from bilevel.decisions import Decision, detach, flatten, grad_or_zeros
from bilevel.protocol import Batch, BilevelProblem, follower_mode

UpdateRule = Callable[[list[Tensor], list[Tensor]], list[Tensor]]  # (z_t, ∇_z q) -> step
MakeOptimizer = Callable[[list[Tensor]], torch.optim.Optimizer]  # partial(torch.optim.Adam, lr=.1)


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


def optimizer_iterates(
    problem: BilevelProblem,
    batch: Batch,
    z0: Decision,
    steps: int,
    make_optimizer: MakeOptimizer,
    first_order: bool = False,
    objective_scale: float = 1.0,
) -> Decision:
    """z_T of ``steps`` steps of ``make_optimizer(params)`` (any ``torch.optim`` optimizer that
    ``higher`` supports) ascending s·q from z_0 = Π(z0) (s = ``objective_scale``), each step
    projected: z_{t+1} = Π(step_t(z_t, s·∇_z q, state_t)). ``higher.get_diff_optim`` makes each
    step a differentiable function of z_t, of the optimizer's state (momentum buffers, Adam's
    moments) and so of θ; with ``first_order`` the steps are constants, as in ``iterates``.

    s scales the gradient the optimizer sees, not its learning rate: SGD's step becomes lr·s·∇q,
    while Adam's, which divides by the gradient's own size, stays the same up to its ε; the
    hypergradients under torchrun use s = 1/N (``bilevel.hypergradients``)."""
    parts, rebuild = flatten(problem.project(batch, z0))
    reference = [p.detach().clone().requires_grad_(True) for p in parts]
    optimizer = higher.get_diff_optim(
        make_optimizer(reference), reference, track_higher_grads=not first_order
    )
    z = [p.detach().requires_grad_(True) for p in parts]
    with torch.enable_grad():
        for _ in range(steps):
            q = objective_scale * problem.follower_objective(batch, rebuild(z))
            z = optimizer.step(-q, params=z)
            z, _ = flatten(problem.project(batch, rebuild(z)))
    return rebuild(z)


def unrolled_hypergradient(
    problem: BilevelProblem,
    batch: Batch,
    steps: int,
    update: UpdateRule,
    first_order: bool = False,
    optimizer: MakeOptimizer | None = None,
    objective_scale: float = 1.0,
) -> tuple[Tensor, list[Tensor]]:
    """(L(θ, z_T), ∇_θ L(θ, z_T(θ))) through T steps from ``init_follower`` of the rule ``update``
    (e.g. ``ascent(α)``), or of ``optimizer`` when one is given (``optimizer_iterates``, which
    climbs ``objective_scale``·q; a rule carries its own step size). The steps run with the leader
    in eval mode, as the follower solves (``protocol.follower_mode``); L in the caller's mode."""
    params = [p for p in problem.leader.parameters() if p.requires_grad]
    with torch.enable_grad():
        with follower_mode(problem):  # the follower's steps see the leader as it solves: eval
            if optimizer is None:
                z_t = unroll(problem, batch, steps, update, first_order=first_order)
            else:
                z0 = problem.init_follower(batch)
                z_t = optimizer_iterates(
                    problem, batch, z0, steps, optimizer, first_order, objective_scale
                )
        loss = problem.leader_loss(batch, z_t)
        grads = grad_or_zeros(loss, params)
    return loss.detach(), grads
