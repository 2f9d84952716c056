"""Options of ``solve adversarial-dro`` (paper Eq. 2-3): those it shares with AIT
(``problems.adversarial.config.AdversarialConfig``), and DRO's own: the loss the follower's steps
climb and the free step of a carried δ, with their checks."""

from __future__ import annotations

from dataclasses import dataclass

from bilevel.errors import UserError
from bilevel.loop import check_update
from bilevel.options import choose, fill_unset, option
from problems.adversarial.checks import check_free_step
from problems.adversarial.config import AdversarialConfig
from problems.adversarial.dro import ASCENT_LOSSES


@dataclass
class DROConfig(AdversarialConfig):
    """Every option of a DRO run (paper Eq. 2-3, with the follower of Eq. 4 or Eq. 7)."""

    ascent_loss: str | None = option(
        None,
        "The loss whose ∇_δ the follower's steps climb (PGM's and FGSM's step, g_φ's ∇ input and "
        "sign step): ce (q itself) or margin (CW's max_{j≠y} Z_j − Z_y); φ and θ keep CE "
        "(default: ce).",
    )

    carry_free_step: float | None = option(
        None,
        "Under --carry-decision and the fused update, s > 0: each carried δ takes one more step "
        "of s·ε along the gradient the leader's backward leaves on it, at no extra pass "
        "(Free-AT's reuse), before its next visit (0: stored as the follower left it).",
    )

    def resolve(self) -> DROConfig:
        super().resolve()
        fill_unset(self, dict(ascent_loss="ce"))
        choose("--ascent-loss", self.ascent_loss, ASCENT_LOSSES)
        check_free_step(self)
        check_update(self.update, self.learned, zero_sum=True)
        if self.carry_jitter > 0 and self.learned and not self.attacker_random_start:
            raise UserError(
                "--carry-jitter needs --attacker-random-start: it moves the carried δ by a "
                "fraction of the random start, which is zero without it."
            )
        return self
