"""The leader's gradient of L(θ, z*(θ)): which hypergradient a problem uses, and the leader step.

A problem chooses by one attribute, with no other change to its class:

    hypergradient = "danskin" | "unrolled" | "implicit-cg" | "implicit-neumann"

or a ``Hypergradient(method, ...)`` with the method's options. ``JointTrainer`` then steps the
leader with ``hypergradient_step``; a problem without the attribute keeps the plain step.

- ``danskin``: ∇_θ L(θ, z) at the follower's z, held fixed. Exact for zero-sum problems at the
  follower's optimum (Danskin's theorem; paper Eq. 2-3); an approximation otherwise.
- ``unrolled``: backprop through ``unroll_steps`` projected ascent steps of size
  ``unroll_step_size`` from ``init_follower``, or of the ``torch.optim`` optimizer that
  ``unroll_optimizer(params)`` makes (``bilevel.unrolled``). The follower's own z is not used:
  the unrolled z_T(θ) is the decision. ``first_order`` drops the second-order terms.
- ``implicit-cg`` / ``implicit-neumann``: the implicit function theorem at the follower's z
  (``bilevel.implicit``), with ``cg_iterations`` CG steps (operator scaling ``cg_scale``) or
  ``neumann_terms`` terms of step ``neumann_step``. Needs z to be a stationary point (interior) or
  held at bounds of a box constraint.

Modes. The joint loop solves the follower with the leader in eval mode and steps it in train mode
(``bilevel.loop``). The unrolled and implicit methods differentiate q with the leader in eval mode
too, the q that z maximises (``protocol.follower_mode``), and only L in train mode: with batch
norm the hypergradient is that of L_train(θ, z*_eval(θ)), and one step moves the running
statistics once, as Danskin's does.

Step sizes. ``unroll_step_size`` α and ``neumann_step`` are steps on q, the batch mean
(``BilevelProblem.follower_objective``). For a per-sample decision (z a batched Tensor, DRO's
δ_i) each sample's gradient ∇_{z_i} q = (1/B) ∇_{z_i} q_i and its Hessian carry a 1/B factor, so
the step per sample is α/B and these two methods depend on the batch size B. A ``torch.optim``
unroll optimizer sees the same gradient: SGD's step is lr/B per sample, Adam's does not depend on
the gradient's scale (up to its ε). danskin and implicit-cg do not depend on B: the exact solve
v = (−H)⁻¹ ∇_z L cancels the factor.

Under torchrun each process computes the hypergradient of its own share of the batch, and
``hypergradient_step`` averages them over the processes before the step (the all-reduce that
DDP's backward hooks would do, which setting ``.grad`` by hand skips). That is the hypergradient
of the whole batch whenever it is the mean of the per-sample ones: always for Danskin, and for
the others when the follower's problem separates over samples (DRO's δ_i), once each process
steps each sample as one process on the whole batch would. A share of B/N samples makes the
factor N/B, so for a per-sample decision both steps are multiplied by 1/N (``per_sample_share``),
and the unroll optimizer climbs q/N (``unrolled.optimizer_iterates``), which gives it the whole
batch's per-sample gradients (exact for coordinate-wise optimizers: SGD, momentum, Adam).
A decision shared by the batch (a parameter set solved on it, or a tensor of a problem whose
``per_sample_decision`` is False) keeps its steps, since each
share's mean estimates the whole batch's, and gives the mean of the shares' hypergradients, not
the whole batch's.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

from bilevel import distributed
from bilevel.decisions import Decision, grad_or_zeros
from bilevel.errors import UserError
from bilevel.implicit import implicit_hypergradient
from bilevel.protocol import Batch, BilevelProblem
from bilevel.unrolled import MakeOptimizer, ascent, unrolled_hypergradient


class Method(str, Enum):
    """How dz*/dθ enters the leader's gradient (module docstring): not at all (Danskin), through
    the unrolled follower steps, or by the implicit function theorem (CG or Neumann series)."""

    DANSKIN = "danskin"
    UNROLLED = "unrolled"
    IMPLICIT_CG = "implicit-cg"
    IMPLICIT_NEUMANN = "implicit-neumann"


@dataclass(frozen=True)
class Hypergradient:
    """A hypergradient method and its options (see the module docstring)."""

    method: Method | str = Method.DANSKIN
    unroll_steps: int = 10
    unroll_step_size: float = 0.1  # on the batch mean q: α/B per sample of a batched z
    unroll_optimizer: MakeOptimizer | None = None  # e.g. partial(torch.optim.Adam, lr=0.1)
    first_order: bool = False
    cg_iterations: int = 20
    cg_scale: float = 1.0
    cg_tol: float = 0.0
    neumann_terms: int = 20
    neumann_step: float = 0.1  # likewise

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "method", Method(self.method))
        except ValueError:
            names = ", ".join(m.value for m in Method)
            raise UserError(
                f"Unknown hypergradient {self.method!r}; choose one of {names}."
            ) from None
        if self.first_order and self.method is not Method.UNROLLED:
            raise UserError(
                "first_order applies to the unrolled hypergradient only; the first-order implicit "
                "hypergradient is danskin."
            )
        if min(self.unroll_steps, self.cg_iterations, self.neumann_terms) < 1:
            raise UserError("Hypergradient step, iteration and term counts must be at least 1.")


def resolve(problem: BilevelProblem) -> Hypergradient:
    """The problem's ``hypergradient`` as a ``Hypergradient`` (danskin when it is None)."""
    choice = problem.hypergradient
    return choice if isinstance(choice, Hypergradient) else Hypergradient(choice or Method.DANSKIN)


