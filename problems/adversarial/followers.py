"""The follower each ``--follower`` name of the adversarial commands stands for, built from a
run's configuration (``DROConfig`` or ``AITConfig``), in the run's threat model (``--norm``)."""

from __future__ import annotations

from bilevel.errors import UserError
from bilevel.followers import Follower, NoFollower, SignGradientAscent
from bilevel.learned_follower import LearnedFollower
from bilevel.run import RunDir, load_checkpoint
from learned_optimizers import build_attacker, start_at_zero
from problems.adversarial.config import LEARNED, AdversarialConfig
from problems.adversarial.data import DatasetInfo


def build_follower(cfg: AdversarialConfig, info: DatasetInfo, warm_start: bool = True) -> Follower:
    """The follower named by ``--follower`` (docs/architecture.md, "Followers").

    none: z = 0 (plain training); fgsm: FGSM with a random start and step 1.25 ε (Wong et al. 2020);
    pgm: PGM-k with a uniform random start (Madry et al. 2018; Eq. 4 of the paper starts at 0);
    ait: one signed step of size ε from AIT's uniform start (Zhang & Xu 2020); naive / grad /
    grad-only: the one-shot attacker of Eq. (7); 2-step*: the length-two RNN; the ``--unroll``,
    ``--grad-scaling``, ``--attacker-*`` levers shape a learned one. Under ``--norm l2`` the
    steps are steepest-ascent steps of the L2 ball and g_φ's output lies in it. ``warm_start``:
    load ``--attacker-init``'s g_φ (off when the caller loads a g_φ of its own).
    """
    if cfg.follower == "none":
        return NoFollower()
    if cfg.follower in ("fgsm", "pgm", "ait"):
        steps, step = {"fgsm": (1, 1.25 * cfg.eps), "ait": (1, cfg.eps)}.get(
            cfg.follower, (cfg.pgm_steps, cfg.pgm_step_size)
        )
        return SignGradientAscent(steps, step, random_start=True, norm=cfg.norm)
    default_steps, mode = LEARNED[cfg.follower]
    in_channels = LearnedFollower.in_channels(mode, cfg.attacker_memory, info.in_channels)
    net = build_attacker(
        cfg.attacker, in_channels, info.in_channels, cfg.eps, cfg.attacker_width, cfg.norm
    )
    if cfg.attacker_sign_step > 0:
        start_at_zero(net)  # the follower starts as PGM-K with step s·ε
    follower = LearnedFollower(
        net,
        steps=cfg.unroll or default_steps,
        input_mode=mode,
        lr=cfg.attacker_lr,
        betas=tuple(cfg.attacker_betas),
        weight_decay=cfg.attacker_weight_decay,
        grad_scaling=cfg.grad_scaling,
        random_start=cfg.attacker_random_start,
        memory=cfg.attacker_memory,
        sign_step=cfg.attacker_sign_step,
        norm=cfg.norm,
        plain_steps=cfg.plain_steps,
        truncated=cfg.truncated_unroll,
    )
    if warm_start and cfg.attacker_init is not None:
        state = load_checkpoint(RunDir(cfg.attacker_init).last_checkpoint)
        if not state.get("trainer", {}).get("follower"):  # a PGM or FGSM run: nothing learned
            raise UserError(
                f"--attacker-init: {cfg.attacker_init} holds no learned attacker g_φ (a "
                "hand-designed follower trained it); warm-start from a learned follower's run."
            )
        try:
            follower.load_state_dict(state["trainer"]["follower"])
        except (KeyError, RuntimeError, TypeError) as err:
            raise UserError(
                f"--attacker-init: the g_φ in {cfg.attacker_init} does not fit this attacker "
                f"({type(err).__name__}); warm-start from a run with the same --attacker, "
                "--attacker-width, follower input and memory."
            ) from None
    return follower
