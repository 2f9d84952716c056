"""Generic followers for a parameter-space decision z = ψ (a flat tensor that carries over between
rounds: ``problem.init_follower`` returns the last ψ), beside those of ``bilevel.followers``; GAIL's
discriminator is one such ψ.

- ``AdamFollower`` (hand-designed, "GAIL"): N Adam ascent steps on q(θ, ψ) per round; Adam's
  moments persist across rounds, as with a discriminator optimizer in the usual GAIL loop.
- ``LearnedOptimizerFollower`` (learned): K steps ψ_{k+1} = Π(ψ_k + g_φ(∇_ψ q(ψ_k), s_k)) of a
  learned optimizer g_φ with state s (``learned_optimizers.residual``): the residual LSTM on Adam
  ("L2L-GAIL", Andrychowicz et al. 2016) or the one-shot trust-region step (K = 1, Jiang et al.
  2021). φ is trained online, like the attacker of Algorithm 3: after the round's leader step, the
  round is replayed from its start (ψ_t, s_t) and φ takes one Adam step up the problem's
  meta-objective at ψ_{t+K} (``problem.meta_objective``: q on the round's batch by default; GAIL's
  is q on a fresh batch minus a penalty).

Differentiating through the unroll: ψ is an explicit tensor that the problem evaluates with
``torch.func``'s ``functional_call`` (GAIL's discriminator), so ψ_K = ψ_0 + Σ_k g_φ(·) is an
ordinary autograd graph to φ; ``higher`` is not needed here (it patches modules and ``torch.optim``
optimizers, and ψ is neither a module's state nor stepped by one). As in Andrychowicz et al.,
the gradient fed to g_φ is a constant (∂∇_t/∂φ = 0), which drops second derivatives of q.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bilevel.followers import HandDesigned
from bilevel.protocol import Batch, BilevelProblem, follower_gradient
from learned_optimizers.residual import OptimizerState


class AdamFollower(nn.Module, HandDesigned):
    """ψ ← Π(Adam ascent on q), ``steps`` times per round (state persists between rounds)."""

    def __init__(
        self,
        num_params: int,
        steps: int = 3,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
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
            with torch.no_grad():
                self.psi.copy_(problem.project(batch, self.psi))
        return self.psi.detach().clone()


class LearnedOptimizerFollower(nn.Module):
    """K steps of a learned optimizer g_φ on ψ, meta-trained online (see the module docstring).

    ``net`` maps (∇, state) to (update, state) and offers ``init_state(coordinates)``.
    """

    learnable = True

    def __init__(self, num_params: int, net: nn.Module, steps: int = 3, lr: float = 1e-3) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("LearnedOptimizerFollower needs at least one step")
        self.net, self.steps = net, steps
        state = net.init_state(num_params)
        self.state_keys = list(state)
        for key, value in state.items():
            self.register_buffer(f"state_{key}", value)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=lr)
        self._last: tuple[BilevelProblem, Batch, Tensor] | None = None
        self._start: tuple[Tensor, OptimizerState] | None = None  # (ψ_t, s_t) of this round

    @property
    def state(self) -> OptimizerState:
        return {key: getattr(self, f"state_{key}") for key in self.state_keys}

    def _store(self, state: OptimizerState) -> None:
        for key, value in state.items():
            setattr(self, f"state_{key}", value.detach())

    def unroll(
        self, problem: BilevelProblem, batch: Batch, psi: Tensor, state: OptimizerState
    ) -> tuple[Tensor, OptimizerState]:
        """ψ_K and s_K after K steps; ψ_K keeps its graph to φ (the gradients are constants)."""
        for _ in range(self.steps):
            update, state = self.net(follower_gradient(problem, batch, psi), state)
            psi = problem.project(batch, psi + update)
        return psi, state

    def forward(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """ψ_{t+K} with its graph to φ, from (ψ_t, s_t); s_{t+K} is kept (detached) for the next
        round, (problem, batch) for ``ascend``'s meta-objective, and the round's start (ψ_t, s_t)
        for ``learn``."""
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
        """One Adam step of φ up the meta-objective at ψ_K(φ), ``problem.meta_objective(batch,
        ψ_K)`` after a forward (GAIL: on a *fresh* batch, so that φ is rewarded for a
        discriminator that generalises, not for fitting the batch it stepped on; by default q on
        the unroll's batch); ``objective`` itself without one."""
        if self._last is not None:
            problem, batch, psi = self._last
            objective = problem.meta_objective(batch, psi)
        self.optimizer.zero_grad(set_to_none=True)
        (-objective).backward(inputs=list(self.net.parameters()))
        self.optimizer.step()
        self._last = None
        return objective.detach()

    def learn(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """An extra φ step (``--follower-steps`` > 1): unroll again, with the current φ, from this
        round's start (ψ_t, s_t) that ``forward`` kept, and ascend. The deployed ψ_{t+K} and
        s_{t+K} are untouched: by now ``problem.init_follower`` returns ψ_{t+K} (the leader step
        stored it), so starting from it would train φ on a 2K-step unroll never deployed."""
        if self._start is None:
            raise RuntimeError("LearnedOptimizerFollower.learn needs this round's forward first")
        psi, _ = self.unroll(problem, batch, *self._start)
        self._last = (problem, batch, psi)
        return self.ascend(problem.follower_objective(batch, psi))
