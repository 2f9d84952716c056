"""The follower gap: does the training follower keep up with the classifier it attacks?

Every epoch, on a fixed probe set of training examples and on the validation split, with the
classifier (and a learned attacker) in eval mode, the classifier's cross-entropy and accuracy are
measured clean, under the run's own follower (g_φ for L2L) and under two hand-designed
references, PGD-10 (step 2.5 ε / 10, uniform random start; Madry et al. 2018) and FGSM-RS (step
1.25 ε, uniform random start; Wong et al. 2020). Each attack's strength is summarised by the share
of PGD-10's loss increase it achieves,

    ratio(a) = (L_a − L_clean) / (L_PGD-10 − L_clean),

0 for z = 0 (no attack), 1 for an attack as strong as PGD-10. An attacker whose ratio falls while
the classifier trains is one the classifier has outrun: its perturbations no longer stand for the
inner maximisation of Eq. (3), and robustness under a strong attack (AutoAttack) will lag.

Every attack starts from the same seed, so PGD-10 run as "the follower" scores exactly 1. The
gap is measured at the full ε, also during an ε warm-up (a learned attacker's bound is set to it),
so that epochs compare; the validation split's PGD-10 is then the model-selection attack too.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bilevel.carry import CarriedDecisions
from bilevel.followers import Follower, SignGradientAscent
from bilevel.norms import Norm
from bilevel.seeding import seeded
from problems.adversarial.defaults import madry_step
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.perturbation import Perturbation

GAP_PREFIX = "gap_"


def reference_followers(eps: float, norm: Norm | str = Norm.LINF) -> dict[str, SignGradientAscent]:
    """PGD-10 and FGSM-RS as the follower gap uses them, in the ``norm`` ball."""
    return {
        "pgd10": SignGradientAscent(10, madry_step(eps, 10), random_start=True, norm=norm),
        "fgsm_rs": SignGradientAscent(1, 1.25 * eps, random_start=True, norm=norm),
    }


def _loss_and_accuracy(
    model: nn.Module,
    follower: Follower,
    problem: Perturbation,
    make_batch: Callable[[Tensor, Tensor], Any],
    x: Tensor,
    y: Tensor,
    seed: int,
    batch_size: int,
) -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on x + δ, δ from ``follower`` on ``problem``
    (the same random starts for every follower and epoch: from ``seed``)."""
    loss_sum, correct = 0.0, 0
    with seeded(seed):
        for i in range(0, len(x), batch_size):
            xb, yb = x[i : i + batch_size], y[i : i + batch_size]
            delta = follower.solve(problem, make_batch(xb, yb))
            with torch.no_grad():
                logits = model(xb + delta)
                loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
                correct += (logits.argmax(1) == yb).sum().item()
    n = max(len(x), 1)
    return loss_sum / n, correct / n


def _ratio(loss: float, row: dict[str, float], key: str) -> float:
    """(L − L_clean) / (L_PGD-10 − L_clean) with the clean and PGD-10 losses of ``row`` under
    ``key`` (a split's prefix); NaN where PGD-10 adds no loss."""
    clean = row[key + "clean_loss"]
    scale = row[key + "pgd10_loss"] - clean
    return (loss - clean) / scale if abs(scale) > 1e-12 else float("nan")


