"""The checks of ``AdversarialConfig.resolve`` for the learned follower's levers and for the
carried decision (ATTA), each a sentence saying what to change; some fill a default that gives
way to another asked option. Called from ``resolve`` where the options they read are filled."""

from __future__ import annotations

from typing import TYPE_CHECKING

from bilevel.errors import UserError, as_flag
from bilevel.options import check_named_once, field_default, fill_unset, typed_options
from bilevel.run import RunDir
from learned_optimizers.attacker import MAX_WIDTH
from problems.adversarial.defaults import HAND_DESIGNED_LEVERS, MAX_PGD_STEPS

if TYPE_CHECKING:
    from problems.adversarial.config import AdversarialConfig
    from problems.adversarial.dro_config import DROConfig

# the options of a learned follower's g_φ, its optimiser, its unroll and the order of θ's and φ's
# steps (--update), which a hand-designed follower (none, fgsm, pgm, ait) does not have
# (--plain-steps and --truncated-unroll: check_unroll)
LEARNED_ONLY = (
    "attacker", "attacker_width", "attacker_lr", "attacker_betas", "attacker_weight_decay",
    "follower_steps", "unroll", "grad_scaling", "attacker_random_start", "attacker_memory",
    "attacker_sign_step", "attacker_init", "update",
)  # fmt: skip
# typed at these values, such an option asks for what a hand-designed follower does anyway
# (--update: ``asks_nothing``)
OFF = {"attacker_random_start": False, "attacker_sign_step": 0.0, "attacker_memory": "none"}
PGM_ONLY = ("pgm_steps", "pgm_step_size")  # PGM-k's k and η
# what shapes the follower's attack, which --follower none (plain training) does not make; typed
# at these values they ask for nothing
ATTACK_ONLY = {"ascent_loss": "ce", "carry_decision": False, "eps_warmup": 0}


def check_unused(cfg: AdversarialConfig) -> None:
    """One sentence for an option typed on the command line (``cfg.given``, from
    ``with_options``) that the chosen follower or leader optimizer does not read, which would be
    ignored and still recorded in config.json as if used: a learned follower's option with a
    hand-designed follower (unless it ``asks_nothing``), PGM-k's with another follower,
    the attack's (``ATTACK_ONLY``) with --follower none, --momentum with Adam, --milestones with
    a schedule other than multistep. Options not typed (the defaults, what ``--resume`` takes from the run
    folder, what a bench gives all its rows, a configuration built in code: no ``given``) pass."""
    typed = typed_options(cfg)
    for name in sorted(typed):
        flag = as_flag(name)
        if name in LEARNED_ONLY and not cfg.learned and not asks_nothing(cfg, name):
            raise UserError(
                f"{flag} is an option of the learned followers (like --follower 2-step); "
                f"--follower {cfg.follower} would ignore it."
            )
        if name in PGM_ONLY and cfg.follower != "pgm":
            raise UserError(
                f"{flag} is PGM-k's (--follower pgm); --follower {cfg.follower} would ignore it."
            )
        if (
            name in ATTACK_ONLY
            and cfg.follower == "none"
            and getattr(cfg, name) != ATTACK_ONLY[name]
        ):
            raise UserError(
                f"{flag} shapes the follower's attack; --follower none trains on clean inputs "
                "and would ignore it."
            )
    if "momentum" in typed and cfg.leader_optimizer != "sgd":
        raise UserError(
            f"--momentum is the leader's SGD's; --leader-optimizer {cfg.leader_optimizer} would "
            "ignore it."
        )
    if "milestones" in typed and cfg.schedule != "multistep":
        raise UserError(
            f"--milestones are the multistep schedule's; --schedule {cfg.schedule} would ignore "
            "them."
        )


def asks_nothing(cfg: AdversarialConfig, name: str) -> bool:
    """Whether the learned follower's option ``name`` is at the value that asks a hand-designed
    follower for what it does anyway: its ``OFF`` value; for --update, the one such a follower
    records where it is not typed (alternating; AIT's follower-first): with no φ to step, every
    order is the same step of θ on the follower's decision, and another value would be recorded
    as if it had been used."""
    if name == "update":
        default = field_default(type(cfg), "update")
        return cfg.update == (HAND_DESIGNED_LEVERS["update"] if default is None else default)
    return name in OFF and getattr(cfg, name) == OFF[name]


