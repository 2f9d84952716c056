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
  0.75 / 0.94 / 0.99 (Acrobot 0.28 / 0.05 / 0.02), against GAIL's 0.48 /
  0.88 / 0.95 (Acrobot 0.66 / 0 / 0); on Acrobot the seeds of every follower spread from 0 to 0.7;
- D's input statistics: the expert's (``--disc-norm expert``) for both followers; running
  statistics of expert and policy pairs gave GAIL 0.75 / 0.74 / 0.38 on Pendulum, no better.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

from bilevel.errors import UserError, as_flag, require_counts, require_positive
from bilevel.options import (
    check_numbers,
    check_same_command,
    choose,
    fill_unset,
    inherit,
    option,
    typed_options,
)
from bilevel.recorded import IGNORED_ON_RESUME, READ_FROM_ON_RESUME
from problems.imitation.discriminator import DISC_NORMS, REWARDS
from problems.imitation.meta_objective import META_OBJECTIVES

FOLLOWERS = ("adam", "l2l", "oneshot")

_GENERIC = dict(gamma=0.99, use_sde=False, n_steps=512, ppo_lr=3e-4, ppo_batch_size=64)
_ENV_DEFAULTS: dict[str, dict[str, Any]] = {
    "Pendulum-v1": dict(gamma=0.9, use_sde=True, n_steps=1000, ppo_lr=1e-3, ppo_batch_size=100),
    "MountainCarContinuous-v0": _GENERIC | dict(use_sde=True, n_steps=1000, ppo_batch_size=100),
}
# the options only some followers read (``solve.build_follower``; the joint loop's φ steps), and
# those only some meta-objectives read (``MetaObjective``)
READ_BY_FOLLOWERS = {
    "disc_steps": ("adam", "l2l"),  # l2l: the default of --lstm-steps
    "lstm_steps": ("l2l",),
    "lstm_hidden": ("l2l",),
    "residual_scale": ("l2l", "oneshot"),
    "oneshot_step": ("oneshot",),
    **dict.fromkeys(
        ("meta_lr", "meta_steps", "meta_objective", "meta_penalty", "target_accuracy"),
        ("l2l", "oneshot"),
    ),
}
READ_BY_OBJECTIVES = {"meta_penalty": ("q-gp", "target"), "target_accuracy": ("target",)}
# (option, follower) -> the option it is only the default of for that follower (``resolve``): once
# that one is set, the follower ignores it
DEFAULT_ONLY = {("disc_steps", "l2l"): "lstm_steps", ("disc_lr", "oneshot"): "oneshot_step"}
ROUND_SEEDS = ("disjoint", "overlapping")
# Where episodes start (``env.reset(seed)``): the expert's demonstrations at DEMO_SEED + i, the
# validation, random-policy and test episodes at VAL_SEED, RANDOM_SEED and TEST_SEED + i, and run
# seed s's training round r at s·ROUND_SEED_BLOCK + r·stride + i (``GAIL.leader_step``), kept
# below the held-out ones for seed 0 by ``check_round_seeds``
DEMO_SEED, VAL_SEED, RANDOM_SEED, TEST_SEED = 10_000, 20_000, 30_000, 40_000
ROUND_SEED_BLOCK = 100_003
# one PPO round, and D's width and batch, at most: far above any default here (Pendulum's rounds
# are 4 × 1,000 steps, D has 32 units a layer and 256 pairs a side), below what cannot be allocated
MAX_ENVS, MAX_ROUND_STEPS, MAX_DISC_HIDDEN, MAX_DISC_BATCH = 256, 1_000_000, 4_096, 1_000_000


def round_seed(seed: int, round_index: int, stride: int) -> int:
    """The seed env 0 of training round ``round_index`` (1, 2, ...) of run seed ``seed`` resets
    from; env i resets from it + i (``GAIL.leader_step``, ``check_round_seeds``)."""
    return seed * ROUND_SEED_BLOCK + round_index * stride


