"""bilevel: the problem protocol, followers, the joint L2L loop, hypergradients, run folders.

Knows nothing of images, CIFAR or gymnasium (docs/architecture.md).
"""

from bilevel import distributed
from bilevel.errors import UserError
from bilevel.followers import (
    InputMode,
    LearnedFollower,
    NoFollower,
    SignGradientAscent,
    normalise_per_sample,
)
from bilevel.hypergradients import Hypergradient, hypergradient, hypergradient_step
from bilevel.loop import JointTrainer, UpdateMode, reverse_gradient
from bilevel.protocol import Batch, BilevelProblem, follower_gradient
from bilevel.unrolled import GradientAscent, unroll

__all__ = [
    "Batch",
    "BilevelProblem",
    "GradientAscent",
    "Hypergradient",
    "InputMode",
    "JointTrainer",
    "LearnedFollower",
    "NoFollower",
    "SignGradientAscent",
    "UpdateMode",
    "UserError",
    "distributed",
    "follower_gradient",
    "hypergradient",
    "hypergradient_step",
    "normalise_per_sample",
    "reverse_gradient",
    "unroll",
]
