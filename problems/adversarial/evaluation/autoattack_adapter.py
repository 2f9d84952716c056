"""AutoAttack (Croce & Hein 2020) behind the ``Attack`` interface, from the PyPI package
``pyautoattack`` (pinned at 0.2.0).

That package's import name is ``pyautoattack`` and its API is keyword-only:
``AutoAttack(model, *, attacks=None, device, eps, norm, seed, version)`` and
``run_standard_evaluation(x, y, /, *, batch_size, state_path)``; the upstream repository's is
``autoattack.AutoAttack(model, norm=..., eps=..., version=...)`` with positional arguments.

The standard version is the cascade APGD-CE → APGD-T (9 targets) → FAB-T (9 targets) → Square
(5000 queries): each component attacks only the examples that every earlier one left correct.
This adapter builds the package's standard configuration, in the L∞ or the L2 ball (the
package's ``norm="Linf"`` or ``"L2"``; its standard version is the same cascade for both), and
runs that cascade one component at a time, so it knows which component broke each example; the result equals the package's own
``run_standard_evaluation``. Square is gradient-free: an example that only Square breaks is one
where every gradient attack failed, the mark of shattered gradients.
"""

from __future__ import annotations

import logging
from importlib.metadata import version
from logging.handlers import BufferingHandler
from typing import Any

import torch
from torch import Tensor, nn

from bilevel.errors import UserError
from bilevel.norms import Norm
from problems.adversarial.evaluation.attacks import Attack, predict

PACKAGE = "pyautoattack"
STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
GRADIENT_FREE = ("square",)


class AutoAttackAdapter(Attack):
    """The standard AutoAttack cascade (or a sub-list of its components, for quick tests).

    After ``perturb``, ``broken_by`` holds, per example of every call so far (``run_attack``'s
    batches, in order), the component that broke it ("" if none did), and ``warnings`` the
    package's warnings.
    """

    name = "autoattack"

    def __init__(
        self,
        eps: float,
        components: tuple[str, ...] = STANDARD,
        seed: int = 0,
        batch_size: int = 500,
        square_queries: int | None = None,
        norm: Norm | str = Norm.LINF,
    ) -> None:
        unknown = [c for c in components if c not in STANDARD]
        if unknown or not components:
            raise UserError(
                f"Unknown AutoAttack component(s) {unknown}; choose from {', '.join(STANDARD)}."
            )
        self.eps, self.components, self.seed, self.norm = eps, tuple(components), seed, Norm(norm)
        self.batch_size, self.square_queries = batch_size, square_queries
        self.white_box = any(c not in GRADIENT_FREE for c in self.components)
        if self.components != STANDARD:
            self.name = "autoattack(" + ",".join(self.components) + ")"
        self.broken_by: list[str] = []
        self.warnings: list[str] = []

    def _build(self, model: nn.Module, device: torch.device):
        from pyautoattack import AutoAttack

        attack = AutoAttack(
            model, eps=self.eps, norm=self.package_norm, version="standard", seed=self.seed,
            device=device,
        )  # fmt: skip
        if self.square_queries is not None:
            attack.square.n_queries = self.square_queries
        return attack

    @property
    def package_norm(self) -> str:
        return "Linf" if self.norm is Norm.LINF else "L2"

    def params(self) -> dict[str, Any]:
        attack = self._build(nn.Identity(), torch.device("cpu"))
        return {
            "package": f"{PACKAGE}=={version(PACKAGE)}",
            "version": "standard" if self.components == STANDARD else "standard (sub-list)",
            "components": list(self.components),
            "norm": self.package_norm,
            "eps": self.eps,
            "seed": self.seed,
            "apgd_iterations": attack.apgd.n_iter,
            "apgd_restarts": attack.apgd.n_restarts,
            "apgd_t_targets": attack.apgd_targeted.n_target_classes,
            "fab_t_targets": attack.fab.n_target_classes,
            "fab_iterations": attack.fab.n_iter,
            "square_queries": attack.square.n_queries,
            "square_p_init": attack.square.p_init,
        }

    def broken_counts(self) -> dict[str, int]:
        """How many examples each component broke, over every call so far, in cascade order."""
        return {c: self.broken_by.count(c) for c in self.components}

    def perturb(self, model: nn.Module, x: Tensor, y: Tensor) -> Tensor:
        attack = self._build(model, x.device)
        # the package's own warnings (randomised defence, zero gradients, Square's success)
        collect = BufferingHandler(capacity=2**31)
        collect.setLevel(logging.WARNING)
        attack.logger.addHandler(collect)
        try:
            x_adv = x.clone()
            broken_by = ["" for _ in range(len(y))]
            left = predict(model, x) == y  # a misclassified clean example needs no attack
            for component in self.components:
                idx = left.nonzero().flatten()
                if len(idx) == 0:
                    break
                attack.attacks_to_run = [component]
                adv, _ = attack.run_standard_evaluation(x[idx], y[idx], batch_size=self.batch_size)
                hit = predict(model, adv) != y[idx]
                x_adv[idx[hit]] = adv[hit].to(x_adv.dtype)
                left[idx[hit]] = False
                for i in idx[hit].tolist():
                    broken_by[i] = component
        finally:
            attack.logger.removeHandler(collect)
        self.broken_by += broken_by
        messages = [record.getMessage() for record in collect.buffer]
        self.warnings = list(dict.fromkeys(self.warnings + messages))  # once each
        return x_adv
