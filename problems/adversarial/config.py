"""Options of ``solve adversarial-dro``: defaults that follow the data set, checks with one clear
sentence each, and the follower each ``--follower`` name stands for.

Defaults (every one is written, resolved, into ``config.json``):
- ``mnist5k`` (offline, CPU): the small CNN, ε = 0.3 (Madry et al.'s MNIST setting), SGD lr 0.05,
  and the slim attacker (Appendix B) at width 0.125: a full-resolution Table 1 attacker costs more
  than the small CNN it attacks (DESIGN.md, "Known pitfalls"; measured in the README).
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
from bilevel.followers import InputMode, LearnedFollower, NoFollower, SignGradientAscent
from bilevel.loop import UpdateMode
from learned_optimizers import ATTACKER_KINDS, build_attacker
from problems.adversarial.data import DATASETS, DatasetInfo
from problems.adversarial.dro import AdversarialDRO
from problems.adversarial.models import MODEL_NAMES

# --follower name -> (unrolled steps, input mode) for learned followers
LEARNED = {
    "naive": (1, InputMode.NAIVE),
    "grad": (1, InputMode.GRAD),
    "grad-only": (1, InputMode.GRAD_ONLY),
    "2-step": (2, InputMode.GRAD),
    "2-step-grad-only": (2, InputMode.GRAD_ONLY),
}
FOLLOWERS = ("none", "fgsm", "pgm", *LEARNED)
DEVICES = ("auto", "cpu", "cuda")
COUNTS = (  # options that count something: at least 1 (None: the default)
    "epochs", "batch_size", "pgm_steps", "follower_steps", "select_pgd_steps", "eval_pgd_steps",
    "train_size", "eval_size",
)  # fmt: skip

_DATASET_DEFAULTS: dict[str, dict[str, Any]] = {
    "mnist5k": dict(
        model="small-cnn",
        eps=0.3,
        epochs=10,
        lr=0.05,
        attacker="slim",
        attacker_width=0.125,
        eval_step_size=None,
    ),
    "cifar10": dict(
        model="wrn-34-10",
        eps=0.031,
        epochs=100,
        lr=0.1,
        attacker="cnn",
        attacker_width=1.0,
        eval_step_size=0.003,
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
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 2e-4
    milestones: list[int] | None = None  # default: 30/60/90 for 100 epochs, else 50% and 75%
    attacker: str | None = None  # default: cnn (Table 1) on CIFAR, slim (Appendix B) on digits
    attacker_width: float | None = None
    attacker_lr: float = 1e-3
    attacker_weight_decay: float = 2e-4
    update: str = "alternating"
    follower_steps: int = 1
    train_size: int | None = None  # first N training examples (small runs, tests)
    select_pgd_steps: int = 10  # PGD-k on the validation split picks the best epoch
    eval_pgd_steps: int = 20  # PGD-k on the test split for the final table
    eval_step_size: float | None = None  # default: 0.003 on CIFAR (the paper), else 2.5 ε / k
    eval_size: int | None = None  # first N validation/test examples for selection and the table
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
        _choose("--update", self.update, tuple(m.value for m in UpdateMode))
        _choose("--device", self.device, DEVICES)
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
        self.lr = d["lr"] if self.lr is None else self.lr
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
        if self.update == UpdateMode.FUSED.value and self.follower not in LEARNED:
            raise UserError(
                "--update fused needs a learned follower (naive, grad, grad-only, 2-step)."
            )
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def acceleration(self) -> Acceleration:
        """The speed levers this run uses (``bilevel.acceleration``)."""
        return Acceleration(bool(self.channels_last), self.amp, self.compile)

    def build_problem(self, model: nn.Module, info: DatasetInfo) -> AdversarialDRO:
        """The bilevel problem this configuration trains: DRO (Eq. 2-3)."""
        return AdversarialDRO(model, self.eps)

    def make_follower(self, info: DatasetInfo) -> NoFollower | SignGradientAscent | LearnedFollower:
        """The follower named by ``--follower`` (``build_follower``)."""
        return build_follower(self, info)

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


def build_follower(cfg: DROConfig, info: DatasetInfo):
    """The follower named by ``--follower`` (DESIGN.md, "The protocol").

    none: z = 0 (plain training); fgsm: FGSM with a random start and step 1.25 ε (Wong et al. 2020);
    pgm: PGM-k with a uniform random start (Madry et al. 2018; Eq. 4 of the paper starts at 0);
    naive / grad / grad-only: the one-shot attacker of Eq. (7); 2-step*: the length-two RNN.
    """
    if cfg.follower == "none":
        return NoFollower()
    if cfg.follower == "fgsm":
        return SignGradientAscent(steps=1, step_size=1.25 * cfg.eps, random_start=True)
    if cfg.follower == "pgm":
        return SignGradientAscent(cfg.pgm_steps, cfg.pgm_step_size, random_start=True)
    steps, mode = LEARNED[cfg.follower]
    net = build_attacker(
        cfg.attacker,
        mode.in_channels(info.in_channels),
        info.in_channels,
        cfg.eps,
        cfg.attacker_width,
    )
    return LearnedFollower(
        net,
        steps=steps,
        input_mode=mode,
        lr=cfg.attacker_lr,
        weight_decay=cfg.attacker_weight_decay,
    )
