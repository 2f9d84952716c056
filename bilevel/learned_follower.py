"""The learned follower (Section 3): g_φ unrolled with shared φ, and what it sees.

``LearnedFollower`` wraps a network g_φ from ``learned_optimizers`` and unrolls it ``steps`` times,

    z_{k+1} = Π_Z(z_k + g_φ(A_k)),        A_k = problem.follower_input([features(z_k), ∇̂_z q]),

which is the one-shot naive or gradient attacker of Eq. (7) (grad-only, ∇ alone, is this
project's addition) for steps = 1 and the paper's
"2-Step L2L" RNN for steps = 2 (∇̂: ∇_z q scaled to match the norm, ``GradientScaling``). φ is
trained online to maximise q (Algorithm 3, last line). The hand-designed followers and the
``Follower`` protocol it satisfies are in ``bilevel.followers``.

Π_Z is the problem's whole feasible set, applied after every step: for images, the ε-ball and
the [0, 1] box, so the second step's gradient and features are taken at a feasible z₁, as PGM's
are, and z₂ steps from that z₁. The authors' code also feeds its second call the box-clipped
x + p₁, but adds the raw outputs, clip_ε(p₁ + p₂), and clips to the box once at the end. Where the
box clips z₁ (the many zero pixels of MNIST) the two z₂ differ: a choice of this project.
"""

from __future__ import annotations

from collections.abc import Callable
from enum import Enum

import torch
from torch import Tensor, nn

from bilevel.norms import Norm
from bilevel.protocol import Batch, BilevelProblem, follower_gradient


class InputMode(str, Enum):
    """What the learned follower sees: naive [x] and grad [x, ∇] (Section 3), grad-only [∇] (this
    project's addition)."""

    NAIVE = "naive"
    GRAD = "grad"
    GRAD_ONLY = "grad-only"

    def in_channels(self, data_channels: int) -> int:
        """Channels of A_fθ when the data and the gradient each have ``data_channels``."""
        return data_channels * (2 if self is InputMode.GRAD else 1)


normalise_per_sample = Norm.LINF.normalise
"""g / max|g| per sample. Choice: per sample, so a sample's input does not depend on the rest of
the batch; the reference code divides by the whole batch's max |g| (``GradientScaling.BATCH``)."""


