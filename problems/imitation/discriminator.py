"""The GAIL discriminator D_ψ(s, a) = σ(ℓ_ψ(s, a)) as a function of an explicit parameter vector ψ
(the follower's decision z is ψ itself), and the rewards it gives the policy.

ψ is one flat tensor, evaluated with ``torch.func.functional_call`` on a template MLP: the follower
can then update ψ by any rule (Adam, a learned optimizer) and be differentiated through that rule,
without module state in the way. Inputs are the observation and the action (one-hot for discrete
actions, divided by the action bound for continuous ones); D standardises the observation part
when it evaluates ℓ, with statistics chosen by ``norm``:

- ``expert``: the expert's mean and standard deviation, fixed. Policy states far from the
  expert's (Pendulum hanging down, where the expert's cos θ ≈ 1 has a small spread) land many
  standard deviations out, where D saturates whatever ψ is.
- ``running``: running mean and variance of every discriminator training batch, half expert and
  half policy pairs (Chan, Golub & LeVeque 1979's pairwise update, as the ``imitation`` library's
  ``RunningNorm``), so the statistics cover the policy's states too and follow them as they move.

``clip`` > 0 also clips each standardised feature to [−clip, clip].
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call

from bilevel.errors import UserError

REWARDS = ("gail", "airl")
DISC_NORMS = ("expert", "running")


class Discriminator:
    """ℓ_ψ(s, a): an MLP (ReLU, ``hidden`` units per layer) with parameters given as a flat ψ."""

    def __init__(
        self,
        observation_space: gym.spaces.Box,
        action_space: gym.spaces.Space,
        expert_observations: np.ndarray,
        hidden: tuple[int, ...] = (32, 32),
        norm: str = "expert",
        clip: float = 0.0,
    ) -> None:
        if norm not in DISC_NORMS:
            raise UserError(
                f"Unknown --disc-norm {norm!r}; choose one of: {', '.join(DISC_NORMS)}."
            )
        self.norm, self.clip = norm, clip
        self.discrete = isinstance(action_space, gym.spaces.Discrete)
        if self.discrete:
            self.action_dim = int(action_space.n)
            self.action_scale = None
        else:
            self.action_dim = int(np.prod(action_space.shape))
            high = np.abs(np.concatenate([action_space.low, action_space.high]).reshape(2, -1))
            self.action_scale = torch.as_tensor(high.max(0), dtype=torch.float32).clamp_min(1e-6)
        obs = torch.as_tensor(expert_observations, dtype=torch.float32)
        self.obs_dim = obs.shape[1]
        # running moments of the observation part (count, mean, sum of squared deviations); until
        # the first ``observe``, and always with norm="expert", D standardises with the expert's
        self.count, self.mean, self.m2 = 0, torch.zeros(self.obs_dim), torch.zeros(self.obs_dim)
        self.obs_mean, self.obs_std = obs.mean(0), obs.std(0).clamp_min(0.1)
        sizes = [obs.shape[1] + self.action_dim, *hidden, 1]
        layers: list[nn.Module] = []
        for a, b in zip(sizes[:-1], sizes[1:], strict=True):
            layers += [nn.Linear(a, b), nn.ReLU()]
        self.net = nn.Sequential(*layers[:-1])
        self.names = [name for name, _ in self.net.named_parameters()]
        self.shapes = [p.shape for p in self.net.parameters()]
        self.num_params = sum(p.numel() for p in self.net.parameters())

    def init_params(self) -> Tensor:
        """ψ0: PyTorch's default initialisation of the template, flattened."""
        return torch.cat([p.detach().reshape(-1) for p in self.net.parameters()])

    def inputs(self, observations: np.ndarray | Tensor, actions: np.ndarray | Tensor) -> Tensor:
        """x = [s, encoded a] for a batch of (s, a); ``logits`` standardises s."""
        obs = torch.as_tensor(np.asarray(observations), dtype=torch.float32)
        obs = obs.reshape(obs.shape[0], -1)
        act = torch.as_tensor(np.asarray(actions))
        if self.discrete:
            act = F.one_hot(act.reshape(-1).long(), self.action_dim).float()
        else:
            act = act.reshape(act.shape[0], -1).float() / self.action_scale
        return torch.cat([obs, act], dim=1)

    def observe(self, x: Tensor) -> None:
        """Fold a training batch into the running statistics (``norm="running"`` only)."""
        if self.norm != "running":
            return
        obs = x[:, : self.obs_dim].detach()
        n, batch_mean = len(obs), obs.mean(0)
        batch_m2 = ((obs - batch_mean) ** 2).sum(0)
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean = self.mean + delta * n / total
        self.m2 = self.m2 + batch_m2 + delta**2 * self.count * n / total
        self.count = total
        self.obs_mean, self.obs_std = self.mean, (self.m2 / total).sqrt().clamp_min(0.1)

    def standardise(self, x: Tensor) -> Tensor:
        """The observation part to zero mean and unit spread (and clipped, with ``clip``)."""
        obs = (x[:, : self.obs_dim] - self.obs_mean) / self.obs_std
        if self.clip > 0:
            obs = obs.clamp(-self.clip, self.clip)
        return torch.cat([obs, x[:, self.obs_dim :]], dim=1)

    def state_dict(self) -> dict[str, Tensor | int]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    def load_state_dict(self, state: dict[str, Tensor | int]) -> None:
        self.count, self.mean, self.m2 = int(state["count"]), state["mean"], state["m2"]
        if self.count:
            self.obs_mean, self.obs_std = self.mean, (self.m2 / self.count).sqrt().clamp_min(0.1)

    def logits(self, psi: Tensor, x: Tensor) -> Tensor:
        """ℓ_ψ(x), shape (batch,), x as ``inputs`` makes it."""
        return self.standardised_logits(psi, self.standardise(x))

    def standardised_logits(self, psi: Tensor, x: Tensor) -> Tensor:
        """ℓ_ψ on already standardised inputs."""
        params, start = {}, 0
        for name, shape in zip(self.names, self.shapes, strict=True):
            n = shape.numel()
            params[name] = psi[start : start + n].view(shape)
            start += n
        return functional_call(self.net, params, (x,)).squeeze(-1)


