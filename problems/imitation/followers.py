"""Followers for a parameter-space decision z = ψ (a flat tensor that carries over between rounds:
``problem.init_follower`` returns the last ψ). Generic over the protocol; used by GAIL.

- ``AdamFollower`` (hand-designed, "GAIL"): N Adam ascent steps on q(θ, ψ) per round; Adam's
  moments persist across rounds, as with a discriminator optimizer in the usual GAIL loop.
- ``LSTMFollower`` (learned, "L2L-GAIL"): K steps of a coordinate-wise LSTM optimizer g_φ
  (Andrychowicz et al. 2016), ψ_{k+1} = ψ_k + g_φ(∇_ψ q(ψ_k), h_k). φ is trained online, like the
  attacker of Algorithm 3: after each round, the same K-step unroll is replayed from the round's
  start (ψ_t, h_t) and φ takes one Adam step up q(θ, ψ_{t+K}) on a *fresh* batch.

Differentiating through the unroll: ψ is an explicit tensor evaluated with ``torch.func``'s
``functional_call`` (``discriminator.py``), so ψ_K = ψ_0 + Σ_k g_φ(·) is an ordinary autograd graph
to φ; ``higher`` is not needed (it patches modules and optimizers, and we own neither the module
state nor a torch optimizer for ψ; it is also unmaintained since 2021). As in Andrychowicz et al.,
the gradient fed to g_φ is a constant (∂∇_t/∂φ = 0), which drops second derivatives of q.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bilevel.protocol import Batch, BilevelProblem, follower_gradient
from learned_optimizers.lstm_optimizer import CoordinateLSTMOptimizer, LSTMState


class AdamFollower(nn.Module):
    """ψ ← Adam ascent on q, ``steps`` times per round (state persists between rounds)."""

    learnable = False

    def __init__(
        self, num_params: int, steps: int = 3, lr: float = 1e-3, betas=(0.9, 0.999)
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("AdamFollower needs at least one step")
        self.steps = steps
        self.psi = nn.Parameter(torch.zeros(num_params))
        self.optimizer = torch.optim.Adam([self.psi], lr=lr, betas=betas)

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        with torch.no_grad():
            self.psi.copy_(problem.init_follower(batch))
        for _ in range(self.steps):
            self.psi.grad = -follower_gradient(problem, batch, self.psi)
            self.optimizer.step()
        return self.psi.detach().clone()

    def learn(self, problem: BilevelProblem, batch: Batch) -> None:
        return None


class LSTMFollower(nn.Module):
    """K-step unroll of a coordinate-wise LSTM optimizer on ψ, meta-trained online (see module)."""

    learnable = True

    def __init__(
        self,
        num_params: int,
        net: CoordinateLSTMOptimizer | None = None,
        steps: int = 5,
        lr: float = 1e-3,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("LSTMFollower needs at least one step")
        self.net = net or CoordinateLSTMOptimizer()
        self.steps = steps
        for i, (h, c) in enumerate(self.net.init_state(num_params)):
            self.register_buffer(f"h{i}", h)
            self.register_buffer(f"c{i}", c)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self._last: tuple[BilevelProblem, Batch, Tensor] | None = None
        self._start: tuple[Tensor, LSTMState] | None = None  # (ψ_t, h_t) of the current round

    @property
    def state(self) -> LSTMState:
        return [
            (getattr(self, f"h{i}"), getattr(self, f"c{i}")) for i in range(len(self.net.cells))
        ]

    def _store(self, state: LSTMState) -> None:
        for i, (h, c) in enumerate(state):
            setattr(self, f"h{i}", h.detach())
            setattr(self, f"c{i}", c.detach())

    def unroll(
        self, problem: BilevelProblem, batch: Batch, psi: Tensor, state: LSTMState
    ) -> tuple[Tensor, LSTMState]:
        """ψ_K and h_K after K steps; ψ_K keeps its graph to φ (the gradients are constants)."""
        for _ in range(self.steps):
            update, state = self.net(follower_gradient(problem, batch, psi), state)
            psi = problem.project(batch, psi + update)
        return psi, state

    def forward(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """ψ_{t+K} with its graph to φ, from (ψ_t, h_t); h_{t+K} is kept (detached) for the next
        round, (problem, batch) for ``ascend``'s fresh batch, and the round's start (ψ_t, h_t) for
        ``learn``."""
        start = (problem.init_follower(batch).detach(), self.state)
        psi, state = self.unroll(problem, batch, *start)
        self._start = start
        self._store(state)
        self._last = (problem, batch, psi)
        return psi

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self(problem, batch)

    def ascend(self, objective: Tensor) -> Tensor:
        """One Adam step of φ up q(θ, ψ_K(φ)), evaluated on a *fresh* batch of the same round
        (``problem.fresh_batch``) when the problem offers one, so that φ is rewarded for a
        discriminator that generalises, not for fitting the batch it stepped on. ``objective``
        (q on the unroll's batch, from the joint loop) supplies the graph to ψ_K."""
        if self._last is not None and hasattr(self._last[0], "fresh_batch"):
            problem, batch, psi = self._last
            objective = problem.follower_objective(problem.fresh_batch(batch), psi)
        self.optimizer.zero_grad(set_to_none=True)
        (-objective).backward(inputs=list(self.net.parameters()))
        self.optimizer.step()
        self._last = None
        return objective.detach()

    def learn(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """An extra φ step (``--follower-steps`` > 1): unroll again, with the current φ, from this
        round's start (ψ_t, h_t) that ``forward`` kept, and ascend. The deployed ψ_{t+K} and
        h_{t+K} are untouched: by now ``problem.init_follower`` returns ψ_{t+K} (the leader step
        stored it), so starting from it would train φ on a 2K-step unroll never deployed."""
        if self._start is None:
            raise RuntimeError("LSTMFollower.learn needs a forward pass of this round first")
        psi, _ = self.unroll(problem, batch, *self._start)
        self._last = (problem, batch, psi)
        return self.ascend(problem.follower_objective(batch, psi))
