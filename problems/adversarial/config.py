"""Options of ``solve adversarial-dro``: defaults that follow the data set, checks with one clear
sentence each, and the follower each ``--follower`` name stands for.

Defaults (every one is written, resolved, into ``config.json``):
- ``mnist5k`` (offline, CPU): the small CNN, ε = 0.3 (Madry et al.'s MNIST setting), SGD lr 0.05,
  and the slim attacker (Appendix B) at width 0.0625: a full-resolution Table 1 attacker costs
  more than the small CNN it attacks, and the study (README, "Results") found width 0.0625 as
  robust as 0.125 on validation at 0.70x its training time.
- ``cifar10`` / ``cifar100``: the paper's setting (Section 4, Appendix C): WRN-34-10, 100 epochs,
  SGD lr 0.1, momentum 0.9, weight decay 2e-4, lr ×0.1 at epochs 30/60/90, batch 128, crop+flip;
  attacker Adam lr 1e-3, betas (0.9, 0.999), weight decay 2e-4; ε = 0.031, PGM step 0.007.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar

import torch
from torch import nn

from bilevel.acceleration import Acceleration
from bilevel.errors import UserError, require_counts
from bilevel.followers import (
    GradientScaling,
    LearnedFollower,
    Memory,
    NoFollower,
    SignGradientAscent,
)
from bilevel.loop import UpdateMode
from bilevel.run import RunDir
from learned_optimizers import ATTACKER_KINDS
from problems.adversarial.data import DATASETS, DatasetInfo
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.followers import LEARNED, build_follower
from problems.adversarial.models import MODEL_NAMES

FOLLOWERS = ("none", "fgsm", "pgm", *LEARNED)
DEVICES = ("auto", "cpu", "cuda")
LEADER_OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("multistep", "constant", "cosine")
# What a run made before an option existed did, for --resume of older run folders (an option
# missing here and in the old config.json, such as --gap-size, does not change training).
LEGACY_VALUES: dict[str, Any] = {
    "leader_optimizer": "sgd",
    "schedule": "multistep",
    "attacker_betas": [0.9, 0.999],
    "grad_scaling": "sample",
    "attacker_random_start": False,
    "attacker_memory": "none",
    "attacker_sign_step": 0.0,
    "attacker_init": None,
}
COUNTS = (  # options that count something: at least 1 (None: the default)
    "epochs", "batch_size", "pgm_steps", "follower_steps", "select_pgd_steps", "eval_pgd_steps",
    "train_size", "eval_size", "unroll",
)  # fmt: skip

_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist5k": dict(
        model="small-cnn",
        eps=0.3,
        epochs=10,
        lr=0.05,
        attacker="slim",
        attacker_width=0.0625,
        eval_step_size=None,
        # the learned followers' defaults chosen by the study (benchmarks/l2l, README "Results")
        update="fused",
        attacker_random_start=True,
        attacker_sign_step=0.625,
    ),
    "cifar10": dict(
        model="wrn-34-10",
        eps=0.031,
        epochs=100,
        lr=0.1,
        attacker="cnn",
        attacker_width=1.0,
        eval_step_size=0.003,
        update="alternating",  # the paper's follower; the mnist5k levers are unmeasured here
        attacker_random_start=False,
        attacker_sign_step=0.0,
    ),
}
_DATASET_DEFAULTS["cifar100"] = _DATASET_DEFAULTS["cifar10"]


def dataset_default(dataset: str, option: str) -> Any:
    """The data set's default for ``option`` (e.g. "eps", "model"), as ``resolve`` fills it."""
    return _DATASET_DEFAULTS[dataset][option]


