"""Followers: turn a problem and a batch into a decision z (docs/architecture.md, "The protocol").

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


class GradientScaling(str, Enum):
    """How ∇_z q is scaled before g_φ sees it (the paper leaves it open)."""

    SAMPLE = "sample"  # g / max|g| per sample (``normalise_per_sample``): the default
    BATCH = "batch"  # g / max|g| over the whole batch: the reference code's
    SIGN = "sign"  # sign g: FGSM's direction only, no magnitude
    NONE = "none"  # g as it is, 1/B factor of the batch mean included

    def __call__(self, grad: Tensor) -> Tensor:
        if self is GradientScaling.SAMPLE:
            return normalise_per_sample(grad)
        if self is GradientScaling.BATCH:
            return grad / grad.abs().amax().clamp_min(1e-12)
        return grad.sign() if self is GradientScaling.SIGN else grad


class Memory(str, Enum):
    """What g_φ remembers between unrolled steps, fed as extra channels: nothing, the current
    decision z / ε (where the iterate already is), or the previous step's scaled gradient
    (zeros at the first step), as an optimizer's momentum would."""

    NONE = "none"
    DELTA = "delta"
    PREVIOUS_GRADIENT = "prev-grad"

    def channels(self, data_channels: int) -> int:
        return 0 if self is Memory.NONE else data_channels


class LearnedFollower(nn.Module):
    """g_φ unrolled ``steps`` times with shared φ (the RNN cell of Section 3), trained by Adam ascent
    on q. ``steps=1`` is the one-shot attacker z = Π(z0 + g_φ(A)); ``steps=2`` is 2-Step L2L.

    The gradient in A_k is a constant (no second-order terms), and z_k keeps its graph to φ, so φ's
    gradient flows through every step, as in the reference code's 2-step attacker.

    Levers beyond the paper (each off by default, so the default is the paper's follower):
    ``grad_scaling`` (how ∇ is scaled), ``random_start`` (z0 uniform in Z, as FGSM-RS and PGM
    start), ``memory`` (what g_φ sees of the previous step), and ``sign_step`` s: each step adds
    a sign-gradient step of s·ε to g_φ's output,

        z_{k+1} = Π_Z(z_k + s·ε·sign ∇_z q(θ, z_k) + g_φ(A_k)),

    so that g_φ learns a correction to PGM rather than the whole step; with g_φ's last layer at
    zero (``learned_optimizers.start_at_zero``) the follower starts as PGM-K with step s·ε. The
    ε of ``sign_step`` and of the ``delta`` memory is g_φ's own bound ``net.eps``.
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
        grad_scaling: GradientScaling | str = GradientScaling.SAMPLE,
        random_start: bool = False,
        memory: Memory | str = Memory.NONE,
        sign_step: float = 0.0,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("LearnedFollower needs at least one step")
        if sign_step < 0:
            raise ValueError(f"The sign step must be >= 0; got {sign_step}.")
        self.net, self.steps, self.input_mode = net, steps, InputMode(input_mode)
        self.grad_scaling, self.memory = GradientScaling(grad_scaling), Memory(memory)
        self.random_start, self.sign_step = random_start, sign_step
        needs_bound = sign_step > 0 or self.memory is Memory.DELTA
        if needs_bound and not isinstance(getattr(net, "eps", None), float):
            raise ValueError("sign_step and the delta memory need a g_φ with a float bound .eps.")
        self.optimizer = torch.optim.Adam(
            net.parameters(), lr=lr, betas=betas, weight_decay=weight_decay
        )
        self.__dict__["_cell"] = net  # g_φ's forward (``distribute``); not a second submodule

    @staticmethod
    def in_channels(input_mode: InputMode | str, memory: Memory | str, data_channels: int) -> int:
        """Channels of g_φ's input A_k for decisions with ``data_channels`` channels."""
        return InputMode(input_mode).in_channels(data_channels) + Memory(memory).channels(
            data_channels
        )

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Run g_φ's forward through ``wrap(net)``, e.g. ``DistributedDataParallel``, which then
        averages φ's gradients over the processes. ``net`` stays the module that owns φ, the state
        dict and ε, so checkpoints are the same with and without the wrapper."""
        self.__dict__["_cell"] = wrap(self.net)  # kept out of the module tree and the state dict

    @property
    def _needs_gradient(self) -> bool:
        return (
            self.input_mode is not InputMode.NAIVE
            or self.sign_step > 0
            or self.memory is Memory.PREVIOUS_GRADIENT
        )

    def features(
        self,
        problem: BilevelProblem,
        batch: Batch,
        z: Tensor,
        grad: Tensor | None = None,
        previous: Tensor | None = None,
    ) -> Tensor:
        """A_k: the problem's features and/or the scaled ∇_z q (a constant; computed here when
        ``grad`` is None), then the memory channels (``previous``: the last step's ∇_z q)."""
        parts = []
        if self.input_mode is not InputMode.GRAD_ONLY:
            parts.append(problem.follower_features(batch, z))
        if self.input_mode is not InputMode.NAIVE:
            if grad is None:
                grad = follower_gradient(problem, batch, z)
            parts.append(self.grad_scaling(grad))
        if self.memory is Memory.DELTA:
            parts.append(z / max(self.net.eps, 1e-12))
        elif self.memory is Memory.PREVIOUS_GRADIENT:
            parts.append(torch.zeros_like(z) if previous is None else self.grad_scaling(previous))
        return torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]

    def forward(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """z_φ with its graph to φ (used by ``learn`` and by the fused update)."""
        z = problem.project(batch, problem.init_follower(batch, random_start=self.random_start))
        previous = None
        for _ in range(self.steps):
            grad = follower_gradient(problem, batch, z) if self._needs_gradient else None
            step = self._cell(self.features(problem, batch, z, grad, previous))
            if self.sign_step > 0:
                step = step + (self.sign_step * self.net.eps) * grad.sign()
            z = problem.project(batch, z + step)
            previous = grad
        return z

    def solve(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        with torch.no_grad():
            return self(problem, batch)

    @property
    def updates(self) -> int:
        """φ's Adam steps so far, read from the optimizer's state (so it survives a resume)."""
        for group in self.optimizer.param_groups:
            for p in group["params"]:
                if "step" in self.optimizer.state.get(p, {}):
                    return int(self.optimizer.state[p]["step"])
        return 0

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