# what a run folder older than an option did, for its --resume (``round_seeds``, above)
LEGACY_VALUES: dict[str, Any] = {"round_seeds": "overlapping"}
COUNTS = (  # options that count something: at least 1
    "steps", "n_envs", "n_steps", "ppo_batch_size", "ppo_epochs", "disc_hidden", "disc_batch_size",
    "disc_steps", "lstm_steps", "lstm_hidden", "meta_steps", "demo_episodes", "eval_episodes",
    "test_episodes", "rounds_per_epoch",
)  # fmt: skip


@dataclass
class GAILConfig:
    """Every option of a GAIL run, declared once with its default and help (``solve gail``'s
    options are generated from them); ``None`` means "the environment's default" until
    ``resolve``."""

    # the options a run folder's config.json may lack (``bilevel.recorded.check_complete``): every
    # other one has been recorded by every run this code can resume (older ones recorded options
    # since renamed, which ``check_same_command`` refuses)
    RECORD_MAY_LACK: ClassVar[frozenset[str]] = frozenset(
        (*LEGACY_VALUES, *IGNORED_ON_RESUME, *READ_FROM_ON_RESUME)
    )

    env: str = option("Pendulum-v1", "A gymnasium id (Pendulum-v1, CartPole-v1 ...).")
    follower: str = option("adam", "adam (GAIL), l2l (residual LSTM on Adam, L2L-GAIL) or oneshot.")
    steps: int = option(100_000, "Environment steps of the policy's rollouts.")
    seed: int = option(0)
    n_envs: int = option(4, "Parallel environments of PPO.")
    n_steps: int | None = option(None, "PPO steps per env and round (default: per env).")
    ppo_lr: float | None = option(None, "PPO learning rate (default: per env).")
    ppo_batch_size: int | None = option(None, "PPO minibatch size (default: per env).")
    ppo_epochs: int = option(10, "PPO epochs per round.")
    gamma: float | None = option(None, "Discount γ (default: per env).")
    gae_lambda: float = option(0.95, "λ of generalised advantage estimation.")
    ent_coef: float = option(1e-3, "The entropy bonus β of PPO.")
    use_sde: bool | None = option(None, "PPO's state-dependent exploration (default: per env).")
    reward: str = option(
        "gail",
        "gail: −log(1−D); airl: log D − log(1−D), for tasks whose episodes end at the goal "
        "(Acrobot), where gail's always-positive reward pays for not reaching it.",
    )
    disc_hidden: int = option(32, "Hidden units of D's two layers.")
    disc_batch_size: int = option(256, "Expert and policy pairs each in D's batch of a round.")
    disc_steps: int = option(3, "Adam follower: steps on ψ per round.")
    disc_lr: float = option(1e-3, "Adam follower: learning rate.")
    disc_norm: str = option("expert", "D's input statistics: expert or running.")
    disc_clip: float = option(0.0, "Clip D's standardised inputs to ±c; 0: off.")
    grad_penalty: float = option(0.0, "Gradient penalty λ on D (10 is usual).")
    lstm_steps: int | None = option(None, "L2L follower: steps K per round (--disc-steps).")
    lstm_hidden: int = option(20, "L2L follower: LSTM units per layer.")
    residual_scale: float | None = option(
        None, "s of the learned residual (default: the Adam step size)."
    )
    oneshot_step: float | None = option(
        None, "One-shot follower: its Adam step η (default: --disc-lr)."
    )
    trust_radius: float | None = option(
        None, "ε of ‖ψ − ψ_t‖ ≤ ε per round; 0: none (default: 0.05 one-shot, else 0)."
    )
    meta_lr: float = option(3e-3, "Learning rate of the meta-Adam on φ.")
    meta_steps: int = option(10, "φ steps per round (the joint loop's follower steps).")
    meta_objective: str = option("target", "Learned followers: q, q-gp or target.")
    meta_penalty: float = option(10.0, "λ of the meta-objective's penalty.")
    target_accuracy: float = option(0.6, "a* of --meta-objective target.")
    demo_episodes: int = option(20, "Expert episodes of the demonstrations.")
    eval_episodes: int = option(5, "Validation episodes per epoch (model selection).")
    test_episodes: int = option(20, "Test episodes for the final table.")
    rounds_per_epoch: int = option(1, "PPO rounds per epoch (one validation each).")
    cache_dir: str = option("data/demos", "Where demonstrations are cached.")
    # each round's environments take seeds of their own: round r's env i seed·100003 + r·n_envs +
    # i ("disjoint"); runs before 2026-12-05 took seed·100003 + r + i, so env i of round r+1
    # replayed env i+1's starts of round r ("overlapping", LEGACY_VALUES, for their --resume)
    round_seeds: str | None = option(None, hidden=True)

    def resolve(self) -> GAILConfig:
        from problems.imitation.ppo_expert import check_env_id

        check_numbers(self)
        discrete = check_env_id(self.env)
        choose("--follower", self.follower, FOLLOWERS)
        choose("--reward", self.reward, REWARDS)
        choose("--disc-norm", self.disc_norm, DISC_NORMS)
        choose("--meta-objective", self.meta_objective, META_OBJECTIVES)
        check_unused(self, typed_options(self))
        fill_unset(self, _ENV_DEFAULTS.get(self.env, _GENERIC))
        fill_unset(self, dict(round_seeds="disjoint"))
        choose("--round-seeds", self.round_seeds, ROUND_SEEDS)
        # K = --disc-steps, so that L2L-GAIL at φ₀ is GAIL; the one-shot step η = Adam's
        fill_unset(self, dict(lstm_steps=self.disc_steps, oneshot_step=self.disc_lr))
        oneshot = self.follower == "oneshot"  # s = its step size; only it has a trust region
        step, radius = (self.oneshot_step, 0.05) if oneshot else (self.disc_lr, 0.0)
        fill_unset(self, dict(residual_scale=step, trust_radius=radius))
        require_counts(self, COUNTS)
        check_round_seeds(self)
        if self.n_envs > MAX_ENVS or self.n_steps * self.n_envs > MAX_ROUND_STEPS:
            raise UserError(  # more envs were built for ever; a larger buffer is not allocated
                f"--n-envs must be at most {MAX_ENVS} and a PPO round, --n-steps × --n-envs, at "
                f"most {MAX_ROUND_STEPS:,} steps; got {self.n_steps:,} × {self.n_envs:,}."
            )
        if self.disc_hidden > MAX_DISC_HIDDEN or self.disc_batch_size > MAX_DISC_BATCH:
            raise UserError(  # a traceback from the allocator, beyond
                f"--disc-hidden must be at most {MAX_DISC_HIDDEN:,} and --disc-batch-size at most "
                f"{MAX_DISC_BATCH:,}; got {self.disc_hidden:,} and {self.disc_batch_size:,}."
            )
        if self.n_steps * self.n_envs < 2 or self.ppo_batch_size < 2:
            raise UserError(
                "PPO needs --n-steps × --n-envs and --ppo-batch-size of at least 2 each; got "
                f"{self.n_steps} × {self.n_envs} and {self.ppo_batch_size}."
            )
        if self.use_sde and discrete:
            raise UserError(f"--use-sde needs continuous actions; {self.env}'s are discrete.")
        # the steps before the scale that defaults to one of them: the option typed is named
        require_positive(self, ("ppo_lr", "disc_lr", "meta_lr", "oneshot_step", "residual_scale"))
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
    def round_seed_stride(self) -> int:
        """How far apart two rounds' first seeds are: n_envs, so that every round's environments
        start from seeds of their own; 1 for the runs of before 2026-12-05 ("overlapping")."""
        return self.n_envs if self.round_seeds == "disjoint" else 1

    @property
    def epochs(self) -> int:
        """Epochs of ``rounds_per_epoch`` PPO rounds (``n_steps`` in each of ``n_envs``) that
        cover ``steps`` (rounded up)."""
        return max(1, math.ceil(self.steps / (self.n_steps * self.n_envs * self.rounds_per_epoch)))

    def inherit_unset(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """For ``--resume``: every option the command line did not give takes the value the run
        folder recorded (or, for an option newer than the folder, ``LEGACY_VALUES``'), as
        ``AdversarialConfig.inherit_unset``; returns the values taken, by option name."""
        check_same_command(self, recorded)
        return inherit(self, LEGACY_VALUES | recorded, keep=IGNORED_ON_RESUME)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_unused(
    cfg: GAILConfig,
    typed: frozenset[str] | set[str],
    names: frozenset[str] | set[str] | None = None,
) -> None:
    """One sentence for an option in ``names`` (default: all of ``typed``, the options typed on
    the command line, ``cfg.given``; or a ``gail-stability`` variant's overrides) that the chosen
    follower or meta-objective does not read, which would be ignored and still recorded in
    config.json as if used. Options left at their defaults, or taken from the run folder on
    ``--resume``, pass; so does one that only gives another option's default (``DEFAULT_ONLY``:
    --disc-steps of the l2l follower, --disc-lr of the one-shot one) unless that other option is
    in ``typed`` too (on ``--resume`` the other option holds the folder's value without being
    typed, and the typed one must equal its recorded value: ``RunDir.prepare`` checks that)."""
    known = cfg.follower in FOLLOWERS and cfg.meta_objective in META_OBJECTIVES
    checked = typed if names is None else names
    for name in sorted(checked) if known else ():  # else: choose's sentence, in resolve
        flag = as_flag(name)
        followers = READ_BY_FOLLOWERS.get(name, FOLLOWERS)
        if cfg.follower not in followers:
            kind = " and ".join(followers) + (" followers" if len(followers) > 1 else " follower")
            raise UserError(
                f"{flag} is an option of the {kind}; --follower {cfg.follower} would ignore it."
            )
        other = DEFAULT_ONLY.get((name, cfg.follower))
        if other is not None and other in typed:
            other_flag = as_flag(other)
            raise UserError(
                f"{flag} is read by --follower {cfg.follower} only as the default of "
                f"{other_flag}; with {other_flag} given it would ignore it."
            )
        objectives = READ_BY_OBJECTIVES.get(name, META_OBJECTIVES)
        if cfg.meta_objective not in objectives:
            raise UserError(
                f"{flag} is read by --meta-objective {' or '.join(objectives)}; "
                f"--meta-objective {cfg.meta_objective} would ignore it."
            )


def check_round_seeds(cfg: GAILConfig) -> None:
    """One sentence if a training round would start an episode where a held-out one starts: the
    rounds of run seed 0 take seeds from ``round_seed_stride`` up, so a run of more than about
    10⁴ × --n-steps environment steps (10⁴ rounds with the "overlapping" seeds of older runs)
    reached the demonstrations' starts, then the validation's and the test's, and trained on the
    episodes it was selected and scored on."""
    rounds = cfg.epochs * cfg.rounds_per_epoch
    first_start = round_seed(cfg.seed, 1, cfg.round_seed_stride)
    last_start = round_seed(cfg.seed, rounds, cfg.round_seed_stride) + cfg.n_envs - 1
    if first_start <= TEST_SEED + cfg.test_episodes - 1 and last_start >= DEMO_SEED:
        raise UserError(
            f"--steps {cfg.steps} is {rounds} PPO rounds of {cfg.n_envs} environments, whose "
            f"episodes would start from seeds up to {last_start}, where the demonstrations' "
            f"(from {DEMO_SEED}), validation and test episodes start: take fewer --steps or a "
            "larger --n-steps."
        )
