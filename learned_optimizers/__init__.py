"""Learned optimizers g_φ: networks that produce a follower's decision.

``CNNAttacker`` is the attacker of Table 1 of Jiang et al. (AISTATS 2021); ``SlimAttacker`` is
the down-sampling variant of its Appendix B (``slim-reference``: with four details of the
authors' released build); ``PointwiseAttacker`` applies one small perceptron at every pixel
(coordinate-wise like Xiong & Hsieh's learned inner maximiser, ECCV 2020, without its
recurrence); all bound their output in an L∞ or L2 ε-ball.
``build_attacker`` picks one by name. For parameter-space followers: ``CoordinateLSTMOptimizer``
(Andrychowicz et al. 2016), and the optimizers that start as Adam, ``ResidualLSTMOptimizer`` and
``OneShotStepNet`` (``residual``).
"""

from __future__ import annotations

from learned_optimizers.attacker import NORMS, BoundedOutput, CNNAttacker, start_at_zero
from learned_optimizers.lstm_optimizer import CoordinateLSTMOptimizer
from learned_optimizers.pointwise import PointwiseAttacker
from learned_optimizers.residual import OneShotStepNet, ResidualLSTMOptimizer
from learned_optimizers.slim import SlimAttacker

ATTACKER_KINDS: tuple[str, ...] = ("cnn", "slim", "slim-reference", "pointwise")


def build_attacker(
    kind: str, in_channels: int, out_channels: int, eps: float, width: float, norm: str = "linf"
) -> BoundedOutput:
    """An attacker by name: ``"cnn"`` (Table 1, full resolution), ``"slim"`` (Appendix B) or
    ``"pointwise"`` (the same perceptron at every pixel), bounded in the ``norm`` ("linf" or
    "l2") ball of radius ``eps``.

    Raises:
        ValueError: ``kind`` is not one of ``ATTACKER_KINDS``.
    """
    if kind == "cnn":
        return CNNAttacker(in_channels, out_channels, eps, width=width, norm=norm)
    if kind in ("slim", "slim-reference"):
        reference = kind == "slim-reference"
        return SlimAttacker(
            in_channels, out_channels, eps, width=width, norm=norm, reference=reference
        )
    if kind == "pointwise":
        return PointwiseAttacker(in_channels, out_channels, eps, width=width, norm=norm)
    raise ValueError(f"Unknown attacker kind {kind!r}; choose one of: {', '.join(ATTACKER_KINDS)}.")
