"""Figures: the evaluation's plots are PNGs, and drawing one leaves a user's matplotlib alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
from helpers import ROOT

from problems.adversarial.evaluation.plots import plot_examples, plot_sweeps

torch.set_num_threads(1)

PNG = b"\x89PNG\r\n\x1a\n"
CURVES = {"run": {"eps": {"x": [0.0, 0.1, 0.3], "acc": [0.99, 0.9, 0.7]},
                  "steps": {"x": [1, 10, 100], "acc": [0.8, 0.75, 0.74]}}}  # fmt: skip


def test_sweeps_and_examples_are_written_as_png(tmp_path: Path) -> None:
    plot_sweeps(CURVES, tmp_path / "sweeps.png")
    x = torch.rand(3, 1, 28, 28)
    plot_examples(x, {"FGSM": (x + 0.1).clamp(0, 1)}, tmp_path / "examples.png")
    for name in ("sweeps.png", "examples.png"):
        assert (tmp_path / name).read_bytes().startswith(PNG)


def test_drawing_keeps_the_users_backend_and_figures(tmp_path: Path) -> None:
    # a notebook's backend and open figures survive a call that writes a PNG
    code = f"""
import matplotlib
matplotlib.use("svg")
import matplotlib.pyplot as plt
plt.figure()
from pathlib import Path
from problems.adversarial.evaluation.plots import plot_sweeps
plot_sweeps({CURVES!r}, Path({str(tmp_path / "sweeps.png")!r}))
print(matplotlib.get_backend(), plt.get_fignums())
"""
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert result.stdout.split("\n")[-2] == "svg [1]"
    assert (tmp_path / "sweeps.png").read_bytes().startswith(PNG)
