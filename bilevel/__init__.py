"""bilevel: the problem protocol, followers, the joint L2L loop and run folders.

Knows nothing of images, CIFAR or gymnasium (DESIGN.md).
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
from bilevel.loop import JointTrainer, UpdateMode, reverse_gradient
from bilevel.protocol import Batch, BilevelProblem, follower_gradient

__all__ = [
    "Batch",
    "BilevelProblem",
    "InputMode",
    "JointTrainer",
    "LearnedFollower",
    "NoFollower",
    "SignGradientAscent",
    "UpdateMode",
    "UserError",
    "distributed",
    "follower_gradient",
    "normalise_per_sample",
    "reverse_gradient",
]
