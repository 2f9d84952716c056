"""Evaluation attacks in the L∞ or L2 ε-ball: each turns (model, x, y) into a feasible x_adv.

Every attack here is a small class over ``Attack`` (the torchattacks shape: calling an attack puts
the model and the attack's own networks in eval mode, runs ``perturb`` and checks that x_adv is
feasible; a subclass writes ``perturb``). ``run_attack`` batches it and scores it; training-time
accuracy and robust accuracy use the same path. Gradient attacks are the framework's followers
run on a DRO problem (docs/architecture.md: "evaluation attacks are followers too"):

- PGD-k, cross-entropy: ``SignGradientAscent(k, η, random_start=True)`` on ``AdversarialDRO``
  (Madry et al. 2018; paper Eq. 4; its L2 version steps along ∇/‖∇‖₂), worst of R restarts.
- PGD-k, CW margin: the same follower on ``AdversarialDRO(ascent="margin")``, whose steps
  climb the margin max_{j≠y} Z_j − Z_y (Carlini & Wagner 2017's f_6, as PGD-CW in TRADES and
  the paper).
- FGSM: one sign step of size ε from x (Goodfellow et al. 2015); under L2 the fast gradient
  method's step ε·∇/‖∇‖₂.
- the learned attacker g_φ of an L2L run: its ``LearnedFollower`` (paper Eq. 7).
- transfer: any of the above run on a surrogate model, the result scored on the target.

Random noise and CW-L∞, which are not followers, are in ``evaluation.noise_and_cw``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from bilevel.errors import UserError
from bilevel.followers import Follower, SignGradientAscent
from bilevel.learned_follower import LearnedFollower
from bilevel.norms import Norm
from problems.adversarial.dro import AdversarialDRO

FEASIBILITY_SLACK = 1e-5  # float rounding allowed on ‖x_adv − x‖ ≤ ε and x_adv ∈ [0, 1]


class Attack:
    """Base of every evaluation attack: ``name``, ``params()`` (every hyper-parameter, for
    eval.json) and ``perturb(model, x, y) -> x_adv`` with ‖x_adv − x‖ ≤ ε in the attack's
    ``norm`` and x_adv ∈ [0, 1]. Call the attack, not ``perturb``: the call owns eval mode (of the
    model and of ``networks()``, the attack's own) and the feasibility check."""

    name: str
    eps: float
    norm = Norm.LINF
    white_box = True  # uses the target's gradients (False: transfer, noise, Square)

    def params(self) -> dict[str, Any]:
        return {}  # an attack without settings (``Clean``)

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def networks(self) -> list[nn.Module]:
        """The attack's own networks (a learned attacker, a surrogate), run in eval mode."""
        return []

    def __call__(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        """x_adv for (x, y); a point outside the ball or the box is a bug, so it raises."""
        for network in (model, *self.networks()):
            network.eval()
        x_adv = self.perturb(model, x, y).detach()
        gap = self.norm.of(x_adv - x).max().item() if len(x) else 0.0
        # written so that NaN fails each test: a NaN x_adv predicts class 0 (argmax of NaN logits)
        inside = gap <= self.eps + FEASIBILITY_SLACK and bool(((x_adv >= 0) & (x_adv <= 1)).all())
        if not inside:
            raise RuntimeError(
                f"{self.name} left the {self.norm.value} ε-ball or the [0,1] box (‖δ‖ = {gap:g})."
            )
        return x_adv

    def norm_params(self) -> dict[str, Any]:
        """``{"norm": ...}`` for an L2 attack; L∞ attacks keep the settings they always wrote."""
        return {} if self.norm is Norm.LINF else {"norm": self.norm.value}


@dataclass
class AttackResult:
    """Per-example correctness under one attack; accuracy is its mean."""

    name: str
    params: dict[str, Any]
    correct: Tensor  # bool [n]
    seconds: float
    x_adv_head: Tensor  # the first few adversarial examples, for the Figure 4/5 plot
    # max_i ‖x_adv_i − x_i‖ in each norm ({"linf": .., "l2": ..}), whatever ball was attacked
    max_perturbation: dict[str, float] = field(default_factory=dict)

    @property
    def accuracy(self) -> float:
        """The fraction of examples left correct, exactly (``share``)."""
        return share(self.correct)


def share(correct: Tensor) -> float:
    """The fraction of True in ``correct``, exactly (a float32 mean is off by up to 1e-7, enough
    to fail a checklist line on a reversal of exactly its tolerance)."""
    return int(correct.sum()) / max(len(correct), 1)


def predict(model: nn.Module, x: Tensor, batch_size: int = 500) -> Tensor:
    """Predicted labels, in batches, without gradients."""
    with torch.no_grad():
        return torch.cat(
            [model(x[i : i + batch_size]).argmax(1) for i in range(0, len(x), batch_size)]
        )


def run_attack(
    attack: Attack,
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    batch_size: int = 500,
    keep: int = 4,
    params: dict[str, Any] | None = None,
) -> AttackResult:
    """Run ``attack`` over (x, y) in batches (each call in eval mode and checked feasible) and
    return per-example correctness and the largest ‖x_adv − x‖ in L∞ and L2. ``params``:
    ``attack.params()`` when the caller has it."""
    tic = time.perf_counter()
    correct, head, gaps = [], [], []  # gaps, per batch: max_i ‖x_adv_i − x_i‖ in each norm
    for i in range(0, len(x), batch_size):
        xb, yb = x[i : i + batch_size], y[i : i + batch_size]
        x_adv = attack(model, xb, yb)
        correct.append(predict(model, x_adv, batch_size) == yb)
        gaps.append(torch.stack([norm.of(x_adv - xb).max() for norm in Norm]))
        if sum(len(h) for h in head) < keep:
            head.append(x_adv[:keep])
    return AttackResult(
        attack.name,
        attack.params() if params is None else params,
        torch.cat(correct).cpu(),
        time.perf_counter() - tic,
        torch.cat(head)[:keep].cpu(),
        dict(zip([n.value for n in Norm], torch.stack(gaps).amax(0).tolist(), strict=True)),
    )


def keep_first_break(
    model: nn.Module, x_adv: Tensor, candidate: Tensor, y: Tensor, broken: Tensor
) -> tuple[Tensor, Tensor]:
    """Per example, keep the first candidate that breaks it (worst of several tries)."""
    with torch.no_grad():
        now = (model(candidate).argmax(1) != y) & ~broken
    x_adv = torch.where(now.view(-1, *[1] * (x_adv.dim() - 1)), candidate, x_adv)
    return x_adv, broken | now


class FollowerAttack(Attack):
    """A follower of the framework run on a DRO problem of the model (PGD-k, FGSM, learned g_φ) in
    the ``norm`` ball, worst of ``restarts`` runs per example."""

    def __init__(
        self,
        name: str,
        follower: Follower,
        eps: float,
        loss: str = "ce",
        restarts: int = 1,
        extra: dict[str, Any] | None = None,
        norm: Norm | str = Norm.LINF,
        from_clean: bool = True,
    ) -> None:
        if loss not in ("ce", "cw"):
            raise UserError(f"Unknown attack loss {loss!r}; choose ce or cw.")
        if restarts < 1:
            raise UserError(f"--restarts must be at least 1; got {restarts}.")
        self.name, self.follower, self.eps, self.norm = name, follower, eps, Norm(norm)
        self.loss, self.restarts, self.extra = loss, restarts, extra or {}
        self.from_clean = from_clean

    def params(self) -> dict[str, Any]:
        out: dict[str, Any] = {"eps": self.eps, "loss": self.loss, "restarts": self.restarts}
        f = self.follower
        if isinstance(f, SignGradientAscent):
            out |= {"steps": f.steps, "step_size": f.step_size, "random_start": f.random_start}
        else:
            out["follower"] = type(f).__name__
            out |= {"steps": f.steps} if isinstance(f, LearnedFollower) else {}
        return out | self.norm_params() | self.extra

    def networks(self) -> list[nn.Module]:
        return [self.follower] if isinstance(self.follower, nn.Module) else []

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        learned = self.follower if isinstance(self.follower, LearnedFollower) else None
        net = learned.net if learned is not None and learned.norm is self.norm else None
        if net is None or not isinstance(net.eps, float) or net.eps == self.eps:
            return self._perturb(model, x, y)
        # g_φ's bound, and the sign step and δ memory scaled by it, at this evaluation's ε, as
        # the training ε warm-up sets them (``solve.set_eps``); given back after the attack. A
        # g_φ trained in another ball keeps its own bound: its ε is not this ball's radius
        trained, net.eps = net.eps, self.eps
        try:
            return self._perturb(model, x, y)
        finally:
            net.eps = trained

    def _perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        ascent = "margin" if self.loss == "cw" else "ce"
        problem = AdversarialDRO(model, self.eps, self.norm, ascent=ascent)
        x_adv, broken = x.clone(), torch.zeros_like(y, dtype=torch.bool)
        if not self.from_clean:  # the first try as it is, also where x itself is misclassified
            x_adv = x + self.follower.solve(problem, (x, y))
            broken = predict(model, x_adv) != y
        for _ in range(self.restarts - (not self.from_clean)):
            delta = self.follower.solve(problem, (x, y))
            x_adv, broken = keep_first_break(model, x_adv, x + delta, y, broken)
            if broken.all():
                break
        return x_adv


def pgd_attack(
    steps: int, eps: float, step_size: float, loss: str = "ce", restarts: int = 1,
    norm: Norm | str = Norm.LINF, from_clean: bool = True,
) -> FollowerAttack:  # fmt: skip
    """PGD-k with a uniform random start (the paper's protocol), on the CE or CW-margin loss.
    ``from_clean=False`` scores x + δ itself (training-time metrics), not the worst of x and x + δ."""
    name = f"pgd{steps}" + ("-cw" if loss == "cw" else "")
    follower = SignGradientAscent(steps, step_size, random_start=True, norm=norm)
    return FollowerAttack(name, follower, eps, loss, restarts, norm=norm, from_clean=from_clean)


def fgsm_attack(eps: float, norm: Norm | str = Norm.LINF) -> FollowerAttack:
    """FGSM: x + ε · sign ∇ CE at x, no random start (Goodfellow et al. 2015); under L2 the fast
    gradient method, x + ε · ∇ / ‖∇‖₂."""
    follower = SignGradientAscent(1, eps, random_start=False, norm=norm)
    return FollowerAttack("fgsm", follower, eps, norm=norm)


def robust_accuracy(
    model: nn.Module, x: Tensor, y: Tensor, attack: Attack, batch_size: int = 500
) -> float:
    """The fraction of (x, y) that ``attack`` leaves correctly classified (the training-time
    metric: clean accuracy for ``Clean()``, PGD accuracy for ``pgd_attack``)."""
    return run_attack(attack, model, x, y, batch_size).accuracy


class Clean(Attack):
    """No perturbation: x_adv = x (clean accuracy through the same path as every attack)."""

    name, eps = "clean", 0.0

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        return x


class TransferAttack(Attack):
    """Black-box transfer: ``inner`` is run on a surrogate model, its x_adv scored on the target.
    Give ``inner`` ``from_clean=False``: with ``True`` it sends the clean x wherever the surrogate
    withstood it, so a perturbation that fools the target but not the surrogate is lost."""

    white_box = False

    def __init__(self, name: str, inner: Attack, surrogate: nn.Module, source: str) -> None:
        self.name, self.inner, self.surrogate, self.source = name, inner, surrogate, source
        self.eps, self.norm = inner.eps, inner.norm

    def params(self) -> dict[str, Any]:
        return {"surrogate": self.source, "attack_on_surrogate": self.inner.name} | (
            self.inner.params()
        )

    def networks(self) -> list[nn.Module]:
        return [self.surrogate, *self.inner.networks()]

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        x_adv = self.inner.perturb(self.surrogate, x, y)
        misclassified = predict(model, x) != y  # the worst of x and x_adv, as the other rows
        return torch.where(misclassified.view(-1, *[1] * (x.dim() - 1)), x, x_adv)
