"""Evaluation plots (PNG, written atomically into the run folder).

- ``plot_sweeps``: robust accuracy against ε and against PGD steps, one line per run
  (the paper's Figure 3).
- ``plot_examples``: clean images, their adversarial versions and the perturbations magnified
  x5 and x30 for FGSM, PGD-20 and the learned attacker (the paper's Figures 4 and 5).
Training curves come from ``bilevel.report.plot_curves`` with the panels of ``problems.adversarial.report``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import Tensor

from bilevel.norms import Norm
from bilevel.run import atomic_write_figure, new_figure

MAGNIFY = (5, 30)


def plot_sweeps(curves: dict[str, dict[str, Any]], path: Path, norm: str = "linf") -> None:
    """``curves``: run label → {"eps": {"x": [...], "acc": [...]}, "steps": {...}}, ε in the
    ``norm`` ball ("linf" or "l2")."""
    fig, (ax_eps, ax_steps) = new_figure(1, 2, figsize=(10, 4))
    for label, sweeps in curves.items():
        for ax, key in ((ax_eps, "eps"), (ax_steps, "steps")):
            if key in sweeps:
                ax.plot(sweeps[key]["x"], sweeps[key]["acc"], marker="o", label=label)
    ax_eps.set(xlabel=f"ε ({Norm(norm).label}, pixels in [0,1])", title="PGD-20 against ε")
    ax_steps.set(xlabel="PGD steps", xscale="log", title="PGD against steps (same seed)")
    for ax in (ax_eps, ax_steps):
        ax.set(ylabel="robust accuracy", ylim=(0, 1))
        ax.legend()
        ax.grid(alpha=0.3)
    fig.tight_layout()
    atomic_write_figure(fig, path)


def _show(ax: Any, image: Tensor, title: str) -> None:
    image = image.detach().cpu()
    if image.shape[0] == 1:
        ax.imshow(image[0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image.permute(1, 2, 0).numpy())
    ax.set(xticks=[], yticks=[])
    ax.set_title(title, fontsize=8)


def plot_examples(x: Tensor, adversarial: dict[str, Tensor], path: Path) -> None:
    """Rows: attacks; for each test image, x_adv and 0.5 + m·δ clipped, for m in ``MAGNIFY``."""
    n, names, cols = len(x), list(adversarial), 1 + len(MAGNIFY)
    fig, axes = new_figure(
        len(names) + 1, n * cols, figsize=(1.3 * n * cols, 1.4 * (len(names) + 1)), squeeze=False
    )
    for j in range(n):  # the first row: each clean image, beside empty perturbation slots
        for c in range(1, cols):
            axes[0, j * cols + c].axis("off")
        _show(axes[0, j * cols], x[j], "clean")
    for i, name in enumerate(names, start=1):
        for j in range(n):
            delta = adversarial[name][j] - x[j]
            _show(axes[i, j * cols], adversarial[name][j], name)
            for c, m in enumerate(MAGNIFY, start=1):
                _show(axes[i, j * cols + c], (0.5 + m * delta).clamp(0, 1), f"δ x{m}")
    fig.tight_layout()
    atomic_write_figure(fig, path)
