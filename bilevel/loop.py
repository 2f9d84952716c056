"""The joint training step of L2L (paper Algorithm 3; Algorithm 1 with a hand-designed follower).

Per minibatch: the follower solves for z, the leader takes a step down L(θ, z), and a learned
follower takes ``follower_steps`` steps up q(θ, z_φ) (a learned optimizer of a parameter set,
``bilevel.optimizer_followers``, up the problem's ``meta_objective``). Three update modes:

- ``alternating``: the paper's separate passes (θ's step, then φ's step at the updated θ), with no
  pass computed twice: φ's step reuses g_φ's forward, whose gradient input u_i was made at θ
  before its step, as Algorithm 3 writes it (u_i and δ_i are made once per minibatch); the
  authors' code makes both again at the updated θ, which differs by the order of the leader's
  step. The leader is in eval mode whenever the follower's passes run.
- ``follower-first``: the same passes in Algorithm 4's order: φ's step up q(θ, z_φ), then θ's step
  on that same z_φ (detached). For a hand-designed follower it is ``alternating``.
- ``fused``: one forward and one backward serve θ and φ. Exact only for zero-sum problems
  (q = L, e.g. DRO): θ's gradient descends L, and φ's gradient, reversed on its way through z
  (``reverse_gradient``), ascends it.
"""

from __future__ import annotations

from enum import Enum
from typing import Any, cast

import torch
from torch import Tensor, nn

from bilevel.acceleration import Acceleration
from bilevel.averaging import LeaderAverage
from bilevel.decisions import detach
from bilevel.distributed import unwrap
from bilevel.errors import UserError
from bilevel.followers import Follower, LearnableFollower
from bilevel.protocol import Batch, BilevelProblem


class UpdateMode(str, Enum):
    """How one joint step makes θ's and φ's updates: in turn, φ's first, or from one backward
    (module docstring)."""

    ALTERNATING = "alternating"
    FOLLOWER_FIRST = "follower-first"
    FUSED = "fused"


def check_update(
    update: UpdateMode | str, learnable: bool, zero_sum: bool, own_leader_step: bool = False
) -> None:
    """The update mode's rules, in one place: ``fused`` needs a learned follower (φ to step), a
    zero-sum problem (one backward serves L and q only when q = L), and no leader step of the
    problem's own (``takes_its_own_leader_step``: that backward is θ's step, so it would skip
    it). One sentence otherwise."""
    if UpdateMode(update) is not UpdateMode.FUSED:
        return
    if not learnable:
        raise UserError(
            "--update fused needs a learned follower (naive, grad, grad-only, 2-step); "
            "use --update alternating with a hand-designed one."
        )
    if not zero_sum:
        raise UserError(
            "--update fused needs a zero-sum problem (follower objective = leader loss), and this "
            "problem's follower objective is not its leader loss; use --update alternating or "
            "follower-first."
        )
    if own_leader_step:
        raise UserError(
            "--update fused steps θ by its one backward of L, which would skip this problem's "
            "own leader step (its leader_step, or a hypergradient other than Danskin's); use "
            "--update alternating or follower-first."
        )


def takes_its_own_leader_step(problem: BilevelProblem) -> bool:
    """Whether θ's step is the problem's own: a ``leader_step`` it overrides, or a hypergradient
    other than Danskin's. The fused update's one backward of L is Danskin's step, so it would skip
    either."""
    from bilevel.hypergradients import Hypergradient, Method

    method = problem.hypergradient
    if isinstance(method, str):
        method = Hypergradient(method)
    if method is not None and method.method is not Method.DANSKIN:
        return True
    return type(problem).leader_step is not BilevelProblem.leader_step


class _ReverseGradient(torch.autograd.Function):
    """Identity forward, negated gradient backward (Ganin & Lempitsky 2015)."""

    @staticmethod
    def forward(ctx: Any, z: Tensor) -> Tensor:
        return z.view_as(z)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> Tensor:
        return -grad


def reverse_gradient(z: Tensor) -> Tensor:
    """z itself, with its gradient negated on the way back: the fused update's one backward then
    takes θ down L and φ up L (zero-sum, q = L)."""
    return _ReverseGradient.apply(z)