@dataclass
class DROConfig:
    """Every option of a DRO run; ``None`` means "the data set's default" until ``resolve()``.

    A subclass names another adversarial problem for the same run machinery (``solve_dro``): it
    overrides ``FOLLOWER_CHOICES``, ``build_problem``, ``make_follower`` and ``training_batch``.
    """

    FOLLOWER_CHOICES: ClassVar[tuple[str, ...]] = FOLLOWERS

    dataset: str = "mnist5k"
    data_dir: str = "./data"
    model: str | None = None
    follower: str = "2-step"
    eps: float | None = None
    eps_warmup: int | None = None  # epochs of linear ε ramp; default: a third of them on mnist5k
    pgm_steps: int = 10
    pgm_step_size: float | None = None  # default: 0.007 on CIFAR (the paper), else 2.5 ε / k
    epochs: int | None = None
    batch_size: int = 128
    leader_optimizer: str = "sgd"  # sgd (with momentum) or adam
    lr: float | None = None  # default: the data set's for SGD, 1e-3 for Adam
    momentum: float = 0.9  # SGD only
    weight_decay: float = 2e-4
    schedule: str = "multistep"  # multistep (×0.1 at milestones), constant or cosine
    milestones: list[int] | None = None  # default: 30/60/90 for 100 epochs, else 50% and 75%
    attacker: str | None = None  # default: cnn (Table 1) on CIFAR, slim (Appendix B) on digits
    attacker_width: float | None = None
    attacker_lr: float = 1e-3
    attacker_betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    attacker_weight_decay: float = 2e-4
    update: str | None = None  # default: the data set's for learned followers, else alternating
    follower_steps: int = 1  # φ updates per θ update
    unroll: int | None = None  # K of the learned follower; default 1, or 2 for 2-step*
    grad_scaling: str = "sample"  # how ∇ is scaled for g_φ: sample, batch, sign, none
    attacker_random_start: bool | None = None  # start uniformly in the ball (default: data set's)
    attacker_memory: str = "none"  # extra input of g_φ: none, delta (z/ε), prev-grad
    attacker_sign_step: float | None = None  # s > 0: g_φ corrects PGM-K of step s·ε (data set's)
    attacker_init: str | None = None  # a run folder whose g_φ warm-starts this run's
    train_size: int | None = None  # first N training examples (small runs, tests)
    select_pgd_steps: int = 10  # PGD-k on the validation split picks the best epoch
    eval_pgd_steps: int = 20  # PGD-k on the test split for the final table
    eval_step_size: float | None = None  # default: 0.003 on CIFAR (the paper), else 2.5 ε / k
    eval_size: int | None = None  # first N validation/test examples for selection and the table
    gap_size: int = 256  # training examples of the follower-gap probe (0: no follower gap)
    seed: int = 0
    device: str = "auto"
    augment: str | None = field(default=None)  # default: crop-flip on CIFAR, none on digits
    channels_last: bool | None = None  # default: on for CIFAR (measured faster), off on digits
    amp: bool = False  # bf16 autocast of every training step
    compile: bool = False  # torch.compile of the leader and the attacker

    def resolve(self) -> DROConfig:
        """Check every option and fill the data set's defaults in place; returns self."""
        self.dataset = self.dataset.lower()
        _choose("--dataset", self.dataset, DATASETS)
        d = _DATASET_DEFAULTS[self.dataset]
        self.model = self.model or d["model"]
        _choose("--model", self.model, MODEL_NAMES)
        _choose("--follower", self.follower, self.FOLLOWER_CHOICES)
        self.attacker = self.attacker or d["attacker"]
        _choose("--attacker", self.attacker, ATTACKER_KINDS)
        learned = self.follower in LEARNED
        if self.update is None:
            self.update = d["update"] if learned else UpdateMode.ALTERNATING.value
        if self.attacker_random_start is None:
            self.attacker_random_start = bool(d["attacker_random_start"]) and learned
        if self.attacker_sign_step is None:
            self.attacker_sign_step = float(d["attacker_sign_step"]) if learned else 0.0
        _choose("--update", self.update, tuple(m.value for m in UpdateMode))
        _choose("--device", self.device, DEVICES)
        _choose("--leader-optimizer", self.leader_optimizer, LEADER_OPTIMIZERS)
        _choose("--schedule", self.schedule, SCHEDULES)
        _choose("--grad-scaling", self.grad_scaling, tuple(m.value for m in GradientScaling))
        _choose("--attacker-memory", self.attacker_memory, tuple(m.value for m in Memory))
        self.attacker_betas = [float(b) for b in self.attacker_betas]
        if len(self.attacker_betas) != 2 or not all(0 <= b < 1 for b in self.attacker_betas):
            raise UserError(
                f"--attacker-betas takes two numbers in [0, 1), like 0.9,0.999; "
                f"got {self.attacker_betas}."
            )
        if self.attacker_sign_step < 0:
            raise UserError(f"--attacker-sign-step must be >= 0; got {self.attacker_sign_step}.")
        if self.follower in LEARNED and self.unroll is None:
            self.unroll = LEARNED[self.follower][0]
        if (
            self.attacker_init is not None
            and not RunDir(self.attacker_init).last_checkpoint.is_file()
        ):
            raise UserError(
                f"--attacker-init: {self.attacker_init} holds no last.pt to warm-start g_φ from; "
                "give the folder of a finished L2L run."
            )
        if self.device == "auto":  # config.json records the device the run used
            self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.eps = d["eps"] if self.eps is None else float(self.eps)
        if not 0 < self.eps <= 1:
            raise UserError(f"--eps must be in (0, 1] (pixels are in [0, 1]); got {self.eps}.")
        self.epochs = d["epochs"] if self.epochs is None else self.epochs
        require_counts(self, COUNTS)  # before any default is computed from them
        if self.eps_warmup is None:
            self.eps_warmup = 0 if self.dataset != "mnist5k" else self.epochs // 3
        if not 0 <= self.eps_warmup <= self.epochs:
            raise UserError(f"--eps-warmup must be between 0 and --epochs; got {self.eps_warmup}.")
        if self.lr is None:
            self.lr = d["lr"] if self.leader_optimizer == "sgd" else 1e-3
        self.attacker_width = (
            d["attacker_width"] if self.attacker_width is None else self.attacker_width
        )
        cifar = self.dataset != "mnist5k"
        if self.pgm_step_size is None:
            self.pgm_step_size = 0.007 if cifar else 2.5 * self.eps / self.pgm_steps
        if self.eval_step_size is None:
            self.eval_step_size = d["eval_step_size"] or 2.5 * self.eps / self.eval_pgd_steps
        if self.milestones is None:
            e = self.epochs
            self.milestones = (
                [30, 60, 90] if e == 100 else sorted({max(1, e // 2), max(1, 3 * e // 4)})
            )
        if self.augment is None:
            self.augment = "crop-flip" if cifar else "none"
        if self.channels_last is None:
            self.channels_last = cifar
        for name in ("lr", "attacker_width", "pgm_step_size", "eval_step_size", "attacker_lr"):
            if not getattr(self, name) > 0:
                raise UserError(
                    f"--{name.replace('_', '-')} must be positive; got {getattr(self, name)}."
                )
        if self.gap_size < 0:
            raise UserError(f"--gap-size must be at least 0; got {self.gap_size}.")
        if self.update == UpdateMode.FUSED.value and self.follower not in LEARNED:
            raise UserError(
                "--update fused needs a learned follower (naive, grad, grad-only, 2-step)."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def inherit_unset(self, recorded: dict[str, Any]) -> DROConfig:
        """For ``--resume``: every option left unset (None) takes the value the run folder
        recorded (or, for an option newer than the folder, ``LEGACY_VALUES``'), so a run resumes
        as it was trained even where a default has changed since; returns self."""
        recorded = LEGACY_VALUES | recorded
        for f in fields(self):
            if getattr(self, f.name) is None and f.name in recorded:
                setattr(self, f.name, recorded[f.name])
        return self

    def acceleration(self) -> Acceleration:
        """The speed levers this run uses (``bilevel.acceleration``)."""
        return Acceleration(bool(self.channels_last), self.amp, self.compile)

    def build_problem(self, model: nn.Module, info: DatasetInfo) -> AdversarialDRO:
        """The bilevel problem this configuration trains: DRO (Eq. 2-3)."""
        return AdversarialDRO(model, self.eps)

    def make_follower(self, info: DatasetInfo) -> NoFollower | SignGradientAscent | LearnedFollower:
        """The follower named by ``--follower`` (``build_follower``)."""
        return build_follower(self, info)

    def leader_optimizer_for(self, params: Any) -> torch.optim.Optimizer:
        """``--leader-optimizer``: SGD with momentum (the paper) or Adam, weight decay for both."""
        if self.leader_optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            params, lr=self.lr, momentum=self.momentum, weight_decay=self.weight_decay
        )

    def lr_schedule(self, optimizer: torch.optim.Optimizer) -> torch.optim.lr_scheduler.LRScheduler:
        """``--schedule``, stepped once per epoch: ×0.1 at ``milestones``, constant, or cosine
        annealing to zero over ``epochs``."""
        if self.schedule == "constant":
            return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
        if self.schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
        return torch.optim.lr_scheduler.MultiStepLR(optimizer, self.milestones, gamma=0.1)

    def training_batch(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The problem's batch made from a minibatch ``(x, y)``; DRO uses it as it is."""
        return x, y

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DROConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def _choose(option: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise UserError(f"Unknown {option} {value!r}; choose one of: {', '.join(choices)}.")


def resolve_device(name: str) -> torch.device:
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA GPU is visible; use --device cpu.")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)
