"""GAIL plots against environment steps: the policy's normalised return, and the discriminator
diagnostics of every round: accuracy on expert and policy pairs, mean logits, the
policy's reward (mean and standard deviation) and ‖Δψ‖.

``plot_gail_curves`` draws one run; ``plot_bands`` draws several runs per follower as a median
line with an inter-quartile band (``stability.py``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from bilevel.run import RunDir, atomic_write_figure, new_figure

# (panel title, y label, [(metrics key, line label)]); across runs a panel shows its last line
PANELS: list[tuple[str, str, list[tuple[str, str]]]] = [
    ("normalised return (validation)", "(R − R_rand) / (R_exp − R_rand)",
     [("val_normalised_return", "policy")]),
    ("discriminator accuracy", "accuracy",
     [("disc_acc_expert", "on expert"), ("disc_soft_acc", "soft, A_ψ"),
      ("disc_acc_policy", "on policy")]),
    ("mean logit ℓ_ψ", "logit", [("disc_logit_expert", "expert"), ("disc_logit_policy", "policy")]),
    ("policy's reward r_ψ", "reward", [("reward_std", "std"), ("reward_mean", "mean")]),
    ("discriminator step", "‖ψ_{t+1} − ψ_t‖", [("psi_step", "‖Δψ‖")]),
]  # fmt: skip


def _figure(panels: int):
    cols = 3
    rows = -(-panels // cols)
    fig, axes = new_figure(rows, cols, figsize=(4.6 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[panels:]:
        ax.axis("off")
    return fig, list(axes.flat)


def plot_gail_curves(run: RunDir, history: list[dict[str, Any]], name: str = "gail.png") -> None:
    """One run: every panel of ``PANELS`` per epoch, x = environment steps."""
    steps = [row["env_steps"] for row in history]
    fig, axes = _figure(len(PANELS))
    for ax, (title, ylabel, lines) in zip(axes, PANELS, strict=False):
        for key, label in lines:
            if all(key in row for row in history):
                ax.plot(steps, [row[key] for row in history], marker="o", markersize=3, label=label)
        ax.set(title=title, xlabel="environment steps", ylabel=ylabel)
        ax.legend(fontsize=8)
    axes[0].axhline(1.0, color="grey", linestyle="--", linewidth=1)
    axes[0].axhline(0.0, color="grey", linestyle=":", linewidth=1)
    fig.tight_layout()
    atomic_write_figure(fig, run.path / name)


def plot_bands(
    path: Any, curves: dict[str, dict[str, np.ndarray]], steps: dict[str, np.ndarray], title: str
) -> None:
    """Several runs per follower: ``curves[follower][key]`` is (runs, evaluations); each panel of
    ``PANELS`` (its last line) shows the median across runs and the inter-quartile band."""
    fig, axes = _figure(len(PANELS) + 1)  # the last panel holds the legend
    for ax, (panel_title, ylabel, lines) in zip(axes, PANELS, strict=False):
        key, label = lines[-1]
        for follower, by_key in curves.items():
            if key not in by_key:
                continue
            q25, median, q75 = np.percentile(by_key[key], [25, 50, 75], axis=0)
            (line,) = ax.plot(steps[follower], median, label=follower)
            ax.fill_between(steps[follower], q25, q75, alpha=0.2, color=line.get_color())
        heading = panel_title if len(lines) == 1 else f"{panel_title}: {label}"
        ax.set(title=heading, xlabel="environment steps", ylabel=ylabel)
    handles, labels = axes[0].get_legend_handles_labels()
    axes[len(PANELS)].legend(handles, labels, loc="center", fontsize=9)
    axes[len(PANELS)].axis("off")
    fig.suptitle(title)
    fig.tight_layout()
    atomic_write_figure(fig, path)
