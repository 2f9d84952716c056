"""GAIL run plots: normalised return and discriminator accuracy against environment steps."""

from __future__ import annotations

from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from bilevel.run import RunDir, atomic_write_figure  # noqa: E402


def plot_gail_curves(run: RunDir, history: list[dict[str, Any]], name: str = "gail.png") -> None:
    """Normalised return (left) and discriminator accuracy (right) per epoch, x = env steps."""
    steps = [row["env_steps"] for row in history]
    fig, (ax_ret, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    ax_ret.plot(steps, [row["val_normalised_return"] for row in history], marker="o")
    ax_ret.axhline(1.0, color="grey", linestyle="--", linewidth=1, label="expert")
    ax_ret.axhline(0.0, color="grey", linestyle=":", linewidth=1, label="random")
    ax_ret.set(xlabel="environment steps", ylabel="(R − R_random) / (R_expert − R_random)")
    ax_ret.set_title("normalised return (validation episodes)")
    ax_ret.legend()
    ax_acc.plot(steps, [row["val_disc_acc"] for row in history], marker="o")
    ax_acc.set(xlabel="environment steps", ylabel="accuracy", ylim=(0, 1))
    ax_acc.set_title("discriminator accuracy")
    fig.tight_layout()
    atomic_write_figure(fig, run.path / name)
