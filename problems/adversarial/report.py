"""What the adversarial problems add to a run's report (``bilevel.report``): an accuracy panel on
a 0-1 axis, the follower-gap panel and the follower gap's summary line."""

from __future__ import annotations

from typing import Any

from bilevel.report import Panel, Rows, loss_panel, validation_panel
from problems.adversarial.gap import GAP_PREFIX, gap_summary


def accuracy_panel(ax: Any, epochs: list[int], history: Rows) -> None:
    """Validation accuracies (clean, PGD) against epochs."""
    validation_panel(ax, epochs, history, suffix="acc")
    ax.set(ylabel="accuracy", ylim=(0, 1))


def gap_panel(ax: Any, epochs: list[int], history: Rows) -> None:
    """The follower gap panel: each attack's share of PGD-10's loss increase (1 = PGD-10)."""
    for split, style in (("probe", "-"), ("val", "--")):
        for name, label, color in (("follower", "follower", "C0"), ("fgsm_rs", "FGSM-RS", "C1")):
            key = f"{GAP_PREFIX}{split}_{name}_ratio"
            values = [row.get(key, float("nan")) for row in history]
            ax.plot(epochs, values, style, color=color, marker="o", label=f"{label}, {split}")
    carried = [row.get(f"{GAP_PREFIX}probe_carried_ratio", float("nan")) for row in history]
    if any(value == value for value in carried):  # --carry-decision: the follower as it trains
        ax.plot(epochs, carried, ":", color="C0", marker="s", label="follower, carried δ, probe")
    ax.axhline(1.0, color="k", lw=0.8, label="PGD-10")
    updates = history[-1].get("phi_updates")
    title = "follower gap" + (f" ({updates} φ updates)" if updates is not None else "")
    ax.set(xlabel="epoch", ylabel="(L − L_clean) / (L_PGD10 − L_clean)", title=title)
    ax.legend(fontsize="small")


def panels(history: Rows) -> list[Panel]:
    """Losses, validation accuracies and, when it was measured, the follower gap."""
    has_gap = any(k.startswith(GAP_PREFIX) for row in history for k in row)
    return [loss_panel, accuracy_panel, *([gap_panel] if has_gap else [])]


def gap_notes(history: Rows) -> list[str]:
    """The follower gap at the last epoch, one line for ``report.md`` (none if not measured)."""
    line = gap_summary(history[-1]) if history else ""
    return [line] if line else []
