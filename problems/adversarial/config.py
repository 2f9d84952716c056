"""The options ``solve adversarial-dro`` and ``solve adversarial-ait`` share
(``AdversarialConfig``), each declared once with its default and help (the command line is
generated from them), and their checks, one sentence each (those of the learned follower's levers
and of the carried δ in ``problems.adversarial.checks``); the data sets' defaults they fill in are
in ``problems.adversarial.defaults``. ``DROConfig`` (``problems.adversarial.dro_config``) and
``AITConfig`` (``problems.adversarial.ait_config``) add each problem's own; none builds anything
(``problems.adversarial.solve`` does).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

from bilevel.acceleration import Acceleration, resolve_device
from bilevel.averaging import check_decay
from bilevel.errors import UserError, require_at_least_zero, require_counts, require_positive
from bilevel.learned_follower import GradientScaling, Memory
from bilevel.loop import UpdateMode
from bilevel.norms import Norm
from bilevel.options import check_numbers, check_same_command, choose, fill_unset, inherit, option
from bilevel.recorded import IGNORED_ON_RESUME, READ_FROM_ON_RESUME
from learned_optimizers import ATTACKER_KINDS
from problems.adversarial.checks import (
    check_attacker_levers,
    check_carry,
    check_limits,
    check_milestones,
    check_momentum,
    check_unroll,
    check_unused,
)
from problems.adversarial.data import DATASETS, dataset_info
from problems.adversarial.defaults import (
    DATASET_DEFAULTS,
    HAND_DESIGNED_LEVERS,
    LEGACY_VALUES,
    NO_LEGACY_VALUE,
    check_eps,
    dataset_default,
    step_default,
)
from problems.adversarial.models import MODEL_NAMES, check_input_size

# --follower name -> (unrolled steps, input mode) for learned followers
LEARNED = {
    "naive": (1, "naive"),
    "grad": (1, "grad"),
    "grad-only": (1, "grad-only"),
    "2-step": (2, "grad"),
    "2-step-grad-only": (2, "grad-only"),
}
FOLLOWERS = ("none", "fgsm", "pgm", *LEARNED)
NORMS = tuple(n.value for n in Norm)
COUNTS = (  # options that count something: at least 1 (None: the default)
    "epochs", "batch_size", "pgm_steps", "follower_steps", "select_pgd_steps", "eval_pgd_steps",
    "train_size", "eval_size", "unroll",
)  # fmt: skip
POSITIVE = ("lr", "attacker_width", "pgm_step_size", "eval_step_size", "attacker_lr")
AT_LEAST_ZERO = ("gap_size", "momentum", "weight_decay", "attacker_weight_decay")


@dataclass
class AdversarialConfig:
    """The options DRO and AIT share; ``None`` means "the data set's default" until ``resolve()``."""

    FOLLOWER_CHOICES: ClassVar[tuple[str, ...]] = FOLLOWERS
    # the options a run folder's config.json may lack (``bilevel.recorded.check_complete``)
    RECORD_MAY_LACK: ClassVar[frozenset[str]] = frozenset(
        (*LEGACY_VALUES, *NO_LEGACY_VALUE, *IGNORED_ON_RESUME, *READ_FROM_ON_RESUME)
    )

    dataset: str = option("mnist5k", "mnist5k (embedded, offline), cifar10 or cifar100.")
    data_dir: str = option("./data", "Where CIFAR is read from (downloaded if missing).")
    model: str | None = option(
        None, "small-cnn, trades-cnn, preact-resnet18 or wrn-34-10 (default: follows the data set)."
    )
    follower: str = option(
        "2-step",
        "How the follower finds δ: none (plain training), fgsm (random start), pgm (PGM-k), or a "
        "learned attacker: naive, grad, grad-only, 2-step, 2-step-grad-only.",
    )
    eps: float | None = option(
        None,
        "Radius ε of the --norm ball, pixels in [0,1] (default: L∞ 0.3 mnist5k, 0.031 CIFAR; "
        "L2 1.5 mnist5k, 0.5 CIFAR).",
    )
    eps_warmup: int | None = option(
        None, "Epochs of linear ε ramp from 0 (default: a third of --epochs on mnist5k, 0 CIFAR)."
    )
    pgm_steps: int = option(10, "k of PGM-k training.")
    pgm_step_size: float | None = option(
        None, "η of PGM-k (default: CIFAR L∞ 0.007 × ε / 0.031 (the paper), else 2.5ε/k)."
    )
    epochs: int | None = option(None, "Training epochs (default: 100 CIFAR, 10 mnist5k).")
    batch_size: int | None = option(
        None, "Minibatch size (default: 64 mnist5k, 128 CIFAR; AIT: 128 on both)."
    )
    leader_optimizer: str = option("sgd", "The leader's optimizer: sgd (momentum) or adam.")
    lr: float | None = option(
        None, "Leader learning rate (default: SGD 0.1 CIFAR, 0.05 mnist5k; Adam 1e-3)."
    )
    momentum: float = option(0.9, "Momentum of the leader's SGD.")
    weight_decay: float = option(2e-4, "Weight decay of the leader's optimizer.")
    leader_ema: float | None = option(
        None,
        "Decay d of an exponential moving average of θ, updated after every leader step; the "
        "average is what is validated, selected and tested (default 0: off; e.g. 0.995).",
    )
    schedule: str = option(
        "multistep", "Leader lr schedule: multistep (×0.1 at --milestones), constant, cosine."
    )
    milestones: list[int] | None = option(
        None,
        "Epochs where lr ×0.1, e.g. 30,60,90 (default: 30,60,90 for 100 epochs, else at 1/2 and "
        "3/4 of --epochs).",
        comma=True,
        example="30,60,90",
    )
    attacker: str | None = option(
        None,
        "Learned attacker: cnn (Table 1), slim (Appendix B; slim-reference: with four details of the "
        "authors' build) or pointwise (one perceptron at every pixel) (default: slim on mnist5k, cnn on "
        "CIFAR).",
    )
    attacker_width: float | None = option(
        None, "Channel multiplier of the attacker (default: 0.0625 mnist5k, 1.0 CIFAR)."
    )
    attacker_lr: float = option(1e-3, "Adam learning rate of the learned attacker φ.")
    attacker_betas: list[float] = option(
        [0.9, 0.999], "Adam betas of φ, like 0.9,0.999.", comma=True, example="0.9,0.999"
    )
    attacker_weight_decay: float = option(2e-4, "Weight decay of φ's Adam.")
    update: str | None = option(
        None,
        "alternating (the paper), follower-first or fused (one backward); default: the data "
        "set's for learned followers, alternating for hand-designed ones.",
    )
    follower_steps: int = option(1, "Follower (φ) updates per leader (θ) update.")
    unroll: int | None = option(
        None, "Unrolled steps K of the learned follower (default: 1, or 2 for 2-step)."
    )
    plain_steps: int | None = option(
        None,
        "How many of the K unrolled steps, the first ones, are the sign step alone, without g_φ "
        "(needs --attacker-sign-step > 0; default: 0).",
    )
    truncated_unroll: bool | None = option(
        None,
        "φ's gradient flows through the last g_φ step only; earlier g_φ steps run without a "
        "graph, which saves their backward (needs two g_φ steps or more; default: on for "
        "learned followers on mnist5k, off on CIFAR and in AIT).",
    )
    grad_scaling: str = option(
        "sample",
        "How ∇ is scaled for g_φ: sample (g/‖g‖ each, in the --norm), batch, sign or none (each "
        "example's own loss gradient, unscaled).",
    )
    attacker_random_start: bool | None = option(
        None,
        "The learned follower starts uniformly in the ε-ball, as FGSM-RS and PGM do (default: "
        "on for mnist5k, off on CIFAR, the paper's; AIT always starts there).",
    )
    attacker_memory: str = option(
        "none", "Extra input of g_φ: none, delta (the current δ/ε) or prev-grad."
    )
    attacker_sign_step: float | None = option(
        None,
        "s > 0: each unrolled step adds a steepest-ascent step s·ε to g_φ's output, and g_φ "
        "starts at zero, so the follower starts as PGM-K and learns a correction (default: 0.625 "
        "for mnist5k, 0 on CIFAR and in AIT, the paper's).",
    )
    attacker_init: str | None = option(None, "A finished L2L run folder whose g_φ warm-starts φ.")
    carry_decision: bool | None = option(
        None,
        "Each training example's follower starts from its δ of the previous epoch (ATTA, Zheng "
        "et al. 2020), not afresh; needs --augment none (default: on for learned followers on "
        "mnist5k, off for hand-designed ones, on CIFAR and in AIT).",
    )
    carry_restart: float | None = option(
        None,
        "Under --carry-decision, the fraction of each batch's examples that start afresh anyway, "
        "drawn at every visit (0: every seen example starts from its carried δ).",
    )
    carry_jitter: float | None = option(
        None,
        "Under --carry-decision, each carried δ starts at δ + α·z0, z0 the fresh (random) start, "
        "so each visit climbs from a nearby point (0: exactly at the carried δ).",
    )
    train_size: int | None = option(None, "Use only the first N training examples.")
    select_pgd_steps: int = option(10, "PGD-k on the validation split picks the best epoch.")
    eval_pgd_steps: int = option(20, "PGD-k on the test split for the final table.")
    eval_step_size: float | None = option(
        None, "Step of the test PGD (default: CIFAR L∞ 0.003 × ε / 0.031 (the paper), else 2.5ε/k)."
    )
    eval_size: int | None = option(None, "Use only the first N validation and test examples.")
    gap_size: int = option(
        256, "Training examples of the follower-gap probe measured every epoch (0: off)."
    )
    seed: int = option(0)
    device: str = option("auto", "auto, cpu or cuda.")
    augment: str | None = option(None, "crop-flip or none (default: crop-flip on CIFAR).")
    channels_last: bool | None = option(None, "NHWC tensors (default: on for CIFAR).")
    amp: bool = option(False, "bf16 autocast of every training step (CPU and GPU).")
    compile: bool = option(False, "torch.compile the leader and the attacker.")
    norm: str | None = option(
        None, "The threat model: the ε-ball of linf (the paper's, the default) or l2."
    )

    @property
    def learned(self) -> bool:
        return self.follower in LEARNED

    def resolve(self) -> AdversarialConfig:
        """Check every option and fill the data set's defaults in place; returns self."""
        check_numbers(self)
        self.dataset = self.dataset.lower()
        choose("--dataset", self.dataset, DATASETS)
        carry_asked = self.carry_decision is not None
        truncated_asked = self.truncated_unroll is not None
        if self.norm is None:  # unset: --resume takes the folder's
            self.norm = Norm.LINF.value
        choose("--norm", self.norm, NORMS)
        d = DATASET_DEFAULTS[self.dataset]
        plain = ("model", "attacker", "attacker_width", "epochs", "eps", "batch_size")  # ε: --norm
        fill_unset(self, {k: dataset_default(self.dataset, k, self.norm) for k in plain})
        choose("--model", self.model, MODEL_NAMES)
        check_input_size(self.model, dataset_info(self.dataset).image_size, self.dataset)
        choose("--follower", self.follower, self.FOLLOWER_CHOICES)
        choose("--attacker", self.attacker, ATTACKER_KINDS)
        fill_unset(
            self, {k: d[k] for k in HAND_DESIGNED_LEVERS} if self.learned else HAND_DESIGNED_LEVERS
        )
        choose("--update", self.update, tuple(m.value for m in UpdateMode))
        choose("--device", self.device, ("auto", "cpu", "cuda"))
        choose("--leader-optimizer", self.leader_optimizer, ("sgd", "adam"))
        choose("--schedule", self.schedule, ("multistep", "constant", "cosine"))
        choose("--grad-scaling", self.grad_scaling, tuple(m.value for m in GradientScaling))
        choose("--attacker-memory", self.attacker_memory, tuple(m.value for m in Memory))
        check_unused(self)  # before the levers' own checks: first, whether they apply
        check_attacker_levers(self)
        if self.learned and self.unroll is None:
            self.unroll = LEARNED[self.follower][0]
        if self.device == "auto":  # config.json records the device the run used
            self.device = resolve_device("auto").type
        self.eps = check_eps(self.eps, self.norm, dataset_info(self.dataset).pixels)
        require_counts(self, COUNTS)  # before any default is computed from them
        check_unroll(self, truncated_asked)
        cifar = self.dataset != "mnist5k"
        lr = d["lr"] if self.leader_optimizer == "sgd" else 1e-3  # Adam's: 1e-3
        fill_unset(self, dict(eps_warmup=0 if cifar else self.epochs // 3, lr=lr))
        if not 0 <= self.eps_warmup <= self.epochs:
            raise UserError(f"--eps-warmup must be between 0 and --epochs; got {self.eps_warmup}.")
        for step, k in (("pgm_step_size", self.pgm_steps), ("eval_step_size", self.eval_pgd_steps)):
            fill_unset(self, {step: step_default(self.dataset, step, self.eps, self.norm, k)})
        if self.milestones is None:
            e = self.epochs
            self.milestones = [30, 60, 90] if e == 100 else sorted({e // 2 or 1, 3 * e // 4 or 1})
        check_milestones(self)
        fill_unset(self, dict(augment="crop-flip" if cifar else "none", channels_last=cifar))
        choose("--augment", self.augment, ("crop-flip", "none"))
        check_carry(self, carry_asked)
        require_positive(self, POSITIVE)
        require_at_least_zero(self, AT_LEAST_ZERO)
        check_limits(self)
        check_momentum(self)
        fill_unset(self, dict(leader_ema=0.0))
        check_decay(self.leader_ema)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def inherit_unset(self, recorded: dict[str, Any]) -> dict[str, Any]:
        """For ``--resume``: every option the command line did not give takes the value the run
        folder recorded (or, for an option newer than the folder, ``LEGACY_VALUES``'), so a run
        resumes as it was trained even where a default has changed since (``inherit``); returns
        the values taken from ``recorded``, by option name. The follower's own levers
        (``HAND_DESIGNED_LEVERS``'s keys) are not inherited by another follower: they may not
        fit it, and the resume is refused as another configuration."""
        check_same_command(self, recorded)
        values = LEGACY_VALUES | recorded
        taken = inherit(self, {"follower": values.get("follower")} if "follower" in values else {})
        if self.follower != values.get("follower"):
            values = {k: v for k, v in values.items() if k not in HAND_DESIGNED_LEVERS}
        taken |= inherit(self, values, keep=IGNORED_ON_RESUME)
        return {k: v for k, v in taken.items() if k in recorded}

    def acceleration(self) -> Acceleration:
        """The speed levers this run uses (``bilevel.acceleration``)."""
        return Acceleration(bool(self.channels_last), self.amp, self.compile)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AdversarialConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @classmethod
    def as_trained(cls, recorded: dict[str, Any]) -> AdversarialConfig:
        """The resolved configuration a run folder recorded (its config.json), with every option
        newer than the folder at the value it trained with (``LEGACY_VALUES``), not at today's
        default: what ``--resume`` does, for readers of a finished run."""
        return cls.from_dict(LEGACY_VALUES | recorded).resolve()