def policy_reward(logits: Tensor, kind: str = "gail") -> Tensor:
    """The policy's reward from D = σ(ℓ).

    ``gail``: r = −log(1 − D) = softplus(ℓ) (Ho & Ermon 2016; positive, a survival bonus);
    ``airl``: r = log D − log(1 − D) = ℓ (Fu et al. 2018; signed, no survival bias).
    """
    if kind == "gail":
        return F.softplus(logits)
    if kind == "airl":
        return logits
    raise UserError(f"Unknown --reward {kind!r}; choose one of: {', '.join(REWARDS)}.")


def discriminator_objective(
    disc: Discriminator,
    psi: Tensor,
    expert_x: Tensor,
    policy_x: Tensor,
    grad_penalty: float = 0.0,
) -> Tensor:
    """q(θ, ψ) = E_expert[log D] + E_π[log(1 − D)] − λ · GP (expert labelled 1).

    GP (Gulrajani et al. 2017, as used for GAIL by Kostrikov et al. 2019): E[(‖∇_x ℓ(x̂)‖ − 1)²]
    at x̂ = u·x_E + (1 − u)·x_π, u ~ U(0, 1), in standardised inputs; kept differentiable in ψ
    (``create_graph``).
    """
    q = F.logsigmoid(disc.logits(psi, expert_x)).mean()
    q = q + F.logsigmoid(-disc.logits(psi, policy_x)).mean()
    if grad_penalty > 0:
        u = torch.rand(expert_x.shape[0], 1)
        mixed = u * disc.standardise(expert_x) + (1 - u) * disc.standardise(policy_x)
        mixed = mixed.detach().requires_grad_(True)
        with torch.enable_grad():
            logits = disc.standardised_logits(psi, mixed)
            (grad,) = torch.autograd.grad(logits.sum(), mixed, create_graph=True)
        q = q - grad_penalty * (grad.norm(dim=1) - 1).pow(2).mean()
    return q


def side_accuracies(expert_logits: Tensor, policy_logits: Tensor) -> tuple[float, float]:
    """The share of expert pairs called expert (D ≥ 1/2, logit ≥ 0) and of policy pairs called
    policy (D < 1/2). A tie, D = 1/2, is called expert, so that it counts right on one side: a
    discriminator that cannot tell the two apart scores 1/2 on average, not 0."""
    expert = (expert_logits >= 0).float().mean()
    policy = (policy_logits < 0).float().mean()
    return float(expert), float(policy)


def discriminator_accuracy(
    disc: Discriminator, psi: Tensor, expert_x: Tensor, policy_x: Tensor
) -> float:
    """The mean of the two ``side_accuracies``: 1/2 for a discriminator that tells nothing apart."""
    with torch.no_grad():
        expert, policy = side_accuracies(disc.logits(psi, expert_x), disc.logits(psi, policy_x))
    return (expert + policy) / 2
