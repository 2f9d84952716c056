"""A run's ``report.md`` and training-curve plot (PNG), written atomically into the run folder."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bilevel.run import RunDir, atomic_write_figure, atomic_write_text, table_cell  # noqa: E402
from problems.adversarial.gap import GAP_PREFIX, gap_summary  # noqa: E402


def plot_training_curves(
    run: RunDir, history: list[dict[str, Any]], name: str = "curves.png"
) -> None:
    """Losses (leader L, follower q), validation accuracies (clean, PGD) and, when measured, the
    follower gap (``problems.adversarial.gap``) against epochs."""
    epochs = [row["epoch"] for row in history]
    has_gap = any(k.startswith(GAP_PREFIX) for row in history for k in row)
    fig, axes = plt.subplots(1, 3 if has_gap else 2, figsize=(15 if has_gap else 10, 4))
    ax_loss, ax_acc = axes[0], axes[1]
    for key, label in (
        ("leader_loss", "leader loss L"),
        ("follower_objective", "follower objective q"),
    ):
        if any(key in row for row in history):
            ax_loss.plot(
                epochs, [row.get(key, float("nan")) for row in history], marker="o", label=label
            )
    ax_loss.set(xlabel="epoch", ylabel="mean over the epoch", title="training losses")
    ax_loss.legend()
    for key in sorted(
        {k for row in history for k in row if k.startswith("val_") and k.endswith("acc")}
    ):
        ax_acc.plot(epochs, [row.get(key, float("nan")) for row in history], marker="o", label=key)
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="validation split", ylim=(0, 1))
    ax_acc.legend()
    if has_gap:
        _plot_gap(axes[2], epochs, history)
    fig.tight_layout()
    atomic_write_figure(fig, run.path / name)


def _plot_gap(ax: Any, epochs: list[int], history: list[dict[str, Any]]) -> None:
    """The follower gap panel: each attack's share of PGD-10's loss increase (1 = PGD-10)."""
    for split, style in (("probe", "-"), ("val", "--")):
        for name, label, color in (("follower", "follower", "C0"), ("fgsm_rs", "FGSM-RS", "C1")):
            key = f"{GAP_PREFIX}{split}_{name}_ratio"
            values = [row.get(key, float("nan")) for row in history]
            ax.plot(epochs, values, style, color=color, marker="o", label=f"{label}, {split}")
    ax.axhline(1.0, color="k", lw=0.8, label="PGD-10")
    updates = history[-1].get("phi_updates")
    title = "follower gap" + (f" ({updates} φ updates)" if updates is not None else "")
    ax.set(xlabel="epoch", ylabel="(L − L_clean) / (L_PGD10 − L_clean)", title=title)
    ax.legend(fontsize="small")


def write_report(
    run: RunDir, config: dict[str, Any], history: list[dict[str, Any]], results: dict[str, Any]
) -> None:
    """``report.md``: the final test table, the per-epoch metrics and every resolved option."""
    lines = [f"# Run {run.path.name}", "", "## Test split (best epoch on the validation split)", ""]
    lines += ["| metric | value |", "|---|---|"]
    lines += [f"| {k} | {table_cell(v)} |" for k, v in results.items()]
    gap = gap_summary(history[-1]) if history else ""
    if gap:
        lines += ["", gap]
    keys = list(dict.fromkeys(k for row in history for k in row))
    lines += ["", "## Per epoch", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(table_cell(row.get(k, "")) for k in keys) + " |" for row in history]
    lines += ["", "## Configuration", "", "| option | value |", "|---|---|"]
    lines += [f"| {k} | {v} |" for k, v in config.items()]
    lines += ["", "![training curves](curves.png)", ""]
    atomic_write_text(run.path / "report.md", "\n".join(lines))
    plot_training_curves(run, history)
