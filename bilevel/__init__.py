"""bilevel: the problem protocol, followers, the joint L2L loop, hypergradients, the experiment
runner, run folders and reports.

Knows nothing of images, CIFAR or gymnasium (docs/architecture.md). A new problem subclasses
``BilevelProblem``; ``JointTrainer`` trains it with any ``Follower``; ``run_experiment`` turns it
into a run folder.
"""

from bilevel import distributed
from bilevel.errors import UserError
from bilevel.experiment import Experiment, run_experiment
from bilevel.followers import Follower, GradientAscent, NoFollower, SignGradientAscent
from bilevel.hypergradients import Hypergradient, hypergradient, hypergradient_step
from bilevel.learned_follower import (
    GradientScaling,
    InputMode,
    LearnedFollower,
    Memory,
    normalise_per_sample,
)
from bilevel.loop import JointTrainer, UpdateMode, reverse_gradient
from bilevel.norms import Norm
from bilevel.optimizer_followers import AdamFollower, LearnedOptimizerFollower
from bilevel.protocol import Batch, BilevelProblem, Decision, follower_gradient
from bilevel.report import markdown_table, write_report
from bilevel.unrolled import ascent, unroll
