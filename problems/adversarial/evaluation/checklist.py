"""The gradient-masking checklist of Carlini et al. (2019), "On Evaluating Adversarial
Robustness" (Section 5 and Appendix), computed from attack results as pass/fail lines.

Each check compares numbers a sound evaluation must order one way; a reversal beyond a stated
tolerance fails the line. The tolerance of an accuracy comparison is ``max(tol, 1/n)``: one example, or ``tol`` (default
0.5 percentage points), whichever is larger, so sampling noise in random starts does not fail a
line while a real reversal does; the per-example white-box/black-box count allows ``tol · n``.

- PGD steps 10 → 20 → 50 → 100 (same seed): accuracy does not rise.
- restarts 1 → R (fresh seeds): accuracy does not rise.
- ε over a grid up to a large ε: accuracy falls monotonically and ends at chance or below.
- white-box ≥ black-box per example: no example is broken by transfer, noise or Square alone
  while every gradient attack leaves it correct.
- iterative ≥ FGSM: the best iterative attack's accuracy is at most FGSM's.
- AutoAttack within a stated margin of the best PGD (a larger gap flags likely masking).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

import torch
from torch import Tensor

from problems.adversarial.evaluation.attacks import share


@dataclass
class Check:
    """One line of the checklist; ``passed`` is None when the check could not be run."""

    name: str
    passed: bool | None
    detail: str

    def line(self) -> str:
        mark = {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]
        return f"[{mark}] {self.name}: {self.detail}"


def tolerance(n: int, tol: float) -> float:
    """The slack a reversal must exceed to fail: one example or ``tol``, whichever is larger,
    plus a millionth, so that a reversal of exactly the slack (0.14 − 0.13 is 0.0100000000000009
    in floating point) does not fail on rounding."""
    return max(tol, 1.0 / max(n, 1)) + ROUNDING


ROUNDING = 1e-6  # far below one example of any test split


def _series(xs: Sequence[Any], accs: Sequence[float]) -> str:
    return ", ".join(f"{x}: {a:.3f}" for x, a in zip(xs, accs, strict=True))


def check_non_increasing(
    name: str, xs: Sequence[Any], accs: Sequence[float], n: int, tol: float = 0.005
) -> Check:
    """Accuracy must not rise along ``xs`` (stronger attacks) by more than the tolerance."""
    if len(accs) < 2:
        return Check(name, None, "fewer than two points")
    slack = tolerance(n, tol)
    pairs = pairwise(zip(xs, accs, strict=True))
    steps = [(a, b, acc_b - acc_a) for (a, acc_a), (b, acc_b) in pairs]
    rises = [step for step in steps if step[2] > slack]
    detail = _series(xs, accs) + f" (tolerance {slack:.3f})"
    if rises:
        a, b, d = max(rises, key=lambda r: r[2])
        detail += f"; rises by {d:.3f} from {a} to {b}"
    return Check(name, not rises, detail)


def check_reaches_chance(
    large_eps: float, acc: float, num_classes: int, n: int, tol: float = 0.005
) -> Check:
    """At a large ε (0.5 on digits, 0.3 on CIFAR in L∞; 5.0 and 2.5 in L2) any model can be
    broken: accuracy ≤ 1/C."""
    chance = 1.0 / num_classes
    slack = tolerance(n, tol)
    return Check(
        f"accuracy at ε = {large_eps:g} is at chance level or below",
        acc <= chance + slack,
        f"{acc:.3f} vs chance {chance:.3f} (tolerance {slack:.3f})",
    )


def check_white_beats_black(
    white: dict[str, Tensor], black: dict[str, Tensor], tol: float = 0.005
) -> Check:
    """Per example: count those broken by a black-box attack yet correct under every white-box
    attack (``white``/``black``: name → bool tensor of per-example correctness)."""
    name = "white-box attacks at least as strong as black-box, per example"
    if not white or not black:
        return Check(name, None, "needs a white-box and a black-box attack")
    white_robust = all_correct(white.values())
    n = len(white_robust)
    # a per-example count has no sampling floor: any break beyond tol · n fails
    counts = {k: int((~v & white_robust).sum()) for k, v in black.items()}
    allowed = math.floor(tol * n + 1e-9)  # the most examples tol · n allows, as printed
    shown = ", ".join(f"{k}: {c}" for k, c in counts.items())
    detail = (
        f"examples broken only by black-box attacks: {shown} of {n} "
        f"(tolerance {allowed}; white-box: {', '.join(white)})"
    )
    return Check(name, max(counts.values()) <= allowed, detail)


def check_iterative_beats_fgsm(
    iterative: dict[str, Tensor], fgsm: Tensor | None, tol: float = 0.005
) -> Check:
    """Every iterative attack's accuracy must not exceed FGSM's by more than the tolerance: an
    iterative attack weaker than one step is the masking sign (Carlini et al. 2019), which a
    strong attack beside it (CW-L∞ beside a weak PGD) must not hide."""
    name = "iterative attacks at least as strong as FGSM"
    if fgsm is None or not iterative:
        return Check(name, None, "needs FGSM and an iterative attack")
    n = len(fgsm)
    slack = tolerance(n, tol)
    weakest = max(iterative, key=lambda k: share(iterative[k]))
    worst, fgsm_acc = share(iterative[weakest]), share(fgsm)
    only_fgsm = int((~fgsm & all_correct(iterative.values())).sum())
    detail = (
        f"the weakest, {weakest}, {worst:.3f} vs fgsm {fgsm_acc:.3f} (tolerance {slack:.3f}); "
        f"{only_fgsm} examples broken by FGSM but by no iterative attack"
    )
    return Check(name, worst <= fgsm_acc + slack, detail)


def check_autoattack_margin(
    autoattack_acc: float | None, pgd: dict[str, float], margin: float = 0.02, label: str = ""
) -> Check:
    """AutoAttack's accuracy within ``margin`` of the best PGD's; a larger gap is masking."""
    name = f"AutoAttack within {margin:.3f} of the best PGD"
    if autoattack_acc is None:
        return Check(name, None, "AutoAttack was not run (use --attacks full)")
    if not pgd:
        return Check(name, None, "needs a PGD attack to compare AutoAttack with")
    best_name = min(pgd, key=pgd.get)
    gap = pgd[best_name] - autoattack_acc
    detail = f"{best_name} {pgd[best_name]:.3f} vs {label or 'AutoAttack'} {autoattack_acc:.3f} (gap {gap:+.3f})"
    return Check(name, gap <= margin, detail)


def all_correct(flags: Any) -> Tensor:
    """Per example: correct under every one of ``flags`` (boolean tensors of one shape)."""
    return torch.stack(list(flags)).all(0)