def follower_gap(
    model: nn.Module,
    follower: Follower,
    problem: Perturbation,
    splits: dict[str, tuple[Tensor, Tensor]],
    eps: float,
    seed: int,
    make_batch: Callable[[Tensor, Tensor], Any] = lambda x, y: (x, y),
    batch_size: int = 500,
) -> dict[str, float]:
    """``gap_{split}_{clean,follower,pgd10,fgsm_rs}_{loss,acc}`` and ``gap_{split}_{follower,
    fgsm_rs}_ratio`` for every split (e.g. ``{"probe": ..., "val": ...}``).

    ``follower`` solves on ``problem`` with batches from ``make_batch(x, y)`` (AIT pairs them);
    the references solve the DRO problem of ``model`` at ``eps`` in the problem's norm. Modes are
    set to eval here.
    """
    model.eval()
    if isinstance(follower, nn.Module):
        follower.eval()
    dro = AdversarialDRO(model, eps, problem.norm)
    references = reference_followers(eps, problem.norm)
    attacks = {"follower": (follower, problem, make_batch)}
    attacks |= {name: (f, dro, lambda x, y: (x, y)) for name, f in references.items()}
    out: dict[str, float] = {}
    for split, (x, y) in splits.items():
        key = f"{GAP_PREFIX}{split}_"
        with torch.no_grad():
            logits = torch.cat([model(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
        out[key + "clean_loss"] = F.cross_entropy(logits, y).item() if len(x) else 0.0
        out[key + "clean_acc"] = (logits.argmax(1) == y).float().mean().item() if len(x) else 0.0
        for name, (f, p, make) in attacks.items():
            loss, acc = _loss_and_accuracy(model, f, p, make, x, y, seed, batch_size)
            out[f"{key}{name}_loss"], out[f"{key}{name}_acc"] = loss, acc
        for name in ("follower", "fgsm_rs"):
            out[f"{key}{name}_ratio"] = _ratio(out[f"{key}{name}_loss"], out, key)
    return out


def carried_gap(
    model: nn.Module,
    follower: Follower,
    problem: Perturbation,
    carried: CarriedDecisions,
    probe: tuple[Tensor, Tensor],
    gap: dict[str, float],
    seed: int,
    make_batch: Callable[[Tensor, Tensor], Any] = lambda x, y: (x, y),
) -> dict[str, float]:
    """The follower as it trains under ``--carry-decision``: on the probe (the first training
    rows), started from each example's carried δ, ``gap_probe_carried_{loss,acc,ratio}``; the
    ratio is against the fresh PGD-10 of ``gap`` (``follower_gap``'s row), so above 1 the carried
    follower finds more loss than PGD-10 does from a random start. Modes: as ``follower_gap``."""
    x, y = probe
    problem.carried = carried
    carried.select(torch.arange(len(x)))
    try:
        loss, acc = _loss_and_accuracy(model, follower, problem, make_batch, x, y, seed, len(x))
    finally:
        problem.carried = None
    key = f"{GAP_PREFIX}probe_"
    ratio = _ratio(loss, gap, key)
    return {key + "carried_loss": loss, key + "carried_acc": acc, key + "carried_ratio": ratio}


def gap_summary(row: dict[str, Any]) -> str:
    """One line for ``report.md`` from a metrics row that holds the follower gap."""
    parts = []
    for split, label in (("probe", "training probe"), ("val", "validation")):
        key = f"{GAP_PREFIX}{split}_"
        if key + "follower_ratio" not in row:
            continue
        parts.append(
            f"on the {label} set the follower reaches loss {row[key + 'follower_loss']:.3f} "
            f"(accuracy {row[key + 'follower_acc']:.3f}) against PGD-10's "
            f"{row[key + 'pgd10_loss']:.3f} ({row[key + 'pgd10_acc']:.3f}) and FGSM-RS's "
            f"{row[key + 'fgsm_rs_loss']:.3f} ({row[key + 'fgsm_rs_acc']:.3f}): ratio "
            f"{row[key + 'follower_ratio']:.2f} (FGSM-RS {row[key + 'fgsm_rs_ratio']:.2f})"
        )
    if not parts:
        return ""
    if (carried := f"{GAP_PREFIX}probe_carried_ratio") in row:
        parts.append(
            f"from its carried δ the training follower reaches loss "
            f"{row[GAP_PREFIX + 'probe_carried_loss']:.3f} on the probe: ratio {row[carried]:.2f}"
        )
    updates = row.get("phi_updates")
    after = f" after {updates} φ updates" if updates is not None else ""
    return f"Follower gap at epoch {row['epoch']}{after}: " + "; ".join(parts) + "."