def per_sample_share(problem: BilevelProblem, decision: Decision) -> float:
    """1/N under torchrun with N processes when ``decision`` is per sample (one batched Tensor
    of a problem whose ``per_sample_decision`` is True), else 1: the factor on the unrolled and
    Neumann steps that makes each process take, per sample, the step of one process on the whole
    batch (module docstring). A tensor the batch shares (GAIL's ψ) keeps its steps."""
    per_sample = problem.per_sample_decision and isinstance(decision, Tensor)
    return 1 / distributed.world_size() if per_sample else 1.0


def hypergradient(
    problem: BilevelProblem, batch: Batch, z: Decision, config: Hypergradient | None = None
) -> tuple[Tensor, list[Tensor]]:
    """(leader loss, ∇_θ L(θ, z*(θ))) for the leader's parameters that require grad.

    ``z`` is the follower's solution (ignored by ``unrolled``, which makes its own z_T(θ) and
    reads only z's kind, or ``init_follower``'s when z is None, for ``per_sample_share``).
    """
    config = resolve(problem) if config is None else config
    params = [p for p in problem.leader.parameters() if p.requires_grad]
    if config.method is Method.DANSKIN:
        with torch.enable_grad():
            loss = problem.leader_loss(batch, z)
            return loss.detach(), grad_or_zeros(loss, params)
    if config.method is Method.UNROLLED:
        share = per_sample_share(problem, problem.init_follower(batch) if z is None else z)
        update = ascent(config.unroll_step_size * share)
        return unrolled_hypergradient(
            problem, batch, config.unroll_steps, update, config.first_order,
            config.unroll_optimizer, objective_scale=share,
        )  # fmt: skip
    if config.method is Method.IMPLICIT_CG:
        return implicit_hypergradient(
            problem, batch, z, "cg", config.cg_iterations, scale=config.cg_scale, tol=config.cg_tol
        )
    step = config.neumann_step * per_sample_share(problem, z)
    return implicit_hypergradient(problem, batch, z, "neumann", config.neumann_terms, step=step)


def hypergradient_step(
    problem: BilevelProblem, batch: Batch, z: Decision, optimizer: torch.optim.Optimizer
) -> Tensor:
    """One leader step along the problem's hypergradient, averaged over the processes under
    torchrun (module docstring); returns the (detached) leader loss."""
    loss, grads = hypergradient(problem, batch, z)
    distributed.average(grads)
    params = [p for p in problem.leader.parameters() if p.requires_grad]
    optimizer.zero_grad(set_to_none=True)
    for p, g in zip(params, grads, strict=True):
        p.grad = g.detach()
    optimizer.step()
    return loss