def check_milestones(cfg: AdversarialConfig) -> None:
    """Milestone m drops the leader's rate ×0.1 after epoch m (the scheduler steps at each epoch's
    end), so it must lie between 1 and --epochs − 1: one past that is silently never reached, and
    one at --epochs drops the rate after training. The latter passes where not typed (the 1-epoch
    default [1], a folder that recorded one): nothing trains at the dropped rate either way. Typed,
    an empty list (a multistep schedule recorded that never steps: --schedule constant is that)
    and an epoch named twice (the scheduler then drops ×0.01 there, not the ×0.1 the help
    promises) are refused too; a folder that recorded either resumes as it began."""
    typed = "milestones" in typed_options(cfg)
    if typed and not cfg.milestones:
        raise UserError(
            "--milestones names no epoch; for a rate that never drops, use --schedule constant."
        )
    if typed:
        check_named_once(cfg.milestones, "--milestones", "epoch")
    last = cfg.epochs - 1 if typed else cfg.epochs
    if not all(1 <= m <= last for m in cfg.milestones):
        raise UserError(
            f"--milestones must lie between 1 and {last} (each drops the rate after that epoch, "
            f"--epochs {cfg.epochs}); got {cfg.milestones}."
        )


def check_momentum(cfg: AdversarialConfig) -> None:
    """SGD's momentum below 1: at 1 or more each step adds the whole of the last (its "at least
    0" is ``require_at_least_zero``'s, with the other options of that kind)."""
    if cfg.momentum >= 1:
        raise UserError(f"--momentum must be in [0, 1); got {cfg.momentum}.")


def check_attacker_levers(cfg: AdversarialConfig) -> None:
    """φ's Adam betas and the sign step s·ε (the warm start's folder: ``check_warm_start``)."""
    betas = cfg.attacker_betas = [float(b) for b in cfg.attacker_betas]
    if len(betas) != 2 or not all(0 <= b < 1 for b in betas):
        raise UserError(
            f"--attacker-betas takes two numbers in [0, 1), like 0.9,0.999; got {betas}."
        )
    if cfg.attacker_sign_step < 0:
        raise UserError(f"--attacker-sign-step must be >= 0; got {cfg.attacker_sign_step}.")


def check_warm_start(cfg: AdversarialConfig) -> None:
    """The folder ``--attacker-init`` names holds a last.pt to warm-start g_φ from. Checked where
    a run will start afresh, before anything is written or deleted, not in ``resolve``: a resumed
    run takes φ from its own last.pt, and a finished run's readers (``evaluate``, a bench's
    reuse) never warm-start, so neither needs that folder to be there still."""
    if (init := cfg.attacker_init) is not None and not RunDir(init).last_checkpoint.is_file():
        raise UserError(
            f"--attacker-init: {init} holds no last.pt to warm-start g_φ from; "
            "give the folder of a finished L2L run."
        )


def check_limits(cfg: AdversarialConfig) -> None:
    """The PGD step counts (PGM-k's k, and the attacks that select and score the epochs) up to
    ``MAX_PGD_STEPS``, as ``evaluate``'s pgdK, and g_φ's width up to the attacker's
    ``MAX_WIDTH``: beyond, a run would go on for days, or end in a traceback from an allocation
    of terabytes."""
    for name in ("pgm_steps", "select_pgd_steps", "eval_pgd_steps"):
        if (steps := getattr(cfg, name)) > MAX_PGD_STEPS:
            raise UserError(f"{as_flag(name)} takes 1 to {MAX_PGD_STEPS:,} steps; got {steps:,}.")
    if cfg.attacker_width is not None and cfg.attacker_width > MAX_WIDTH:
        raise UserError(
            f"--attacker-width must be at most {MAX_WIDTH:g} ({MAX_WIDTH:g} times the paper's "
            f"Table 1 attacker's channels); got {cfg.attacker_width:g}."
        )


