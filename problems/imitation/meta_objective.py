"""What a learned discriminator optimizer g_φ is trained to maximise.

φ is meta-trained online (Algorithm 3 of Jiang et al. 2021): after each round it ascends a
meta-objective J at ψ_{t+K}(φ), evaluated on a *fresh* batch of the round (expert pairs and the
policy's newest rollout). The choices, each a ``--meta-objective``:

- ``q``: J = q(θ, ψ_K), the discriminator's log-likelihood. Expert and policy pairs are nearly
  separable, so "maximise q after K steps" means "take ever larger steps": D saturates, its policy
  logits sit far below zero and the reward −log(1 − D) carries no signal to the policy. Kept as
  the paper's choice and for comparison.
- ``q-gp``: J = q − λ · E[(‖∇_x ℓ_ψ(x̂)‖ − 1)²] at x̂ between expert and policy pairs (the gradient
  penalty of Gulrajani et al. 2017, used for GAIL's discriminator by Kostrikov et al. 2019): D may
  separate, but only with a bounded slope in x, so the reward keeps a gradient across the states
  between the policy's and the expert's.
- ``target``: J = q − λ · (A_ψ − a*)², where A_ψ = ½ (E_expert σ(ℓ) + E_π σ(−ℓ)) is D's soft
  accuracy: φ is rewarded for a discriminator that stays near accuracy a* instead of saturating
  (the goal of the adaptive discriminator updates of e.g. Peng et al. 2019's VAIL, which holds D's
  information at a target).

The default is ``target`` with a* = 0.6, about the soft accuracy that GAIL's own Adam-trained D
keeps on Pendulum-v1 (its expert logits stay near 0 while its policy logits fall to about −1):
of the choices measured it was the only one that did not let the learned optimizer outgrow Adam's
steps into a saturated D, and with 10 φ steps a round the best median and worst seed on Pendulum-v1
(on Acrobot-v1 the 3 seeds could not separate the choices); ``config.py`` lists the measurements.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from bilevel.errors import UserError
from problems.imitation.discriminator import Discriminator, discriminator_objective

META_OBJECTIVES = ("q", "q-gp", "target")


def soft_accuracy(expert_logits: Tensor, policy_logits: Tensor) -> Tensor:
    """A_ψ = ½ (E_expert[D] + E_π[1 − D]), D = σ(ℓ_ψ), from the logits ℓ_ψ on expert and policy
    pairs: differentiable in ψ, ½ at chance."""
    return (torch.sigmoid(expert_logits).mean() + torch.sigmoid(-policy_logits).mean()) / 2


@dataclass(frozen=True)
class MetaObjective:
    """J of ``kind`` (see the module docstring) with its weight λ (``penalty``) and a*."""

    kind: str = "target"  # solve gail's defaults (``GAILConfig``), as the module docstring says
    penalty: float = 10.0
    target_accuracy: float = 0.6

    def __post_init__(self) -> None:
        if self.kind not in META_OBJECTIVES:
            raise UserError(
                f"Unknown --meta-objective {self.kind!r}; choose one of: "
                f"{', '.join(META_OBJECTIVES)}."
            )

    def __call__(
        self, disc: Discriminator, psi: Tensor, expert_x: Tensor, policy_x: Tensor
    ) -> Tensor:
        """J(ψ) on the given expert and policy pairs."""
        if self.kind == "q-gp":
            return discriminator_objective(disc, psi, expert_x, policy_x, self.penalty)
        q = discriminator_objective(disc, psi, expert_x, policy_x)
        if self.kind == "target":
            accuracy = soft_accuracy(disc.logits(psi, expert_x), disc.logits(psi, policy_x))
            q = q - self.penalty * (accuracy - self.target_accuracy) ** 2
        return q
