"""Options of ``solve adversarial-ait`` (Eq. 5-6, Algorithms 2 and 4): the options it shares
with DRO (``problems.adversarial.config.AdversarialConfig``), and AIT's own: the label mixing, the
partners and the direction."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from bilevel.errors import UserError
from bilevel.loop import check_update
from bilevel.options import choose, fill_unset, option, typed_options
from problems.adversarial.ait import Direction, Pairing
from problems.adversarial.config import LEARNED, AdversarialConfig

AIT_FOLLOWERS = ("ait", *LEARNED)


@dataclass
class AITConfig(AdversarialConfig):
    """Every option of an AIT run (Eq. 5-6, Algorithms 2 and 4): the shared ones, the label mixing,
    the partners and the direction; the AIT Net follower and Algorithm 4's order by default."""

    FOLLOWER_CHOICES: ClassVar[tuple[str, ...]] = AIT_FOLLOWERS

    follower: str = option(
        "ait",
        "ait (one signed step of size ε, the AIT Net), or a learned attacker: grad (L2L-AIT, "
        "Algorithm 4), 2-step, naive, grad-only, 2-step-grad-only.",
    )
    # PGM-k trains DRO only: no AIT follower reads these, so `solve adversarial-ait --help` leaves
    # them out, and a typed one is refused (``checks.check_unused``)
    pgm_steps: int = option(10, "k of PGM-k training (DRO only).", hidden=True)
    pgm_step_size: float | None = option(None, "η of PGM-k (DRO only).", hidden=True)
    epochs: int | None = option(None, "Training epochs (default: 200 CIFAR, 10 mnist5k).")
    update: str | None = option(
        "follower-first", "follower-first (Algorithm 4: φ, then θ) or alternating."
    )
    milestones: list[int] | None = option(
        None,
        "Epochs where lr ×0.1, e.g. 60,90 (default: 60,90 for AIT's 200 CIFAR epochs, 30,60,90 "
        "for 100 epochs, else at 1/2 and 3/4 of --epochs).",
        comma=True,
        example="60,90",
    )
    eps_y: float = option(0.5, "Label mixing ε_y of ỹ (Algorithm 2).")
    pairing: str = option("reversed", "Partners: reversed batch or permutation.")
    ait_direction: str = option(
        "toward", "Features toward the partner's (AIT) or away (Eq. 6 as printed)."
    )

    def resolve(self) -> AITConfig:
        """The shared checks and defaults, the paper's CIFAR AIT schedule (200 epochs, lr ×0.1 at
        60 and 90; Section 4.2), and AIT's own options."""
        if self.dataset.lower() in ("cifar10", "cifar100"):
            self.epochs = 200 if self.epochs is None else self.epochs
            if self.milestones is None and self.epochs == 200:
                self.milestones = [60, 90]
        check_uniform_start(self)
        # the paper's L2L-AIT unless asked: bench ait --levers carries the DRO study's choices over
        self.attacker_sign_step = self.attacker_sign_step or 0.0
        self.carry_decision = bool(self.carry_decision)
        self.plain_steps = self.plain_steps or 0
        self.truncated_unroll = bool(self.truncated_unroll)
        fill_unset(self, dict(batch_size=128))  # where bench ait measured AIT and L2L-AIT
        super().resolve()
        choose("--pairing", self.pairing, tuple(m.value for m in Pairing))
        choose("--ait-direction", self.ait_direction, tuple(m.value for m in Direction))
        if not 0.0 <= self.eps_y <= 1.0:
            raise UserError(f"--eps-y must be in [0, 1]; got {self.eps_y}.")
        check_update(self.update, self.learned, zero_sum=False)
        return self


def check_uniform_start(cfg: AITConfig) -> None:
    """AIT's δ0 is uniform in the ε-ball whatever is asked (the AIT Net's start, and the authors'
    L2L-AIT's; ``AIT.init_follower``): ``attacker_random_start`` is recorded as True, and a typed
    --no-attacker-random-start, which could not be honoured, is one sentence. A folder older than
    this check recorded False for the same start, and resumes with it."""
    typed = typed_options(cfg)
    if "attacker_random_start" in typed and cfg.attacker_random_start is False:
        raise UserError(
            "--no-attacker-random-start: AIT always starts δ uniformly in the ε-ball (the AIT "
            "Net's start, and the authors' L2L-AIT's), so there is no other start to choose."
        )
    if cfg.attacker_random_start is None:
        cfg.attacker_random_start = True