def check_unroll(cfg: AdversarialConfig, truncated_asked: bool) -> None:
    """The unrolled steps (K of Eq. 7), once the counts are checked: how many are plain sign
    steps, and whether φ's gradient is truncated to the last g_φ call (on by default, off where
    one g_φ call is all there is unless ``truncated_asked``)."""
    if cfg.plain_steps != 0 and not cfg.learned:
        raise UserError("--plain-steps needs a learned follower, like --follower 2-step.")
    if cfg.learned and not 0 <= cfg.plain_steps < cfg.unroll:
        raise UserError(
            f"--plain-steps must be at least 0 and below --unroll ({cfg.unroll}): one step "
            f"at least calls g_φ; got {cfg.plain_steps}."
        )
    if cfg.plain_steps > 0 and not cfg.attacker_sign_step > 0:
        raise UserError(
            "--plain-steps needs --attacker-sign-step > 0: a plain step is the sign step alone."
        )
    two_calls = cfg.learned and cfg.unroll - cfg.plain_steps >= 2
    if not truncated_asked:  # the default gives way where one g_φ call is all there is
        cfg.truncated_unroll = cfg.truncated_unroll and two_calls
    if cfg.truncated_unroll and not two_calls:
        raise UserError(
            "--truncated-unroll needs a learned follower with two g_φ steps or more "
            "(--unroll minus --plain-steps at least 2)."
        )


def check_carry(cfg: AdversarialConfig, carry_asked: bool) -> None:
    """``--carry-decision`` (each example's δ starts from its last one, ATTA) needs unaugmented
    images: the default gives way to an asked augmentation unless ``carry_asked``; its restart
    fraction and jitter are filled here (so that ``--resume`` takes the folder's) and checked."""
    if cfg.carry_decision and cfg.augment != "none" and not carry_asked:
        cfg.carry_decision = False  # the default gives way to an asked augmentation
    if cfg.carry_decision and cfg.augment != "none":
        raise UserError(
            "--carry-decision needs --augment none: a carried δ fits only its example's "
            "uncropped, unflipped image."
        )
    # unset until here, so that --resume takes the folder's values
    fill_unset(cfg, dict(carry_restart=0.0, carry_jitter=0.0))
    if not 0 <= cfg.carry_restart <= 1:
        raise UserError(f"--carry-restart must be in [0, 1]; got {cfg.carry_restart}.")
    if cfg.carry_jitter < 0:
        raise UserError(f"--carry-jitter must be at least 0; got {cfg.carry_jitter}.")
    for name in ("carry_restart", "carry_jitter"):
        if vars(cfg)[name] > 0 and not cfg.carry_decision:
            raise UserError(
                f"{as_flag(name)} needs --carry-decision: it changes where carried δs start."
            )


def check_free_step(cfg: DROConfig) -> None:
    """``--carry-free-step`` (DRO's alone): at least 0, filled here (so that ``--resume`` takes
    the folder's), and above 0 only with a carried δ and the fused update, whose backward leaves
    the gradient it steps along."""
    fill_unset(cfg, dict(carry_free_step=0.0))
    if cfg.carry_free_step < 0:
        raise UserError(f"--carry-free-step must be at least 0; got {cfg.carry_free_step}.")
    if cfg.carry_free_step > 0 and not cfg.carry_decision:
        raise UserError("--carry-free-step needs --carry-decision: it steps the carried δ.")
    if cfg.carry_free_step > 0 and cfg.update != "fused":
        raise UserError(
            "--carry-free-step needs --update fused: its step reuses the gradient of the fused "
            "backward, which the other updates do not leave on δ."
        )


def check_for_learned(given: bool, learned: bool, what: str) -> None:
    """One sentence where a bench is ``given`` an option that reaches its learned followers only
    (``what`` says which and what it does, e.g. "--levers shape") and its --methods name none
    (``learned`` False): nothing would read the option, whatever its value."""
    if given and not learned:
        raise UserError(
            f"{what} the learned followers only, and --methods names none of them (like grad or "
            "2-step)."
        )