class JointTrainer:
    """Owns the leader's optimizer and runs one joint step per minibatch.

    The leader steps with ``problem.leader_step`` (by default down L at the follower's z, or along
    the problem's hypergradient), except under ``fused``, whose one backward is θ's step and which
    refuses a problem with a step of its own; its checkpoint holds θ, φ, both optimizers and, when
    the problem has any, ``problem.state_dict()``. ``acceleration.amp`` runs every step under bf16
    autocast (``bilevel.acceleration``). With ``leader_average``, θ̄ is updated after every step and is
    the leader that ``selected_leader`` names for validation, selection and the test.
    """

    def __init__(
        self,
        problem: BilevelProblem,
        follower: Follower,
        leader_optimizer: torch.optim.Optimizer,
        update: UpdateMode | str = UpdateMode.ALTERNATING,
        follower_steps: int = 1,
        acceleration: Acceleration | None = None,
        leader_average: LeaderAverage | None = None,
    ) -> None:
        self.problem, self.follower, self.leader_optimizer = problem, follower, leader_optimizer
        self.leader_average = leader_average
        self.acceleration = acceleration or Acceleration()
        self.update, self.follower_steps = UpdateMode(update), follower_steps
        if follower_steps < 1:
            raise UserError("--follower-steps must be at least 1.")
        own = self.update is UpdateMode.FUSED and takes_its_own_leader_step(problem)
        check_update(self.update, follower.learnable, problem.zero_sum, own_leader_step=own)

    def _set_modes(self, leader_train: bool, follower_train: bool) -> None:
        self.problem.leader.train(leader_train)
        if isinstance(self.follower, torch.nn.Module):
            self.follower.train(follower_train)

    def step(self, batch: Batch) -> dict[str, Tensor]:
        """One joint step; returns detached tensors (no host sync here): L (``leader_loss``), q
        where a learned follower ascends it (``follower_objective``), and the problem's
        ``step_metrics``."""
        self.problem.begin_step(batch)
        if not self.acceleration.amp:
            out = self._step(batch)
        else:
            device = next(self.problem.leader.parameters()).device
            with self.acceleration.autocast(device):
                out = self._step(batch)
        if self.leader_average is not None:
            self.leader_average.update(unwrap(self.problem.leader))
        return out | {k: torch.tensor(v) for k, v in self.problem.step_metrics().items()}

    def selected_leader(self) -> nn.Module:
        """The leader that is validated, selected and tested: θ̄ when averaging, else θ."""
        if self.leader_average is not None:
            return self.leader_average.module
        return unwrap(self.problem.leader)

    def _step(self, batch: Batch) -> dict[str, Tensor]:
        if self.update is UpdateMode.FUSED:
            return self._fused_step(batch)
        if not self.follower.learnable:
            self._set_modes(leader_train=False, follower_train=False)
            z = self.follower.solve(self.problem, batch)
            self.problem.end_step(batch, detach(z))
            self._set_modes(leader_train=True, follower_train=False)
            loss = self.problem.leader_step(batch, detach(z), self.leader_optimizer)
            return {"leader_loss": loss}  # z may be a parameter set (ψ)
        return self._alternating_learned_step(batch)

    def _alternating_learned_step(self, batch: Batch) -> dict[str, Tensor]:
        """Algorithm 3 in separate passes, none computed twice: the gradient input and g_φ's
        forward are made once, with their graph kept; θ steps on the detached z; then φ ascends
        q(θ_new, z_φ) at the updated leader, backpropagating through the kept graph.
        (The reference code recomputes both passes for φ's step.)"""
        follower = cast(LearnableFollower, self.follower)
        self._set_modes(leader_train=False, follower_train=True)
        z = follower(self.problem, batch)
        self.problem.end_step(batch, detach(z))
        follower_first = self.update is UpdateMode.FOLLOWER_FIRST  # Algorithm 4's order
        if follower_first:
            objective = self.problem.follower_objective(batch, z)
            follower.ascend(objective)
        self.problem.leader.train(True)
        out = {"leader_loss": self.problem.leader_step(batch, detach(z), self.leader_optimizer)}
        self.problem.leader.train(False)
        if not follower_first:
            objective = self.problem.follower_objective(batch, z)
            follower.ascend(objective)
        out["follower_objective"] = objective.detach()
        for _ in range(self.follower_steps - 1):  # extra φ steps need fresh solves
            out["follower_objective"] = follower.learn(self.problem, batch)
        return out

    def _fused_step(self, batch: Batch) -> dict[str, Tensor]:
        """θ ← θ − α1 ∇θ L and φ ← φ + α2 ∇φ L from one backward (zero-sum: q = L); a problem
        that asks (``wants_decision_gradient``) gets that backward's ∇_z L too."""
        follower = cast(LearnableFollower, self.follower)
        self._set_modes(leader_train=False, follower_train=True)
        z = follower(self.problem, batch)
        self.problem.end_step(batch, detach(z))
        z = reverse_gradient(z)
        wants_gradient = self.problem.wants_decision_gradient
        if wants_gradient:
            z.retain_grad()  # ∇_z L arrives here anyway, on its way to φ
        self.problem.leader.train(True)
        loss = self.problem.leader_loss(batch, z)
        self.leader_optimizer.zero_grad(set_to_none=True)
        follower.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.leader_optimizer.step()
        follower.optimizer.step()
        if wants_gradient:
            self.problem.decision_gradient(batch, detach(z), cast(Tensor, z.grad).detach())
        out = {"leader_loss": loss.detach(), "follower_objective": loss.detach()}
        for _ in range(self.follower_steps - 1):  # extra φ steps beyond the shared one
            self._set_modes(leader_train=False, follower_train=True)
            out["follower_objective"] = follower.learn(self.problem, batch)
        return out

    def state_dict(self) -> dict[str, Any]:
        state = {
            "leader": unwrap(self.problem.leader).state_dict(),  # the same keys under torchrun
            "leader_optimizer": self.leader_optimizer.state_dict(),
        }
        if isinstance(self.follower, torch.nn.Module):
            state["follower"] = self.follower.state_dict()
            state["follower_optimizer"] = self.follower.optimizer.state_dict()
        problem = self.problem.state_dict()
        if problem:  # none for DRO and AIT: their checkpoints keep the keys they always had
            state["problem"] = problem
        if self.leader_average is not None:
            state["leader_average"] = self.leader_average.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        unwrap(self.problem.leader).load_state_dict(state["leader"])
        self.leader_optimizer.load_state_dict(state["leader_optimizer"])
        if isinstance(self.follower, torch.nn.Module):
            self.follower.load_state_dict(state["follower"])
            self.follower.optimizer.load_state_dict(state["follower_optimizer"])
        if "problem" in state:
            self.problem.load_state_dict(state["problem"])
        if self.leader_average is not None:
            self.leader_average.load_state_dict(state["leader_average"])