class GradientScaling(str, Enum):
    """How ∇_z q is scaled before g_φ sees it (the paper leaves it open), in the ball's norm."""

    SAMPLE = "sample"  # g / ‖g_i‖ per sample (L∞: g / max|g|, ``normalise_per_sample``): default
    BATCH = "batch"  # g / max_i ‖g_i‖ over the whole batch: the reference code's (L∞)
    SIGN = "sign"  # the steepest direction only (L∞: sign g, FGSM's), no magnitude
    NONE = "none"  # each sample's own ∇ℓ_i, unscaled: B·g (q is the batch mean, g has a 1/B)

    def __call__(self, grad: Tensor, norm: Norm = Norm.LINF) -> Tensor:
        """The scaled ∇ (``grad`` of the batch-mean q, batch first). ``none`` undoes the mean's
        1/B, so that what g_φ sees of an example does not depend on the batch it came in (the
        training batch, the follower gap's probe, an evaluator's batch)."""
        if self is GradientScaling.NONE:
            return grad * grad.shape[0]
        if self is GradientScaling.SAMPLE:
            return norm.normalise(grad)
        if self is GradientScaling.BATCH:
            # as ``Norm.normalise``, over the batch: by the peak |g| first (no underflow in the
            # norm that follows), then by the largest sample's norm; nothing floored, 0 stays 0
            peak = grad.abs().amax()
            scaled = grad / torch.where(peak > 0, peak, 1.0)
            largest = norm.of(scaled).amax()
            return scaled / torch.where(largest > 0, largest, 1.0)
        return norm.steepest(grad)  # SIGN


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
    gradient flows through every step, as in the reference code's 2-step attacker. ``norm`` is the
    ball's: it scales ∇ for g_φ and gives the sign step's direction (g_φ bounds its own output).

    Levers beyond the paper (each off in this class, whose default is the paper's follower; the
    mnist5k command line turns some on, ``problems/adversarial/defaults.py``):
    ``grad_scaling`` (how ∇ is scaled), ``random_start`` (z0 uniform in Z, as FGSM-RS and PGM
    start), ``memory`` (what g_φ sees of the previous step), and ``sign_step`` s: each step adds
    a steepest-ascent step of s·ε to g_φ's output,

        z_{k+1} = Π_Z(z_k + s·ε·sign ∇_z q(θ, z_k) + g_φ(A_k)),

    so that g_φ learns a correction to PGM rather than the whole step; with g_φ's last layer at
    zero (``learned_optimizers.start_at_zero``) the follower starts as PGM-K with step s·ε.
    ``plain_steps`` p < K: the first p steps are the sign step alone and only the last K − p call
    g_φ (each g_φ call costs about a classifier's forward and backward on small images).
    ``truncated``: φ's gradient flows through the last g_φ call only; the earlier ones run
    without a graph (truncated backpropagation through the unroll, as learned optimizers are
    commonly meta-trained: Metz et al., 2019), which saves their backward. The
    ε of ``sign_step`` and of the ``delta`` memory is g_φ's own bound, its float ``net.eps``.
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
        norm: Norm | str = Norm.LINF,
        plain_steps: int = 0,
        truncated: bool = False,
    ) -> None:
        super().__init__()
        if steps < 1:
            raise ValueError("LearnedFollower needs at least one step")
        if sign_step < 0:
            raise ValueError(f"The sign step must be >= 0; got {sign_step}.")
        if not 0 <= plain_steps < steps or (plain_steps > 0 and sign_step <= 0):
            raise ValueError(
                f"plain_steps must be in [0, steps={steps}), and above 0 only with a sign step "
                f"(a plain step is the sign step alone); got {plain_steps}."
            )
        if truncated and steps - plain_steps < 2:
            raise ValueError("truncated needs at least two g_φ steps (steps - plain_steps >= 2).")
        self.plain_steps, self.truncated = plain_steps, truncated
        self.net, self.steps, self.input_mode = net, steps, InputMode(input_mode)
        self.grad_scaling, self.memory = GradientScaling(grad_scaling), Memory(memory)
        self.random_start, self.sign_step, self.norm = random_start, sign_step, Norm(norm)
        if (sign_step > 0 or self.memory is Memory.DELTA) and not isinstance(net.eps, float):
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
        ``grad`` is None), then the memory (``previous``: the last step's ∇_z q), combined by
        ``problem.follower_input``."""
        parts = []
        if self.input_mode is not InputMode.GRAD_ONLY:
            parts.append(problem.follower_features(batch, z))
        if self.input_mode is not InputMode.NAIVE:
            if grad is None:
                grad = follower_gradient(problem, batch, z)
            parts.append(self.grad_scaling(grad, self.norm))
        if self.memory is Memory.DELTA:
            parts.append(z / max(self.net.eps, 1e-12))
        elif self.memory is Memory.PREVIOUS_GRADIENT:
            scaled = None if previous is None else self.grad_scaling(previous, self.norm)
            parts.append(torch.zeros_like(z) if scaled is None else scaled)
        return problem.follower_input(batch, parts)

    def forward(self, problem: BilevelProblem, batch: Batch) -> Tensor:
        """z_φ with its graph to φ (used by ``learn`` and by the fused update)."""
        z = problem.project(batch, problem.init_follower(batch, random_start=self.random_start))
        previous = None
        for k in range(self.steps):
            grad = follower_gradient(problem, batch, z) if self._needs_gradient else None
            step = torch.zeros_like(z)  # the first plain_steps steps: the sign step alone
            if k >= self.plain_steps:
                a = self.features(problem, batch, z, grad, previous)
                with torch.set_grad_enabled(torch.is_grad_enabled() and not self._cut(k)):
                    step = self._cell(a)
            if self.sign_step > 0:
                step = step + (self.sign_step * self.net.eps) * self.norm.steepest(grad)
            z = problem.project(batch, z + step)
            previous = grad
        return z

    def _cut(self, k: int) -> bool:
        """Whether step k's g_φ call runs without a graph to φ (``truncated``, not the last)."""
        return self.truncated and k < self.steps - 1

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
