"""Followers: turn a problem and a batch into a decision z (docs/architecture.md, "Followers").

Hand-designed, generic over the protocol: ``NoFollower`` (z = z0), ``SignGradientAscent`` (FGSM
and PGM-k, paper Eq. 4, in the L∞ ball or, with ``norm="l2"``, PGD-L2) and ``GradientAscent``
(projected ascent with any update rule, the follower the unrolled hypergradient differentiates).
For a parameter-space decision ψ: ``AdamFollower`` and the learned-optimizer follower
(``bilevel.optimizer_followers``). Learned: ``LearnedFollower``, g_φ unrolled with shared φ
(``bilevel.learned_follower``).
"""

from __future__ import annotations

from typing import Protocol

import torch
from torch import Tensor

from bilevel.norms import Norm
from bilevel.protocol import Batch, BilevelProblem, Decision, follower_gradient
from bilevel.unrolled import UpdateRule, ascent, unroll


class Follower(Protocol):
    """What the joint loop asks of a follower (Algorithms 1 and 3).

    ``solve``: z for a batch, with no graph. ``learn``: one update of the follower's own
    parameters φ, returning q at its new answer (None when it has no φ). ``learnable``: whether it
    has φ; a learnable follower is also an ``nn.Module`` with an ``optimizer`` over φ, called as
    ``follower(problem, batch)`` for z_φ with its graph to φ, and ``ascend(q)`` steps φ up q.
    """

    learnable: bool

    def solve(self, problem: BilevelProblem, batch: Batch) -> Decision: ...

    def learn(self, problem: BilevelProblem, batch: Batch) -> Tensor | None: ...


class LearnableFollower(Follower, Protocol):
    """A follower with parameters φ (``learnable``): the DRO attacker ``LearnedFollower`` and
    GAIL's ``LearnedOptimizerFollower`` alike, as the joint loop's learned steps use them."""

    optimizer: torch.optim.Optimizer

    def __call__(self, problem: BilevelProblem, batch: Batch) -> Decision:
        """z_φ for the batch, with its graph to φ."""
        ...

    def ascend(self, objective: Tensor) -> Tensor | None:
        """One step of φ up ``objective`` (GAIL's returns the meta-objective it climbed)."""
        ...


class HandDesigned:
    """A follower without parameters φ of its own: ``learn`` has nothing to update."""

    learnable = False

    def learn(self, problem: BilevelProblem, batch: Batch) -> None:
        return None


class NoFollower(HandDesigned):
    """z = z0 = 0: plain training, the "no follower" baseline of the benchmarks."""

    def solve(self, problem: BilevelProblem, batch: Batch) -> Decision:
        return problem.init_follower(batch)


class SignGradientAscent(HandDesigned):
    """Projected steepest ascent on q (paper Eq. 4): z ← Π_Z(z + η · d), d the unit-norm steepest
    direction of ∇_z q: sign ∇ in the L∞ ball, ∇ / ‖∇‖₂ per sample in the L2 ball (``norms``).

    ``steps=1`` is FGSM; with ``random_start`` and η = 1.25 ε it is "Fast-AT" FGSM-RS (Wong et al.
    2020); ``steps=k`` is PGM-k (Madry et al. 2018's PGD, L∞ or L2). The random start is the
    problem's own (``init_follower``). Stateless: ``learn`` does nothing.
    """

    def __init__(
        self, steps: int, step_size: float, random_start: bool = False, norm: Norm | str = Norm.LINF
    ) -> None:
        if steps < 1:
            raise ValueError("SignGradientAscent needs at least one step")
        self.steps, self.step_size, self.random_start = steps, step_size, random_start
        self.norm = Norm(norm)

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        z = problem.project(batch, problem.init_follower(batch, random_start=self.random_start))
        for _ in range(self.steps):
            grad = follower_gradient(problem, batch, z)
            z = problem.project(batch, z + self.step_size * self.norm.steepest(grad))
        return z.detach()

    def __repr__(self) -> str:
        rs = ", random_start" if self.random_start else ""
        norm = "" if self.norm is Norm.LINF else f", norm={self.norm.value}"
        return f"SignGradientAscent(steps={self.steps}, step_size={self.step_size:g}{rs}{norm})"


class GradientAscent(HandDesigned):
    """Projected ascent on q, z ← Π(z + u(z, ∇_z q)), ``steps`` times from ``init_follower``
    (uniform in Z with ``random_start``).

    u is α·∇_z q (α = ``step_size``) unless another ``update`` rule is given (e.g. a mirror step
    on softmax logits). The follower whose trajectory the "unrolled" hypergradient differentiates;
    for a concave q it converges to z* and so also serves the implicit hypergradients. Any
    decision works (a tensor or a parameter set). Stateless: ``learn`` does nothing.

    α is a step on q, the batch mean: for a per-sample decision each sample moves α/B times its
    own gradient, so the trajectory depends on the batch size B, and under torchrun (a share of
    B/N samples) each process steps N times as far per sample as one process on the whole batch;
    it is not rescaled here (the hypergradients' own steps are, ``bilevel.hypergradients``), so
    choose α for the batch each process sees. The limit z* does not depend on it.
    """

    def __init__(
        self,
        steps: int,
        step_size: float = 0.1,
        update: UpdateRule | None = None,
        random_start: bool = False,
    ) -> None:
        if steps < 1:
            raise ValueError("GradientAscent needs at least one step")
        self.steps, self.random_start = steps, random_start
        self.step_size = step_size if update is None else None  # a given rule has its own steps
        self.update = ascent(step_size) if update is None else update

    def solve(self, problem: BilevelProblem, batch: Batch) -> Decision:
        start = problem.init_follower(batch, random_start=self.random_start)
        return unroll(problem, batch, self.steps, self.update, start, create_graph=False)

    def __repr__(self) -> str:
        rule = "update=custom" if self.step_size is None else f"step_size={self.step_size:g}"
        return f"GradientAscent(steps={self.steps}, {rule})"
