"""The data sets' defaults of the adversarial problems' options, the values a run folder older
than an option trained with, and the check of ε; ``problems.adversarial.config`` fills and checks
the options from these.

The mnist5k learned followers' levers are those the study chose (``benchmarks/l2l``, README
"Results"); CIFAR keeps the paper's follower until they are measured there.

Defaults (every one is written, resolved, into ``config.json``):
- ``mnist5k`` (offline, CPU): the small CNN, ε = 0.3 in L∞ (Madry et al.'s MNIST setting) or 1.5
  in L2 (Schott et al. 2019, Table 1's L2 threshold), SGD lr 0.05, batch 64 (the study found it
  more robust than 128 for PGM-10 and L2L alike; AIT keeps 128), and the slim attacker
  (Appendix B) at width 0.0625: a full-resolution Table 1 attacker costs more than the small CNN
  it attacks (docs/architecture.md, "Known pitfalls"), and the study (README, "Results") found
  width 0.0625 as robust as 0.125 on validation at 0.70x its training time.
- ``cifar10`` / ``cifar100``: the paper's setting (Section 4, Appendix C): WRN-34-10, 100 epochs,
  SGD lr 0.1, momentum 0.9, weight decay 2e-4, lr ×0.1 at epochs 30/60/90, batch 128, crop+flip;
  attacker Adam lr 1e-3, betas (0.9, 0.999), weight decay 2e-4; ε = 0.031, PGM step 0.007 (L∞;
  at another ε scaled with it, ``step_default``), or ε = 0.5 in L2 (RobustBench's CIFAR-10 L2
  radius) with PGM step 2.5 ε / k.
"""

from __future__ import annotations

import math
from typing import Any

from bilevel.errors import UserError
from bilevel.norms import Norm

# What a run made before an option existed did, for --resume of older run folders (an option
# missing here and in the old config.json must be one of NO_LEGACY_VALUE).
MAX_PGD_STEPS = 10_000  # a PGD of more steps would run for days, not add strength
LEGACY_VALUES: dict[str, Any] = {
    "leader_optimizer": "sgd",
    "schedule": "multistep",
    "attacker_betas": [0.9, 0.999],
    "grad_scaling": "sample",
    "attacker_random_start": False,
    "attacker_memory": "none",
    "attacker_sign_step": 0.0,
    "attacker_init": None,
    "norm": "linf",
    "carry_decision": False,
    "carry_restart": 0.0,
    "carry_jitter": 0.0,
    "carry_free_step": 0.0,
    "plain_steps": 0,
    "truncated_unroll": False,
    "leader_ema": 0.0,
    "ascent_loss": "ce",
}
# Options newer than some run folders that need no legacy value: --gap-size only measures, the
# speed levers (--amp, --compile, --channels-last) default to what runs before them did, and so
# does --unroll (1, or 2 for 2-step). Any other option missing from a folder's config.json (and
# from LEGACY_VALUES) was recorded by every run that lacks no other: the file was edited or
# damaged, and ``--resume`` refuses it rather than train on today's default.
NO_LEGACY_VALUE = ("gap_size", "unroll", "amp", "compile", "channels_last")
DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist5k": dict(
        model="small-cnn",
        eps=0.3,
        l2_eps=1.5,
        epochs=10,
        batch_size=64,  # DRO; the study found 64 better than 128 for PGM-10 and L2L alike
        lr=0.05,
        attacker="slim",
        attacker_width=0.0625,  # no fixed pgm_step_size or eval_step_size: 2.5 ε / k
        # the learned followers' defaults chosen by the study (benchmarks/l2l, README "Results")
        update="fused",
        attacker_random_start=True,
        attacker_sign_step=0.625,
        carry_decision=True,  # screen 9 and carry-b64: each example's δ carried across epochs
        plain_steps=0,  # truncated-b64: g_φ in both steps, φ learning through the last one,
        truncated_unroll=True,  # as robust as the full unroll at 0.45x PGM-10's cost
    ),
    "cifar10": dict(
        model="wrn-34-10",
        eps=0.031,
        l2_eps=0.5,
        epochs=100,
        batch_size=128,
        lr=0.1,
        attacker="cnn",
        attacker_width=1.0,
        pgm_step_size=0.007,
        eval_step_size=0.003,
        update="alternating",  # the paper's follower; the mnist5k levers are unmeasured here
        attacker_random_start=False,
        attacker_sign_step=0.0,
        carry_decision=False,  # crop-flip moves the pixels a carried δ was found for
        plain_steps=0,
        truncated_unroll=False,
    ),
}
DATASET_DEFAULTS["cifar100"] = DATASET_DEFAULTS["cifar10"]
# the learned followers' options where the follower is hand-designed (no g_φ to start or step)
HAND_DESIGNED_LEVERS = dict(
    update="alternating",
    attacker_random_start=False,
    attacker_sign_step=0.0,
    carry_decision=False,
    plain_steps=0,
    truncated_unroll=False,
)  # hand-designed followers: the textbook FGSM-RS and PGM-k, each start afresh


def madry_step(eps: float, steps: int) -> float:
    """PGD-k's step where no other is fixed: 2.5 ε / k (Madry et al. 2018), so that k steps can
    cross the ball and back."""
    return 2.5 * eps / steps


def step_default(dataset: str, option: str, eps: float, norm: str, steps: int) -> float:
    """η of PGM-k (``option`` "pgm_step_size") or of the test PGD ("eval_step_size") where none
    is typed: on CIFAR in L∞ the paper's fixed steps (0.007 and 0.003 at ε = 0.031, Appendix C)
    scaled by ε / 0.031, so that at another ε the k steps cover the same share of the ball;
    elsewhere 2.5 ε / k (``madry_step``)."""
    fixed = dataset_default(dataset, option, norm)
    if fixed is None:
        return madry_step(eps, steps)
    paper_eps = dataset_default(dataset, "eps", norm)
    return fixed if eps == paper_eps else fixed * eps / paper_eps


def check_eps(eps: float, norm: Norm | str, pixels: int | None = None) -> float:
    """ε as a float: in (0, 1] in L∞, in (0, √pixels] in L2 for images of ``pixels`` values
    (positive where unknown): a larger ε allows any image in [0, 1], since it reaches every one;
    else one sentence."""
    eps, linf = float(eps), Norm(norm) is Norm.LINF
    diameter = 1.0 if linf else math.sqrt(pixels) if pixels else math.inf
    if not 0 < eps <= diameter:
        if linf:
            bound = "in (0, 1] (pixels are in [0, 1])"
        elif pixels:
            bound = f"in (0, {diameter:g}] (the L2 diameter of these [0, 1] images)"
        else:
            bound = "positive"
        raise UserError(f"--eps must be {bound}; got {eps}.")
    return eps


def dataset_default(dataset: str, option: str, norm: str = "linf") -> Any:
    """The data set's default for ``option`` (e.g. "eps", "model"), as ``resolve`` fills it; ε
    and the paper's fixed PGM and PGD steps depend on the ``norm`` too; None where the data set
    has none (the steps: 2.5 ε / k)."""
    d = DATASET_DEFAULTS[dataset]
    if norm == Norm.L2 and option in ("eps", "pgm_step_size", "eval_step_size"):
        return d["l2_eps"] if option == "eps" else None  # L2: 2.5 ε / k
    return d.get(option)
