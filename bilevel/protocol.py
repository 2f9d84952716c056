"""The bilevel problem (docs/architecture.md, "The problem"; paper Eq. 1):

    min_θ  L(θ, z*(θ))      s.t.   z*(θ) ∈ argmax_{z ∈ Z} q(θ, z)

The leader owns θ (``problem.leader``); the follower owns a decision z. A new problem is one
subclass of ``BilevelProblem`` that sets ``leader`` and writes the four required methods; every
optional capability is declared here once, with the default the framework uses when a problem
leaves it out.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Union

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from bilevel.hypergradients import Hypergradient

Batch = Any  # whatever the problem's data loader yields: (x, y) for images, rollouts for GAIL
Decision = Union[Tensor, Sequence[Tensor], Mapping[str, Tensor]]  # noqa: UP007 (a runtime alias)
"""z: a batched tensor (one perturbation per sample, DRO's δ) or a parameter set (a list or a dict
of tensors, e.g. a model's weights fed to ``torch.func.functional_call``)."""


class BilevelProblem:
    """A leader (minimises ``leader_loss`` over θ) and a follower (maximises
    ``follower_objective`` over z ∈ Z).

    Required: ``leader`` (an ``nn.Module`` holding θ), ``init_follower``, ``project``,
    ``follower_objective`` and ``leader_loss``. Optional, with their defaults:

    - ``zero_sum = False``: whether q(θ, z) = L(θ, z), as in DRO (Eq. 2-3); then Danskin's theorem
      lets the leader hold z fixed, and the fused update (one backward for θ and φ) is exact.
    - ``hypergradient = None``: the leader's gradient through z*(θ), a ``Hypergradient`` or its
      method's name (``bilevel.hypergradients``); None is the plain gradient at the follower's z
      (Danskin).
    - ``per_sample_decision = True``: whether a tensor z holds one decision per example of the
      batch, the follower's problem separating over them (DRO's and AIT's δ_i). A decision the
      batch shares or couples (GAIL's ψ, a weight vector, weights on a simplex) sets False. Under
      torchrun the unrolled and Neumann hypergradients rescale their steps for per-sample
      decisions only (``bilevel.hypergradients.per_sample_share``).
    - ``follower_features``: what a learned follower sees besides ∇_z q (naive and grad modes).
    - ``follower_input``: how those parts are combined into g_φ's input (channels by default).
    - ``leader_step``: one leader step (default: along the hypergradient; GAIL: a PPO update).
    - ``meta_objective``: what a learned optimizer of a parameter set (``LearnedOptimizerFollower``,
      L2L-GAIL's) ascends at its answer (default: q itself; GAIL: q on a fresh batch, minus a
      penalty). The learned attacker (``LearnedFollower``) ascends q itself, Algorithm 3's last
      line, whatever a problem sets here.
    - ``ascent_objective``: the objective whose ∇_z the follower's steps climb (a hand-designed
      step, g_φ's ∇ input and its sign step; default: q itself; DRO may name the CW margin, a
      surrogate with q's maximisers in mind). φ and θ keep q and L.
    - ``begin_step`` / ``step_metrics``: called before each joint step (nothing by default), and
      extra per-step metrics for ``metrics.jsonl`` (none by default; GAIL's discriminator
      diagnostics).
    - ``end_step``: called with each joint step's decision as soon as the follower answers,
      before θ's step (nothing by default; a perturbation problem may carry it to the next
      epoch, ``bilevel.carry``).
    - ``wants_decision_gradient = False`` / ``decision_gradient``: under the fused update, the
      gradient ∇_z L that the leader's own backward leaves on the decision, at the θ before its
      step (not asked by default; a perturbation problem may take one more step on each carried δ
      with it, at no extra pass: Free-AT's reuse, Shafahi et al. 2019).
    - ``state_dict`` / ``load_state_dict``: state beyond θ that a checkpoint must hold (none).
    """

    leader: nn.Module
    zero_sum: bool = False
    hypergradient: Hypergradient | str | None = None
    per_sample_decision: bool = True

    def init_follower(self, batch: Batch, random_start: bool = False) -> Decision:
        """z0: zeros, or uniform in Z when ``random_start`` (the start of PGM, Eq. 4)."""
        raise NotImplementedError

    def project(self, batch: Batch, z: Decision) -> Decision:
        """Π_Z(z): the nearest feasible decision (ε-ball ∩ [0,1] box for a perturbation)."""
        raise NotImplementedError

    def follower_objective(self, batch: Batch, z: Decision) -> Tensor:
        """q(θ, z) as a scalar mean over the batch; the follower maximises it."""
        raise NotImplementedError

    def leader_loss(self, batch: Batch, z: Decision) -> Tensor:
        """L(θ, z) as a scalar mean over the batch; the leader minimises it."""
        raise NotImplementedError

    def follower_features(self, batch: Batch, z: Decision) -> Tensor:
        """The data part of A_fθ (Eq. 7), e.g. DRO's perturbed input x + δ."""
        raise NotImplementedError(
            f"{type(self).__name__} has no follower_features; a learned follower in the naive or "
            "grad input mode needs them (grad-only does not)."
        )

    def follower_input(self, batch: Batch, parts: list[Tensor]) -> Tensor:
        """g_φ's input A_k from its parts (features, scaled ∇_z q, memory), in that order:
        concatenated on dimension 1, the channels of an image batch or the features of a vector
        batch. A problem whose g_φ reads its parts otherwise (a parameter set) overrides it."""
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def leader_step(self, batch: Batch, z: Decision, optimizer: torch.optim.Optimizer) -> Tensor:
        """One step of θ down L(θ, z) at the follower's z (a backward, which DDP averages), or
        along ``hypergradient`` when the problem names one; returns the detached leader loss."""
        if self.hypergradient is not None:
            from bilevel.hypergradients import hypergradient_step

            return hypergradient_step(self, batch, z, optimizer)
        loss = self.leader_loss(batch, z)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.detach()

    def meta_objective(self, batch: Batch, z: Decision) -> Tensor:
        """The objective a learned optimizer follower's φ ascends at z_φ (Algorithm 3's last
        line): q."""
        return self.follower_objective(batch, z)

    def ascent_objective(self, batch: Batch, z: Decision) -> Tensor:
        """The scalar whose ∇_z the follower's steps climb (``follower_gradient``): q."""
        return self.follower_objective(batch, z)

    def begin_step(self, batch: Batch) -> None:
        """Called once before each joint step on ``batch`` (before the follower solves)."""

    def end_step(self, batch: Batch, z: Decision) -> None:
        """Called once per joint step with the follower's decision z on ``batch`` (detached), as
        soon as the follower answers: before θ's step, at the θ that z answered."""

    wants_decision_gradient: bool = False

    def decision_gradient(self, batch: Batch, z: Decision, grad: Tensor) -> None:
        """Called after a fused step, when ``wants_decision_gradient``, with the decision z and
        ∇_z L(θ, z) at the leader's pre-step θ (a constant)."""

    def step_metrics(self) -> dict[str, float]:
        """Metrics of the last joint step beyond L and q, averaged per epoch into the metrics."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """State beyond θ that ``last.pt`` must hold for an exact resume (none by default)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what ``state_dict`` returned."""


def follower_gradient(problem: BilevelProblem, batch: Batch, z: Tensor) -> Tensor:
    """∇_z q(θ, z) as a constant (no graph to θ or to whatever produced z); the gradient of the
    problem's ``ascent_objective``, which is q unless the problem names a surrogate.

    The objective is a batch mean, so each sample's gradient carries a 1/B factor. It cancels
    where a consumer takes the steepest direction (PGM, Eq. 4) or scales the gradient for g_φ
    (``GradientScaling``; ``none`` multiplies by B), and in danskin and implicit-cg; it does not
    where a fixed step multiplies the gradient itself: ``GradientAscent``'s α, the unrolled
    hypergradient's ``unroll_step_size`` and the Neumann series' ``neumann_step`` are steps on the
    batch mean, α/B per sample of a batched z (``bilevel.hypergradients`` rescales its two under
    torchrun; ``GradientAscent`` does not).
    """
    z = z.detach().requires_grad_(True)
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(problem.ascent_objective(batch, z), z)
    return grad.detach()


@contextlib.contextmanager
def follower_mode(problem: BilevelProblem) -> Iterator[None]:
    """The leader in eval mode for passes through q inside the leader's step, every module's mode
    restored after, whatever happens.

    The joint loop solves the follower with the leader in eval mode (``bilevel.loop``), so its z*
    maximises the eval-mode q, and the implicit hypergradient's ∇_z q(θ, z*) = 0 and H = ∂²q/∂z²
    (``bilevel.implicit``), like the unrolled steps z_{t+1} = Π(z_t + u(z_t, ∇_z q)), hold for that
    q only. With batch norm the train-mode q is another function (batch statistics), and each of
    its passes would also move the running statistics; only L(θ, z) runs in the caller's mode.
    """
    modules = list(problem.leader.modules())
    modes = [m.training for m in modules]
    problem.leader.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.training = mode
