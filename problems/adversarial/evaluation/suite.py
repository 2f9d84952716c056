"""Attack names → ``Attack`` objects, with the paper's protocol as defaults, in the ε-ball of
the run's threat model (``SuiteOptions.norm``: L∞, the paper's, or L2).

``default``: AutoAttack's gradient components APGD-CE + APGD-T (``apgd-ce-t``; Croce & Hein
2020), FGSM, PGD-20 and PGD-100 on cross-entropy and on the CW margin, CW-L∞ (100 iterations),
random noise, and, when available, the run's own learned attacker (fed the gradient of the loss
it trained on: the CW margin's under ``--ascent-loss margin``), other runs' learned attackers
(``--attacker-from``) and black-box transfer (``--surrogate``). APGD comes first: a fixed-step
PGD alone flatters a defence trained against a weak attacker (it did for L2L here).
``full``: ``default`` with the standard AutoAttack (APGD-CE, APGD-T, FAB-T and Square) in place of
``apgd-ce-t``. A list names attacks one by one.

Under L2 every attack is its L2 version: PGD-L2 (steps η ∇/‖∇‖₂, Madry et al. 2018), the fast
gradient method in place of FGSM (one step ε ∇/‖∇‖₂, still named ``fgsm``), noise uniform in
the L2 ball, AutoAttack's ``norm="L2"`` components, g_φ and transfer projected onto the L2 ball.
CW-L∞ (Carlini & Wagner 2017's L∞ attack) has no place in an L2 ball and leaves the defaults;
PGD-CW keeps the CW margin loss there.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from bilevel.errors import UserError
from bilevel.learned_follower import LearnedFollower
from bilevel.norms import Norm
from problems.adversarial.defaults import MAX_PGD_STEPS, step_default
from problems.adversarial.evaluation.attacks import (
    Attack,
    FollowerAttack,
    TransferAttack,
    fgsm_attack,
    pgd_attack,
)
from problems.adversarial.evaluation.autoattack_adapter import STANDARD, AutoAttackAdapter
from problems.adversarial.evaluation.noise_and_cw import CarliniWagnerLinf, RandomNoise

APGD = "apgd-ce-t"  # AutoAttack's APGD-CE + APGD-T, the default's strongest attack
DEFAULT = (APGD, "fgsm", "pgd20", "pgd100", "pgd20-cw", "pgd100-cw", "cw-linf", "noise")
OPTIONAL = ("learned", "transfer")  # in "default" when the run / options provide them
FIXED_NAMES = (*DEFAULT, *OPTIONAL, "autoattack", "square")
_PGD = re.compile(r"pgd(\d+)(-cw)?")
LINF_ONLY = ("cw-linf",)  # attacks of the L∞ ball alone


@dataclass
class SuiteOptions:
    """What the attacks need besides their names."""

    eps: float
    cifar: bool  # the paper's PGD step on CIFAR L∞ (0.003 at ε = 0.031); else 2.5 ε / k
    norm: Norm = Norm.LINF  # the ball every attack stays in: ‖x_adv − x‖ ≤ ε
    restarts: int = 1
    step_size: float | None = None
    noise_samples: int = 100
    cw_iterations: int = 100
    seed: int = 0
    batch_size: int = 500
    learned: LearnedFollower | None = None
    learned_source: str = ""
    other_learned: dict[str, LearnedFollower] = field(default_factory=dict)
    # each learned attacker's source → the loss it trained on ("cw" under --ascent-loss margin)
    learned_losses: dict[str, str] = field(default_factory=dict)
    surrogate: nn.Module | None = None
    surrogate_source: str = ""

    def __post_init__(self) -> None:
        self.norm = Norm(self.norm)  # "l2" works too

    def pgd_step(self, steps: int) -> float:
        """η of PGD-k: ``--step-size``, else ``solve``'s default for its test PGD: 0.003 × ε /
        0.031 on CIFAR L∞ (the paper), else 2.5 ε / k (digits, and L2 anywhere)."""
        if self.step_size is not None:
            return self.step_size
        dataset = "cifar10" if self.cifar else "mnist5k"
        return step_default(dataset, "eval_step_size", self.eps, self.norm, steps)


def attack_names(spec: str, options: SuiteOptions) -> list[str]:
    """Expand ``default`` / ``full`` / a comma-separated list into attack names."""
    spec = spec.strip().lower()
    if spec in ("default", "full"):
        names = [n for n in DEFAULT if options.norm is Norm.LINF or n not in LINF_ONLY]
        if spec == "full":  # the standard cascade runs APGD-CE and APGD-T first anyway
            names[0] = "autoattack"
        if options.learned is not None:
            names.append("learned")
        if options.surrogate is not None:
            names.append("transfer")
    else:
        names = [n.strip() for n in spec.split(",") if n.strip()]
        unknown = [n for n in names if n not in FIXED_NAMES and not _PGD.fullmatch(n)]
        if unknown or not names:
            raise UserError(
                f"Unknown attack(s) {', '.join(unknown) or '(none given)'}; choose default, full, "
                f"or a list of: {', '.join(FIXED_NAMES)}, pgdK, pgdK-cw."
            )
        names = [_canonical(n) for n in names]  # pgd020 is pgd20: one column, not two
    names += [f"learned:{k}" for k in options.other_learned]
    return list(dict.fromkeys(names))


def _canonical(name: str) -> str:
    """An attack's name as its column is named: PGD's step count without leading zeros."""
    pgd = _PGD.fullmatch(name)
    return f"pgd{int(pgd.group(1))}{pgd.group(2) or ''}" if pgd else name


def build_attack(name: str, options: SuiteOptions) -> Attack:
    """One attack by name (see ``attack_names``), in the ``options.norm`` ball."""
    o = options
    pgd = _PGD.fullmatch(name)
    if pgd:
        steps = int(pgd.group(1))
        if not 1 <= steps <= MAX_PGD_STEPS:
            raise UserError(f"{name}: PGD takes 1 to {MAX_PGD_STEPS:,} steps; got {steps:,}.")
        loss = "cw" if pgd.group(2) else "ce"
        return pgd_attack(steps, o.eps, o.pgd_step(steps), loss, o.restarts, o.norm)
    if name == "fgsm":
        return fgsm_attack(o.eps, o.norm)
    if name in LINF_ONLY and o.norm is not Norm.LINF:
        raise UserError(
            f"--attacks {name} attacks in the L∞ ball only, and this evaluation is in the "
            f"{o.norm.value} ball; pgdK-cw attacks the CW margin there."
        )
    if name == "cw-linf":
        return CarliniWagnerLinf(o.eps, o.cw_iterations)
    if name == "noise":
        return RandomNoise(o.eps, o.noise_samples, o.norm)
    if name == "learned":
        if o.learned is None:
            raise UserError(
                "--attacks learned: this run has no learned attacker (it was not trained with an "
                "L2L follower); pass --attacker-from RUN_DIR for another run's."
            )
        return _learned("learned", o.learned, o.learned_source, o)
    if name.startswith("learned:"):
        key = name.split(":", 1)[1]
        return _learned(name, o.other_learned[key], key, o)
    if name == "transfer":
        if o.surrogate is None:
            raise UserError("--attacks transfer needs --surrogate RUN_DIR (the source model).")
        # from_clean=False: the surrogate's x_adv is sent wherever it stands, not only where it
        # fools the surrogate (a robust surrogate would otherwise hold back what transfers)
        inner = pgd_attack(20, o.eps, o.pgd_step(20), "ce", o.restarts, o.norm, from_clean=False)
        return TransferAttack("transfer", inner, o.surrogate, o.surrogate_source)
    components = {"autoattack": STANDARD, APGD: ("apgd-ce", "apgd-t"), "square": ("square",)}
    if name in components:
        return AutoAttackAdapter(
            o.eps, components[name], seed=o.seed, batch_size=o.batch_size, norm=o.norm
        )
    raise UserError(f"Unknown attack {name!r}.")


def _learned(name: str, follower: LearnedFollower, source: str, o: SuiteOptions) -> Attack:
    extra = {
        "source_run": source,
        "checkpoint": str(Path(source) / "last.pt"),
        "input_mode": follower.input_mode.value,
        "trained_eps": float(follower.net.eps),
    }
    if follower.norm is not o.norm:  # another run's g_φ, trained in another ball
        extra["trained_norm"] = follower.norm.value
    # g_φ sees the gradient it trained on: the CW margin's for a run of --ascent-loss margin
    loss = o.learned_losses.get(source, "ce")
    # g_φ is deterministic: one try; its bound is this evaluation's ε (``trained_eps`` records
    # the one it was trained at) and its steps are projected onto this evaluation's ball
    return FollowerAttack(name, follower, o.eps, loss, 1, extra, o.norm)
