"""Robustness evaluation a reviewer would trust: many attacks, the per-example worst
case, AutoAttack, and the gradient-masking checklist of Carlini et al. (2019)."""

from problems.adversarial.evaluation.evaluate import EvalOptions, evaluate

__all__ = ["EvalOptions", "evaluate"]
