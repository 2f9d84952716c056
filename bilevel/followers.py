"""Followers: turn a problem and a batch into a decision z (DESIGN.md, "The protocol").

Hand-designed: ``SignGradientAscent`` (FGSM = 1 step, PGM-k = k steps; paper Eq. 4), used both to
train ("PGM Net", Algorithm 1) and to evaluate. Learned: ``LearnedFollower`` wraps a network g_φ
from ``learned_optimizers`` and unrolls it ``steps`` times with shared φ,

    z_{k+1} = Π_Z(z_k + g_φ(A_k)),        A_k = [features(z_k), ∇_z q(θ, z_k) / max|∇_z q|],

which is the one-shot naive/grad/grad-only attacker of Eq. (7) for steps = 1 and the paper's
"2-Step L2L" RNN for steps = 2. φ is trained online to maximise q (Algorithm 3, last line).
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch
from torch import Tensor, nn

from bilevel.protocol import Batch, BilevelProblem, follower_gradient


class NoFollower:
    """z = z0 = 0: plain training, the "no follower" baseline of the benchmarks."""

    learnable = False

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        return problem.init_follower(batch)

    def learn(self, problem: BilevelProblem, batch: Batch) -> Tensor | None:
        return None


class SignGradientAscent:
    """Projected sign-gradient ascent on q (paper Eq. 4): z ← Π_Z(z + η · sign ∇_z q).

    ``steps=1`` is FGSM; with ``random_start`` and η = 1.25 ε it is "Fast-AT" FGSM-RS (Wong et al.
    2020); ``steps=k`` is PGM-k (Madry et al. 2018's PGD). Stateless: ``learn`` does nothing.
    """

    learnable = False

    def __init__(self, steps: int, step_size: float, random_start: bool = False) -> None:
        if steps < 1:
            raise ValueError("SignGradientAscent needs at least one step")
        self.steps, self.step_size, self.random_start = steps, step_size, random_start

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        z = problem.project(batch, problem.init_follower(batch, random_start=self.random_start))
        for _ in range(self.steps):
            grad = follower_gradient(problem, batch, z)
            z = problem.project(batch, z + self.step_size * grad.sign())
        return z.detach()

    def learn(self, problem: BilevelProblem, batch: Batch) -> Tensor | None:
        return None

    def __repr__(self) -> str:
        rs = ", random_start" if self.random_start else ""
        return f"SignGradientAscent(steps={self.steps}, step_size={self.step_size:g}{rs})"


class InputMode(str, Enum):
    """What the learned follower sees (Section 3): naive [x], grad [x, ∇], grad-only [∇]."""

    NAIVE = "naive"
    GRAD = "grad"
    GRAD_ONLY = "grad-only"

    def in_channels(self, data_channels: int) -> int:
        """Channels of A_fθ when the data and the gradient each have ``data_channels``."""
        return data_channels * (2 if self is InputMode.GRAD else 1)


def normalise_per_sample(grad: Tensor) -> Tensor:
    """g / max|g| taken per sample (over every dimension but the first).

    Choice: per sample, so a sample's input does not depend on the rest of the batch and batch
    size does not change what g_φ sees. The reference code divides by the whole batch's max |g|
    (one scalar); per sample keeps every sample's gradient in [-1, 1] with its own max at ±1.
    """
    scale = grad.flatten(1).abs().amax(dim=1).clamp_min(1e-12)
    return grad / scale.view(-1, *([1] * (grad.dim() - 1)))


class LearnedFollower(nn.Module):
    """g_φ unrolled ``steps`` times with shared φ (the RNN cell of Section 3), trained by Adam ascent
    on q. ``steps=1`` is the one-shot attacker z = Π(z0 + g_φ(A)); ``steps=2`` is 2-Step L2L.

    The gradient in A_k is a constant (no second-order terms), and z_k keeps its graph to φ, so φ's
    gradient flows through every step, as in the reference code's 2-step attacker.
    """

    learnable = True

    def __init__(
        self,
        net: nn.Module,
        steps: int = 1,
        input_mode: InputMode | str = InputMode.GRAD,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 2e-4,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("LearnedFollower needs at least one step")
        self.net, self.steps, self.input_mode = net, steps, InputMode(input_mode)
        self.optimizer = torch.optim.Adam(
            net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay
        )
        self.__dict__["_cell"] = net  # g_φ's forward (``distribute``); not a second submodule

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run g_φ's forward through ``wrap(net)``, e.g. ``DistributedDataParallel``, which then
        averages φ's gradients over the processes. ``net`` stays the module that owns φ, the state
        dict and ε, so checkpoints are the same with and without the wrapper."""
        self.__dict__["_cell"] = wrap(self.net)  # kept out of the module tree and the state dict

    def features(self, problem: BilevelProblem, batch: Batch, z: Tensor) -> Tensor:
        """A_fθ(z): the problem's features and/or the per-sample-normalised ∇_z q (a constant)."""
        parts = []
        if self.input_mode is not InputMode.GRAD_ONLY:
            parts.append(problem.follower_features(batch, z))
        if self.input_mode is not InputMode.NAIVE:
            parts.append(normalise_per_sample(follower_gradient(problem, batch, z)))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """z_φ with its graph to φ (used by ``learn`` and by the fused update)."""
        z = problem.project(batch, problem.init_follower(batch))
        for _ in range(self.steps):
            z = problem.project(batch, z + self._cell(self.features(problem, batch, z)))
        return z

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self(problem, batch)

    def ascend(self, objective: Tensor) -> None:
        """One Adam step of φ up ``objective`` (a q(θ, z_φ) with its graph to φ); θ's gradients
        are untouched (the backward stops at φ: ``inputs=``), and a DDP wrapper from
        ``distribute`` averages φ's gradients as they accumulate."""
        params = [p for p in self.net.parameters() if p.requires_grad]
        self.optimizer.zero_grad(set_to_none=True)
        (-objective).backward(inputs=params)
        self.optimizer.step()

    def learn(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """Solve afresh and take one Adam step of φ up the follower objective q(θ, z_φ)."""
        objective = problem.follower_objective(batch, self(problem, batch))
        self.ascend(objective)
        return objective.detach()
