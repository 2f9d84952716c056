"""The command line shared by the scripts that measure one ``bench speed`` training step
(``dispatch_count.py``: its operators; ``gpu_profile.py``: its kernels and host waits): which
methods, on which classifier and batch, with which g_φ, at the mnist5k default's levers."""

from __future__ import annotations

import argparse
from typing import Any

from problems.adversarial.defaults import DATASET_DEFAULTS
from problems.adversarial.speed import SpeedConfig, mnist5k_step_levers


def _positive(text: str) -> int:
    """A count of at least 1 (argparse prints the error and exits 2)."""
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number of at least 1; got {text!r}")
    return value


def add_step_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--methods", default="fgsm-rs,pgm-10,2-step-fused")
    parser.add_argument("--model", default="small-cnn")
    parser.add_argument("--batch-size", type=_positive, default=64)
    parser.add_argument("--attacker", default="slim", help="the learned follower's g_φ")


def step_config(
    args: argparse.Namespace, channels_last: bool, levers: dict[str, Any] | None = None
) -> SpeedConfig:
    """The step ``args`` name, g_φ at the mnist5k default's width; ``levers`` over its levers."""
    return SpeedConfig(
        model=args.model, attacker=args.attacker, batch_size=args.batch_size,
        attacker_width=DATASET_DEFAULTS["mnist5k"]["attacker_width"],
        channels_last=channels_last, levers=mnist5k_step_levers() | (levers or {}),
    )  # fmt: skip
