"""Options of ``solve gail``: defaults that follow the environment, and checks with one clear
sentence each. Every option is written, resolved, into ``config.json``.

PPO defaults follow the RL Zoo's tuned SB3 settings where it has them (Pendulum-v1: 4 envs,
γ = 0.9, λ_GAE = 0.95, lr 1e-3, 10 epochs, gSDE); the discriminator is a 32-32 ReLU MLP trained
on 256 expert and 256 policy pairs per round, its inputs standardised with the expert's statistics.
Adam follower (GAIL): 3 steps at lr 1e-3 per round. L2L follower: the residual LSTM on that same
Adam (K = 3 steps, so L2L-GAIL at φ₀ is GAIL), 2 layers of 20 units, residual scale = the Adam
step size, meta-Adam lr 3e-3; one-shot follower: one Adam step of η = 1e-3 plus the learned
residual, in the trust region ‖ψ − ψ_t‖ ≤ 0.05 (Adam's 3 steps move ψ by about 0.07 a round).

Chosen by measurement (``gail-stability``, 3 seeds × 100k steps, Pendulum-v1 and Acrobot-v1;
final normalised return of each seed, README "GAIL"):
- meta-objective ``target`` with a* = 0.6 and λ = 10, 10 φ steps per round (each on its own fresh
  batch). With ``q`` the learned residual grew D's steps to 1.5-2x Adam's and D saturated
  (Pendulum 0.62 / 0.86 / 0.99, Acrobot 0 / 0 / 0); ``q-gp`` (−0.22 / 0.65 / 0.77) and a trust
  region of 0.05 with ``q`` (0.32 / 0.97 / 0.57) did not help; a* = 0.75 sits above the soft
  accuracy Adam's D keeps (about 0.6, from its mean logits) and made D stronger (0.54 / 0.05 / 0.99); a* = 0.6 gave
  0.73 / 0.90 / 0.71 (Acrobot 0.20 / 0.49 / 0.05) and with 10 φ steps a round instead of 2
  (issue 13, finding 4) 0.75 / 0.94 / 0.99 (Acrobot 0.28 / 0.05 / 0.02), against GAIL's 0.48 /
  0.88 / 0.95 (Acrobot 0.66 / 0 / 0); on Acrobot the seeds of every follower spread from 0 to 0.7;
- D's input statistics: the expert's (``--disc-norm expert``) for both followers; running
  statistics of expert and policy pairs gave GAIL 0.75 / 0.74 / 0.38 on Pendulum, no better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from bilevel.errors import UserError
from problems.imitation.discriminator import NORMS, REWARDS
from problems.imitation.meta_objective import META_OBJECTIVES

FOLLOWERS = ("adam", "l2l", "oneshot")

_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(gamma=0.9, use_sde=True, n_steps=1000, ppo_lr=1e-3, ppo_batch_size=100),
    "MountainCarContinuous-v0": dict(
        gamma=0.99, use_sde=True, n_steps=1000, ppo_lr=3e-4, ppo_batch_size=100
    ),
}
_GENERIC = dict(gamma=0.99, use_sde=False, n_steps=512, ppo_lr=3e-4, ppo_batch_size=64)


@dataclass
class GAILConfig:
    """Every option of a GAIL run; ``None`` means "the environment's default" until ``resolve``."""

    env: str = "Pendulum-v1"
    follower: str = "adam"
    steps: int = 100_000  # environment steps of the leader's PPO rollouts
    seed: int = 0
    n_envs: int = 4
    n_steps: int | None = None  # per env and round
    ppo_lr: float | None = None
    ppo_batch_size: int | None = None
    ppo_epochs: int = 10
    gamma: float | None = None
    gae_lambda: float = 0.95
    ent_coef: float = 1e-3  # the entropy bonus β
    use_sde: bool | None = None
    reward: str = "gail"  # gail: −log(1 − D); airl: log D − log(1 − D)
    disc_hidden: int = 32
    disc_batch_size: int = 256
    disc_steps: int = 3  # Adam follower: N steps per round
    disc_lr: float = 1e-3
    disc_norm: str = "expert"  # D's input statistics: expert | running (discriminator.py)
    disc_clip: float = 0.0  # clip standardised inputs to ±c; 0 = off
    grad_penalty: float = 0.0  # λ (10 is the usual choice)
    lstm_steps: int | None = None  # L2L follower: K unrolled steps per round (--disc-steps)
    lstm_hidden: int = 20
    residual_scale: float | None = None  # s of the learned residual (the Adam step size)
    oneshot_step: float | None = None  # one-shot follower's Adam step η (--disc-lr)
    trust_radius: float | None = None  # ε of ‖ψ − ψ_t‖ ≤ ε; 0 = none (one-shot: 0.05)
    meta_lr: float = 3e-3  # meta-Adam on φ
    meta_steps: int = 10  # φ steps per round (the joint loop's follower_steps)
    meta_objective: str = "target"
    meta_penalty: float = 10.0  # λ of the meta-objective's penalty
    target_accuracy: float = 0.6  # a* of --meta-objective target
    demo_episodes: int = 20
    eval_episodes: int = 5
    test_episodes: int = 20
    rounds_per_epoch: int = 1
    cache_dir: str = "data/demos"

    def resolve(self) -> GAILConfig:
        from problems.imitation.ppo_expert import check_env_id

        check_env_id(self.env)
        if self.follower not in FOLLOWERS:
            raise UserError(
                f"Unknown --follower {self.follower!r}; choose one of: {', '.join(FOLLOWERS)}."
            )
        if self.reward not in REWARDS:
            raise UserError(
                f"Unknown --reward {self.reward!r}; choose one of: {', '.join(REWARDS)}."
            )
        if self.disc_norm not in NORMS:
            raise UserError(
                f"Unknown --disc-norm {self.disc_norm!r}; choose one of: {', '.join(NORMS)}."
            )
        if self.meta_objective not in META_OBJECTIVES:
            raise UserError(
                f"Unknown --meta-objective {self.meta_objective!r}; choose one of: "
                f"{', '.join(META_OBJECTIVES)}."
            )
        d = _ENV_DEFAULTS.get(self.env, _GENERIC)
        for key, value in d.items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        if self.lstm_steps is None:
            self.lstm_steps = self.disc_steps  # so that L2L-GAIL at φ₀ is GAIL
        if self.oneshot_step is None:
            self.oneshot_step = self.disc_lr
        if self.residual_scale is None:
            self.residual_scale = self.oneshot_step if self.follower == "oneshot" else self.disc_lr
        if self.trust_radius is None:
            self.trust_radius = 0.05 if self.follower == "oneshot" else 0.0
        for name in (
            "steps", "n_envs", "n_steps", "ppo_batch_size", "ppo_epochs", "disc_hidden",
            "disc_batch_size", "disc_steps", "lstm_steps", "lstm_hidden", "meta_steps",
            "demo_episodes", "eval_episodes", "test_episodes", "rounds_per_epoch",
        ):  # fmt: skip
            if getattr(self, name) < 1:
                raise UserError(
                    f"--{name.replace('_', '-')} must be at least 1; got {getattr(self, name)}."
                )
        for name in ("ppo_lr", "disc_lr", "meta_lr", "residual_scale", "oneshot_step"):
            if not getattr(self, name) > 0:
                raise UserError(
                    f"--{name.replace('_', '-')} must be positive; got {getattr(self, name)}."
                )
        if min(self.grad_penalty, self.ent_coef, self.meta_penalty, self.trust_radius) < 0:
            raise UserError(
                "--grad-penalty, --ent-coef, --meta-penalty and --trust-radius must be at least 0."
            )
        if self.disc_clip < 0:
            raise UserError(
                f"--disc-clip must be at least 0 (0: no clipping); got {self.disc_clip}."
            )
        if not 0.5 <= self.target_accuracy <= 1:
            raise UserError(f"--target-accuracy must be in [0.5, 1]; got {self.target_accuracy}.")
        if not 0 < self.gamma <= 1 or not 0 <= self.gae_lambda <= 1:
            raise UserError("--gamma must be in (0, 1] and --gae-lambda in [0, 1].")
        return self

    @property
    def steps_per_round(self) -> int:
        return self.n_steps * self.n_envs

    @property
    def epochs(self) -> int:
        """Epochs of ``rounds_per_epoch`` PPO rounds that cover ``steps`` (rounded up)."""
        return max(1, math.ceil(self.steps / (self.steps_per_round * self.rounds_per_epoch)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
